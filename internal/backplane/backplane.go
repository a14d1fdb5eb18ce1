// Package backplane is the seam between a node's hub and the place where a room's
// messages are numbered and kept. Today there is one implementation, Local: the hub
// numbers messages itself and keeps them through the store writer, which is all a
// single node needs. The seam exists so that a shared sequencer (several nodes behind
// a load balancer, see the scale-out design) can sit where the store writer sits,
// without the hub goroutine ever waiting on it.
package backplane

import "modified-chat/internal/store"

// Backplane numbers a room's messages and makes changes durable. Every method is
// called on the hub goroutine only and must never block it: slow work happens on
// another goroutine and reports back through the done callback.
type Backplane interface {
	// Next hands out the id of the next message in room. Ids increase within every
	// room, even across a room being dropped and made again.
	Next(room string) uint64
	// Last is the highest id handed out so far: the boundary history reads stop at
	// and the start of a new room's history.
	Last() uint64
	// Submit hands writes over to be made durable. done runs on another goroutine
	// once they are durable (nil) or have failed; false means the queue is full and
	// done will never run.
	Submit(writes []store.Write, done func(error)) bool
}

// Local is the single-node backplane: ids from one counter shared by every room (so
// they are unique across rooms too), durability from the store writer. It is exactly
// what the hub did before the seam existed.
type Local struct {
	last   uint64
	writer *store.Writer
}

// NewLocal starts counting after last (the newest id the store holds) and keeps
// changes through w.
func NewLocal(last uint64, w *store.Writer) *Local {
	return &Local{last: last, writer: w}
}

// Next implements Backplane: one counter for all rooms.
func (l *Local) Next(string) uint64 {
	l.last++
	return l.last
}

// Last implements Backplane.
func (l *Local) Last() uint64 { return l.last }

// Submit implements Backplane by handing the writes to the store writer.
func (l *Local) Submit(writes []store.Write, done func(error)) bool {
	return l.writer.Submit(writes, done)
}

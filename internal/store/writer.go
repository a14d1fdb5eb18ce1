package store

import (
	"sync"
	"time"

	"modified-chat/internal/crash"
)

// Writer tunables.
const (
	// DefaultQueue is the default number of requests the writer holds while a commit
	// is in flight. Past it Submit refuses, so a slow disk turns into "try again" errors
	// for clients instead of a stalled hub or unbounded memory.
	DefaultQueue = 4096
	// batchMaxRequests and batchMaxBytes bound one commit. A commit costs one
	// fsync whatever its size, so batching is what makes durable writes cheap, but an
	// unbounded batch would hold memory and delay every callback in it.
	batchMaxRequests = 512
	batchMaxBytes    = 4 << 20
	// DiskLinger is how long the writer for a disk store waits after a request for
	// others to share its commit (group commit). Chat messages arrive a few
	// milliseconds apart under load; without the wait each would cost its own fsync and
	// its own B+tree rewrite. Only the ack waits, well under what a person notices:
	// delivery never does. (At 200 messages a second, 10 ms gave about 3 messages a
	// commit, 50 ms about 10 and 5 % less server CPU than 10 ms.)
	DiskLinger = 25 * time.Millisecond
)

// request is one Submit waiting for its commit.
type request struct {
	writes []Write
	done   func(error)
}

// Commit describes one Apply made by a Writer, for metrics: how many requests
// and writes it carried, their bytes (keys plus values), how long it took and how it ended.
// Retry marks the per-request Applies made after a combined commit failed.
type Commit struct {
	Requests, Writes, Bytes int
	Took                    time.Duration
	Err                     error
	Retry                   bool
}

// Writer is how the hub writes without touching the disk. Submit only queues; one
// goroutine commits what has queued up in one Apply, so however many messages arrive
// while the disk is busy, they cost one fsync between them. Callbacks report each
// request's result once it is durable.
type Writer struct {
	store   Store
	observe func(Commit)

	// mu orders Submit against Close: a Submit holds it shared for its non-blocking
	// send, Close holds it exclusively to close reqs, so no send races the close.
	mu     sync.RWMutex
	closed bool
	reqs   chan request
	// linger is how long a batch waits for company (see DiskLinger); 0: never.
	linger time.Duration
	// stopped is closed when the goroutine has committed everything and returned.
	stopped chan struct{}
}

// NewWriter starts a writer over s that holds up to queue requests (DefaultQueue
// when queue <= 0) and lets each batch wait up to linger for more requests (0: commit
// at once). observe is optional (at most one, may be nil): it is called on the writer
// goroutine after every Apply and must be quick (update a metric). The writer owns no
// Store: close the writer first, then the store.
func NewWriter(s Store, queue int, linger time.Duration, observe ...func(Commit)) *Writer {
	if queue <= 0 {
		queue = DefaultQueue
	}
	w := &Writer{
		store:   s,
		reqs:    make(chan request, queue),
		stopped: make(chan struct{}),
		linger:  linger,
	}
	if len(observe) > 0 {
		w.observe = observe[0]
	}
	go w.run()
	return w
}

// Submit queues writes without blocking; done (may be nil) is called with the commit's
// result once they are durable. Submit returns false when the queue is full or the writer
// is closed (the caller then refuses the operation with a "try again" error rather than
// block); done is then never called. Otherwise done is called exactly once, from the
// writer goroutine, in submission order: it must not block for long, since every later
// request waits behind it (hand the result off without blocking). The writer owns writes
// from here on: the caller must not change their slices. Writes of all requests are
// applied in submission order, so a later write to the same key wins. An empty writes
// is allowed: its done runs once everything submitted before it is durable.
func (w *Writer) Submit(writes []Write, done func(error)) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	select {
	case w.reqs <- request{writes: writes, done: done}:
		return true
	default:
		return false
	}
}

// Queued reports how many requests wait for a commit, for a metrics gauge.
func (w *Writer) Queued() int {
	return len(w.reqs)
}

// Close stops accepting, commits what is queued, calls the remaining callbacks, returns.
// It may be called more than once. Because it waits for those callbacks, a done that
// blocks on a goroutine which is itself waiting for Close (a stopped hub loop, say)
// deadlocks the shutdown: another reason done must hand off without blocking.
func (w *Writer) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	<-w.stopped
}

// run is the writer goroutine: take one request, gather whatever else arrives within
// the linger (and the batch bounds), commit them together, report, repeat. A batch that
// fills up, or a writer being closed, commits at once.
//
// A panic here (a bug, in Apply or in a done callback) ends the process (crash.OnPanic):
// the batch in flight is half acknowledged, and restarting the loop would leave its
// other requests waiting for ever, or ack them out of order. Running on without a
// writer would be worse: every durable operation would queue, then be refused, while
// the server looked up. A fresh process starts from what the disk holds; clients
// resend what was never acknowledged.
func (w *Writer) run() {
	defer close(w.stopped)
	defer crash.OnPanic(nil, "store writer")
	crash.Hook("store writer")
	var batch []request
	var writes []Write
	var wait *time.Timer
	for {
		first, ok := <-w.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		size := requestBytes(first)
		var deadline <-chan time.Time // nil: take only what is queued now
		if w.linger > 0 {
			if wait == nil {
				wait = time.NewTimer(w.linger)
			} else {
				wait.Reset(w.linger)
			}
			deadline = wait.C
		}
	gather:
		for len(batch) < batchMaxRequests && size < batchMaxBytes {
			var r request
			if deadline == nil {
				select {
				case r, ok = <-w.reqs:
				default:
					break gather
				}
			} else {
				select {
				case r, ok = <-w.reqs:
				case <-deadline:
					deadline = nil
					continue
				}
			}
			if !ok {
				break gather
			}
			batch = append(batch, r)
			size += requestBytes(r)
		}
		if deadline != nil {
			wait.Stop()
		}
		writes = w.commit(batch, writes[:0], size)
		// Drop references so committed values can be collected while the writer idles.
		clear(writes)
		clear(batch)
	}
}

// commit applies batch in one Apply and reports to every request. If that fails, each
// request is applied on its own, so one bad request (an invalid key, say) fails alone
// instead of taking its neighbours down with it; a combined Apply is atomic, so nothing
// of it was written and retrying in order keeps the order. It returns writes for reuse.
func (w *Writer) commit(batch []request, writes []Write, size int) []Write {
	for _, r := range batch {
		writes = append(writes, r.writes...)
	}
	err := w.apply(writes, len(batch), size, false)
	if err == nil || len(batch) == 1 {
		for _, r := range batch {
			if r.done != nil {
				r.done(err)
			}
		}
		return writes
	}
	for _, r := range batch {
		err := w.apply(r.writes, 1, requestBytes(r), true)
		if r.done != nil {
			r.done(err)
		}
	}
	return writes
}

// apply runs one Apply and reports it to observe.
func (w *Writer) apply(writes []Write, requests, size int, retry bool) error {
	start := time.Now()
	err := w.store.Apply(writes)
	if w.observe != nil {
		w.observe(Commit{Requests: requests, Writes: len(writes), Bytes: size, Took: time.Since(start), Err: err, Retry: retry})
	}
	return err
}

// requestBytes is the size a request adds to a batch: its keys and values.
func requestBytes(r request) int {
	n := 0
	for _, w := range r.writes {
		n += len(w.Key) + len(w.Value)
	}
	return n
}

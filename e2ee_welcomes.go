package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"

	"modified-chat/internal/store"
)

// The Welcomes a single node keeps for added devices that have not joined yet live
// outside the group's record (bucketMLSGroups), which groupWrite rewrites whole, and
// fsyncs, at every change of the group: kept inside it, tens of kB per pending device
// were rewritten at every commit, proposal and self-update, so a member's few hundred
// bytes cost the server a multiple that grew with the room (DESIGN.md: bounded
// amplification). Here each Welcome is written once, when the commit that carries it
// is accepted, and deleted once no device waits for it. A cluster keeps pointers to
// its log instead (WelcomeAt, e2eecluster.go).
const (
	// bucketMLSWelcomes holds each kept mls_welcome event once, by room and the id of
	// the commit that carries it (welcomeEventKey): a commit adding 99 devices is
	// stored once, not 99 times.
	bucketMLSWelcomes = "mls_welcomes"
	// bucketMLSWelcomeFor says which Welcome each waiting device gets: by room and
	// device (welcomeForKey), the commit's id (store.SeqKey).
	bucketMLSWelcomeFor = "mls_welcome_for"
)

// roomWelcomes are the Welcomes kept in one room: each event once, by its commit's
// id, and the commit id each waiting device (devKey) gets.
type roomWelcomes struct {
	events map[uint64][]byte
	devs   map[string]uint64
}

// welcomeStore is the single node's kept Welcomes, by room, in memory as in the store
// (the hub reads them without waiting on the disk). What bounds it: a room keeps at
// most one Welcome per device holding a leaf of its group and not yet joined (a newer
// Add replaces it; joining, losing the leaf or the room's deletion drop it), each at
// most one MLS frame (mlsMaxFrame, paid from the committer's file-bytes budget); a
// Welcome several devices wait for is held once. The hub owns it.
type welcomeStore struct {
	rooms map[string]*roomWelcomes
}

// newWelcomeStore makes an empty store.
func newWelcomeStore() *welcomeStore {
	return &welcomeStore{rooms: map[string]*roomWelcomes{}}
}

// welcomeEventKey is the store key of a room's Welcome carried by commit id: the room
// name, a NUL (never in a room name) and the id.
func welcomeEventKey(room string, id uint64) []byte {
	return append([]byte(room+"\x00"), store.SeqKey(id)...)
}

// welcomeForKey is the store key of a waiting device's pointer: the room name, a NUL
// and the device's devKey.
func welcomeForKey(room, dev string) []byte {
	return []byte(room + "\x00" + dev)
}

// splitWelcomeKey splits a key of either bucket into the room and the rest.
func splitWelcomeKey(k []byte) (room string, rest []byte, ok bool) {
	i := bytes.IndexByte(k, 0)
	if i <= 0 {
		return "", nil, false
	}
	return string(k[:i]), k[i+1:], true
}

// room returns a room's Welcomes, made on first use.
func (w *welcomeStore) room(name string) *roomWelcomes {
	r := w.rooms[name]
	if r == nil {
		r = &roomWelcomes{events: map[uint64][]byte{}, devs: map[string]uint64{}}
		w.rooms[name] = r
	}
	return r
}

// of returns the Welcome event kept for a device in a room, if any.
func (w *welcomeStore) of(room, dev string) ([]byte, bool) {
	r := w.rooms[room]
	if r == nil {
		return nil, false
	}
	id, ok := r.devs[dev]
	if !ok {
		return nil, false
	}
	ev, ok := r.events[id]
	return ev, ok
}

// keep records that devs get the Welcome event ev of the commit id in room, and
// returns the writes that make it durable: the event once, a pointer per device. A
// device's older Welcome is replaced (and deleted when nobody else waits for it).
func (w *welcomeStore) keep(room string, id uint64, ev []byte, devs []string) []store.Write {
	var writes []store.Write
	for _, d := range devs {
		writes = append(writes, w.drop(room, d)...)
	}
	r := w.room(room)
	r.events[id] = ev
	writes = append(writes, store.Write{Bucket: bucketMLSWelcomes, Key: welcomeEventKey(room, id), Value: ev})
	for _, d := range devs {
		r.devs[d] = id
		writes = append(writes, store.Write{Bucket: bucketMLSWelcomeFor, Key: welcomeForKey(room, d), Value: store.SeqKey(id)})
	}
	return writes
}

// drop forgets the Welcome a device waits for in room (it joined, or lost its leaf),
// and the event itself once no other device waits for it; it returns the writes (none
// when there was nothing to drop).
func (w *welcomeStore) drop(room, dev string) []store.Write {
	r := w.rooms[room]
	if r == nil {
		return nil
	}
	id, ok := r.devs[dev]
	if !ok {
		return nil
	}
	delete(r.devs, dev)
	writes := []store.Write{{Bucket: bucketMLSWelcomeFor, Key: welcomeForKey(room, dev)}}
	shared := false
	for _, other := range r.devs {
		shared = shared || other == id
	}
	if !shared {
		delete(r.events, id)
		writes = append(writes, store.Write{Bucket: bucketMLSWelcomes, Key: welcomeEventKey(room, id)})
	}
	if len(r.devs) == 0 {
		delete(w.rooms, room)
	}
	return writes
}

// dropRoom forgets every Welcome of a room (it was deleted, or its name now holds
// another group) and returns the writes.
func (w *welcomeStore) dropRoom(room string) []store.Write {
	r := w.rooms[room]
	if r == nil {
		return nil
	}
	delete(w.rooms, room)
	var writes []store.Write
	for d := range r.devs {
		writes = append(writes, store.Write{Bucket: bucketMLSWelcomeFor, Key: welcomeForKey(room, d)})
	}
	for id := range r.events {
		writes = append(writes, store.Write{Bucket: bucketMLSWelcomes, Key: welcomeEventKey(room, id)})
	}
	return writes
}

// inRecord is a room's Welcomes in the form a group record carried them before they
// had their own buckets, by devKey: what a group migrated into Redis takes along
// (migratedGroup), since cluster nodes read them there.
func (w *welcomeStore) inRecord(room string) map[string]mlsWelcome {
	r := w.rooms[room]
	if r == nil {
		return nil
	}
	out := map[string]mlsWelcome{}
	for d, id := range r.devs {
		if ev, ok := r.events[id]; ok {
			out[d] = mlsWelcome{Event: ev}
		}
	}
	return out
}

// loadWelcomes reads the kept Welcomes at start-up, and moves into them those that
// group records written by an older version still carry (Welcomes): it returns the
// writes that make the move durable (the Welcomes put in their buckets and each such
// record written again without them), for the caller to apply before the hub runs.
// A pointer whose event is missing, or an event nobody waits for, is deleted.
func loadWelcomes(s store.Store, groups map[string]*mlsGroup) (*welcomeStore, []store.Write, error) {
	w := newWelcomeStore()
	err := s.Scan(bucketMLSWelcomes, func(k, v []byte) error {
		if room, rest, ok := splitWelcomeKey(k); ok && len(rest) == 8 {
			w.room(room).events[store.KeySeq(rest)] = bytes.Clone(v)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	var writes []store.Write
	err = s.Scan(bucketMLSWelcomeFor, func(k, v []byte) error {
		room, dev, ok := splitWelcomeKey(k)
		if r := w.rooms[room]; ok && r != nil && len(v) == 8 {
			if _, has := r.events[store.KeySeq(v)]; has {
				r.devs[string(dev)] = store.KeySeq(v)
				return nil
			}
		}
		writes = append(writes, store.Write{Bucket: bucketMLSWelcomeFor, Key: bytes.Clone(k)})
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for room, r := range w.rooms {
		for id := range r.events {
			if !containsID(r.devs, id) {
				delete(r.events, id)
				writes = append(writes, store.Write{Bucket: bucketMLSWelcomes, Key: welcomeEventKey(room, id)})
			}
		}
		if len(r.devs) == 0 {
			delete(w.rooms, room)
		}
	}
	for room, g := range groups {
		if len(g.Welcomes) == 0 {
			continue
		}
		for _, d := range slices.Sorted(maps.Keys(g.Welcomes)) {
			ev := g.Welcomes[d].Event
			var head struct {
				ID uint64 `json:"id"`
			}
			if json.Unmarshal(ev, &head) != nil || head.ID == 0 {
				continue // unreadable: the device gets a new Add after a resync
			}
			if _, newer := w.of(room, d); !newer {
				writes = append(writes, w.keep(room, head.ID, ev, []string{d})...)
			}
		}
		g.Welcomes = nil
		writes = append(writes, groupWrite(room, g))
	}
	return w, writes, nil
}

// containsID reports whether some device waits for the Welcome of commit id.
func containsID(devs map[string]uint64, id uint64) bool {
	for _, v := range devs {
		if v == id {
			return true
		}
	}
	return false
}

// handWelcome delivers to c the Welcome kept for its device in room, if any (none
// without a device, or for a plain room's nil group): the single node's from memory,
// one a group migrated into Redis still carries in its record, or a cluster's read
// from its commit's entry (clusterWelcome).
func (h *Hub) handWelcome(c *Client, room string, g *mlsGroup) {
	if g == nil || c.device == "" {
		return
	}
	key := devKey(c.user.ID, c.device)
	if ev, ok := h.mls.welcomes.of(room, key); ok && !h.mlsInRedis(room) {
		h.deliver(c, ev)
	} else if w, ok := g.Welcomes[key]; ok {
		h.deliver(c, w.Event)
	}
	h.clusterWelcome(c, room, g)
}

// welcomeJoined drops the Welcome kept for c's device in room once the device has
// shown it joined (an accepted mls_app or commit from it there); it returns the
// writes, for the caller's persist (none when nothing was kept).
func (h *Hub) welcomeJoined(room string, c *Client) []store.Write {
	if c.device == "" {
		return nil
	}
	return h.mls.welcomes.drop(room, devKey(c.user.ID, c.device))
}

package main

import (
	"encoding/json"
	"errors"
	"strconv"
	"time"

	"modified-chat/internal/store"
)

// errStopScan ends a store scan early from its callback.
var errStopScan = errors.New("stop scan")

// errStoreBusy: the store writer's queue is full.
var errStoreBusy = errors.New("store queue full")

// History storage layout.
const (
	// historyPrefix + room name is the bucket of a room's messages, keyed by seqKey(id).
	historyPrefix = "history/"
	// bucketMeta holds counters; keyLastID the last message id handed out, so ids keep
	// increasing across restarts.
	bucketMeta = "meta"
	keyLastID  = "last_id"
	// bucketPruned maps a room to the highest id pruned from its history, so a client
	// resuming from before it is told that it missed messages for good.
	bucketPruned = "pruned"
	// bucketPurge maps a deleted room to the last id at its deletion; the janitor
	// deletes that history and then the mark.
	bucketPurge = "purge"
	// janitorEvery is how often history is pruned to its bounds.
	janitorEvery = time.Minute
)

// historyBucket names a room's history bucket.
func historyBucket(room string) string { return historyPrefix + room }

// historyWrites are the store writes that keep one message: the message itself, and
// the id counter.
func historyWrites(room string, id uint64, msg []byte) []store.Write {
	return []store.Write{
		{Bucket: historyBucket(room), Key: store.SeqKey(id), Value: msg},
		{Bucket: bucketMeta, Key: []byte(keyLastID), Value: store.SeqKey(id)},
	}
}

// storedTime reads the ts of a stored message (0 when unreadable).
func storedTime(msg []byte) int64 {
	var v struct {
		TS int64 `json:"ts"`
	}
	json.Unmarshal(msg, &v)
	return v.TS
}

// sendHistory sends c the room's history once every message the hub has stamped so
// far is durable: the store writer runs the read after the commits queued before it,
// so nothing falls between history and the live messages c receives from now on. The
// read happens on its own goroutine and the result comes back through the hub, which
// delivers it only if c is still in the room. after, when set, asks for everything
// after that id (a reconnecting client); otherwise the newest HistoryOnJoin messages.
func (h *Hub) sendHistory(c *Client, ri *roomInfo, after *uint64) {
	cfg := h.settings()
	boundary, first, name, store := h.lastID, ri.FirstID, ri.Name, h.app.store
	now := h.now()
	ok := h.writer.Submit(nil, func(error) {
		go func() {
			ev := loadHistory(store, name, first, after, boundary, cfg, now)
			h.completions <- func() {
				if _, ok := h.clients[c]; ok && c.rooms[name] != nil {
					h.deliver(c, ev)
				}
			}
		}()
	})
	if !ok {
		h.deliver(c, errorEvent(codeBusy, "history is not available right now", "", name))
	}
}

// loadHistory reads a room's history from the store and encodes the `history` event.
// Only ids in (first, boundary] belong: first is where this incarnation of the room
// began (a deleted room's messages never reach a new room of the same name), boundary
// where live delivery took over. gap says that messages after `after` are gone for
// good (pruned) or too many to send.
func loadHistory(s store.Store, room string, first uint64, after *uint64, boundary uint64, cfg *Config, now time.Time) []byte {
	cutoff := now.Add(-cfg.HistoryMaxAge).UnixMilli()
	var msgs [][]byte
	gap := false
	keep := func(k, v []byte) error {
		id := store.KeySeq(k)
		if id <= first || id > boundary || storedTime(v) < cutoff {
			return nil
		}
		msgs = append(msgs, append([]byte(nil), v...))
		return nil
	}
	bucket := historyBucket(room)
	if after == nil {
		s.Last(bucket, cfg.HistoryOnJoin, keep)
	} else {
		from := max(*after, first)
		s.After(bucket, store.SeqKey(from), cfg.HistoryResumeMax+1, keep)
		if len(msgs) > cfg.HistoryResumeMax {
			msgs, gap = msgs[:cfg.HistoryResumeMax], true
		}
		s.Scan(bucketPruned, func(k, v []byte) error {
			if string(k) == room && store.KeySeq(v) > *after && *after > 0 {
				gap = true
			}
			return nil
		})
	}
	return appendObject(nil, "history", room, func(b []byte) []byte {
		b = append(b, `,"gap":`...)
		b = strconv.AppendBool(b, gap)
		b = append(b, `,"messages":[`...)
		for i, m := range msgs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, m...)
		}
		return append(b, ']')
	})
}

// runJanitor prunes history to its bounds, and forgets expired session revocations,
// every janitorEvery until stop is closed. It reads the store on its own goroutine
// and deletes through the writer.
func (app *App) runJanitor(stop <-chan struct{}) {
	t := time.NewTicker(janitorEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			if err := app.pruneHistory(app.now()); err != nil {
				app.log.Error("pruning history", "err", err)
			}
			app.sessions.sweep(app.now())
		}
	}
}

// pruneHistory deletes, per room, messages beyond HistoryMax, older than HistoryMaxAge,
// or from before the room's current incarnation, and the histories of deleted rooms.
// It waits for its deletes to be committed.
func (app *App) pruneHistory(now time.Time) error {
	cfg := app.settings()
	cutoff := now.Add(-cfg.HistoryMaxAge).UnixMilli()
	firstIDs := map[string]uint64{}
	if err := app.store.Scan(bucketRooms, func(k, v []byte) error {
		var ri roomInfo
		if json.Unmarshal(v, &ri) == nil {
			firstIDs[string(k)] = ri.FirstID
		}
		return nil
	}); err != nil {
		return err
	}
	purge := map[string]uint64{}
	app.store.Scan(bucketPurge, func(k, v []byte) error {
		purge[string(k)] = store.KeySeq(v)
		return nil
	})
	var writes []store.Write
	for room, upTo := range purge {
		app.store.After(historyBucket(room), nil, 1<<30, func(k, v []byte) error {
			if id := store.KeySeq(k); id <= upTo {
				writes = append(writes, store.Write{Bucket: historyBucket(room), Key: append([]byte(nil), k...)})
			}
			return nil
		})
		writes = append(writes, store.Write{Bucket: bucketPurge, Key: []byte(room)})
	}
	for room, first := range firstIDs {
		bucket := historyBucket(room)
		n, err := app.store.Count(bucket)
		if err != nil || n == 0 {
			continue
		}
		excess := n - cfg.HistoryMax
		var pruned uint64
		app.store.After(bucket, nil, n, func(k, v []byte) error {
			id := store.KeySeq(k)
			if excess > 0 || id <= first || storedTime(v) < cutoff {
				writes = append(writes, store.Write{Bucket: bucket, Key: append([]byte(nil), k...)})
				excess--
				pruned = max(pruned, id)
				return nil
			}
			return errStopScan
		})
		if pruned > 0 {
			writes = append(writes, store.Write{Bucket: bucketPruned, Key: []byte(room), Value: store.SeqKey(pruned)})
		}
	}
	if len(writes) == 0 {
		return nil
	}
	done := make(chan error, 1)
	if !app.writer.Submit(writes, func(err error) { done <- err }) {
		return errStoreBusy
	}
	return <-done
}

package main

import (
	"bytes"
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
	// filesPrefix + room name is the bucket of the bytes of a room's files kept in
	// history (their base64, keyed by the message id): the history entry holds only the
	// file's metadata, so paging history never reads or sends file bytes.
	filesPrefix = "files/"
	// janitorEvery is how often history is pruned to its bounds.
	janitorEvery = time.Minute
)

// History answers. DoS hardening: nothing a client sends may cost more than a bounded
// multiple of what it pays, and a history answer is the largest thing one short command
// can make the server send.
const (
	// historyPageBytes bounds the messages of one `history` event. A longer window is
	// sent in pages (more: true); the client asks for the next with `history`.
	historyPageBytes = 1 << 20
	// historyQueueMax bounds the history answers waiting for one connection while its
	// previous one is read (one is read at a time per connection).
	historyQueueMax = 32
	// fileEventSlack is what a file event holds besides its base64 bytes: type, room,
	// id, ts, sender, name, type and size. Generous: names are at most 128 characters.
	fileEventSlack = 16 << 10
)

// historyBucket names a room's history bucket.
func historyBucket(room string) string { return historyPrefix + room }

// filesBucket names the bucket of a room's file bytes.
func filesBucket(room string) string { return filesPrefix + room }

// dataField starts the base64 bytes in a file event. It is the event's last field
// (see fileBody), and it cannot occur inside a JSON string, whose quotes are escaped.
var dataField = []byte(`,"data":"`)

// fileMeta returns a stored history entry without file bytes. Entries written before
// file bytes moved to their own bucket hold them inline; they lose them here, so
// history never carries file bytes whatever is stored.
func fileMeta(v []byte) []byte {
	meta, _ := splitFileEntry(v)
	return meta
}

// splitFileEntry splits a stored file entry that holds its bytes inline into the
// entry without them and the base64 bytes (nil when there are none, or v is not a
// file). The bytes need not be last: base64 holds no quote, so they end at the next.
func splitFileEntry(v []byte) (meta, data []byte) {
	if !bytes.HasPrefix(v, []byte(`{"type":"file"`)) {
		return v, nil
	}
	i := bytes.LastIndex(v, dataField)
	if i < 0 {
		return v, nil
	}
	start := i + len(dataField)
	j := bytes.IndexByte(v[start:], '"')
	if j < 0 {
		return v, nil
	}
	meta = append(v[:i:i], v[start+j+1:]...)
	return meta, v[start : start+j]
}

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

// historyLoad is one history answer a connection waits for: the room, and after, when
// set, the id after which it wants messages (else the newest HistoryOnJoin); ref is
// copied into the answer.
type historyLoad struct {
	room  string
	after *uint64
	ref   string
}

// sendHistory sends c a page of a room's history. One page is read at a time per
// connection: further requests wait in c.histQueue (bounded), so the hub never holds
// more than one page for any requester, and each page is charged to c's reply budget
// before the next is read.
func (h *Hub) sendHistory(c *Client, room string, after *uint64, ref string) {
	if c.histBusy {
		if len(c.histQueue) >= historyQueueMax {
			h.refuseRate(c, room, ref, time.Second)
			return
		}
		c.histQueue = append(c.histQueue, historyLoad{room, after, ref})
		return
	}
	h.startHistory(c, historyLoad{room, after, ref})
	h.nextHistory(c)
}

// nextHistory starts the waiting history answers of c until one is in flight.
func (h *Hub) nextHistory(c *Client) {
	for !c.histBusy && len(c.histQueue) > 0 {
		l := c.histQueue[0]
		c.histQueue = c.histQueue[1:]
		if len(c.histQueue) == 0 {
			c.histQueue = nil
		}
		h.startHistory(c, l)
	}
}

// pageKey names a history page several connections may be sent alike: the same room
// incarnation (first), window (after) and boundary. Pages answering a `history` with a
// ref are the asker's own and never shared.
type pageKey struct {
	room            string
	first, boundary uint64
	after           uint64
	resume          bool // after is set
}

// sharedPage is a page being read (ev nil; waiters wait for it) or read (ev set).
type sharedPage struct {
	ev      *[]byte
	waiters []*Client
}

// sharedPagesMax bounds the pages the hub keeps for sharing. Only pages of the current
// boundary can be shared at all, so few are ever useful at once.
const sharedPagesMax = 16

// startHistory reads one page once every message the hub has stamped so far is
// durable: the store writer runs the read after the commits queued before it, so
// nothing falls between history and the live messages c receives from now on. The
// read happens on its own goroutine and the result comes back through the hub, which
// delivers it only if c is still in the room. A connection over its reply budget gets
// rate_limited instead.
//
// Connections that ask for the same page (a crowd joining a room, or reconnecting to
// it, while nothing new is said) share one read and one copy of it, as a broadcast
// shares one copy of a message: a thousand joiners of a room with a full page of
// history pin 1 MiB, not 1 GiB.
func (h *Hub) startHistory(c *Client, l historyLoad) {
	r := c.rooms[l.room]
	if r == nil {
		return // left while waiting
	}
	if retry, ok := c.limiter.replyAllowed(); !ok {
		h.refuseRate(c, l.room, l.ref, retry)
		return
	}
	if lf := h.feeds[l.room]; lf != nil && !lf.ready {
		// Cluster mode, the room just opened here: history waits until the feed says
		// where live delivery starts (hubcluster.go).
		h.clusterHistory(c, l, r.info.FirstID, nil)
		return
	}
	key := pageKey{room: l.room, first: r.info.FirstID, boundary: h.boundary(l.room)}
	if l.after != nil {
		key.after, key.resume = *l.after, true
	}
	var shared *sharedPage
	if l.ref == "" {
		if p := h.pages[key]; p != nil {
			if p.ev != nil {
				c.limiter.chargeReply(len(*p.ev))
				h.enqueue(c, p.ev)
				return
			}
			c.histBusy = true
			p.waiters = append(p.waiters, c)
			return
		}
		h.prunePages()
		shared = &sharedPage{}
		h.pages[key] = shared
	}
	if h.feed != nil {
		h.clusterHistory(c, l, key.first, shared)
		return
	}
	cfg, st, now := h.settings(), h.app.store, h.now()
	c.histBusy = true
	ok := h.bp.Submit(nil, func(error) {
		h.goTask(taskHistory, func() {
			ev := loadHistory(st, l, key.first, key.boundary, cfg, now)
			h.completions <- func() { h.finishPage(c, l.room, shared, ev) }
		}, func() { h.pageFailed(c, l, shared) })
	})
	if !ok {
		c.histBusy = false
		if shared != nil {
			delete(h.pages, key)
		}
		h.deliver(c, errorEvent(codeBusy, "history is not available right now", l.ref, l.room))
	}
}

// finishPage delivers a page that was read to c and to every connection that waited
// for the same page, each charged for it, and lets each go on to its next request.
func (h *Hub) finishPage(c *Client, room string, shared *sharedPage, ev []byte) {
	ptr, waiters := &ev, []*Client{c}
	if shared != nil {
		shared.ev = ptr
		waiters = append(waiters, shared.waiters...)
		shared.waiters = nil
	}
	for _, w := range waiters {
		w.histBusy = false
		if _, ok := h.clients[w]; ok && w.rooms[room] != nil {
			w.limiter.chargeReply(len(ev))
			h.enqueue(w, ptr)
		}
		h.nextHistory(w)
	}
}

// pageFailed finishes a page whose read panicked (tasks.go): c and every connection
// that waited for the same page are answered `internal` (with c's ref; a shared page
// answers joins, which have none), the page is forgotten so that the next ask reads
// it afresh, and each goes on to its next request.
func (h *Hub) pageFailed(c *Client, l historyLoad, shared *sharedPage) {
	waiters := []*Client{c}
	if shared != nil {
		waiters = append(waiters, shared.waiters...)
		shared.waiters = nil
		for k, p := range h.pages {
			if p == shared {
				delete(h.pages, k)
			}
		}
	}
	for _, w := range waiters {
		w.histBusy = false
		ref := ""
		if w == c {
			ref = l.ref
		}
		if _, ok := h.clients[w]; ok && w.rooms[l.room] != nil {
			h.deliver(w, taskFailedEvent(ref, l.room))
		}
		h.nextHistory(w)
	}
}

// prunePages forgets shared pages that can no longer be asked for (their boundary
// has passed) or, when too many are kept, all that are read.
func (h *Hub) prunePages() {
	for k, p := range h.pages {
		if p.ev != nil && (k.boundary != h.boundary(k.room) || len(h.pages) >= sharedPagesMax) {
			delete(h.pages, k)
		}
	}
}

// loadHistory reads one page of a room's history from the store and encodes the
// `history` event. Only ids in (first, boundary] belong: first is where this
// incarnation of the room began (a deleted room's messages never reach a new room of
// the same name), boundary where live delivery took over. A page holds at most
// historyPageBytes of messages (and at most HistoryResumeMax of them), oldest first;
// more says that messages follow it, which the client gets by asking for those after
// the page's last id. gap says that messages after `after` are gone for good (pruned).
// File entries carry metadata only (see fileMeta).
func loadHistory(s store.Store, l historyLoad, first, boundary uint64, cfg *Config, now time.Time) []byte {
	cutoff := now.Add(-cfg.HistoryMaxAge).UnixMilli()
	var msgs [][]byte
	size := 0
	gap, more := false, false
	limit := cfg.HistoryResumeMax
	keep := func(k, v []byte) error {
		id := store.KeySeq(k)
		if id > boundary {
			return errStopScan
		}
		if id <= first || storedTime(v) < cutoff {
			return nil
		}
		v = fileMeta(v)
		if len(msgs) > 0 && (size+len(v)+1 > historyPageBytes || len(msgs) >= limit) {
			more = true
			return errStopScan
		}
		msgs = append(msgs, bytes.Clone(v))
		size += len(v) + 1
		return nil
	}
	bucket := historyBucket(l.room)
	if l.after == nil {
		s.Last(bucket, cfg.HistoryOnJoin, keep)
	} else {
		after := *l.after
		s.After(bucket, store.SeqKey(max(after, first)), limit+1, keep)
		s.Scan(bucketPruned, func(k, v []byte) error {
			if string(k) == l.room && store.KeySeq(v) > after && after > 0 {
				gap = true
			}
			return nil
		})
	}
	return historyEvent(l, gap, more, msgs)
}

// fetchFile answers a fetch_file: once the file is durable it reads the entry's
// metadata, charges its size to c's file bucket (rate_limited when that is empty, and
// then the bytes are not even read), reads the bytes and sends the `file` event with
// data. One fetch is in flight per connection (c.fetching); the answer is built for
// this requester only and is one file, at most -history-file-max.
func (h *Hub) fetchFile(c *Client, room string, id uint64, ref string) {
	r := c.rooms[room]
	first, st := r.info.FirstID, h.app.store
	cutoff := h.now().Add(-h.settings().HistoryMaxAge).UnixMilli()
	c.fetching = true
	load := func() []byte { return loadFile(st, c.limiter, room, id, first, cutoff, ref) }
	if h.roomsInRedis(room) {
		feed := h.feed
		load = func() []byte { return loadClusterFile(feed, c.limiter, room, id, first, cutoff, ref) }
	}
	ok := h.bp.Submit(nil, func(error) {
		h.goTask(taskFetchFile, func() {
			ev := load()
			h.completions <- func() {
				c.fetching = false
				if _, ok := h.clients[c]; !ok || c.rooms[room] == nil {
					return
				}
				if ev == nil {
					h.metrics.rejected.WithLabelValues(codeNoSuchFile).Inc()
					ev = errorEvent(codeNoSuchFile, "no such file in this room's history", ref, room)
				} else if bytes.HasPrefix(ev, []byte(`{"type":"error"`)) {
					h.metrics.rateLimited.Inc()
				}
				h.deliver(c, ev)
			}
		}, func() {
			c.fetching = false
			if _, ok := h.clients[c]; ok && c.rooms[room] != nil {
				h.deliver(c, taskFailedEvent(ref, room))
			}
		})
	})
	if !ok {
		c.fetching = false
		h.deliver(c, errorEvent(codeBusy, "files are not available right now", ref, room))
	}
}

// loadFile builds the `file` event (with data) for message id of a room, nil when the
// room's history holds no such file, or a rate_limited error when lim's file bucket
// cannot pay for it.
func loadFile(s store.Store, lim *connLimiter, room string, id, first uint64, cutoff int64, ref string) []byte {
	if id <= first {
		return nil
	}
	var entry []byte
	s.After(historyBucket(room), store.SeqKey(id-1), 1, func(k, v []byte) error {
		if store.KeySeq(k) == id && bytes.HasPrefix(v, []byte(`{"type":"file"`)) && storedTime(v) >= cutoff {
			entry = bytes.Clone(v)
		}
		return nil
	})
	if entry == nil {
		return nil
	}
	meta := fileMeta(entry)
	var m struct {
		Size int `json:"size"`
	}
	json.Unmarshal(meta, &m)
	if retry, ok := lim.allowFileOut(m.Size); !ok {
		return rateLimitedRoomEvent(ref, room, retry)
	}
	_, data := splitFileEntry(entry) // stored before file bytes had their own bucket
	if data == nil {
		s.After(filesBucket(room), store.SeqKey(id-1), 1, func(k, v []byte) error {
			if store.KeySeq(k) == id {
				data = bytes.Clone(v)
			}
			return nil
		})
	}
	if data == nil {
		return nil
	}
	return fileEvent(meta, data, ref)
}

// fileEvent is fetch_file's answer: the file's history entry with its base64 bytes
// and the request's ref.
func fileEvent(meta, data []byte, ref string) []byte {
	b := make([]byte, 0, len(meta)+len(data)+len(ref)+32)
	b = append(b, meta[:len(meta)-1]...)
	b = append(b, dataField...)
	b = append(b, data...)
	b = append(b, '"')
	if ref != "" {
		b = append(b, `,"ref":`...)
		b = appendJSONString(b, ref)
	}
	return append(b, '}')
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
			app.janitorRound()
		}
	}
}

// janitorRound prunes history and sweeps expired revocations once. It runs as a task
// (runTask): a round that panics is logged and counted, and the next goes on.
func (app *App) janitorRound() {
	app.hub.runTask(taskJanitor, func() {
		if err := app.pruneHistory(app.now()); err != nil {
			app.log.Error("pruning history", "err", err)
		}
		app.sessions.sweep(app.now())
	})
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
				writes = append(writes, store.Write{Bucket: historyBucket(room), Key: append([]byte(nil), k...)},
					store.Write{Bucket: filesBucket(room), Key: append([]byte(nil), k...)})
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
				writes = append(writes, store.Write{Bucket: bucket, Key: append([]byte(nil), k...)},
					store.Write{Bucket: filesBucket(room), Key: append([]byte(nil), k...)})
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

// historyEvent encodes the history answer to l: the stored messages as they are (each
// already a JSON object), whether messages are missing before them (gap) and whether
// more follow (more). The store's reader and the cluster's Stream reader share it.
func historyEvent(l historyLoad, gap, more bool, msgs [][]byte) []byte {
	return appendObject(nil, "history", l.room, func(b []byte) []byte {
		b = append(b, `,"gap":`...)
		b = strconv.AppendBool(b, gap)
		b = append(b, `,"more":`...)
		b = strconv.AppendBool(b, more)
		if l.ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, l.ref)
		}
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

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"modified-chat/internal/cluster"
)

// Files and deletions in cluster mode. A message's only copy is its entry in the
// room's Stream, whichever node took it, so fetch_file and delete read it there (off
// the hub's loop), never the local store, which holds only this node's own. A file's
// bytes are in its entry when history keeps files that large (-history-file-max), as
// on one node; otherwise the entry is metadata and fetch_file answers no_such_file.
// A deletion is an entry of the room's log (every node tells its members `deleted`
// at the same position) that also removes the message's entry from the Stream.

// erasureBody is a deletion as a Stream body: "delete <ts> <json>".
func erasureBody(ts int64, e *erasure) []byte {
	j, _ := json.Marshal(e)
	return clusterBody("delete", ts, j)
}

// parseErasureBody reads a deletion from a Stream body; false when it is not one.
func parseErasureBody(body []byte) (*erasure, bool) {
	typ, rest, ok := bytes.Cut(body, []byte{' '})
	if !ok || string(typ) != "delete" {
		return nil, false
	}
	_, j, ok := bytes.Cut(rest, []byte{' '})
	var e erasure
	if !ok || json.Unmarshal(j, &e) != nil || e.ID == 0 {
		return nil, false
	}
	return &e, true
}

// commitErasure is commit for a message deletion in cluster mode: written to the
// room's log; every node, this one included, tells its members when the feed
// delivers it, and the actor's ack follows.
func (h *Hub) commitErasure(c *Client, env *envelope, ch change) {
	h.inflight[ch.key] = &flight{}
	if !h.app.clusterReady.Load() {
		h.unavailableLater(c, env)
		h.leaveFlight(ch)
		return
	}
	e := ch.erase
	if !h.feed.Delete(e.Room, e.ID, erasureBody(h.now().UnixMilli(), e), &roomToken{c: c, env: env, ch: ch}) {
		h.refuseLater(c, env, codeBusy, "the server is busy; nothing changed, try again")
		h.leaveFlight(ch)
	}
}

// readClusterSender finds a message in a room's Stream and returns its sender's id; a
// record that is not deletable is not found, as in readSender.
func readClusterSender(feed *cluster.Feed, room string, id uint64) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
	defer cancel()
	it, ok, err := feed.Entry(ctx, room, id)
	if err != nil || !ok {
		return "", false
	}
	m := clusterEvent(room, id, it.Body)
	var s storedSender
	if m == nil || json.Unmarshal(m, &s) != nil || s.From.ID == "" || !deletable[s.Type] {
		return "", false
	}
	return s.From.ID, true
}

// loadClusterFile is loadFile over a room's Stream: the `file` event with data for
// message id, nil when the Stream holds no such file with its bytes, or rate_limited
// when lim's file bucket cannot pay for it.
func loadClusterFile(feed *cluster.Feed, lim *connLimiter, room string, id, first uint64, cutoff int64, ref string) []byte {
	if id <= first {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
	defer cancel()
	it, ok, err := feed.Entry(ctx, room, id)
	if err != nil || !ok || it.TS < cutoff {
		return nil
	}
	m := clusterEvent(room, id, it.Body)
	if m == nil || !bytes.HasPrefix(m, []byte(`{"type":"file"`)) {
		return nil
	}
	meta, data := splitFileEntry(m)
	if data == nil {
		return nil
	}
	var f struct {
		Size int `json:"size"`
	}
	json.Unmarshal(meta, &f)
	if retry, ok := lim.allowFileOut(f.Size); !ok {
		return rateLimitedRoomEvent(ref, room, retry)
	}
	return fileEvent(meta, data, ref)
}

// failLogged answers a room change or deletion Redis did not take: nothing changed.
func (h *Hub) failLogged(t *roomToken, err error) {
	switch {
	case errors.Is(err, cluster.ErrGone):
		h.refuseLater(t.c, t.env, codeNoSuchMessage, "no such message")
		h.leaveFlight(t.ch)
	default:
		h.failRoom(t, err)
	}
}

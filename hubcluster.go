package main

import (
	"bytes"
	"context"
	"errors"
	"strconv"
	"time"

	"modified-chat/internal/cluster"
)

// The hub's side of cluster mode. In cluster mode a room's messages are numbered by
// Redis, not by the hub: a say is handed to the feed (internal/cluster), which runs
// the script off the hub's loop, and the message is delivered here, to this node's
// members of the room, only when the feed hands it back in id order, the sender's own
// included; the ack follows that delivery. Ids increase per room and are not unique
// across rooms. The hub never waits on Redis: Say, Open and Close return at once and
// everything comes back as events through h.completions.

// Cluster tunables and codes.
const (
	// unavailableRetry is the retry hint of `unavailable`.
	unavailableRetry = 2 * time.Second
	// historyReadTimeout bounds one history read from Redis.
	historyReadTimeout = 5 * time.Second
)

// liveFeed is the hub's state of a room it has asked the feed for: ready once the feed
// said where live delivery starts (applied), waiting holds the history answers that
// wait for that.
type liveFeed struct {
	ready   bool
	applied uint64
	waiting []historyLoad
	// waitingFor is the connection of each waiting load.
	waitingFor []*Client
}

// sayToken rides with a say through the feed, so its answer finds the sender.
type sayToken struct {
	c   *Client
	ref string
}

// clusterBody is what a room's Stream keeps of a message: its type, time and the JSON
// tail the readPump prepared ("<type> <ts> <tail>"); the id and room are added by each
// node when it delivers (clusterEvent).
func clusterBody(typ string, ts int64, tail []byte) []byte {
	b := make([]byte, 0, len(typ)+len(tail)+24)
	b = append(b, typ...)
	b = append(b, ' ')
	b = strconv.AppendInt(b, ts, 10)
	b = append(b, ' ')
	return append(b, tail...)
}

// clusterEvent turns a Stream body back into the event clients get, or nil when the
// body is not one (the MAC held, so only a bug writes such a body; it is dropped).
func clusterEvent(room string, seq uint64, body []byte) []byte {
	typ, rest, ok := bytes.Cut(body, []byte{' '})
	if !ok || (string(typ) != "message" && string(typ) != "file" && string(typ) != "mls_app") {
		return nil
	}
	ts, tail, ok := bytes.Cut(rest, []byte{' '})
	if ok && string(typ) == "mls_app" {
		_, tail, ok = bytes.Cut(tail, []byte{' '}) // the sender's mark (e2eecluster.go)
	}
	if !ok || len(tail) == 0 {
		return nil
	}
	msg := make([]byte, 0, 48+len(room)+len(tail))
	msg = append(msg, `{"type":"`...)
	msg = append(msg, typ...)
	msg = append(msg, `","room":"`...)
	msg = append(msg, room...)
	msg = append(msg, `","id":`...)
	msg = strconv.AppendUint(msg, seq, 10)
	msg = append(msg, `,"ts":`...)
	msg = append(msg, ts...)
	msg = append(msg, ',')
	return append(msg, tail...)
}

// clusterStamp hands a message to the feed. The text (or the file with its bytes, when
// the history keeps it) is the Stream entry; a file too large for history is published
// whole but kept as metadata only.
func (h *Hub) clusterStamp(c *Client, r *room, cmd command, typ string, keep bool) {
	env := cmd.env
	if !h.app.clusterReady.Load() {
		h.refuseUnavailable(c, env)
		return
	}
	ts := h.now().UnixMilli()
	live := clusterBody(typ, ts, cmd.body)
	var stored []byte
	if typ == "file" && !keep {
		end := cmd.meta
		stored = clusterBody(typ, ts, append(cmd.body[:end:end], '}'))
	}
	if stored == nil {
		stored, live = live, nil
	}
	if !h.feed.Say(env.Room, stored, live, &sayToken{c: c, ref: env.Ref}) {
		h.refuse(c, env, codeBusy, "the server is busy; try again")
	}
}

// refuseUnavailable answers a say that cannot reach Redis.
func (h *Hub) refuseUnavailable(c *Client, env *envelope) {
	h.metrics.rejected.WithLabelValues(codeUnavailable).Inc()
	h.deliver(c, unavailableEvent(env.Ref, env.Room))
}

// unavailableEvent is the `error` with code unavailable and a retry hint.
func unavailableEvent(ref, room string) []byte {
	return appendObject(nil, "error", room, func(b []byte) []byte {
		b = append(b, `,"code":`...)
		b = appendJSONString(b, codeUnavailable)
		b = append(b, `,"message":"the cluster store cannot be reached; nothing was sent, try again","retry_after_ms":`...)
		b = strconv.AppendInt(b, retryMillis(unavailableRetry), 10)
		if ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, ref)
		}
		return b
	})
}

// onFeed handles one event of the feed, on the hub goroutine.
func (h *Hub) onFeed(ev cluster.Event) {
	switch ev.Kind {
	case cluster.Entry:
		h.feedEntry(ev)
	case cluster.Stored:
		if t, ok := ev.Token.(*roomToken); ok {
			h.finishRoom(t, ev.Seq)
			return
		}
		h.metrics.messages.Inc()
		h.ackSay(ev.Token, ev.Room, ev.Seq)
	case cluster.Failed:
		if t, ok := ev.Token.(*roomToken); ok {
			h.failLogged(t, ev.Err)
			return
		}
		if t, ok := ev.Token.(*sayToken); ok {
			if _, live := h.clients[t.c]; live {
				h.metrics.rejected.WithLabelValues(codeUnavailable).Inc()
				h.deliver(t.c, unavailableEvent(t.ref, ev.Room))
			}
		}
		if t, ok := ev.Token.(*mlsAppToken); ok {
			h.mlsAppFailed(t, ev.Room, errors.Is(ev.Err, cluster.ErrStale))
		}
	case cluster.Opened:
		if ev.State {
			h.installRoomState(ev.Room, ev.Rev, ev.Body)
		}
		lf := h.feeds[ev.Room]
		if lf == nil || lf.ready {
			return
		}
		lf.ready, lf.applied = true, ev.Seq
		waiting, who := lf.waiting, lf.waitingFor
		lf.waiting, lf.waitingFor = nil, nil
		for i, l := range waiting {
			if _, ok := h.clients[who[i]]; ok {
				who[i].histBusy = false
				h.startHistory(who[i], l)
				h.nextHistory(who[i])
			}
		}
	case cluster.Resync:
		if r := h.rooms[ev.Room]; r != nil {
			h.metrics.rejected.WithLabelValues("resync").Inc()
			for c := range r.clients {
				h.doom(c, closeResync)
			}
		}
	case cluster.Health:
		h.app.clusterReady.Store(ev.Ready)
	case cluster.Lost:
		h.app.clusterLost.Store(true)
		h.app.clusterReady.Store(false)
		for c := range h.clients {
			h.doom(c, closeClusterLost)
		}
	}
}

// feedEntry delivers an entry of a room to this node's members, then acknowledges the
// sender when it is this node's.
func (h *Hub) feedEntry(ev cluster.Event) {
	lf, r := h.feeds[ev.Room], h.rooms[ev.Room]
	if e, ok := parseRoomBody(ev.Body); ok {
		// A room change: applied here at its position (clusterrooms.go), its MLS
		// event, if any, delivered there (e2eecluster.go).
		live := lf != nil && lf.ready && ev.Seq > lf.applied
		if live {
			lf.applied = ev.Seq
		}
		if e.Name == ev.Room {
			h.applyRoomAt(ev.Seq, e)
			if r := h.rooms[ev.Room]; live && r != nil && e.MLSType != "" {
				h.deliverMLSEntry(r, ev.Seq, ev.Body, e)
			}
			h.unpark(ev.Room)
		}
		if t, ok := ev.Token.(*roomToken); ok {
			h.finishRoom(t, ev.Seq)
		}
		return
	}
	if e, ok := parseErasureBody(ev.Body); ok {
		// A deletion: members here are told at its position (clusterfiles.go).
		if lf != nil && lf.ready && r != nil && ev.Seq > lf.applied {
			lf.applied = ev.Seq
			if e.Room == ev.Room {
				h.applyErasure(e)
			}
		}
		if t, ok := ev.Token.(*roomToken); ok {
			h.finishRoom(t, ev.Seq)
		}
		return
	}
	if lf != nil && lf.ready && r != nil && ev.Seq > lf.applied {
		h.pullOnEntry(ev.Room) // a conversation's members here come in first (clusterdm.go)
		lf.applied = ev.Seq
		if msg := clusterEvent(ev.Room, ev.Seq, ev.Body); msg != nil {
			h.fanOut(r, msg, h.mlsAppSender(r, ev.Body))
		}
	}
	if ev.Token != nil {
		h.metrics.messages.Inc() // this node's say; counted once, here or at Stored
	}
	h.ackSay(ev.Token, ev.Room, ev.Seq)
}

// ackSay acknowledges a say of this node once Redis has it (and it was delivered here).
// An mls_app's sender has shown its device joined the group (clusterJoined).
func (h *Hub) ackSay(token any, room string, seq uint64) {
	var c *Client
	var ref string
	switch t := token.(type) {
	case *sayToken:
		c, ref = t.c, t.ref
	case *mlsAppToken:
		c, ref = t.c, t.cmd.env.Ref
		h.clusterJoined(room, c)
	}
	if c == nil || ref == "" {
		return
	}
	if _, live := h.clients[c]; live {
		h.deliver(c, ackEvent(ref, room, seq))
	}
}

// openFeed asks the feed for a room that just got its first local member.
func (h *Hub) openFeed(name string) {
	if h.feed == nil {
		return
	}
	h.feeds[name] = &liveFeed{}
	h.feed.Open(name)
}

// closeFeed tells the feed nobody here is in the room any more.
func (h *Hub) closeFeed(name string) {
	if h.feed == nil {
		return
	}
	delete(h.feeds, name)
	h.feed.Close(name)
}

// boundary is where a room's history ends and live delivery begins: on one node the
// last id handed out, in cluster mode the last entry delivered here.
func (h *Hub) boundary(room string) uint64 {
	if h.feed == nil {
		return h.bp.Last()
	}
	if lf := h.feeds[room]; lf != nil {
		return lf.applied
	}
	return 0
}

// clusterHistory answers a history load from the room's Stream, once the feed has
// said where live delivery starts; it reports whether it took the load.
func (h *Hub) clusterHistory(c *Client, l historyLoad, first uint64, shared *sharedPage) bool {
	lf := h.feeds[l.room]
	if lf == nil {
		return false
	}
	if !lf.ready {
		c.histBusy = true
		lf.waiting = append(lf.waiting, l)
		lf.waitingFor = append(lf.waitingFor, c)
		return true
	}
	cfg, now, feed, boundary := h.settings(), h.now(), h.feed, lf.applied
	c.histBusy = true
	h.goTask(taskClusterHistory, func() {
		ev := loadClusterHistory(feed, l, first, boundary, cfg, now)
		h.completions <- func() { h.finishPage(c, l.room, shared, ev) }
	}, func() { h.pageFailed(c, l, shared) })
	return true
}

// loadClusterHistory is loadHistory over a room's Stream: ids in (first, boundary],
// the newest HistoryOnJoin for a join, or those after `after` for a resume (at most
// HistoryResumeMax, and one page of bytes). Ids of one epoch are consecutive, so gap
// says exactly whether something after `after` is gone: the first id found is not
// after+1, or `after` is from before the room's floor (Redis lost its data).
func loadClusterHistory(feed *cluster.Feed, l historyLoad, first, boundary uint64, cfg *Config, now time.Time) []byte {
	ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
	defer cancel()
	cutoff := now.Add(-cfg.HistoryMaxAge).UnixMilli()
	var items []cluster.Item
	var floor uint64
	var err error
	gap, more := false, false
	limit := cfg.HistoryResumeMax
	if l.after == nil {
		items, floor, err = feed.History(ctx, l.room, first, boundary, cfg.HistoryOnJoin, true)
	} else {
		after := max(*l.after, first)
		items, floor, err = feed.History(ctx, l.room, after, boundary, limit+1, false)
		if *l.after > 0 && *l.after < boundary && err == nil {
			gap = *l.after+1 < floor || len(items) == 0 || items[0].Seq != *l.after+1
		}
	}
	if err != nil {
		gap = l.after != nil && *l.after < boundary
	}
	var msgs [][]byte
	size := 0
	for _, it := range items {
		if it.Seq <= first || it.Seq > boundary || it.TS < cutoff {
			continue
		}
		m := clusterEvent(l.room, it.Seq, it.Body)
		if e, ok := parseRoomBody(it.Body); m == nil && ok && e.Name == l.room && e.MLSType != "" {
			m = mlsEventAt(l.room, it.Seq, it.TS, e.MLSType, e.MLSEvent) // a group change's event
		}
		if m == nil {
			continue
		}
		m = fileMeta(m)
		if len(msgs) > 0 && (size+len(m)+1 > historyPageBytes || len(msgs) >= limit) {
			more = true
			break
		}
		msgs = append(msgs, m)
		size += len(m) + 1
	}
	return historyEvent(l, gap, more, msgs)
}

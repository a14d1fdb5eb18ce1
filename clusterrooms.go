package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"

	"modified-chat/internal/cluster"
)

// Room records in cluster mode. A room's record (owner, roles, bans, invitations, its
// description) lives in Redis beside its log, and every change to it is an entry of
// that log, numbered among the messages (internal/cluster: the say script, with the
// revision check). Every node applies the change when its feed delivers that entry, so
// a kick or a ban takes effect on every node at the same position: nothing sequenced
// after it reaches the expelled user anywhere, and their say there is not_in_room.
//
// A node follows a room's log only while someone here is in the room, so its copy of
// a room it does not follow may be old. A command about such a room first reads the
// record from Redis (off the hub's loop) and is dispatched again once it is in place;
// a room followed here is always current. A change computed from an old revision is
// refused by Redis (another node changed the room first): nothing changed, the actor
// is told busy and tries again.
//
// Conversations (dm:<hash>) are rooms here too: their records and messages go through
// their own keys ({d:<hash>}), they are listed in the rooms index and count toward
// -max-rooms, and a conversation opened on two nodes at once is made once (the loser's
// first record is stale and it joins the winner's). The peer's node is told of a
// message through the control log (announceDM), as on one node the peer is pulled in.

// Room-record tunables (DoS hardening: reads of records waiting on Redis are bounded).
const (
	// maxRefreshing bounds the rooms whose records are being read at once.
	maxRefreshing = 256
	// maxRefreshWaiting bounds the commands waiting for one room's record.
	maxRefreshWaiting = 64
)

// roomsInRedis reports whether a room's record goes through Redis: in cluster mode,
// every room and conversation.
func (h *Hub) roomsInRedis(string) bool { return h.feed != nil }

// roomToken rides with a room change through the feed, so its result finds the
// change and the actor.
type roomToken struct {
	c   *Client
	env *envelope
	ch  change
}

// roomBody is a room change as a Stream body: "room <ts> <json>".
func roomBody(ts int64, e *roomEntry) []byte {
	j, _ := json.Marshal(e)
	return clusterBody("room", ts, j)
}

// parseRoomBody reads a room change from a Stream body; false when the body is not
// one (a message, or a body no node of this version writes).
func parseRoomBody(body []byte) (*roomEntry, bool) {
	typ, rest, ok := bytes.Cut(body, []byte{' '})
	if !ok || string(typ) != "room" {
		return nil, false
	}
	_, j, ok := bytes.Cut(rest, []byte{' '})
	var e roomEntry
	if !ok || json.Unmarshal(j, &e) != nil {
		return nil, false
	}
	return &e, true
}

// commitRoomLog is commit for a room change in cluster mode: the change is written to
// the room's log, and applied (here as on every node) when the feed delivers it.
func (h *Hub) commitRoomLog(c *Client, env *envelope, ch change) {
	h.inflight[ch.key] = &flight{}
	name := ch.room.Name
	if !h.app.clusterReady.Load() {
		h.unavailableLater(c, env)
		h.leaveFlight(ch)
		return
	}
	if cc := h.app.ctl; ch.room.Created && ch.room.Info != nil && name != lobby && cc != nil {
		// A new room or conversation takes its place in the rooms index first, against
		// the cluster-wide cap (the index holds every room but the lobby, hence one less).
		// The change is written from the revision known now, when the room was found
		// missing: a record another node made meanwhile (this node may even have read it
		// while the place was reserved) makes it stale, never a second first record.
		ctl, max, rev := cc.ctl, h.settings().MaxRooms-1, h.roomRev[name]
		h.goTask(taskReserveRoom, func() {
			ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
			err := ctl.ReserveRoom(ctx, name, max)
			cancel()
			h.completions <- func() { h.reservedRoom(c, env, ch, rev, err) }
		}, func() {
			// As for an unanswered reservation: nothing was made, the place may be taken.
			h.taskFailed(c, env)
			h.leaveFlight(ch)
			h.unlistUnmade(name)
		})
		return
	}
	h.writeRoomChange(c, env, ch, h.roomRev[name])
}

// reservedRoom goes on with a new room once the rooms index has (or has refused) a
// place for it: room_limit when the cluster has -max-rooms rooms, unavailable when
// Redis did not answer; nothing was made either way.
func (h *Hub) reservedRoom(c *Client, env *envelope, ch change, rev uint64, err error) {
	switch {
	case errors.Is(err, cluster.ErrRoomsFull):
		h.refuseLater(c, env, codeRoomLimit, "the server has as many rooms as it may keep")
		h.leaveFlight(ch)
	case err != nil:
		h.log.Error("room not listed in redis; not made", "err", err)
		h.unavailableLater(c, env)
		h.leaveFlight(ch)
		h.unlistUnmade(ch.room.Name) // the place may have been taken all the same
	default:
		h.writeRoomChange(c, env, ch, rev)
	}
}

// writeRoomChange hands a room change to the feed, checked against rev, the revision
// this node knew when it computed the change.
func (h *Hub) writeRoomChange(c *Client, env *envelope, ch change, rev uint64) {
	name := ch.room.Name
	h.withGroup(ch.room)
	tok := &roomToken{c: c, env: env, ch: ch}
	if !h.feed.Change(name, roomBody(h.now().UnixMilli(), ch.room), rev, tok) {
		h.refuseLater(c, env, codeBusy, "the server is busy; nothing changed, try again")
		h.leaveFlight(ch)
		if ch.room.Created {
			h.unlistUnmade(name)
		}
	}
}

// unlistUnmade takes a room out of the rooms index when its first record, whose place
// there was reserved, never reached Redis (the write failed, or the reservation's
// answer did not come back): a room that was never made must not hold a place against
// -max-rooms for ever. Off the hub's loop it reads the room's record first and leaves
// the index alone when there is one (the write got there after all, or another node
// made the room). The lobby has no place in the index.
func (h *Hub) unlistUnmade(name string) {
	cc, cn := h.app.ctl, h.app.cluster
	if cc == nil || cn == nil || name == lobby {
		return
	}
	log := h.log
	ok := cc.submit(ctlJob{
		run: func(ctx context.Context, l *cluster.Ctl) error {
			st, forged, err := cluster.ReadRoomState(ctx, cn.client, cn.keys, cn.sealer, name)
			if err != nil || forged || st.Body != nil {
				return err
			}
			_, err = l.IndexRoom(ctx, name, false)
			return err
		},
		done: func(err error) {
			if err != nil {
				log.Warn("a room never made may be left in the rooms index", "room", name, "err", err)
			}
		},
	})
	if !ok {
		log.Warn("a room never made may be left in the rooms index: control queue full", "room", name)
	}
}

// unavailableLater answers `unavailable` to a command whose connection may be gone.
func (h *Hub) unavailableLater(c *Client, env *envelope) {
	h.metrics.rejected.WithLabelValues(codeUnavailable).Inc()
	if _, ok := h.clients[c]; ok && env != nil {
		h.deliver(c, unavailableEvent(env.Ref, env.Room))
	}
}

// applyRoomAt applies the room change with id seq, once: a change is applied at most
// once per node, whichever of the log, the writer's answer or a read of the record
// brings it first. The room's first record fixes where its history begins.
func (h *Hub) applyRoomAt(seq uint64, e *roomEntry) {
	if seq <= h.roomRev[e.Name] {
		return
	}
	h.roomRev[e.Name] = seq
	if e.Created && e.Info != nil {
		e.Info.FirstID = seq
	}
	applied := *e
	applied.Invite = nil // told by the acting node, to every node (announceInvite)
	h.installGroup(seq, e)
	h.applyRoom(&applied)
	h.evictRefused(e.Name)
}

// finishRoom completes this node's room change or deletion, which Redis numbered seq:
// a room change is applied if the log has not brought it yet (a deletion only matters
// to members here, and the log brings it whenever there are some), a copy kept in the
// local store, then settled like a single-node change (audit, the acting node's own
// effects, the ack, the line).
func (h *Hub) finishRoom(t *roomToken, seq uint64) {
	if t.ch.room != nil {
		h.applyRoomAt(seq, t.ch.room)
		h.listRoomInRedis(t.ch.room)
		h.announceInvite(t.ch.room)
	}
	if t.ch.onSeq != nil {
		t.ch.onSeq(seq)
	}
	ch := t.ch
	ch.erase = nil // applied from the log
	writes := ch.writes
	if ch.audit != nil {
		writes = append(writes, h.auditWrite(ch.audit))
	}
	h.bp.Submit(writes, func(error) {})
	ch.room = nil // applied above
	h.settle(t.c, t.env, ch, nil)
}

// failRoom answers a room change Redis did not take: nothing changed anywhere. A
// conversation whose first record lost to another node's (both opened it at once) is
// read again and the open_dm dispatched on it: it joins the one conversation there is.
func (h *Hub) failRoom(t *roomToken, err error) {
	if errors.Is(err, cluster.ErrStale) && t.ch.stale != nil {
		h.leaveFlight(t.ch)
		t.ch.stale()
		return
	}
	if e := t.ch.room; errors.Is(err, cluster.ErrStale) && e != nil && e.Created && isDMName(e.Name) &&
		t.env != nil && t.env.Type == "open_dm" {
		h.leaveFlight(t.ch)
		if _, ok := h.clients[t.c]; ok {
			h.refreshRoom(e.Name, command{client: t.c, env: t.env})
		}
		return
	}
	if errors.Is(err, cluster.ErrStale) {
		h.refuseLater(t.c, t.env, codeBusy, "the room was changed on another node; nothing changed, try again")
	} else {
		h.log.Error("room change not written to redis; not applied", "err", err)
		h.unavailableLater(t.c, t.env)
		if e := t.ch.room; e != nil && e.Created {
			h.unlistUnmade(e.Name)
		}
	}
	h.leaveFlight(t.ch)
}

// installRoomState puts a room's record read from Redis (at revision rev; body nil:
// Redis has none) in place of this node's copy, when it is newer.
func (h *Hub) installRoomState(name string, rev uint64, body []byte) {
	known := h.roomRev[name]
	if rev < known || (rev == known && rev != 0) {
		return
	}
	var e *roomEntry
	if body != nil {
		var ok bool
		if e, ok = parseRoomBody(body); !ok || e.Name != name {
			h.log.Warn("room record unreadable; keeping this node's copy", "room", name)
			return
		}
	}
	h.roomRev[name] = rev
	switch {
	case e == nil || e.Info == nil:
		// No room (never made, or deleted). The lobby exists without a record; a room
		// being made here, or with members here, is left to its own change.
		if name != lobby && h.creating[name] == "" && h.rooms[name] == nil {
			h.dropRoom(name)
		}
	default:
		if e.Created {
			e.Info.FirstID = rev
		}
		h.installGroup(rev, e)
		h.putRoom(e.Info)
		h.evictRefused(name)
	}
}

// evictRefused takes out of a room the connections whose users its record no longer
// admits: banned (kicked with ban true), or, in a private room or a conversation, no
// longer a member and not an admin (kicked). A user who entered on an older copy of
// the record while the change was on its way is put where the change leaves them.
//
// It closes the joiner's race on a room this node does not follow: the join reads the
// record from Redis (refreshRoom) and enters on it; the feed then opens the room with
// one script that reads the room's top id and its record together (Feed.RoomState)
// and follows the log only after that top. A kick or ban sequenced between the two
// reads is below the top, so its entry is never delivered here; the record of the
// second read, installed at the same top (cluster.Opened), holds its effect, and
// this is where it is applied. A public room's kick needs nothing: the joiner's entry
// is ordered after the kick, as a join after a kick is allowed.
func (h *Hub) evictRefused(name string) {
	r, ri := h.rooms[name], h.meta[name]
	if r == nil || ri == nil {
		return
	}
	var banEv, kickEv []byte
	for c := range r.clients {
		if _, banned := ri.Bans[c.user.ID]; banned {
			if banEv == nil {
				banEv = appendObject(nil, "kicked", name, func(b []byte) []byte { return append(b, `,"ban":true`...) })
			}
			h.removeUser(r, c.user.ID, banEv)
			continue
		}
		if h.visible(c.user, name) == nil {
			if kickEv == nil {
				kickEv = appendObject(nil, "kicked", name, func(b []byte) []byte { return append(b, `,"ban":false`...) })
			}
			h.removeUser(r, c.user.ID, kickEv)
		}
	}
}

// staleRoom names the room a command acts on when, in cluster mode, this node's copy
// of its record may be old (nobody here follows the room's log) and the command has
// not just read it.
func (h *Hub) staleRoom(cmd command) (string, bool) {
	if h.feed == nil || cmd.fresh || cmd.env == nil {
		return "", false
	}
	env := cmd.env
	if !commandTable[env.Type].room && env.Type != "join" && env.Type != "create" {
		return "", false
	}
	if validRoomRef(env.Room) != nil || !h.roomsInRedis(env.Room) {
		return "", false
	}
	if lf := h.feeds[env.Room]; lf != nil && lf.ready {
		return "", false
	}
	return env.Room, true
}

// refreshRoom reads a room's record from Redis off the hub's loop, then dispatches
// cmd again on it; commands for the same room share one read.
func (h *Hub) refreshRoom(name string, cmd command) {
	if w, ok := h.refreshes[name]; ok {
		if len(w) >= maxRefreshWaiting {
			h.refuseRefresh(cmd)
			return
		}
		h.refreshes[name] = append(w, cmd)
		return
	}
	if len(h.refreshes) >= maxRefreshing {
		h.refuseRefresh(cmd)
		return
	}
	h.refreshes[name] = []command{cmd}
	feed := h.feed
	h.goTask(taskRoomRead, func() {
		ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
		st, err := feed.RoomState(ctx, name)
		cancel()
		h.completions <- func() { h.refreshed(name, st, err) }
	}, func() { h.refreshFailed(name) })
}

// refreshFailed gives up the commands that waited for a record read that panicked
// (tasks.go): each is answered `internal` (on the reply channel of one whose readPump
// waits), and the room's next command reads the record afresh.
func (h *Hub) refreshFailed(name string) {
	cmds := h.refreshes[name]
	delete(h.refreshes, name)
	for _, cmd := range cmds {
		h.cmdFailed(cmd)
	}
}

// refuseRefresh answers busy to a command that cannot wait for a record read; a read
// no client asked for (the rooms index's news) is dropped, and the next command about
// the room reads it anyway.
func (h *Hub) refuseRefresh(cmd command) {
	if cmd.client == nil {
		return
	}
	h.refuseCmd(cmd, newProtoError(codeBusy, "the server is busy; try again"))
}

// refreshed installs a record read for the waiting commands and dispatches them
// again; when Redis did not answer they are refused with unavailable.
func (h *Hub) refreshed(name string, st cluster.RoomState, err error) {
	cmds := h.refreshes[name]
	delete(h.refreshes, name)
	if err == nil {
		h.installRoomState(name, st.Rev, st.Body)
	}
	for _, cmd := range cmds {
		if cmd.client == nil && cmd.fn != nil && err == nil {
			cmd.fn() // the server's own need of the record (announceInvite)
			continue
		}
		if _, ok := h.clients[cmd.client]; !ok {
			continue
		}
		if err != nil {
			if cmd.reply != nil {
				h.refuseCmd(cmd, newProtoError(codeUnavailable, "the cluster store cannot be reached; try again"))
			} else {
				h.unavailableLater(cmd.client, cmd.env)
			}
			continue
		}
		cmd.fresh = true
		h.dispatch(cmd)
	}
}

// loadClusterRooms puts the rooms of the cluster's index, with their records read from
// Redis, in place of the local store's copy (Redis is the source of truth), at start-up
// before the hub runs, conversations included. It returns each room's revision, for
// the hub.
func loadClusterRooms(ctx context.Context, cn *clusterNode, cc *clusterControl, state *hubState, max int) (map[string]uint64, error) {
	names, err := cc.ctl.LoadRooms(ctx, cc.app.log)
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	if len(names) > max {
		cc.app.log.Warn("rooms index holds more rooms than -max-rooms; loading the first", "rooms", len(names), "max", max)
		names = names[:max]
	}
	left := 0
	for name := range state.rooms {
		if _, listed := slices.BinarySearch(names, name); !listed && isDMName(name) {
			left++ // one an older version kept on this node only: its record is not Redis's
		}
		delete(state.rooms, name)
	}
	if left > 0 {
		cc.app.log.Warn("conversations of the local store not in the cluster's index left out", "conversations", left)
	}
	for name := range state.mlsGroups {
		if !isDMName(name) {
			delete(state.mlsGroups, name) // the records carry the groups
		}
	}
	revs := map[string]uint64{}
	for _, name := range append(names, lobby) {
		rctx, cancel := context.WithTimeout(ctx, historyReadTimeout)
		st, forged, err := cluster.ReadRoomState(rctx, cn.client, cn.keys, cn.sealer, name)
		cancel()
		if err != nil {
			return nil, err
		}
		e, ok := parseRoomBody(st.Body)
		if forged || (st.Body != nil && (!ok || e.Name != name)) {
			cc.app.log.Warn("room record unreadable; room left out", "room", name)
			continue
		}
		revs[name] = st.Rev
		if e == nil || e.Info == nil {
			continue // deleted, or the lobby without a record
		}
		if e.Created {
			e.Info.FirstID = st.Rev
		}
		state.rooms[name] = e.Info
		if g := groupOfEntry(st.Rev, e); g != nil {
			state.mlsGroups[name] = g
		}
	}
	return revs, nil
}

// listRoomInRedis, on the node that made or deleted a room, records it in the cluster's rooms
// index, which tells every node (clusterControl.apply). It does not hold up the change:
// a failure leaves the room unlisted on nodes nobody there has used it on, and is logged.
func (h *Hub) listRoomInRedis(e *roomEntry) {
	cc := h.app.ctl
	if cc == nil || (!e.Created && e.Info != nil) {
		return
	}
	name, exists, log := e.Name, e.Info != nil, h.log
	ok := cc.submit(ctlJob{
		run: func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.IndexRoom(ctx, name, exists)
			return err
		},
		done: func(err error) {
			if err != nil {
				log.Warn("rooms index not updated", "room", name, "err", err)
			}
		},
	})
	if !ok {
		log.Warn("rooms index not updated: control queue full", "room", name)
	}
}

// announceInvite, on the node that made an invitation, tells the invitee's connections
// here and, through the control log, on every other node: an invitee is rarely in the
// room, so their node seldom follows its log. Each node reads the room's record first, so
// the invitee's join there finds the invitation.
func (h *Hub) announceInvite(e *roomEntry) {
	iv, cc := e.Invite, h.app.ctl
	if iv == nil {
		return
	}
	h.tellInvited(e.Name, iv)
	if cc == nil {
		return
	}
	body, _ := json.Marshal(iv)
	name, log := e.Name, h.log
	if !cc.submit(ctlJob{
		run: func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.Announce(ctx, cluster.OpInvite, name, body)
			return err
		},
		done: func(err error) {
			if err != nil {
				log.Warn("invitation not announced to the other nodes", "room", name, "err", err)
			}
		},
	}) {
		log.Warn("invitation not announced to the other nodes: control queue full", "room", name)
	}
}

// invitedElsewhere is announceInvite's other side: a node told of an invitation reads
// the room's record, then tells the invitee's connections here.
func (h *Hub) invitedElsewhere(room string, value json.RawMessage) {
	var iv invitation
	if json.Unmarshal(value, &iv) != nil || validRoom(room) != nil {
		return
	}
	h.refreshRoom(room, command{fn: func() { h.tellInvited(room, &iv) }})
}

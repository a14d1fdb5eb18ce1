package main

import (
	"context"
	"maps"

	"modified-chat/internal/cluster"
	"modified-chat/internal/store"
)

// Security state (global bans and roles, room records with their roles, bans and
// invitations, the run-time settings) changes only once the store has the change.
//
// A handler decides on the state as it is, builds the next state beside it (a copy,
// never the live record) and hands both to commit. commit submits the writes and
// returns at once: the hub's loop never waits on the disk. When the writer's commit
// completes, its done callback comes back through h.completions and settle runs on
// the hub goroutine: on success the change is applied to memory and its effects happen
// (connections closed, events sent, the ack); on failure nothing is applied and the
// client gets `store_failed`. A full store queue is refused with `busy` before anything
// is submitted. So a change is either applied and durable, or not applied and
// answered with an error: memory can never hold a ban or a demotion the next restart
// would silently revert.
//
// Lost updates are ruled out by taking turns: while a change to a record is in flight
// (submitted, not yet settled), a command that would change the same record waits in
// that record's line on the hub, and is dispatched again (permission checks and all)
// once the change before it has settled. So every change is computed from the durable
// state of its record, and an owner inviting ten people in a row gets ten acks. The
// lines are bounded (DoS hardening: waiting commands cost the hub memory); a command
// finding its line full is refused with `busy`.

// change is one security-state change on its way to the store.
type change struct {
	// key names the record the change is computed from and writes (see the *Key
	// functions); while it is in flight, other changes to it wait (see waitTurn).
	key    string
	writes []store.Write
	audit  *auditEntry
	// apply changes the hub's memory and makes the change's effects happen. It runs on
	// the hub goroutine once the writes are durable, and only then.
	apply func()
	// release, when set, runs once the change leaves flight, applied or not (it undoes
	// bookkeeping done at submission, such as counting a room being created).
	release func()
	// noAck leaves out the ack: the change answers with something else (an accepted
	// invitation answers its join with `joined`).
	noAck bool
	// ctl, in cluster mode, writes the change to the global control log; it is then
	// applied once Redis has it (commitCtl), and every other node applies it from the
	// log. nil on a single node.
	ctl func(context.Context, *cluster.Ctl) error
	// room, for a change to a room record, is the next record and the effects every
	// node holding the room's members must make (roomchange.go); it is applied before
	// apply, which then holds only what the acting node alone does (its answer, the
	// actor's own join). In cluster mode it is an entry of the room's log
	// (clusterrooms.go).
	room *roomEntry
	// erase, for a message deletion, is applied like room: before apply, in cluster
	// mode as an entry of the room's log.
	erase *erasure
	// onSeq, in cluster mode, runs with the id Redis gave the room's entry, once it is
	// applied here; stale, when set, runs instead of answering busy when Redis refused
	// the change as computed from an old revision (e2eecluster.go).
	onSeq func(seq uint64)
	stale func()
}

// Record keys for changes in flight, one namespace per kind of record.
const settingsKey = "settings"

// Tunables of the lines of commands waiting for a record.
const (
	// maxWaitingPerRecord bounds one record's line: more than a person clicks, far
	// less than a flood.
	maxWaitingPerRecord = 64
	// maxWaiting bounds all lines together.
	maxWaiting = 4096
)

// flight is a record with a change in flight, and the commands waiting for it.
type flight struct {
	waiting []command
}

// roomKey names a room's durable record.
func roomKey(name string) string { return "room/" + name }

// grantKey names a user's run-time global role.
func grantKey(userID string) string { return "grant/" + userID }

// banKey names a user's global ban.
func banKey(userID string) string { return "ban/" + userID }

// waitTurn reports whether key has a change in flight. If so, c's command env is
// queued to run again once that change has settled, or refused with busy when the
// line is full; either way the caller stops.
func (h *Hub) waitTurn(key string, c *Client, env *envelope) bool {
	f := h.inflight[key]
	if f == nil {
		return false
	}
	if c == nil || len(f.waiting) >= maxWaitingPerRecord || h.waiting >= maxWaiting {
		h.refuseLater(c, env, codeBusy, "that is being changed right now; try again")
		return true
	}
	f.waiting = append(f.waiting, command{client: c, env: env})
	h.waiting++
	return true
}

// commit submits a change made by c's command env (c and env are nil for changes no
// client asked for) and applies it once durable; see the comment at the top of this file.
// c's answer is the ack (for a ref), or `busy` or `store_failed`, in which case
// nothing changed.
func (h *Hub) commit(c *Client, env *envelope, ch change) {
	if h.waitTurn(ch.key, c, env) {
		if ch.release != nil {
			ch.release()
		}
		return
	}
	if ch.ctl != nil {
		h.commitCtl(c, env, ch)
		return
	}
	if ch.room != nil && h.roomsInRedis(ch.room.Name) {
		h.commitRoomLog(c, env, ch)
		return
	}
	if ch.erase != nil && h.roomsInRedis(ch.erase.Room) {
		h.commitErasure(c, env, ch)
		return
	}
	writes := ch.writes
	if ch.audit != nil {
		writes = append(writes, h.auditWrite(ch.audit))
	}
	h.inflight[ch.key] = &flight{}
	done := func(err error) {
		// Called on the writer's goroutine: hand the result back to the hub, which
		// drains completions in its loop, so this cannot deadlock.
		h.completions <- func() { h.settle(c, env, ch, err) }
	}
	if !h.bp.Submit(writes, done) {
		h.log.Warn("store queue full; change refused")
		h.refuseLater(c, env, codeBusy, "the server is busy; nothing changed, try again")
		h.leaveFlight(ch)
	}
}

// settle finishes a change whose commit completed: applied on success, dropped on
// error. Then the commands waiting for its record take their turn.
func (h *Hub) settle(c *Client, env *envelope, ch change, err error) {
	if err != nil {
		h.log.Error("store write failed; change not applied", "err", err)
		h.refuseLater(c, env, codeStoreFailed, "the change could not be saved; nothing changed")
	} else {
		if ch.audit != nil {
			h.rememberAudit(*ch.audit)
		}
		if ch.room != nil {
			h.applyRoom(ch.room)
		}
		if ch.erase != nil {
			h.applyErasure(ch.erase)
		}
		ch.apply()
		if !ch.noAck && c != nil && env.Ref != "" {
			if _, ok := h.clients[c]; ok {
				h.deliver(c, ackOnly(env.Ref))
			}
		}
	}
	h.leaveFlight(ch)
}

// leaveFlight releases a change's record and dispatches the commands that waited for
// it, in order. The first to change the record puts it in flight again, and the rest
// line up behind it once more.
func (h *Hub) leaveFlight(ch change) {
	f := h.inflight[ch.key]
	delete(h.inflight, ch.key)
	if ch.release != nil {
		ch.release()
	}
	if f != nil {
		h.waiting -= len(f.waiting)
		for _, cmd := range f.waiting {
			if _, ok := h.clients[cmd.client]; ok {
				h.dispatch(cmd)
			}
		}
	}
	if len(h.mlsLater) > 0 {
		h.reconcileAfterFlight(ch.key)
	}
}

// refuseLater is refuse for an answer that may come after c has gone.
func (h *Hub) refuseLater(c *Client, env *envelope, code, msg string) {
	if c == nil {
		h.metrics.rejected.WithLabelValues(code).Inc()
		return
	}
	if _, ok := h.clients[c]; !ok {
		h.metrics.rejected.WithLabelValues(code).Inc()
		return
	}
	h.refuse(c, env, code, msg)
}

// ackOnly is the plain {"type":"ack","ref":...} event.
func ackOnly(ref string) []byte {
	return appendObject(nil, "ack", "", func(b []byte) []byte {
		b = append(b, `,"ref":`...)
		return appendJSONString(b, ref)
	})
}

// clone is a deep copy of a room record: the next state a change builds beside the
// live one, which stays untouched until the change is durable.
func (ri *roomInfo) clone() *roomInfo {
	n := *ri
	n.Roles = maps.Clone(ri.Roles)
	n.Invites = maps.Clone(ri.Invites)
	n.Bans = maps.Clone(ri.Bans)
	if n.Roles == nil {
		n.Roles = map[string]string{}
	}
	if n.Invites == nil {
		n.Invites = map[string]int64{}
	}
	if n.Bans == nil {
		n.Bans = map[string]int64{}
	}
	return &n
}

// putRoom installs a durable room record. An existing record is overwritten in place,
// so live rooms and cached lists holding it see the new state; the private-room
// index follows.
func (h *Hub) putRoom(next *roomInfo) {
	if cur := h.meta[next.Name]; cur != nil {
		h.unindexRoom(cur)
		*cur = *next
		h.indexRoom(cur)
		return
	}
	h.meta[next.Name] = next
	h.indexRoom(next)
}

// dropRoom forgets a deleted room's record.
func (h *Hub) dropRoom(name string) {
	if cur := h.meta[name]; cur != nil {
		h.unindexRoom(cur)
		delete(h.meta, name)
	}
}

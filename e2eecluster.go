package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// End-to-end encrypted rooms in cluster mode. On one node the hub's goroutine sees
// every command of a room one at a time, so "the first commit of an epoch wins" and
// "no application message while a Remove is outstanding" come free. Across nodes the
// room's Redis log gives the same order:
//
//   - A change of a group's Delivery Service state (its creation, the server's
//     proposals, an accepted commit) is a room change: an entry of the room's log that
//     carries the group's next state and the event members get (roomEntry.MLS,
//     MLSEvent), checked by Redis against the room's revision. Of two commits for one
//     epoch made on two nodes, the second was computed from an old revision and is
//     refused; its command is dispatched again on the record read afresh, so its
//     committer gets stale_epoch exactly as on one node. Every node installs the state
//     an entry carries when it applies the entry, and delivers its event at its
//     position; the room's record always holds the state of its revision, so a node
//     that starts following the room reads the group with the room.
//   - An application message is sent "at" the revision its checks ran on (Feed.SayAt):
//     when the room changed since (a Remove was proposed, a commit moved the epoch),
//     Redis refuses it, and it is checked again on the fresh record: commit_required
//     or stale_epoch, never delivered under keys a removed member holds.
//   - Every node signs proposals as one external sender (the seed in Redis,
//     cluster.ExternalSenderSeed). The node that made a membership change proposes
//     it; a node that sees a member's leaf no longer admitted (a change made where
//     the group was not followed) refuses mls_app with commit_required and proposes
//     the Remove itself. Duplicate proposals from two nodes lose the revision check.
//   - A Welcome stays in its commit's entry; the group keeps the entry's id per added
//     device (WelcomeAt), and the node the device joins on reads it from the Stream.
//     The pointer goes, as on one node, once the device showed it joined: its own
//     commit drops it in the commit's entry, and its first mls_app in the log has the
//     node that took it drop it in the next group change it writes (clusterJoined).

// mlsInRedis reports whether an E2EE room's group goes through the room's Redis log:
// in cluster mode, for every room kept in Redis.
func (h *Hub) mlsInRedis(name string) bool { return h.roomsInRedis(name) }

// clone is a copy of a group that a change can modify while the live one stays as it
// is until the change is in the log. Leaves are values; their byte slices are never
// written in place.
func (g *mlsGroup) clone() *mlsGroup {
	n := *g
	n.Leaves = slices.Clone(g.Leaves)
	n.Outstanding = slices.Clone(g.Outstanding)
	n.Welcomes = maps.Clone(g.Welcomes)
	n.WelcomeAt = maps.Clone(g.WelcomeAt)
	n.Updates = maps.Clone(g.Updates)
	return &n
}

// mlsEntryOf is the room entry of a group change: the next state and the event of
// type typ with body (a stampMLS body: `,"field":...`).
func mlsEntryOf(next *mlsGroup, typ string, body []byte) *roomEntry {
	ev := make([]byte, 0, len(body)+1)
	ev = append(append(ev, '{'), body[1:]...)
	return &roomEntry{MLS: next, MLSType: typ, MLSEvent: append(ev, '}')}
}

// mlsChange writes a group change made by c's command cmd (c nil: the server's own)
// to the room's log. ack builds c's answer from the entry's id; skip leaves c's
// connection out of the event (a committer does not get its own commit). When Redis
// refuses it as computed from an old revision, a client's command is dispatched again,
// once, when this node has the newer state (mlsRetry); the server's proposals are
// worked out again then.
func (h *Hub) mlsChange(c *Client, cmd command, ri *roomInfo, e *roomEntry, skip bool, ack func(id uint64) []byte) {
	e.Name, e.Info = ri.Name, ri.clone()
	name := ri.Name
	if skip && c != nil {
		e.Skip = h.markOf(c)
	}
	ch := change{key: roomKey(name), room: e, noAck: true, apply: func() {}}
	ch.onSeq = func(id uint64) {
		if _, live := h.clients[c]; live && ack != nil {
			if a := ack(id); a != nil {
				h.deliver(c, a)
			}
		}
		h.clusterReconcile(name, nil, nil) // what the new state makes due
	}
	rev := h.roomRev[name]
	switch {
	case c == nil:
		ch.stale = func() { h.mlsRetry(name, rev, command{fn: func() { h.clusterReconcile(name, nil, nil) }}) }
	case !cmd.fresh:
		ch.stale = func() { h.mlsRetry(name, rev, command{client: c, env: cmd.env}) }
	}
	h.commit(c, cmd.env, ch)
}

// clusterCommit writes an accepted commit (cmdMLSCommit's checks passed on g) to the
// room's log with its Welcome, if it adds, and the self-update spent, if it is one.
func (h *Hub) clusterCommit(c *Client, cmd command, ri *roomInfo, g *mlsGroup, selfUpdate bool) {
	env := cmd.env
	next := g.clone()
	if selfUpdate {
		next.spendSelfUpdate(devKey(c.user.ID, c.device), h.now())
	}
	added := next.apply()
	// The committer has joined: its Welcome's pointer, if kept, goes with the commit,
	// and so do those of devices seen joining here since the last change.
	delete(next.WelcomeAt, devKey(c.user.ID, c.device))
	delete(next.Welcomes, devKey(c.user.ID, c.device))
	h.dropJoined(ri.Name, next)
	e := mlsEntryOf(next, "mls_commit", commitBody(c, g.Epoch, env.mls.commit))
	if len(added) > 0 {
		e.Welcome = env.mls.welcome
		for _, p := range added {
			e.WelcomeFor = append(e.WelcomeFor, devKey(p.New.User, p.New.Device))
		}
	}
	epoch := next.Epoch
	h.mlsChange(c, cmd, ri, e, true, func(id uint64) []byte { return commitAck(env.Ref, ri.Name, id, epoch) })
}

// mlsAppToken rides with an application message through the feed: its sender, and the
// command to check again when Redis refuses it as sent at an old revision.
type mlsAppToken struct {
	c   *Client
	cmd command
	rev uint64
}

// clusterMLSApp hands an application message to the feed at the revision its checks
// ran on.
func (h *Hub) clusterMLSApp(c *Client, cmd command, body []byte) {
	env := cmd.env
	if !h.app.clusterReady.Load() {
		h.refuseUnavailable(c, env)
		return
	}
	tail := append(append(append([]byte(h.markOf(c)), ' '), body[1:]...), '}') // as a say's tail ends
	stored := clusterBody("mls_app", h.now().UnixMilli(), tail)
	rev := h.roomRev[env.Room]
	if !h.feed.SayAt(env.Room, stored, rev, &mlsAppToken{c: c, cmd: cmd, rev: rev}) {
		h.refuse(c, env, codeBusy, "the server is busy; try again")
	}
}

// mlsAppFailed answers an application message Redis did not take. Refused as sent at
// an old revision, it is checked again (once) on the room's record read afresh.
func (h *Hub) mlsAppFailed(t *mlsAppToken, room string, stale bool) {
	if _, live := h.clients[t.c]; !live {
		return
	}
	switch {
	case stale && !t.cmd.fresh:
		h.mlsRetry(room, t.rev, command{client: t.c, env: t.cmd.env})
	case stale:
		h.refuse(t.c, t.cmd.env, codeBusy, "the room changed while the message was on its way; try again")
	default:
		h.metrics.rejected.WithLabelValues(codeUnavailable).Inc()
		h.deliver(t.c, unavailableEvent(t.cmd.env.Ref, room))
	}
}

// markOf names a connection across the cluster, "<node>:<sid>", so the node it is on
// can leave it out of the event its own MLS message becomes.
func (h *Hub) markOf(c *Client) string {
	if c.sid == 0 {
		h.sids++
		c.sid = h.sids
	}
	return h.app.cluster.sealer.Node() + ":" + strconv.FormatUint(c.sid, 10)
}

// markedConn is the connection of r that mark names, nil when it is on another node
// (or gone).
func (h *Hub) markedConn(r *room, mark string) *Client {
	node, sid, ok := strings.Cut(mark, ":")
	if !ok || node != h.app.cluster.sealer.Node() {
		return nil
	}
	n, err := strconv.ParseUint(sid, 10, 64)
	if err != nil {
		return nil
	}
	for m := range r.clients {
		if m.sid == n {
			return m
		}
	}
	return nil
}

// mlsAppSender is the connection of r an mls_app entry's body names as its sender, to
// leave out (the sender cannot decrypt its own message; it gets the ack); nil for any
// other entry.
func (h *Hub) mlsAppSender(r *room, body []byte) *Client {
	typ, rest, ok := bytes.Cut(body, []byte{' '})
	if !ok || string(typ) != "mls_app" {
		return nil
	}
	_, rest, _ = bytes.Cut(rest, []byte{' '})
	mark, _, _ := bytes.Cut(rest, []byte{' '})
	return h.markedConn(r, string(mark))
}

// mlsRetry dispatches again, once, a command Redis refused as computed from an old
// revision of the room (rev), when this node has the newer state. A room followed here
// gets it from its log: the command runs as soon as an entry after rev is applied here
// (reading the record instead would skip the effects of the entries in between, such
// as a role change's events). A room not followed here has its record read afresh.
func (h *Hub) mlsRetry(name string, rev uint64, cmd command) {
	cmd.fresh = true
	if lf := h.feeds[name]; lf == nil || !lf.ready {
		h.refreshRoom(name, cmd)
		return
	}
	if h.roomRev[name] > rev {
		h.mlsParked[name] = append(h.mlsParked[name], cmd)
		h.unpark(name) // the newer entry came first
		return
	}
	if len(h.mlsParked[name]) >= maxRefreshWaiting {
		if cmd.client != nil {
			h.refuseCmd(cmd, newProtoError(codeBusy, "the server is busy; try again"))
		}
		return
	}
	h.mlsParked[name] = append(h.mlsParked[name], cmd)
}

// recheckRoom, in cluster mode, looks again before a command about a room followed
// here is refused no_such_room: this node may not have applied yet an invitation
// another node acked a moment ago (the invitee hears of it through the control log,
// this node applies it from the room's log). It reads the room's revision from Redis
// off the hub's loop; when Redis is ahead, the command runs again (once) after the next
// room entry is applied here, else it is refused. It reports whether it took the
// command.
func (h *Hub) recheckRoom(cmd command) bool {
	name := cmd.env.Room
	if h.feed == nil || cmd.fresh || cmd.client == nil || validRoom(name) != nil || !h.roomsInRedis(name) {
		return false
	}
	if lf := h.feeds[name]; lf == nil || !lf.ready || h.rechecks >= maxRefreshing {
		return false // not followed: staleRoom read the record just now
	}
	feed := h.feed
	h.rechecks++
	h.goTask(taskRoomRecheck, func() {
		ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
		st, err := feed.RoomState(ctx, name)
		cancel()
		h.completions <- func() {
			h.rechecks--
			if _, live := h.clients[cmd.client]; !live {
				return
			}
			if err != nil || st.Rev <= h.roomRev[name] {
				cmd.fresh = true
				h.dispatch(cmd) // refused now, or taken on what changed meanwhile
				return
			}
			h.mlsRetry(name, st.Rev-1, cmd)
		}
	}, func() {
		h.rechecks--
		h.cmdFailed(cmd)
	})
	return true
}

// unpark dispatches the commands that waited for a room entry to be applied here.
func (h *Hub) unpark(name string) {
	cmds := h.mlsParked[name]
	if len(cmds) == 0 {
		return
	}
	delete(h.mlsParked, name)
	for _, cmd := range cmds {
		switch _, live := h.clients[cmd.client]; {
		case cmd.client == nil && cmd.fn != nil:
			cmd.fn()
		case live:
			h.dispatch(cmd)
		}
	}
}

// installGroup puts the group state a room entry applied at seq carries in place; an
// entry of another group (the room made again) or without one changes nothing.
func (h *Hub) installGroup(seq uint64, e *roomEntry) {
	if g := groupOfEntry(seq, e); g != nil {
		h.mls.groups[e.Name] = g
		if len(h.mlsStash[e.Name]) > 0 {
			h.unstash(e.Name, g)
		}
		if j := h.mlsJoined[e.Name]; len(j) > 0 {
			for k := range j {
				if !g.keepsWelcome(k) {
					delete(j, k) // dropped in the log, by this node or another
				}
			}
			if len(j) == 0 {
				delete(h.mlsJoined, e.Name)
			}
		}
	}
}

// groupOfEntry is the group state a room entry with id seq leaves (nil: none, or of
// another group), each Welcome it carries remembered at seq.
func groupOfEntry(seq uint64, e *roomEntry) *mlsGroup {
	if e.MLS == nil || e.Info == nil || !e.Info.E2EE || !bytes.Equal(e.MLS.GroupID, e.Info.MLSGroup) {
		return nil
	}
	g := e.MLS.clone()
	if len(e.WelcomeFor) > 0 && e.Welcome != nil {
		if g.WelcomeAt == nil {
			g.WelcomeAt = map[string]uint64{}
		}
		for _, d := range e.WelcomeFor {
			g.WelcomeAt[d] = seq
		}
	}
	return g
}

// withGroup puts the room's current group into a change of an E2EE room that is not
// itself a group change (a kick, an invite, a new description), so the record keeps
// the state.
func (h *Hub) withGroup(e *roomEntry) {
	if e.MLS != nil || e.Info == nil || !e.Info.E2EE {
		return
	}
	if g := h.mls.groups[e.Name]; g != nil && bytes.Equal(g.GroupID, e.Info.MLSGroup) {
		e.MLS = g.clone()
	}
}

// mlsEventAt is the event of an MLS entry with id seq, written at ts.
func mlsEventAt(room string, seq uint64, ts int64, typ string, fields json.RawMessage) []byte {
	if len(fields) < 3 || fields[0] != '{' {
		return nil
	}
	b := appendMLSHead(make([]byte, 0, 64+len(room)+len(fields)), typ, room, seq, ts)
	b = append(b, ',')
	return append(b, fields[1:]...)
}

// bodyTS is the time a Stream body was written ("<type> <ts> ...").
func bodyTS(body []byte) int64 {
	_, rest, _ := bytes.Cut(body, []byte{' '})
	ts, _, _ := bytes.Cut(rest, []byte{' '})
	n, _ := strconv.ParseInt(string(ts), 10, 64)
	return n
}

// deliverMLSEntry delivers an MLS entry's event to this node's members of room r (but
// the actor's connection when its change says so), and its Welcome to the connections
// of the devices it adds.
func (h *Hub) deliverMLSEntry(r *room, seq uint64, body []byte, e *roomEntry) {
	msg := mlsEventAt(e.Name, seq, bodyTS(body), e.MLSType, e.MLSEvent)
	if msg == nil {
		return
	}
	h.fanOut(r, msg, h.markedConn(r, e.Skip))
	h.metrics.messages.Inc()
	if e.Welcome == nil || e.MLS == nil {
		return
	}
	ev := welcomeEvent(e.Name, seq, e.MLS.Epoch, e.Welcome)
	for m := range r.clients {
		if slices.Contains(e.WelcomeFor, devKey(m.user.ID, m.device)) {
			h.deliver(m, ev)
		}
	}
}

// clusterWelcome delivers to c the Welcome kept for its device, read from the commit's
// entry in the room's Stream off the hub's loop (nothing when the group keeps none for
// it, or on one node).
func (h *Hub) clusterWelcome(c *Client, room string, g *mlsGroup) {
	if g == nil || c.device == "" || !h.mlsInRedis(room) {
		return
	}
	key := devKey(c.user.ID, c.device)
	id, ok := g.WelcomeAt[key]
	if !ok {
		return
	}
	feed := h.feed
	h.goTask(taskWelcomeRead, func() {
		ctx, cancel := context.WithTimeout(context.Background(), historyReadTimeout)
		it, found, err := feed.Entry(ctx, room, id)
		cancel()
		h.completions <- func() {
			if _, live := h.clients[c]; !live || err != nil || !found {
				return
			}
			e, ok := parseRoomBody(it.Body)
			if !ok || e.Name != room || e.Welcome == nil || e.MLS == nil || !slices.Contains(e.WelcomeFor, key) {
				return
			}
			h.deliver(c, welcomeEvent(room, id, e.MLS.Epoch, e.Welcome))
		}
	}, func() {
		// The join was answered already: c hears that its Welcome is not coming.
		if _, live := h.clients[c]; live && c.rooms[room] != nil {
			h.deliver(c, taskFailedEvent("", room))
		}
	})
}

// clusterReconcile is reconcile in cluster mode: the Removes and Adds the room's
// membership makes due go to the log as one mls_proposals change. While a change of
// the room is in flight here, or a take from the KeyPackage directory, it waits for it
// (leaveFlight and the take's answer run it), so it is always worked out from the
// newest state this node has. tell, when set, is a member just entered: told
// no_keypackage when none of their devices could be added.
func (h *Hub) clusterReconcile(name string, extra []uint32, tell *Client) {
	h.reconcileStep(name, extra, tell, true)
}

// maxStashedKPs bounds the KeyPackages taken from the cluster's directory and kept for
// a proposal not yet in the log (DoS hardening: each is one device's, per room).
const maxStashedKPs = 4096

// reconcileStep works out a room's proposals. A device to add takes the KeyPackage
// kept for it in this room (mlsStash) if there is one; otherwise, when mayTake, one is
// taken from the cluster's directory for every such device in one call, and the step
// runs again with them (once: a device with none is then missing). A KeyPackage stays
// kept until the proposal with it is in the log, so a proposal Redis refused as stale
// is made again with the same ones, and none is ever offered to two groups.
func (h *Hub) reconcileStep(name string, extra []uint32, tell *Client, mayTake bool) {
	if h.inflight[roomKey(name)] != nil || h.mlsTaking[name] {
		p := h.mlsLater[name]
		if p == nil {
			p = &pendingReconcile{}
			h.mlsLater[name] = p
		}
		p.extra = append(p.extra, extra...)
		if tell != nil {
			p.tell = append(p.tell, tell)
		}
		return
	}
	ri := h.meta[name]
	g := h.group(ri)
	if g == nil || !g.Ready {
		return
	}
	now := h.now().Unix()
	removes := h.leavesToRemove(ri, g, extra)
	kept := h.mlsStash[name]
	var adds []*kpEntry
	var want []devRef
	missing := h.devicesToAdd(ri, g, removes, extra, func(user, device string) bool {
		if e := kept[devKey(user, device)]; e != nil && e.notAfter >= now {
			adds = append(adds, e)
			return true
		}
		if mayTake {
			want = append(want, devRef{user: user, device: device})
			return true
		}
		return false
	})
	if len(want) > 0 {
		h.mlsTaking[name] = true
		h.clusterTakeKPs(want, func(got []*kpEntry, _ []int, err error) {
			delete(h.mlsTaking, name)
			if err != nil {
				h.log.Warn("KeyPackages not taken from the cluster's directory", "room", name, "err", err)
			}
			for _, e := range got {
				if e != nil {
					h.stashKP(name, e)
				}
			}
			h.reconcileStep(name, extra, tell, false)
			h.reconcileAfterFlight(roomKey(name))
		})
		return
	}
	if tell != nil && missing[tell.user.ID] {
		h.deliver(tell, errorEvent(codeNoKeyPackage, "none of your devices has a KeyPackage: upload some to be added", "", name))
	}
	next := g.clone()
	dropped := h.dropJoined(name, next)
	if len(removes) == 0 && len(adds) == 0 {
		if dropped {
			// Only Welcome pointers go: a group change without an event.
			h.mlsChange(nil, command{}, ri, &roomEntry{MLS: next}, false, nil)
		}
		return
	}
	body := next.addProposals(h.app.mlsKey, removes, adds)
	h.mlsChange(nil, command{}, ri, mlsEntryOf(next, "mls_proposals", body), false, nil)
}

// clusterJoined runs once this node's mls_app from c is in room's log: c's device has
// shown it joined the group, so the pointer to its Welcome, if the group keeps one,
// is to go, as a group change every node applies. The drop rides on the next group
// change this node writes, worked out at once (clusterReconcile: proposals due, or a
// change of the pointers alone) or after the room's change in flight; one written
// elsewhere first leaves it for later. So a device costs the log at most one entry for
// its joining, whatever it sends afterwards: later messages find no pointer. A drop
// lost (refused as stale, or the room's line full) stays asked for and is worked out
// again then, and at the device's next mls_app.
func (h *Hub) clusterJoined(room string, c *Client) {
	g := h.group(h.meta[room])
	if g == nil || c.device == "" || !h.mlsInRedis(room) {
		return
	}
	key := devKey(c.user.ID, c.device)
	if !g.keepsWelcome(key) {
		return
	}
	j := h.mlsJoined[room]
	if j == nil {
		j = map[string]bool{}
		h.mlsJoined[room] = j
	}
	j[key] = true
	h.clusterReconcile(room, nil, nil)
}

// dropJoined deletes from next, a group change being made of room, the Welcome
// pointers of the devices seen joining here (mlsJoined); it reports whether any went.
func (h *Hub) dropJoined(room string, next *mlsGroup) bool {
	dropped := false
	for k := range h.mlsJoined[room] {
		if next.keepsWelcome(k) {
			delete(next.WelcomeAt, k)
			delete(next.Welcomes, k)
			dropped = true
		}
	}
	return dropped
}

// keepsWelcome reports whether the group keeps a Welcome for the device: a pointer
// (WelcomeAt), or the Welcome itself in a group migrated from a single node.
func (g *mlsGroup) keepsWelcome(dev string) bool {
	_, at := g.WelcomeAt[dev]
	_, in := g.Welcomes[dev]
	return at || in
}

// stashKP keeps a KeyPackage taken for a device of room until a proposal with it is
// in the log (dropped, and so used up, when the stash is full).
func (h *Hub) stashKP(room string, e *kpEntry) {
	if h.mlsStashed >= maxStashedKPs {
		h.log.Warn("KeyPackage stash full; a taken KeyPackage is dropped", "room", room)
		return
	}
	m := h.mlsStash[room]
	if m == nil {
		m = map[string]*kpEntry{}
		h.mlsStash[room] = m
	}
	if _, ok := m[devKey(e.user, e.device)]; !ok {
		h.mlsStashed++
	}
	m[devKey(e.user, e.device)] = e
}

// unstash forgets the KeyPackages a room's group state no longer waits for: those in
// its outstanding proposals (they are in the log now) and those of devices that have a
// leaf or are gone.
func (h *Hub) unstash(room string, g *mlsGroup) {
	m := h.mlsStash[room]
	for k, e := range m {
		if g.leafOf(e.user, e.device) >= 0 || g.pendingAdd(e.user, e.device) || h.app.keys.Lookup(e.user, e.device) == nil {
			delete(m, k)
			h.mlsStashed--
		}
	}
	if len(m) == 0 {
		delete(h.mlsStash, room)
	}
}

// pendingReconcile is a reconcile waiting for the room's change in flight.
type pendingReconcile struct {
	extra []uint32
	tell  []*Client
}

// reconcileAfterFlight runs the reconcile that waited for a room's change, once the
// room has none in flight.
func (h *Hub) reconcileAfterFlight(key string) {
	name, ok := strings.CutPrefix(key, "room/")
	if !ok || h.inflight[key] != nil || h.mlsTaking[name] {
		return
	}
	p := h.mlsLater[name]
	if p == nil {
		return
	}
	delete(h.mlsLater, name)
	h.clusterReconcile(name, p.extra, nil)
	for _, c := range p.tell {
		if _, live := h.clients[c]; live {
			h.clusterReconcile(name, nil, c)
		}
	}
}

// migratedGroup is the group an E2EE room's first record in Redis carries when
// migrate-redis moves it (nil for a plain room): the members keep their group, and
// the Welcomes kept for devices not yet joined go with it.
func migratedGroup(state *hubState, ri *roomInfo) *mlsGroup {
	g := state.mlsGroups[ri.Name]
	if !ri.E2EE || g == nil || !bytes.Equal(g.GroupID, ri.MLSGroup) {
		return nil
	}
	if w := state.welcomes.inRecord(ri.Name); len(w) > 0 {
		g = g.clone()
		g.Welcomes = w // a single node keeps them out of the record; Redis's carries them
	}
	return g
}

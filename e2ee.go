package main

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"maps"
	"slices"
	"strconv"

	"modified-chat/internal/mls"
	"modified-chat/internal/store"
)

// bucketMLSGroups keeps each E2EE room's Delivery Service state, by room name.
const bucketMLSGroups = "mls_groups"

// groupIDLen is the length of the group_id the hub picks for a new E2EE room.
const groupIDLen = 16

// mlsLeaf is one occupied leaf of a group as the hub accepted it: whose device, and
// the leaf's signature key and credential identity, which its commits may not change.
// A blank leaf has an empty User.
type mlsLeaf struct {
	User     string `json:"user,omitempty"`
	Device   string `json:"device,omitempty"`
	SigKey   []byte `json:"sig_key,omitempty"`
	Identity []byte `json:"identity,omitempty"`
}

// mlsProposal is one of the hub's outstanding proposals: its reference, and what it
// does (an Add of a device's KeyPackage, or a Remove of a leaf).
type mlsProposal struct {
	Ref   []byte  `json:"ref"`
	Add   bool    `json:"add,omitempty"`
	Leaf  uint32  `json:"leaf,omitempty"` // Remove
	New   mlsLeaf `json:"new,omitempty"`  // Add
	KPRef []byte  `json:"kp_ref,omitempty"`
}

// mlsWelcome is a Welcome kept for a device until it joins the group, in the form a
// group record carries it (Welcomes).
type mlsWelcome struct {
	Event []byte `json:"event"`
}

// mlsGroup is the Delivery Service state of one E2EE room (E2EE.md §3.3).
type mlsGroup struct {
	GroupID     []byte        `json:"group_id"`
	Ready       bool          `json:"ready"`
	Epoch       uint64        `json:"epoch"`
	Leaves      []mlsLeaf     `json:"leaves"`
	Outstanding []mlsProposal `json:"outstanding,omitempty"`
	// Welcomes, by devKey, are only in a record written by an older version (the load
	// moves them into their own buckets, e2ee_welcomes.go) or migrated into Redis with
	// its group (migratedGroup): a single node keeps them out of the record, which is
	// rewritten at every change of the group.
	Welcomes map[string]mlsWelcome `json:"welcomes,omitempty"`
	// WelcomeAt, in cluster mode, is where each added device's Welcome is kept instead:
	// the id of the commit's entry in the room's log (e2eecluster.go).
	WelcomeAt map[string]uint64 `json:"welcome_at,omitempty"`
	// Updates are the self-update budgets of the devices that self-updated lately, by
	// devKey (e2ee_updates.go).
	Updates map[string]mlsBudget `json:"updates,omitempty"`
}

// mlsState is everything of the DS the hub owns: the groups, the KeyPackage
// directory and the Welcomes kept for devices not yet joined.
type mlsState struct {
	groups   map[string]*mlsGroup
	kps      *kpDirectory
	welcomes *welcomeStore
}

// loadMLSGroups reads the groups at start-up.
func loadMLSGroups(s store.Store) (map[string]*mlsGroup, error) {
	groups := map[string]*mlsGroup{}
	err := s.Scan(bucketMLSGroups, func(k, v []byte) error {
		var g mlsGroup
		if json.Unmarshal(v, &g) == nil {
			groups[string(k)] = &g
		}
		return nil
	})
	return groups, err
}

// dropStaleGroups forgets, at start-up, the group records no room holds: that of a
// room deleted by a version that left its record behind (delete_room now deletes it
// in the room's batch), or of an earlier room whose name now holds a plain room or
// another group (group would replace it on first use). It returns the writes that
// delete them and the Welcomes kept for them, for the caller to apply before the hub
// runs, so an older version's leak does not stay on disk for ever.
func dropStaleGroups(st *hubState) []store.Write {
	var writes []store.Write
	for _, name := range slices.Sorted(maps.Keys(st.mlsGroups)) {
		ri := st.rooms[name]
		if ri != nil && ri.E2EE && bytes.Equal(ri.MLSGroup, st.mlsGroups[name].GroupID) {
			continue
		}
		delete(st.mlsGroups, name)
		writes = append(writes, store.Write{Bucket: bucketMLSGroups, Key: []byte(name)})
		writes = append(writes, st.welcomes.dropRoom(name)...)
	}
	return writes
}

// newGroupID picks the group_id of a new E2EE room.
func newGroupID() []byte {
	b := make([]byte, groupIDLen)
	rand.Read(b)
	return b
}

// group returns the DS state of an E2EE room, nil for a plain one. A record left by
// an earlier room of the same name (another group_id) is replaced.
func (h *Hub) group(ri *roomInfo) *mlsGroup {
	if ri == nil || !ri.E2EE {
		return nil
	}
	g := h.mls.groups[ri.Name]
	if g == nil || !bytes.Equal(g.GroupID, ri.MLSGroup) {
		g = &mlsGroup{GroupID: ri.MLSGroup}
		h.mls.groups[ri.Name] = g
		if w := h.mls.welcomes.dropRoom(ri.Name); len(w) > 0 {
			h.persist(nil, "", w, nil) // the earlier room's, for its group
		}
	}
	return g
}

// groupWrite is the store write of a group's state.
func groupWrite(room string, g *mlsGroup) store.Write {
	b, _ := json.Marshal(g)
	return store.Write{Bucket: bucketMLSGroups, Key: []byte(room), Value: b}
}

// leafOf returns the leaf index of a device, or -1.
func (g *mlsGroup) leafOf(user, device string) int {
	for i, l := range g.Leaves {
		if l.User == user && l.Device == device {
			return i
		}
	}
	return -1
}

// pendingAdd reports whether an Add of the device is outstanding.
func (g *mlsGroup) pendingAdd(user, device string) bool {
	for _, p := range g.Outstanding {
		if p.Add && p.New.User == user && p.New.Device == device {
			return true
		}
	}
	return false
}

// pendingRemove reports whether a Remove of the leaf is outstanding.
func (g *mlsGroup) pendingRemove(leaf uint32) bool {
	for _, p := range g.Outstanding {
		if !p.Add && p.Leaf == leaf {
			return true
		}
	}
	return false
}

// hasRemove reports whether any Remove is outstanding (a commit then needs a path).
func (g *mlsGroup) hasRemove() bool {
	for _, p := range g.Outstanding {
		if !p.Add {
			return true
		}
	}
	return false
}

// refs lists the outstanding proposals' references.
func (g *mlsGroup) refs() [][]byte {
	out := make([][]byte, len(g.Outstanding))
	for i, p := range g.Outstanding {
		out[i] = p.Ref
	}
	return out
}

// apply moves the leaf map through a commit of every outstanding proposal, as RFC
// 9420 §12.3 orders them: Removes blank their leaves, then each Add, in order, takes
// the leftmost blank leaf or a new one at the right; blank leaves at the right end
// are dropped (the tree truncates). It returns the added devices.
func (g *mlsGroup) apply() []mlsProposal {
	var adds []mlsProposal
	for _, p := range g.Outstanding {
		if !p.Add && int(p.Leaf) < len(g.Leaves) {
			g.Leaves[p.Leaf] = mlsLeaf{}
		}
	}
	for _, p := range g.Outstanding {
		if !p.Add {
			continue
		}
		adds = append(adds, p)
		placed := false
		for i := range g.Leaves {
			if g.Leaves[i].User == "" {
				g.Leaves[i], placed = p.New, true
				break
			}
		}
		if !placed {
			g.Leaves = append(g.Leaves, p.New)
		}
	}
	for len(g.Leaves) > 0 && g.Leaves[len(g.Leaves)-1].User == "" {
		g.Leaves = g.Leaves[:len(g.Leaves)-1]
	}
	g.Outstanding = nil
	g.Epoch++
	return adds
}

// leafFromKP is the leaf an accepted KeyPackage becomes.
func leafFromKP(e *kpEntry) mlsLeaf {
	return mlsLeaf{User: e.user, Device: e.device, SigKey: bytes.Clone(e.kp.Leaf.SignatureKey), Identity: bytes.Clone(e.kp.Leaf.Credential.Identity)}
}

// e2eeEvent is the `e2ee` field of welcome: the suite and the hub's external sender.
type e2eeEvent struct {
	Suite          int `json:"suite"`
	ExternalSender struct {
		SignatureKey []byte `json:"signature_key"`
		Identity     []byte `json:"identity"`
	} `json:"external_sender"`
}

// welcomeE2EE builds welcome's `e2ee` field.
func (h *Hub) welcomeE2EE() *e2eeEvent {
	if h.hideE2EE {
		return nil
	}
	e := &e2eeEvent{Suite: mls.Suite1}
	e.ExternalSender.SignatureKey = h.app.mlsKey.Public().(ed25519.PublicKey)
	e.ExternalSender.Identity = []byte(mls.ExternalSenderIdentity)
	return e
}

// appendE2EE adds an E2EE room's fields to its `joined` event.
func (h *Hub) appendE2EE(b []byte, ri *roomInfo) []byte {
	g := h.group(ri)
	if g == nil {
		return b
	}
	b = append(b, `,"mls":{"group_id":"`...)
	b = base64.StdEncoding.AppendEncode(b, g.GroupID)
	b = append(b, `","epoch":`...)
	b = strconv.AppendUint(b, g.Epoch, 10)
	b = append(b, `,"ready":`...)
	b = strconv.AppendBool(b, g.Ready)
	return append(b, '}')
}

// fromDev is a connection's `from` with its device: {"id","name","dev"}.
func fromDev(c *Client) []byte {
	b := append([]byte(nil), c.userJSON[:len(c.userJSON)-1]...)
	b = append(b, `,"dev":`...)
	b = appendJSONString(b, c.device)
	return append(b, '}')
}

// epochError is a stale_epoch error carrying the room's epoch.
func epochError(ref, room string, epoch uint64) []byte {
	ev := errorEvent(codeStaleEpoch, "the room's group is at another epoch: process the newer commit first", ref, room)
	ev = append(ev[:len(ev)-1], `,"epoch":`...)
	ev = strconv.AppendUint(ev, epoch, 10)
	return append(ev, '}')
}

// mlsCheck runs the checks every E2EE room command shares, in PROTOCOL.md's order up
// to the epoch, for the full command and for its `bin` announcement alike. It returns
// the room's group, or the refusal (stale says the epoch refusal, which carries the
// epoch).
func (h *Hub) mlsCheck(c *Client, env *envelope, ri *roomInfo) (g *mlsGroup, perr *protoError, stale bool) {
	g = h.group(ri)
	switch {
	case g == nil:
		return nil, newProtoError(codeBadMLS, "this room is not end-to-end encrypted"), false
	case c.rooms[env.Room] == nil:
		return nil, newProtoError(codeNotInRoom, "join the room first"), false
	case env.Type == "mls_app" && ri.Locked && h.perms(c.user, ri)&permExpel == 0:
		return nil, newProtoError(codeReadOnly, "this room is read-only"), false
	case env.Type == "mls_app" && ri.DM && h.dmRefuses(ri.peerOf(c.user.ID), c.user.ID):
		// As for say: the peer blocked the sender (or refuses strangers) since.
		return nil, newProtoError(codeDMRefused, "that user does not take direct messages from you"), false
	case c.device == "" || h.app.keys.Lookup(c.user.ID, c.device) == nil:
		return nil, newProtoError(codeUnknownDevice, "send kp_upload with a live device of yours first"), false
	case env.Type == "mls_group_init":
		if g.Ready {
			return nil, newProtoError(codeStaleEpoch, "the room's group exists already"), false
		}
		return g, nil, false
	case !g.Ready:
		return nil, newProtoError(codeBadMLS, "the room has no group yet"), false
	case env.Epoch != nil && *env.Epoch != g.Epoch:
		return g, newProtoError(codeStaleEpoch, "stale epoch"), true
	case env.Type == "mls_app" && len(g.Outstanding) > 0:
		return nil, newProtoError(codeCommitRequired, "a member must commit the outstanding proposals first"), false
	case env.Type == "mls_app" && h.mlsInRedis(ri.Name) && len(h.leavesToRemove(ri, g, nil)) > 0:
		// A membership change made on another node whose Remove is not proposed yet:
		// nothing is encrypted under keys a removed member holds, on any node.
		h.clusterReconcile(ri.Name, nil, nil)
		return nil, newProtoError(codeCommitRequired, "a member must commit the outstanding proposals first"), false
	}
	return g, nil, false
}

// refuseMLS answers an E2EE refusal, with the epoch for stale_epoch.
func (h *Hub) refuseMLS(c *Client, env *envelope, g *mlsGroup, perr *protoError, stale bool) {
	h.metrics.rejected.WithLabelValues(perr.Code).Inc()
	if stale {
		h.deliver(c, epochError(env.Ref, env.Room, g.Epoch))
		return
	}
	h.deliver(c, errorEvent(perr.Code, perr.Message, env.Ref, env.Room))
}

// announceCheck is the hub's verdict on a `bin` announcement: the room checks of
// dispatch (visibility, send for mls_app) and mlsCheck, so a frame that would be
// refused is dropped unread.
func (h *Hub) announceCheck(c *Client, env *envelope) []byte {
	ri := h.visible(c.user, env.Room)
	if ri == nil {
		return errorEvent(codeNoSuchRoom, "no such room", env.Ref, env.Room)
	}
	if env.Type == "mls_app" && h.perms(c.user, ri)&permSend == 0 {
		return errorEvent(codeForbidden, "you are not allowed to do that", env.Ref, env.Room)
	}
	g, perr, stale := h.mlsCheck(c, env, ri)
	if perr == nil {
		return nil
	}
	h.metrics.rejected.WithLabelValues(perr.Code).Inc()
	if stale {
		return epochError(env.Ref, env.Room, g.Epoch)
	}
	return errorEvent(perr.Code, perr.Message, env.Ref, env.Room)
}

// stampMLS gives an E2EE event its id and time, delivers it to the room's
// connections except skip (nil: all), stores it in the room's history with extra
// writes, and acks the sender with ack (built from the id) once stored.
func (h *Hub) stampMLS(c *Client, ref, room, typ string, body []byte, skip *Client, extra []store.Write, ack func(id uint64) []byte) uint64 {
	id, msg := h.announceMLS(room, typ, body, skip)
	h.storeMLS(c, ref, room, id, msg, extra, ack)
	return id
}

// announceMLS is the first half of stampMLS: it gives the event its id and time and
// delivers it to the room's connections except skip. The caller stores it with
// storeMLS, with the writes its id decides (a commit's Welcome rows).
func (h *Hub) announceMLS(room, typ string, body []byte, skip *Client) (id uint64, msg []byte) {
	id = h.bp.Next(room)
	msg = appendMLSHead(make([]byte, 0, 64+len(room)+len(body)), typ, room, id, h.now().UnixMilli())
	msg = append(msg, body...)
	msg = append(msg, '}')
	if r := h.rooms[room]; r != nil {
		h.fanOut(r, msg, skip)
	}
	h.metrics.messages.Inc()
	return id, msg
}

// storeMLS is the second half of stampMLS: the event msg with its id goes into the
// room's history in one batch with extra, and c gets ack once that batch is durable.
// An event that changes the group carries the group's new record in extra: an acked
// commit whose new state could be lost in a crash between two batches would leave the
// hub's epoch behind every client's, and the room's E2EE stuck.
func (h *Hub) storeMLS(c *Client, ref, room string, id uint64, msg []byte, extra []store.Write, ack func(id uint64) []byte) {
	writes := append(historyWrites(room, id, msg), extra...)
	var a []byte
	if c != nil && ack != nil {
		a = ack(id)
	}
	h.persistAck(c, ref, a, writes, nil)
}

// fanOut queues one event for every connection of r but skip (nil: all), sharing its
// bytes, and counts the room's deliveries as a broadcast does.
func (h *Hub) fanOut(r *room, msg []byte, skip *Client) {
	shared := &msg
	for m := range r.clients {
		if m != skip {
			h.enqueue(m, shared)
		}
	}
	h.metrics.deliveries.Add(float64(len(r.clients)))
}

// appendMLSHead appends the start of an E2EE event, up to its time:
// `{"type":T,"room":R,"id":N,"ts":TS`; its own fields follow, each after a comma.
func appendMLSHead(b []byte, typ, room string, id uint64, ts int64) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, `","room":`...)
	b = appendJSONString(b, room)
	b = append(b, `,"id":`...)
	b = strconv.AppendUint(b, id, 10)
	b = append(b, `,"ts":`...)
	return strconv.AppendInt(b, ts, 10)
}

// appendB64Field appends `,"name":"<base64>"`.
func appendB64Field(b []byte, name string, v []byte) []byte {
	b = append(b, `,"`...)
	b = append(b, name...)
	b = append(b, `":"`...)
	b = base64.StdEncoding.AppendEncode(b, v)
	return append(b, '"')
}

// reconcile brings a group's membership in line with the room's: it proposes the
// Remove of every leaf whose user is no longer a member (or is banned) or whose device
// is no longer live, and, once the group exists, the Add of every live device of a
// member that has a KeyPackage and no leaf. extra are proposals asked for explicitly
// (mls_resync). All new proposals go out in one mls_proposals event. It returns the
// members who could not be added for want of a KeyPackage.
func (h *Hub) reconcile(ri *roomInfo, g *mlsGroup, extra []uint32) (missing map[string]bool) {
	if !g.Ready {
		return nil
	}
	if h.mlsInRedis(ri.Name) {
		h.clusterReconcile(ri.Name, extra, nil)
		return nil
	}
	removes := h.leavesToRemove(ri, g, extra)
	adds, missing, writes := h.takeForAdds(ri, g, removes, extra)
	if len(removes) == 0 && len(adds) == 0 {
		if len(writes) > 0 {
			h.persist(nil, "", writes, nil)
		}
		return missing
	}
	h.propose(ri.Name, g, removes, adds, writes)
	return missing
}

// takeForAdds takes a KeyPackage from this node's directory for every device that
// needs an Add (devicesToAdd); it returns them, the members none of whose devices has
// a leaf or could be added, and the directory's writes. Devices running low are told
// kp_low.
func (h *Hub) takeForAdds(ri *roomInfo, g *mlsGroup, removes, extra []uint32) (adds []*kpEntry, missing map[string]bool, writes []store.Write) {
	now := h.now()
	missing = h.devicesToAdd(ri, g, removes, extra, func(user, device string) bool {
		e, w := h.mls.kps.take(user, device, now)
		writes = append(writes, w...)
		if e == nil {
			return false
		}
		adds = append(adds, e)
		if n := h.mls.kps.count(user, device); n < kpLow {
			h.tellKPLow(user, device, n)
		}
		return true
	})
	return adds, missing, writes
}

// devicesToAdd calls add for every live device of a member (not banned) that has no
// leaf (or one being resynced: in removes and extra) and no Add outstanding; add
// reports whether the device will be added. It returns the members none of whose
// devices has a leaf, an outstanding Add or is added.
func (h *Hub) devicesToAdd(ri *roomInfo, g *mlsGroup, removes, extra []uint32, add func(user, device string) bool) (missing map[string]bool) {
	missing = map[string]bool{}
	for user := range ri.Roles {
		if _, banned := h.bans[user]; banned {
			continue
		}
		u := h.app.keys.User(user)
		if u == nil {
			// No record in the key directory (never registered a device): nothing
			// to add until one of theirs uploads KeyPackages.
			missing[user] = true
			continue
		}
		found := false
		for _, d := range u.Devices {
			if d.Revoked != 0 {
				continue
			}
			leaf := g.leafOf(user, d.ID)
			resync := leaf >= 0 && containsLeaf(removes, uint32(leaf)) && containsLeaf(extra, uint32(leaf))
			if (leaf >= 0 && !resync) || g.pendingAdd(user, d.ID) || add(user, d.ID) {
				found = true
			}
		}
		if !found {
			missing[user] = true
		}
	}
	return missing
}

// leavesToRemove lists the leaves whose Remove is due and not yet outstanding: their
// user is no longer a member of the room or is banned, their device is no longer
// live, or they are in extra (mls_resync).
func (h *Hub) leavesToRemove(ri *roomInfo, g *mlsGroup, extra []uint32) []uint32 {
	var removes []uint32
	for i, l := range g.Leaves {
		leaf := uint32(i)
		if l.User == "" || g.pendingRemove(leaf) {
			continue
		}
		_, banned := h.bans[l.User]
		if !ri.isMember(l.User) || banned || h.app.keys.Lookup(l.User, l.Device) == nil || containsLeaf(extra, leaf) {
			removes = append(removes, leaf)
		}
	}
	return removes
}

// containsLeaf reports whether leaf is in list.
func containsLeaf(list []uint32, leaf uint32) bool {
	for _, l := range list {
		if l == leaf {
			return true
		}
	}
	return false
}

// propose signs Removes and Adds as the external sender for the group's epoch, makes
// them outstanding and sends them to the room as one mls_proposals event, stored in
// history with the group's new state.
func (h *Hub) propose(room string, g *mlsGroup, removes []uint32, adds []*kpEntry, writes []store.Write) {
	for _, leaf := range removes {
		l := g.Leaves[leaf]
		writes = append(writes, h.mls.welcomes.drop(room, devKey(l.User, l.Device))...)
	}
	body := g.addProposals(h.app.mlsKey, removes, adds)
	h.stampMLS(nil, "", room, "mls_proposals", body, nil, append(writes, groupWrite(room, g)), nil)
}

// addProposals signs Removes and Adds as the external sender for the group's epoch and
// makes them outstanding in g; it returns the body of their mls_proposals event.
func (g *mlsGroup) addProposals(key ed25519.PrivateKey, removes []uint32, adds []*kpEntry) []byte {
	body := []byte(`,"epoch":`)
	body = strconv.AppendUint(body, g.Epoch, 10)
	var msgs, refs, changes []byte
	add := func(p mls.ExternalProposal, change []byte) {
		if len(msgs) > 0 {
			msgs, refs, changes = append(msgs, ','), append(refs, ','), append(changes, ',')
		}
		msgs = append(base64.StdEncoding.AppendEncode(append(msgs, '"'), p.Message), '"')
		refs = append(base64.StdEncoding.AppendEncode(append(refs, '"'), p.Ref), '"')
		changes = append(changes, change...)
	}
	for _, leaf := range removes {
		p := mls.SignExternalProposal(key, g.GroupID, g.Epoch, mls.RemoveProposal(leaf))
		l := g.Leaves[leaf]
		g.Outstanding = append(g.Outstanding, mlsProposal{Ref: p.Ref, Leaf: leaf})
		ch, _ := json.Marshal(map[string]any{"op": "remove", "user": l.User, "device": l.Device, "leaf": leaf})
		add(p, ch)
		delete(g.Welcomes, devKey(l.User, l.Device))
		delete(g.WelcomeAt, devKey(l.User, l.Device))
		delete(g.Updates, devKey(l.User, l.Device))
	}
	for _, e := range adds {
		p := mls.SignExternalProposal(key, g.GroupID, g.Epoch, mls.AddProposal(e.kp))
		g.Outstanding = append(g.Outstanding, mlsProposal{Ref: p.Ref, Add: true, New: leafFromKP(e), KPRef: e.ref})
		ch, _ := json.Marshal(map[string]any{"op": "add", "user": e.user, "device": e.device})
		add(p, ch)
	}
	body = append(body, `,"proposals":[`...)
	body = append(body, msgs...)
	body = append(body, `],"refs":[`...)
	body = append(body, refs...)
	body = append(body, `],"changes":[`...)
	body = append(body, changes...)
	return append(body, ']')
}

// tellKPLow tells a device's connections it is running out of KeyPackages.
func (h *Hub) tellKPLow(user, device string, n int) {
	ev := appendObject(nil, "kp_low", "", func(b []byte) []byte {
		b = append(b, `,"device":`...)
		b = appendJSONString(b, device)
		b = append(b, `,"count":`...)
		return strconv.AppendInt(b, int64(n), 10)
	})
	for o := range h.clientsOf(user) {
		if o.device == device {
			h.deliver(o, ev)
		}
	}
}

// reconcileUser reconciles every E2EE room a user has a leaf in or belongs to, after
// a change to their membership, ban or devices.
func (h *Hub) reconcileUser(user string) {
	for name, g := range h.mls.groups {
		ri := h.meta[name]
		if ri == nil || !ri.E2EE || !bytes.Equal(ri.MLSGroup, g.GroupID) {
			continue
		}
		in := ri.isMember(user)
		for _, l := range g.Leaves {
			in = in || l.User == user
		}
		if in {
			h.reconcile(ri, g, nil)
		}
	}
}

// mlsEntered runs after a connection joined an E2EE room: the user's devices are
// proposed for adding (no_keypackage when none can be), and a Welcome kept for this
// connection's device is delivered.
func (h *Hub) mlsEntered(c *Client, ri *roomInfo) {
	g := h.group(ri)
	if g == nil {
		return
	}
	if h.mlsInRedis(ri.Name) {
		h.clusterReconcile(ri.Name, nil, c)
	} else if missing := h.reconcile(ri, g, nil); missing[c.user.ID] {
		h.deliver(c, errorEvent(codeNoKeyPackage, "none of your devices has a KeyPackage: upload some to be added", "", ri.Name))
	}
	h.handWelcome(c, ri.Name, g)
}

// cmdKPUpload binds the connection to a device of its user and stores the device's
// KeyPackages (checked in the readPump); then every E2EE room of the user can add it.
func (h *Hub) cmdKPUpload(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if h.app.keys.Lookup(c.user.ID, env.Device) == nil {
		h.refuse(c, env, codeUnknownDevice, "that is not a live device of yours")
		return
	}
	// A connection hands over the Welcomes kept for its device when it first speaks
	// for it; a kp_upload repeated for the same device hands over nothing again
	// (DoS hardening: each would re-send every kept Welcome, tens of kB each, for a
	// few bytes; one that comes later reaches the connection live).
	first := c.device != env.Device
	c.device = env.Device
	if h.feed != nil {
		h.clusterKPUpload(c, cmd, first) // the cluster's directory, in Redis (clusterkps.go)
		return
	}
	entries := env.mls.entries
	for i, e := range entries {
		if h.mls.kps.known(e) {
			h.refuse(c, env, codeBadMLS, "kps["+strconv.Itoa(i)+"]: this KeyPackage was uploaded or used before")
			return
		}
		for _, o := range entries[:i] {
			if bytes.Equal(o.ref, e.ref) {
				h.refuse(c, env, codeBadMLS, "kps["+strconv.Itoa(i)+"]: the same KeyPackage twice")
				return
			}
		}
	}
	if h.mls.kps.count(c.user.ID, env.Device)+len(entries) > kpPerDevice {
		h.refuse(c, env, codeKPFull, "a device keeps at most "+strconv.Itoa(kpPerDevice)+" KeyPackages")
		return
	}
	writes := h.mls.kps.add(entries)
	n := h.mls.kps.count(c.user.ID, env.Device)
	var ack []byte
	if env.Ref != "" {
		ack = appendObject(nil, "ack", "", func(b []byte) []byte {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, env.Ref)
			b = append(b, `,"count":`...)
			return strconv.AppendInt(b, int64(n), 10)
		})
	}
	h.persistAck(c, env.Ref, ack, writes, nil)
	if n < kpLow {
		h.tellKPLow(c.user.ID, env.Device, n)
	}
	if len(entries) > 0 {
		h.reconcileUser(c.user.ID) // may use some, telling kp_low again
	}
	if first {
		h.handOverWelcomes(c)
	}
}

// handOverWelcomes delivers to c the Welcomes kept for its device in the rooms it is
// in: the single node's from memory, the cluster's read from their commits' entries.
func (h *Hub) handOverWelcomes(c *Client) {
	for name := range c.rooms {
		h.handWelcome(c, name, h.group(h.meta[name]))
	}
}

// cmdGroupInit creates an E2EE room's group: the first device to send a valid one
// becomes leaf 0; then the hub proposes every other member device.
func (h *Hub) cmdGroupInit(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	g, perr, stale := h.mlsCheck(c, env, ri)
	if perr != nil {
		h.refuseMLS(c, env, g, perr, stale)
		return
	}
	e := env.mls.creator
	if e == nil || e.device != c.device {
		h.refuse(c, env, codeBadMLS, "key_package must be your connection's device's")
		return
	}
	if _, err := mls.CheckGroupInfo(env.mls.groupInfo, g.GroupID, 0); err != nil {
		h.refuse(c, env, codeBadMLS, "group_info: "+err.Error())
		return
	}
	body := []byte(`,"epoch":0`)
	body = appendB64Field(body, "group_info", env.mls.groupInfo)
	ack := func(id uint64) []byte {
		if env.Ref == "" {
			return nil
		}
		return ackEvent(env.Ref, ri.Name, id)
	}
	if h.mlsInRedis(ri.Name) {
		next := g.clone()
		next.Ready, next.Epoch, next.Leaves, next.Outstanding = true, 0, []mlsLeaf{leafFromKP(e)}, nil
		h.mlsChange(c, cmd, ri, mlsEntryOf(next, "mls_group_info", body), false, ack)
		return
	}
	g.Ready, g.Epoch, g.Leaves, g.Outstanding = true, 0, []mlsLeaf{leafFromKP(e)}, nil
	h.stampMLS(c, env.Ref, ri.Name, "mls_group_info", body, nil, []store.Write{groupWrite(ri.Name, g)}, ack)
	h.reconcile(ri, g, nil)
}

// cmdMLSCommit accepts the first valid commit of an epoch (PROTOCOL.md, "Commits"):
// the hub's goroutine sees commits one at a time, so "first" is free, and every later
// one for the same epoch is stale.
func (h *Hub) cmdMLSCommit(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	g, perr, stale := h.mlsCheck(c, env, ri)
	if perr != nil {
		h.refuseMLS(c, env, g, perr, stale)
		return
	}
	invalid := func(why string) {
		h.metrics.rejected.WithLabelValues(codeCommitInvalid).Inc()
		h.deliver(c, errorEvent(codeCommitInvalid, why, env.Ref, env.Room))
	}
	leaf := g.leafOf(c.user.ID, c.device)
	if leaf < 0 {
		invalid("your device has no leaf in this group")
		return
	}
	selfUpdate := len(g.Outstanding) == 0
	if selfUpdate && !h.selfUpdateAllowed(c, g) {
		h.metrics.rejected.WithLabelValues(codeUpdateLimited).Inc()
		h.deliver(c, errorEvent(codeUpdateLimited, "this device updated its keys in this room too often: wait before the next commit", env.Ref, env.Room))
		return
	}
	own := g.Leaves[leaf]
	rules := &mls.CommitRules{GroupID: g.GroupID, Epoch: g.Epoch, Leaf: uint32(leaf), SignatureKey: own.SigKey,
		Identity: own.Identity, Outstanding: g.refs(), PathRequired: len(g.Outstanding) == 0 || g.hasRemove()}
	if _, err := mls.CheckCommit(env.mls.commit, rules); err != nil {
		invalid("commit: " + err.Error())
		return
	}
	if _, err := mls.CheckGroupInfo(env.mls.groupInfo, g.GroupID, g.Epoch+1); err != nil {
		invalid("group_info: " + err.Error())
		return
	}
	var kpRefs [][]byte
	for _, p := range g.Outstanding {
		if p.Add {
			kpRefs = append(kpRefs, p.KPRef)
		}
	}
	switch {
	case len(kpRefs) == 0 && env.mls.welcome != nil:
		invalid("a Welcome comes only with a commit that adds")
		return
	case len(kpRefs) > 0 && env.mls.welcome == nil:
		invalid("a commit that adds needs its Welcome")
		return
	case len(kpRefs) > 0:
		if _, err := mls.CheckWelcome(env.mls.welcome, kpRefs); err != nil {
			invalid("welcome: " + err.Error())
			return
		}
	}
	if h.mlsInRedis(ri.Name) {
		h.clusterCommit(c, cmd, ri, g, selfUpdate)
		return
	}
	if selfUpdate {
		g.spendSelfUpdate(devKey(c.user.ID, c.device), h.now())
	}
	from := g.Epoch
	added := g.apply()
	body := commitBody(c, from, env.mls.commit)
	epoch := g.Epoch
	id, msg := h.announceMLS(ri.Name, "mls_commit", body, c)
	// The commit's entry, the group's new state and the Welcome rows are one batch,
	// acked once it is durable (storeMLS). The committer has joined, if its Welcome
	// was still kept; the added devices' Welcome is written once, beside the group's
	// record, not in it.
	writes := append(h.welcomeJoined(ri.Name, c), groupWrite(ri.Name, g))
	if len(added) > 0 {
		ev := welcomeEvent(ri.Name, id, epoch, env.mls.welcome)
		devs := make([]string, 0, len(added))
		r := h.rooms[ri.Name]
		for _, p := range added {
			devs = append(devs, devKey(p.New.User, p.New.Device))
			if r == nil {
				continue
			}
			for o := range r.clients {
				if o.user.ID == p.New.User && o.device == p.New.Device {
					h.deliver(o, ev)
				}
			}
		}
		writes = append(writes, h.mls.welcomes.keep(ri.Name, id, ev, devs)...)
	}
	h.storeMLS(c, env.Ref, ri.Name, id, msg, writes, func(id uint64) []byte {
		return commitAck(env.Ref, ri.Name, id, epoch)
	})
	h.reconcile(ri, g, nil)
}

// commitBody is the body of an accepted commit's mls_commit event: who committed, the
// epoch it was made in, the commit.
func commitBody(c *Client, from uint64, commit []byte) []byte {
	body := []byte(`,"from":`)
	body = append(body, fromDev(c)...)
	body = append(body, `,"epoch":`...)
	body = strconv.AppendUint(body, from, 10)
	return appendB64Field(body, "commit", commit)
}

// commitAck is the committer's ack: the commit's id and the epoch it leads to (nil
// without a ref).
func commitAck(ref, room string, id, epoch uint64) []byte {
	if ref == "" {
		return nil
	}
	return appendObject(nil, "ack", room, func(b []byte) []byte {
		b = append(b, `,"ref":`...)
		b = appendJSONString(b, ref)
		b = append(b, `,"id":`...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, `,"epoch":`...)
		return strconv.AppendUint(b, epoch, 10)
	})
}

// welcomeEvent is the mls_welcome an added device gets: the commit's id, the epoch it
// joins at, the Welcome.
func welcomeEvent(room string, id, epoch uint64, welcome []byte) []byte {
	return appendObject(nil, "mls_welcome", room, func(b []byte) []byte {
		b = append(b, `,"id":`...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, `,"epoch":`...)
		b = strconv.AppendUint(b, epoch, 10)
		return appendB64Field(b, "welcome", welcome)
	})
}

// cmdMLSApp relays an application message (ciphertext) to the room. The sender,
// which cannot decrypt its own message, gets the ack instead.
func (h *Hub) cmdMLSApp(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	g, perr, stale := h.mlsCheck(c, env, ri)
	if perr != nil {
		h.refuseMLS(c, env, g, perr, stale)
		return
	}
	m, err := mls.ParseMessage(env.mls.msg)
	if err != nil || m.Private == nil || m.Private.ContentType != mls.ContentApplication ||
		!bytes.Equal(m.Private.GroupID, g.GroupID) || m.Private.Epoch != g.Epoch {
		h.refuse(c, env, codeBadMLS, "msg must be an application PrivateMessage of this group and epoch")
		return
	}
	if ri.DM {
		h.pullIntoDM(ri) // the peer sees it without having opened the conversation
		h.announceDM(ri) // and on other nodes (clusterdm.go)
	}
	body := make([]byte, 0, 96+len(c.userJSON)+len(c.device)+base64.StdEncoding.EncodedLen(len(env.mls.msg)))
	body = append(body, `,"from":`...)
	body = append(body, fromDev(c)...)
	body = append(body, `,"epoch":`...)
	body = strconv.AppendUint(body, g.Epoch, 10)
	body = appendB64Field(body, "msg", env.mls.msg)
	if h.mlsInRedis(ri.Name) {
		h.clusterMLSApp(c, cmd, body)
		return
	}
	// A device that sends in the group has joined it: its Welcome, if still kept,
	// goes with the message.
	h.stampMLS(c, env.Ref, ri.Name, "mls_app", body, c, h.welcomeJoined(ri.Name, c), func(id uint64) []byte {
		if env.Ref == "" {
			return nil
		}
		return ackEvent(env.Ref, ri.Name, id)
	})
}

// cmdMLSResync removes the device's leaf and adds it again from a fresh KeyPackage:
// the way back for a device that lost its group state.
func (h *Hub) cmdMLSResync(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	g, perr, stale := h.mlsCheck(c, env, ri)
	if perr != nil {
		h.refuseMLS(c, env, g, perr, stale)
		return
	}
	if !h.mlsInRedis(ri.Name) {
		h.resynced(c, env, ri.Name, h.mls.kps.count(c.user.ID, c.device))
		return
	}
	name := ri.Name
	h.clusterKPCount(c.user.ID, c.device, func(n int, err error) {
		switch _, live := h.clients[c]; {
		case !live:
		case errors.Is(err, errJobFailed):
			h.taskFailed(c, env)
		case err != nil:
			h.refuseUnavailable(c, env)
		default:
			h.resynced(c, env, name, n)
		}
	})
}

// resynced goes on with an mls_resync once the device's KeyPackages are counted (n):
// the Remove of its leaf, and the Add of a fresh KeyPackage when it has one.
func (h *Hub) resynced(c *Client, env *envelope, name string, n int) {
	ri := h.meta[name]
	g := h.group(ri)
	if g == nil {
		return
	}
	var extra []uint32
	if leaf := g.leafOf(c.user.ID, c.device); leaf >= 0 {
		extra = append(extra, uint32(leaf))
	}
	if n == 0 {
		h.refuse(c, env, codeNoKeyPackage, "this device has no KeyPackage: upload some first")
		h.reconcile(ri, g, extra)
		return
	}
	h.reconcile(ri, g, extra)
	if env.Ref != "" {
		h.deliver(c, ackOnly(env.Ref))
	}
}

// init adds the E2EE rows to the command table (filled by commands.go's init, which
// runs first: files initialise in name order).
func init() {
	for k, v := range mlsCommands {
		commandTable[k] = v
	}
}

// mlsCommands are the E2EE rows of the command table.
var mlsCommands = map[string]cmdSpec{
	"kp_upload": {fields: []fieldSpec{mlsFields("device", "kps")}, run: (*Hub).cmdKPUpload},
	// dm: a conversation may be end-to-end encrypted (dm.go), with the same rules.
	"mls_group_init": {fields: []fieldSpec{roomRefField, mlsFields("group_info", "key_package", "bin")},
		room: true, dm: true, run: (*Hub).cmdGroupInit},
	"mls_commit": {fields: []fieldSpec{roomRefField, mlsFields("epoch", "commit", "welcome", "group_info", "bin")},
		room: true, dm: true, run: (*Hub).cmdMLSCommit},
	"mls_app": {fields: []fieldSpec{roomRefField, mlsFields("epoch", "msg", "bin")},
		needs: permSend, room: true, dm: true, run: (*Hub).cmdMLSApp},
	"mls_resync": {fields: []fieldSpec{roomRefField}, room: true, dm: true, run: (*Hub).cmdMLSResync},
}

// mlsLeft ends a non-owner's membership when they leave an E2EE room (PROTOCOL.md:
// in an E2EE room, leave is like a kick by oneself), so their leaves are removed once
// that is stored. The owner stays a member, and so do both members of a conversation:
// leaving one only leaves its live room, whether it is encrypted or not.
func (h *Hub) mlsLeft(c *Client, env *envelope) {
	ri := h.meta[env.Room]
	if ri == nil || !ri.E2EE || ri.DM || !ri.isMember(c.user.ID) || ri.Owner == c.user.ID {
		return
	}
	next := ri.clone()
	delete(next.Roles, c.user.ID)
	user := c.user.ID
	h.commit(c, env, change{
		key:    roomKey(ri.Name),
		writes: []store.Write{next.write()},
		noAck:  true,
		room: &roomEntry{Name: next.Name, Info: next, Expel: user,
			Event: appendObject(nil, "left", next.Name, func(b []byte) []byte { return b })},
		apply: func() { h.reconcileUser(user) },
	})
}

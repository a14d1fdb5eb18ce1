package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"

	"golang.org/x/time/rate"

	"modified-chat/internal/store"
)

// A direct message conversation is a private room of exactly two members whose name is
// derived from the sorted pair of their user ids, so that opening it again, from either
// side, lands in the same room. The name has a ':' in it, which validRoom refuses: a
// `join` or `create` can never make one, take one, or guess its way into one (a DM room
// is visible to its two members only, admins included, and never answers anyone else
// but no_such_room). It is the same room machinery as everywhere else: history, limits,
// deletion, delivery to the members only.

// Direct message tunables.
const (
	// dmPrefix starts every conversation's room name; validRoom refuses ':'.
	dmPrefix = "dm:"
	// dmHashHex is how many hex digits of SHA-256 name a pair (112 bits: no two pairs
	// collide in practice, and the name stays within maxRoomName).
	dmHashHex = 28
	// dmOpenRate and dmOpenBurst bound how fast one user opens new conversations (DoS
	// and spam hardening: no spraying every user with a new DM). Opening one that
	// exists is free.
	dmOpenRate  = rate.Limit(1.0 / 30) // one every 30 seconds
	dmOpenBurst = 5
	// maxDMsPerUser bounds the conversations one user takes part in (each is a room
	// record the server keeps).
	maxDMsPerUser = 500
	// maxBlockedPerUser bounds a user's block list (it is stored with every change).
	maxBlockedPerUser = 1000
	// dmLimitersMax bounds the per-user open buckets the hub keeps (DoS hardening);
	// beyond it, refilled buckets are forgotten, and if none is, opening is refused.
	dmLimitersMax = 10000
	// bucketDMPrefs keeps user id -> dmPrefs.
	bucketDMPrefs = "dm_prefs"
)

// dmPrefs is whom a user takes direct messages from: everyone but Blocked, and when
// RefuseStrangers is set only users they share a room with.
type dmPrefs struct {
	Blocked         []string `json:"blocked"`
	RefuseStrangers bool     `json:"refuse_strangers"`
	// Rev is the cluster's revision of the record (clusterkeys.go); 0 on one node.
	Rev uint64 `json:"rev,omitempty"`
}

// dmName is the room name of the conversation between two users, the same whichever
// of them asks.
func dmName(a, b string) string {
	if b < a {
		a, b = b, a
	}
	sum := sha256.Sum256([]byte(a + "\x00" + b))
	return dmPrefix + hex.EncodeToString(sum[:])[:dmHashHex]
}

// isDMName reports whether name has the shape of a conversation's room name.
func isDMName(name string) bool {
	rest, ok := strings.CutPrefix(name, dmPrefix)
	if !ok || len(rest) != dmHashHex {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if c := rest[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// validRoomRef accepts what a command naming an existing room may name: a room name,
// or a conversation's. Only commands that make rooms (create, and join of a new name)
// insist on validRoom.
func validRoomRef(name string) *protoError {
	if isDMName(name) {
		return nil
	}
	return validRoom(name)
}

// peerOf is the other member of a conversation.
func (ri *roomInfo) peerOf(userID string) string {
	for id := range ri.Roles {
		if id != userID {
			return id
		}
	}
	return userID
}

// peerJSON encodes the other member of a conversation, as seen by userID, as
// {"id","name"}: the name they were last seen with, else the one recorded when the
// conversation was opened.
func (h *Hub) peerJSON(ri *roomInfo, userID string) []byte {
	peer := ri.peerOf(userID)
	name := h.identityOf(peer).Name
	if name == "" {
		name = ri.Names[peer]
	}
	if name == "" {
		name = peer
	}
	return userJSON(peer, name)
}

// appendKind appends the fields that tell a conversation from a room, as seen by
// userID: "kind", and for a conversation "peer".
func (h *Hub) appendKind(b []byte, ri *roomInfo, userID string) []byte {
	if !ri.DM {
		return append(b, `,"kind":"room"`...)
	}
	b = append(b, `,"kind":"dm","peer":`...)
	return append(b, h.peerJSON(ri, userID)...)
}

// dmRefuses reports whether recipient refuses direct messages from sender.
func (h *Hub) dmRefuses(recipient, sender string) bool {
	p := h.dmPrefs[recipient]
	if p == nil {
		return false
	}
	if slices.Contains(p.Blocked, sender) {
		return true
	}
	return p.RefuseStrangers && !h.shareRoom(sender, recipient)
}

// shareRoom reports whether two users share a room other than a conversation: a
// private room both belong to, or a room other than the lobby both are in right now
// (every connection is in the lobby, so it says nothing). It costs the rooms of a, not
// every room.
func (h *Hub) shareRoom(a, b string) bool {
	for name := range h.privateOf["user:"+a] {
		if ri := h.meta[name]; ri != nil && !ri.DM && ri.isMember(a) && ri.isMember(b) {
			return true
		}
	}
	for c := range h.clientsOf(a) {
		for _, r := range c.rooms {
			if !r.info.DM && r.info.Name != lobby && r.members[b] != nil {
				return true
			}
		}
	}
	return false
}

// dmsOf counts the conversations a user takes part in.
func (h *Hub) dmsOf(userID string) int {
	n := 0
	for name := range h.privateOf["user:"+userID] {
		if isDMName(name) {
			n++
		}
	}
	for name, owner := range h.creating {
		if isDMName(name) && (owner == userID || h.creatingPeer[name] == userID) {
			n++
		}
	}
	return n
}

// allowOpen spends one of c's user's tokens for opening a new conversation.
func (h *Hub) allowOpen(userID string) bool {
	now := h.now()
	lim := h.dmLimiters[userID]
	if lim == nil {
		if len(h.dmLimiters) >= dmLimitersMax {
			for id, l := range h.dmLimiters {
				if l.TokensAt(now) >= dmOpenBurst {
					delete(h.dmLimiters, id) // full again: forgetting it changes nothing
				}
			}
			if len(h.dmLimiters) >= dmLimitersMax {
				return false
			}
		}
		lim = rate.NewLimiter(dmOpenRate, dmOpenBurst)
		h.dmLimiters[userID] = lim
	}
	return lim.AllowN(now, 1)
}

// cmdOpenDM opens the conversation between c's user and another user (by id, or by
// the email of a user the server knows), creating it when it does not exist, and
// joins c to it: answered like a join (`joined`, then `history`). Refused with
// dm_refused, and nothing else said, when there is no such user or they do not take
// direct messages from c's user. In cluster mode the conversation's record is read
// from Redis first, so one opened on another node is joined, not made again.
func (h *Hub) cmdOpenDM(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	peer := env.User
	if env.Email != "" {
		peer = ""
		for o := range h.clientsWithEmail(env.Email) {
			peer = o.user.ID
		}
		if peer == "" {
			peer, _ = h.known.byMail(env.Email)
		}
	}
	name := dmName(c.user.ID, peer)
	if lf := h.feeds[name]; h.feed != nil && !cmd.fresh && (lf == nil || !lf.ready) {
		h.refreshRoom(name, cmd) // dispatched again once the record is in place
		return
	}
	if h.openExisting(c, env, peer, name) {
		return
	}
	if h.waitTurn(roomKey(name), c, env) {
		return
	}
	if !h.allowOpen(c.user.ID) {
		h.refuse(c, env, codeRateLimited, "you are opening conversations too fast; try again later")
		return
	}
	_, connected := h.byUser[peer]
	_, known := h.known.lookup(peer)
	if peer != "" && peer != c.user.ID && !connected && !known && h.app.ctl != nil {
		h.peerElsewhere(c, env, peer, name) // a user of another node? (clusterdm.go)
		return
	}
	h.createDM(c, env, peer, name, connected || known)
}

// openExisting opens the conversation name with peer when it exists: a join, and free
// (dm_refused when peer no longer takes direct messages from c's user). It reports
// whether it answered.
func (h *Hub) openExisting(c *Client, env *envelope, peer, name string) bool {
	ri := h.meta[name]
	if ri == nil || !ri.DM || !ri.isMember(c.user.ID) || peer == c.user.ID {
		return false
	}
	if h.dmRefuses(peer, c.user.ID) {
		h.refuse(c, env, codeDMRefused, "that user does not take direct messages from you")
		return true
	}
	h.join(c, &envelope{Type: "join", Room: name, Ref: env.Ref})
	return true
}

// createDM makes the conversation name between c's user and peer (exists: peer is a
// user this server knows), or refuses, once c's user may open one now.
func (h *Hub) createDM(c *Client, env *envelope, peer, name string, exists bool) {
	if h.openExisting(c, env, peer, name) {
		return // made meanwhile (on another node)
	}
	if peer == "" || peer == c.user.ID || !exists || h.dmRefuses(peer, c.user.ID) ||
		h.dmsOf(peer) >= maxDMsPerUser {
		h.refuse(c, env, codeDMRefused, "that user does not take direct messages from you")
		return
	}
	if h.perms(c.user, nil)&permSend == 0 {
		h.refuse(c, env, codeForbidden, "you are not allowed to send messages")
		return
	}
	if len(h.meta)+len(h.creating) >= h.settings().MaxRooms || h.dmsOf(c.user.ID) >= maxDMsPerUser {
		h.refuse(c, env, codeRoomLimit, "no more conversations can be opened")
		return
	}
	if len(c.rooms) >= h.settings().MaxRoomsPerClient {
		h.refuse(c, env, codeTooManyRooms, "you are in too many rooms; leave one first")
		return
	}
	other := h.identityOf(peer)
	ri := newRoomInfo(name, "", true, h.now())
	ri.DM = true
	ri.FirstID = h.bp.Last()
	ri.Roles[c.user.ID] = roomMember
	ri.Roles[peer] = roomMember
	ri.Names = map[string]string{c.user.ID: c.user.Name, peer: other.Name}
	if (env.E2EE == nil || *env.E2EE) && h.hasLiveDevice(c.user.ID) && h.hasLiveDevice(peer) {
		// End-to-end encrypted by default when both can be: its own group, as create
		// with e2ee makes, whose first device to join creates it (e2ee.go; across
		// cluster nodes, e2eecluster.go).
		ri.E2EE, ri.MLSGroup = true, newGroupID()
	}
	h.creating[name] = c.user.ID
	h.creatingPeer[name] = peer
	h.commit(c, env, change{
		key:    roomKey(name),
		writes: []store.Write{ri.write()},
		noAck:  true, // answered with joined
		release: func() {
			delete(h.creating, name)
			delete(h.creatingPeer, name)
		},
		room: &roomEntry{Name: name, Info: ri, Created: true},
		apply: func() {
			if _, ok := h.clients[c]; ok {
				h.join(c, &envelope{Type: "join", Room: name, Ref: env.Ref})
			}
		},
	})
}

// pullIntoDM brings every connection of a conversation's two members into its live
// room before a message is delivered there, so the other side sees it without having
// opened the conversation first (their page lists it from the `joined`). A connection
// already in as many rooms as it may be stays out; it finds the message in history.
// In an end-to-end encrypted conversation a connection brought in also gets the
// Welcome kept for its device, after the history, so it can read what follows.
func (h *Hub) pullIntoDM(ri *roomInfo) {
	g := h.group(ri)
	for id := range ri.Roles {
		for o := range h.clientsOf(id) {
			if o.rooms[ri.Name] == nil && len(o.rooms) < h.settings().MaxRoomsPerClient {
				h.enter(o, ri, "")
				h.sendHistory(o, ri.Name, nil, "")
				h.handWelcome(o, ri.Name, g)
			}
		}
	}
}

// hasLiveDevice reports whether a user has at least one device in the key directory
// that is not revoked: a browser that can take part in an end-to-end encrypted group.
func (h *Hub) hasLiveDevice(userID string) bool {
	u := h.app.keys.User(userID)
	if u == nil {
		return false
	}
	for _, d := range u.Devices {
		if d.Revoked == 0 {
			return true
		}
	}
	return false
}

// cmdDMPrefs changes whom c's user takes direct messages from (block or unblock one
// user, refuse or accept strangers), or with none of those fields only asks. Answered
// with `dm_prefs`, after a change once it is durable; the user's other connections
// get it too.
func (h *Hub) cmdDMPrefs(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	cur := h.dmPrefs[c.user.ID]
	if cur == nil {
		cur = &dmPrefs{}
	}
	if env.Block == "" && env.Unblock == "" && env.RefuseStrangers == nil {
		h.deliver(c, dmPrefsEvent(cur, env.Ref))
		return
	}
	next := &dmPrefs{Blocked: slices.Clone(cur.Blocked), RefuseStrangers: cur.RefuseStrangers}
	if env.Unblock != "" {
		next.Blocked = slices.DeleteFunc(next.Blocked, func(id string) bool { return id == env.Unblock })
	}
	if env.Block != "" && !slices.Contains(next.Blocked, env.Block) {
		if len(next.Blocked) >= maxBlockedPerUser {
			h.refuse(c, env, codeRoomLimit, "your block list is full")
			return
		}
		next.Blocked = append(next.Blocked, env.Block)
		slices.Sort(next.Blocked)
	}
	if env.RefuseStrangers != nil {
		next.RefuseStrangers = *env.RefuseStrangers
	}
	b, _ := json.Marshal(next)
	user := c.user.ID
	h.commitDMPrefs(c, env, user, cur, next, change{
		key:    "dmprefs/" + user,
		writes: []store.Write{{Bucket: bucketDMPrefs, Key: []byte(user), Value: b}},
		noAck:  true, // answered with dm_prefs
		apply: func() {
			h.dmPrefs[user] = next
			for o := range h.clientsOf(user) {
				ref := ""
				if o == c {
					ref = env.Ref
				}
				h.deliver(o, dmPrefsEvent(next, ref))
			}
		},
	})
}

// dmPrefsEvent describes a user's direct-message preferences to them.
func dmPrefsEvent(p *dmPrefs, ref string) []byte {
	blocked := p.Blocked
	if blocked == nil {
		blocked = []string{}
	}
	b, _ := json.Marshal(struct {
		Type            string   `json:"type"`
		Blocked         []string `json:"blocked"`
		RefuseStrangers bool     `json:"refuse_strangers"`
		Ref             string   `json:"ref,omitempty"`
	}{"dm_prefs", blocked, p.RefuseStrangers, ref})
	return b
}

// loadDMPrefs reads every user's direct-message preferences at start-up.
func loadDMPrefs(s store.Store) (map[string]*dmPrefs, error) {
	out := map[string]*dmPrefs{}
	err := s.Scan(bucketDMPrefs, func(k, v []byte) error {
		var p dmPrefs
		if json.Unmarshal(v, &p) == nil {
			out[string(k)] = &p
		}
		return nil
	})
	return out, err
}

package main

import (
	"fmt"
	"testing"
	"time"
)

// The tests in this file pin one authorisation rule each, at the hub, with fake
// clients: every rule here was once breakable without the suite noticing.

// rankedRole is a way to hold an expel rank in a room, with the rank it gives.
type rankedRole struct {
	name string
	rank int
	give func(h *Hub, ri *roomInfo, userID string)
}

// rankedRoles covers every rank, and both ways (room role, global role) to hold the
// middle one.
var rankedRoles = []rankedRole{
	{"member", 0, func(*Hub, *roomInfo, string) {}},
	{"room moderator", 1, func(_ *Hub, ri *roomInfo, id string) { ri.Roles[id] = roomModerator }},
	{"global moderator", 1, func(h *Hub, _ *roomInfo, id string) { h.grants[id] = roleModerator }},
	{"room owner", 2, func(_ *Hub, ri *roomInfo, id string) { ri.Roles[id] = roomOwner }},
	{"admin", 3, func(h *Hub, _ *roomInfo, id string) { h.grants[id] = roleAdmin }},
}

// arenaHub starts a hub with a public room "arena" and the given clients in it, after
// setup has adjusted the room and the hub's grants.
func arenaHub(t *testing.T, setup func(h *Hub, ri *roomInfo), clients ...*Client) *Hub {
	t.Helper()
	h := newTestHub(t, generousLimits)
	h.do(func() {
		ri := newRoomInfo("arena", "dev:founder", false, h.now())
		h.meta[ri.Name] = ri
		setup(h, ri)
	})
	for _, c := range clients {
		h.register <- c
		h.inbound <- command{client: c, env: &envelope{Type: "join", Room: "arena"}}
	}
	for _, c := range clients {
		if evs := drain(t, h, c); types(evs) == "" || !hasEvent(evs, "joined", "arena") {
			t.Fatalf("%s did not get into the arena: %s", c.user.Name, types(evs))
		}
	}
	return h
}

// hasEvent reports whether evs holds an event of type typ for room.
func hasEvent(evs []map[string]any, typ, room string) bool {
	for _, ev := range evs {
		if ev["type"] == typ && ev["room"] == room {
			return true
		}
	}
	return false
}

// errorCode returns the code of the first error event in evs ("" when none).
func errorCode(evs []map[string]any) string {
	for _, ev := range evs {
		if ev["type"] == "error" {
			return ev["code"].(string)
		}
	}
	return ""
}

// TestExpelNeedsHigherRank: for every pair of ranks and both kick and ban, a user may
// expel a user of strictly lower rank only. An equal rank is refused with forbidden
// and the target stays in the room; an expeller without the permission is refused
// the same way.
func TestExpelNeedsHigherRank(t *testing.T) {
	for _, actor := range rankedRoles {
		for _, target := range rankedRoles {
			for _, typ := range []string{"kick", "ban"} {
				name := fmt.Sprintf("%s %s %s", actor.name, typ, target.name)
				t.Run(name, func(t *testing.T) {
					a, b := fakeClient("actor", 64), fakeClient("target", 64)
					h := arenaHub(t, func(h *Hub, ri *roomInfo) {
						actor.give(h, ri, a.user.ID)
						target.give(h, ri, b.user.ID)
					}, a, b)
					h.inbound <- command{client: a, env: &envelope{Type: typ, Room: "arena", User: b.user.ID, Ref: "x"}}
					aEvs, bEvs := drain(t, h, a), drain(t, h, b)
					kicked := hasEvent(bEvs, "kicked", "arena")
					if allowed := target.rank < actor.rank; allowed {
						if !kicked || errorCode(aEvs) != "" {
							t.Fatalf("a %s could not %s a %s: actor got %v", actor.name, typ, target.name, aEvs)
						}
						return
					}
					if kicked || errorCode(aEvs) != codeForbidden {
						t.Fatalf("a %s could %s a %s (rank %d vs %d): actor got %v, target %v",
							actor.name, typ, target.name, actor.rank, target.rank, aEvs, bEvs)
					}
					var inside bool
					h.do(func() { inside = b.rooms["arena"] != nil })
					if !inside {
						t.Fatal("the refused target was taken out of the room")
					}
				})
			}
		}
	}
}

// TestReadOnlyBeatsRoomRole: a global readonly role wins over any room role. A
// readonly room owner (or room moderator) cannot say, send a file, kick, lock or
// invite in their own room.
func TestReadOnlyBeatsRoomRole(t *testing.T) {
	for _, roomRole := range []string{roomOwner, roomModerator} {
		t.Run(roomRole, func(t *testing.T) {
			ro, other := fakeClient("ro", 64), fakeClient("other", 64)
			h := arenaHub(t, func(h *Hub, ri *roomInfo) {
				ri.Roles[ro.user.ID] = roomRole
				h.grants[ro.user.ID] = roleReadOnly
			}, ro, other)
			for _, env := range []*envelope{
				{Type: "say", Room: "arena", Text: "hello"},
				{Type: "kick", Room: "arena", User: other.user.ID},
				{Type: "lock", Room: "arena", Locked: new(true)},
				{Type: "invite", Room: "arena", User: "dev:friend"},
			} {
				cmd := command{client: ro, env: env}
				if env.Type == "say" {
					cmd = sayCmd(ro, "arena", env.Text)
				}
				h.inbound <- cmd
				if code := errorCode(drain(t, h, ro)); code != codeForbidden {
					t.Fatalf("readonly %s: %s got %q, want forbidden", roomRole, env.Type, code)
				}
			}
			reply := make(chan *protoError, 1)
			h.inbound <- command{client: ro, env: &envelope{Type: "file", Room: "arena"}, reply: reply}
			if perr := <-reply; perr == nil || perr.Code != codeForbidden {
				t.Fatalf("readonly %s: file announcement answered %v, want forbidden", roomRole, perr)
			}
			for _, ev := range drain(t, h, other) {
				if ev["type"] == "message" || ev["type"] == "kicked" || ev["type"] == "room" {
					t.Fatalf("the other member got %v from a readonly user", ev)
				}
			}
		})
	}
}

// TestNoFileIntoLockedRoom: in a locked room only those who may expel may post, files
// included. The shipped role tables give send_binary only with expel, so the test
// grants members send_binary for its duration, the way an operator's role change
// could: the lock must still refuse their file, at the announcement and again at the
// bytes.
func TestNoFileIntoLockedRoom(t *testing.T) {
	saved := globalPerms[roleMember]
	globalPerms[roleMember] = saved | permSendBinary
	defer func() { globalPerms[roleMember] = saved }()
	m, other := fakeClient("member", 64), fakeClient("other", 64)
	h := arenaHub(t, func(h *Hub, ri *roomInfo) { ri.Locked = true }, m, other)
	reply := make(chan *protoError, 1)
	h.inbound <- command{client: m, env: &envelope{Type: "file", Room: "arena"}, reply: reply}
	if perr := <-reply; perr == nil || perr.Code != codeReadOnly {
		t.Fatalf("file announcement into a locked room answered %v, want read_only", perr)
	}
	h.inbound <- command{client: m, env: &envelope{Type: "file_data", Room: "arena", Size: 1}, body: []byte(`"x":1}`)}
	if code := errorCode(drain(t, h, m)); code != codeReadOnly {
		t.Fatalf("file bytes into a locked room answered %q, want read_only", code)
	}
	noneOfType(t, drain(t, h, other), "file")
	// Unlocked, the same member's file goes through: the lock is what refused it.
	h.do(func() { h.meta["arena"].Locked = false })
	h.inbound <- command{client: m, env: &envelope{Type: "file", Room: "arena"}, reply: reply}
	if perr := <-reply; perr != nil {
		t.Fatalf("file announcement into an open room refused: %v", perr)
	}
}

// TestInvitationExpires: an invitation to a private room is good for inviteTTL and not
// a second longer; after that the room answers no_such_room, as if it did not exist.
// The clock is injected: a week passes without a wait.
func TestInvitationExpires(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, generousLimits)
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	owner.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:early"})
	owner.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:late"})
	clock.Advance(inviteTTL - time.Minute)
	ts.user(t, "early").mustAck(map[string]any{"type": "join", "room": "vault"})
	clock.Advance(time.Minute)
	ts.user(t, "late").mustRefuse(map[string]any{"type": "join", "room": "vault"}, codeNoSuchRoom)
}

// TestCreateNeedsPermission: with -members-create-rooms off, a member can make no room,
// neither with `create` nor by joining a name nobody uses (that answers no_such_room);
// a moderator still can. A readonly user never can.
func TestCreateNeedsPermission(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		generousLimits(c)
		c.MembersCanCreateRooms = false
		c.Moderators = []string{"dev:mod"}
		c.ReadOnlyUsers = []string{"dev:ro"}
	})
	bob := ts.user(t, "bob")
	bob.mustRefuse(map[string]any{"type": "create", "room": "mine"}, codeForbidden)
	bob.mustRefuse(map[string]any{"type": "join", "room": "mine"}, codeNoSuchRoom)
	ts.user(t, "ro").mustRefuse(map[string]any{"type": "create", "room": "mine"}, codeForbidden)
	var exists bool
	ts.App.hub.do(func() { exists = ts.App.hub.meta["mine"] != nil })
	if exists {
		t.Fatal("a refused create made the room")
	}
	ts.user(t, "mod").mustAck(map[string]any{"type": "create", "room": "mine"})
}

// TestRoleRulesForOwnersAndLobby: a room's owner keeps the room (their role cannot be
// changed by set_room_role, not even by an admin), nobody changes their own room role,
// the lobby cannot be deleted, not even by an admin, and an admin cannot ban an admin.
func TestRoleRulesForOwnersAndLobby(t *testing.T) {
	ts := adminServer(t, nil)
	root, olga := ts.user(t, "root"), ts.user(t, "olga")
	olga.mustAck(map[string]any{"type": "create", "room": "club"})
	root.mustRefuse(map[string]any{"type": "set_room_role", "room": "club", "user": "dev:olga", "role": "member"}, codeForbidden)
	olga.mustRefuse(map[string]any{"type": "set_room_role", "room": "club", "user": "dev:olga", "role": "moderator"}, codeForbidden)
	root.mustRefuse(map[string]any{"type": "set_room_role", "room": "lobby", "user": "dev:root", "role": "member"}, codeForbidden)
	root.mustRefuse(map[string]any{"type": "delete_room", "room": "lobby"}, codeForbidden)
	var owner string
	ts.App.hub.do(func() { owner = ts.App.hub.meta["club"].Roles["dev:olga"] })
	if owner != roomOwner {
		t.Fatalf("olga's role in her room is %q after refused changes, want owner", owner)
	}
	noneOfType(t, olga.barrier(), "room_deleted")
	// Admins cannot ban admins.
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:ann", "role": "admin"})
	ann := ts.user(t, "ann")
	root.mustRefuse(map[string]any{"type": "global_ban", "user": "dev:ann"}, codeForbidden)
	ann.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "still here"})
}

// TestBannedUserCannotRegister: a global ban also holds at the hub, for a connection
// whose handshake passed just before the ban: it is closed 1008 "banned" at once.
func TestBannedUserCannotRegister(t *testing.T) {
	h := newTestHub(t, nil)
	c := fakeClient("eve", 8)
	h.do(func() { h.bans[c.user.ID] = banInfo{By: "dev:root"} })
	h.register <- c
	evs := drain(t, h, c)
	if types(evs) != "closed" || c.hubClose.code != 1008 || c.hubClose.reason != "banned" {
		t.Fatalf("a banned user's connection got %s, close %d %q; want closed 1008 banned", types(evs), c.hubClose.code, c.hubClose.reason)
	}
}

// TestInviteCap: a private room keeps at most maxInvitesPerRoom open invitations
// (DoS hardening: the room's record is rewritten on every change). The one that
// fills the list is accepted, a new one beyond it is refused with room_limit and
// stores nothing, and renewing an invitation already in the list still works.
func TestInviteCap(t *testing.T) {
	ts := startServer(t, generousLimits)
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	h := ts.App.hub
	h.do(func() {
		ri := h.meta["vault"]
		for i := len(ri.Invites); i < maxInvitesPerRoom-1; i++ {
			ri.Invites[fmt.Sprintf("user:dev:guest%d", i)] = h.now().Add(inviteTTL).Unix()
		}
	})
	owner.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:last"})
	owner.mustRefuse(map[string]any{"type": "invite", "room": "vault", "user": "dev:one-too-many"}, codeRoomLimit)
	owner.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:guest1"})
	var n int
	var extra bool
	h.do(func() {
		n = len(h.meta["vault"].Invites)
		_, extra = h.meta["vault"].Invites["user:dev:one-too-many"]
	})
	if n != maxInvitesPerRoom || extra {
		t.Fatalf("%d open invitations (the refused one kept: %v), want %d", n, extra, maxInvitesPerRoom)
	}
}

package main

import (
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"testing"
	"time"
)

// checkIndexes rebuilds every hub index from the state it indexes and fails unless
// the live ones are exactly the same: nothing missing, nothing stale.
func checkIndexes(t *testing.T, h *Hub) {
	t.Helper()
	settleHub(t, h)
	h.do(func() {
		byUser, byEmail := map[string]clientSet{}, map[string]clientSet{}
		for c := range h.clients {
			addClientTo(byUser, c.user.ID, c)
			if c.user.Email != "" {
				addClientTo(byEmail, lowerEmail(c.user.Email), c)
			}
		}
		privateOf, privateAll := map[string]nameSet{}, nameSet{}
		for _, ri := range h.meta {
			if !ri.Private {
				continue
			}
			privateAll[ri.Name] = struct{}{}
			privateKeys(ri, func(key string) {
				if privateOf[key] == nil {
					privateOf[key] = nameSet{}
				}
				privateOf[key][ri.Name] = struct{}{}
			})
		}
		if !reflect.DeepEqual(byUser, h.byUser) || !reflect.DeepEqual(byEmail, h.byEmail) {
			t.Errorf("client indexes are stale: %d/%d users, %d/%d emails", len(h.byUser), len(byUser), len(h.byEmail), len(byEmail))
		}
		if !reflect.DeepEqual(privateOf, h.privateOf) || !reflect.DeepEqual(privateAll, h.privateAll) {
			t.Errorf("private-room index is stale:\nlive    %v\nrebuilt %v", h.privateOf, privateOf)
		}
	})
}

// roomNames lists the rooms in a `rooms` answer.
func (c *wsClient) roomNames() []string {
	c.t.Helper()
	c.send(map[string]any{"type": "rooms"})
	var names []string
	for _, r := range c.expect("rooms")["rooms"].([]any) {
		names = append(names, r.(map[string]any)["room"].(string))
	}
	slices.Sort(names)
	return names
}

// TestRoomsListFollowsMembership: the private rooms `rooms` lists (from the per-user
// index) follow invitations, joins, kicks and deletions exactly, and the indexes match
// a rebuild from scratch after each step.
func TestRoomsListFollowsMembership(t *testing.T) {
	ts := startServer(t, generousLimits)
	olga, bob := ts.user(t, "olga"), ts.user(t, "bob")
	want := func(got []string, names ...string) {
		t.Helper()
		slices.Sort(names)
		if !slices.Equal(got, names) {
			t.Fatalf("bob's rooms %v, want %v", got, names)
		}
		checkIndexes(t, ts.App.hub)
	}
	olga.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	olga.mustAck(map[string]any{"type": "create", "room": "other", "private": true})
	want(bob.roomNames(), "lobby")
	olga.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	want(bob.roomNames(), "lobby", "vault")
	bob.mustAck(map[string]any{"type": "join", "room": "vault"})
	want(bob.roomNames(), "lobby", "vault")
	olga.mustAck(map[string]any{"type": "kick", "room": "vault", "user": "dev:bob"})
	bob.expect("kicked")
	want(bob.roomNames(), "lobby")
	olga.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	bob.mustAck(map[string]any{"type": "join", "room": "vault"})
	olga.mustAck(map[string]any{"type": "set_room_role", "room": "vault", "user": "dev:bob", "role": "moderator"})
	want(bob.roomNames(), "lobby", "vault")
	olga.mustAck(map[string]any{"type": "delete_room", "room": "vault"})
	want(bob.roomNames(), "lobby")
	if got := olga.roomNames(); !slices.Equal(got, []string{"lobby", "other"}) {
		t.Fatalf("olga's rooms %v", got)
	}
	bob.conn.Close()
	waitFor(t, "bob's connection to leave the index", func() bool {
		var n int
		ts.App.hub.do(func() { n = len(ts.App.hub.clientsOf("dev:bob")) })
		return n == 0
	})
	checkIndexes(t, ts.App.hub)
}

// emailClient is a fake client with a verified email, as an OpenID Connect login has.
func emailClient(name, id, email string) *Client {
	c := fakeClient(name, 64)
	c.user = identity{ID: id, Name: name, Email: email}
	c.userJSON = userJSON(c.user.ID, c.user.Name)
	return c
}

// TestInviteByEmailReachesOnlineUser: an invitation by email reaches the open
// connections of the user with that verified email (found through the email index,
// case-insensitively), and nobody else.
func TestInviteByEmailReachesOnlineUser(t *testing.T) {
	h := newTestHub(t, nil)
	olga := fakeClient("olga", 64)
	carol := emailClient("carol", "iss|carol", "Carol@Example.org")
	carol2 := emailClient("carol", "iss|carol", "Carol@Example.org")
	dave := emailClient("dave", "iss|dave", "dave@example.org")
	for _, c := range []*Client{olga, carol, carol2, dave} {
		h.register <- c
	}
	h.inbound <- command{client: olga, env: &envelope{Type: "create", Room: "vault", Private: true}}
	drain(t, h, olga)
	drain(t, h, carol)
	drain(t, h, carol2)
	drain(t, h, dave)
	h.inbound <- command{client: olga, env: &envelope{Type: "invite", Room: "vault", Email: "carol@EXAMPLE.org"}}
	for _, c := range []*Client{carol, carol2} {
		if evs := drain(t, h, c); types(evs) != "invited" || evs[0]["room"] != "vault" {
			t.Fatalf("invitee got %v", evs)
		}
	}
	if evs := drain(t, h, dave); len(evs) != 0 {
		t.Fatalf("someone else got %v", evs)
	}
}

// TestInvitationAcceptanceRoleCap: accepting an invitation adds a room role, so it is
// refused with room_limit when the room holds as many roles as it may; the invitee
// stays outside, still invited.
func TestInvitationAcceptanceRoleCap(t *testing.T) {
	ts := startServer(t, generousLimits)
	olga, bob := ts.user(t, "olga"), ts.user(t, "bob")
	olga.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	olga.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	h := ts.App.hub
	h.do(func() {
		// Fill the record as maxRolesPerRoom acceptances would have (setup only).
		next := h.meta["vault"].clone()
		for i := len(next.Roles); i < maxRolesPerRoom; i++ {
			next.Roles[fmt.Sprint("dev:filler", i)] = roomMember
		}
		h.putRoom(next)
	})
	bob.mustRefuse(map[string]any{"type": "join", "room": "vault"}, codeRoomLimit)
	h.do(func() {
		ri := h.meta["vault"]
		if ri.isMember("dev:bob") || len(ri.Roles) != maxRolesPerRoom {
			t.Errorf("bob member %v, %d roles", ri.isMember("dev:bob"), len(ri.Roles))
		}
		if _, ok := ri.invitation(identity{ID: "dev:bob"}, h.now()); !ok {
			t.Error("the invitation is gone")
		}
	})
}

// TestOfflineAdminByEmailKeepsRank: a user who is an admin by email in the start-up
// policy keeps that rank while offline: a moderator cannot kick them and an admin
// cannot ban them or see them as a member, also after a restart (the hub remembers
// who logged in, in the store).
func TestOfflineAdminByEmailKeepsRank(t *testing.T) {
	st := newFaultStore()
	boot := func() *Hub {
		cfg := testConfig(t)
		cfg.Admins = []string{"boss@example.org", "dev:root"}
		cfg.Moderators = []string{"dev:mod"}
		app, err := newAppWithStore(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), time.Now, st)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { app.shutdown(time.Second) })
		return app.hub
	}
	h := boot()
	boss := emailClient("boss", "iss|boss", "Boss@Example.org")
	h.register <- boss
	drain(t, h, boss)
	h.unregister <- boss // offline from here on
	attack := func(h *Hub) {
		t.Helper()
		mod, root := fakeClient("mod", 64), fakeClient("root", 64)
		h.register <- mod
		h.register <- root
		drain(t, h, mod)
		drain(t, h, root)
		h.inbound <- command{client: mod, env: &envelope{Type: "kick", Room: lobby, User: "iss|boss", Ref: "k"}}
		if evs := drain(t, h, mod); types(evs) != "error" || evs[0]["code"] != codeForbidden {
			t.Fatalf("moderator kicking an offline admin: %v", evs)
		}
		h.inbound <- command{client: root, env: &envelope{Type: "global_ban", User: "iss|boss", Ref: "b"}}
		if evs := drain(t, h, root); types(evs) != "error" || evs[0]["code"] != codeForbidden {
			t.Fatalf("banning an offline admin: %v", evs)
		}
		h.unregister <- mod
		h.unregister <- root
	}
	attack(h)
	h.app.shutdown(time.Second)
	attack(boot())
	var stored int
	if err := st.Store.Scan(bucketUsers, func(k, v []byte) error { stored++; return nil }); err != nil || stored == 0 {
		t.Fatalf("no known users stored (%v)", err)
	}
}

// TestKnownUsersBounded: the directory of known users forgets the least recently seen
// beyond its bound, and says so in the writes it returns.
func TestKnownUsersBounded(t *testing.T) {
	d := newUserDirectory(nil, 2)
	now := time.Unix(1e9, 0)
	d.see(identity{ID: "a", Email: "a@x"}, now)
	d.see(identity{ID: "b"}, now)
	d.see(identity{ID: "a", Email: "a@x"}, now) // a is now the most recent
	writes := d.see(identity{ID: "c"}, now)
	if _, ok := d.lookup("b"); ok || len(d.byID) != 2 {
		t.Fatalf("b should be forgotten: %v", d.byID)
	}
	var deleted []string
	for _, w := range writes {
		if w.Value == nil {
			deleted = append(deleted, string(w.Key))
		}
	}
	if !slices.Equal(deleted, []string{"b"}) {
		t.Fatalf("deleted %v", deleted)
	}
	if u, ok := d.lookup("a"); !ok || u.Email != "a@x" {
		t.Fatalf("a: %v %v", u, ok)
	}
	if w := d.see(identity{ID: "a", Email: "a@x"}, now.Add(time.Hour)); len(w) != 0 {
		t.Fatalf("a reconnect within a day wrote %v", w)
	}
}

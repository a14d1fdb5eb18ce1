package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"modified-chat/internal/store"
)

// storeDump returns every key=value of a bucket, to check that a refused command
// changed nothing durable.
func storeDump(t *testing.T, s store.Store, bucket string) string {
	t.Helper()
	var out []string
	if err := s.Scan(bucket, func(k, v []byte) error {
		out = append(out, string(k)+"="+string(v))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return strings.Join(out, "\n")
}

// syncStore waits until every write handed to the store writer is committed, by
// round-tripping a no-op write through it.
func syncStore(t *testing.T, app *App) {
	t.Helper()
	done := make(chan error, 1)
	if !app.writer.Submit([]store.Write{{Bucket: "test-sync", Key: []byte("k"), Value: []byte("v")}}, func(err error) { done <- err }) {
		t.Fatal("store queue full")
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// cmd sends a command with a ref and returns the first ack or error answering it.
func (c *wsClient) cmd(v map[string]any) map[string]any {
	c.t.Helper()
	return c.sendAwait(v, uniqueRef(), func(ev map[string]any) bool {
		switch ev["type"] {
		case "ack", "error", "joined", "left", "settings":
			return true
		}
		return false
	})
}

// mustAck fails unless the command is acknowledged.
func (c *wsClient) mustAck(v map[string]any) {
	c.t.Helper()
	if ev := c.cmd(v); ev["type"] != "ack" && ev["type"] != "joined" && ev["type"] != "left" {
		c.t.Fatalf("%v refused: %v", v, ev)
	}
}

// mustRefuse fails unless the command is refused with code.
func (c *wsClient) mustRefuse(v map[string]any, code string) map[string]any {
	c.t.Helper()
	ev := c.cmd(v)
	if ev["type"] != "error" || ev["code"] != code {
		c.t.Fatalf("%v: got %v, want error %s", v, ev, code)
	}
	return ev
}

// adminServer starts a server where dev:root is an admin.
func adminServer(t *testing.T, mutate func(*Config)) *testServer {
	return startServer(t, func(c *Config) {
		c.Admins = []string{"dev:root"}
		generousLimits(c)
		if mutate != nil {
			mutate(c)
		}
	})
}

// generousLimits raises the message buckets so tests that send many commands in a row
// test roles, not rate limits.
func generousLimits(c *Config) {
	c.MsgBurst, c.UserMsgBurst = 1000, 1000
}

// TestMemberRefusedEverything: a member without the permission is refused with
// forbidden for each privileged command, and nothing changes in the store or in what
// others receive.
func TestMemberRefusedEverything(t *testing.T) {
	ts := adminServer(t, nil)
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "club", "private": true})
	owner.mustAck(map[string]any{"type": "invite", "room": "club", "user": "dev:mia"})
	mia := ts.user(t, "mia")
	mia.mustAck(map[string]any{"type": "join", "room": "club"})
	bob := ts.user(t, "bob")
	syncStore(t, ts.App)
	before := storeDump(t, ts.App.store, bucketRooms) + storeDump(t, ts.App.store, bucketGrants) + storeDump(t, ts.App.store, bucketSettings) + storeDump(t, ts.App.store, bucketBans)

	for _, c := range []map[string]any{
		{"type": "kick", "room": "lobby", "user": "dev:bob"},
		{"type": "ban", "room": "lobby", "user": "dev:bob"},
		{"type": "kick", "room": "club", "user": "dev:olga"},
		{"type": "invite", "room": "club", "user": "dev:bob"},
		{"type": "set_settings", "settings": map[string]any{"msg_rate": 1000}},
		{"type": "get_settings"},
		{"type": "set_role", "user": "dev:mia", "role": "admin"},
		{"type": "global_ban", "user": "dev:bob"},
		{"type": "lock", "room": "club", "locked": true},
		{"type": "topic", "room": "club", "topic": "mine now"},
		{"type": "delete_room", "room": "club"},
		{"type": "set_room_role", "room": "club", "user": "dev:mia", "role": "moderator"},
		{"type": "audit"},
	} {
		mia.mustRefuse(c, codeForbidden)
	}
	syncStore(t, ts.App)
	after := storeDump(t, ts.App.store, bucketRooms) + storeDump(t, ts.App.store, bucketGrants) + storeDump(t, ts.App.store, bucketSettings) + storeDump(t, ts.App.store, bucketBans)
	if before != after {
		t.Fatalf("refused commands changed the store:\nbefore %s\nafter  %s", before, after)
	}
	for _, ev := range bob.barrier() {
		if ev["type"] == "kicked" || ev["type"] == "invited" {
			t.Fatalf("bob received %v after refused commands", ev)
		}
	}
	if n := ts.App.settings().MsgRate; n != defaultConfig().MsgRate {
		t.Fatalf("settings changed to %v", n)
	}
}

// TestKickAndBan: a kicked user's connection stops receiving the room at once; a banned
// user cannot rejoin, with a new connection or after logging in again.
func TestKickAndBan(t *testing.T) {
	ts := startServer(t, generousLimits)
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "pub"})
	bob := ts.user(t, "bob")
	bob.mustAck(map[string]any{"type": "join", "room": "pub"})

	owner.mustAck(map[string]any{"type": "kick", "room": "pub", "user": "dev:bob"})
	if ev := bob.expect("kicked"); ev["room"] != "pub" || ev["ban"] != false {
		t.Fatalf("kicked event %v", ev)
	}
	owner.mustAck(map[string]any{"type": "say", "room": "pub", "text": "after the kick"})
	noneOfType(t, bob.barrier(), "message")
	// A kick is not a ban: bob may come back.
	bob.mustAck(map[string]any{"type": "join", "room": "pub"})

	owner.mustAck(map[string]any{"type": "ban", "room": "pub", "user": "dev:bob"})
	if ev := bob.expect("kicked"); ev["ban"] != true {
		t.Fatalf("ban event %v", ev)
	}
	bob.mustRefuse(map[string]any{"type": "join", "room": "pub"}, codeBanned)
	bob2 := ts.dial(t, devLogin(t, ts.URL, "bob"))
	bob2.mustRefuse(map[string]any{"type": "join", "room": "pub"}, codeBanned)
	bob2.mustRefuse(map[string]any{"type": "say", "room": "pub", "text": "let me in"}, codeNotInRoom)

	// Rank: the owner cannot be kicked by a room moderator.
	owner.mustAck(map[string]any{"type": "unban", "room": "pub", "user": "dev:bob"})
	owner.mustAck(map[string]any{"type": "set_room_role", "room": "pub", "user": "dev:bob", "role": "moderator"})
	bob2.mustAck(map[string]any{"type": "join", "room": "pub"})
	bob2.mustRefuse(map[string]any{"type": "kick", "room": "pub", "user": "dev:olga"}, codeForbidden)
}

// TestGlobalBan: an admin's ban closes all of the user's connections with 1008, kills
// their old session cookie and refuses their next login.
func TestGlobalBan(t *testing.T) {
	ts := adminServer(t, nil)
	root := ts.user(t, "root")
	cookie := devLogin(t, ts.URL, "bob")
	b1, b2 := ts.dial(t, cookie), ts.dial(t, cookie)
	root.mustAck(map[string]any{"type": "global_ban", "user": "dev:bob", "reason": "spam"})
	b1.expectClose(websocket.ClosePolicyViolation)
	b2.expectClose(websocket.ClosePolicyViolation)
	if _, resp, err := ts.tryDial(cookie, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("banned user's old cookie: %v %v", err, resp)
	}
	resp, err := noRedirect.PostForm(ts.URL+"/login/dev", map[string][]string{"name": {"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("banned user's new login: %d %v", resp.StatusCode, resp.Cookies())
	}
	root.mustRefuse(map[string]any{"type": "global_ban", "user": "dev:root"}, codeForbidden)
	root.mustAck(map[string]any{"type": "global_unban", "user": "dev:bob"})
	ts.user(t, "bob")
}

// TestPrivateRoomIndistinguishable: a private room is not joinable without an
// invitation and answers exactly like a room that does not exist; the invited user
// joins and chats; a third user sees nothing.
func TestPrivateRoomIndistinguishable(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MembersCanCreateRooms = false
		c.Moderators = []string{"dev:olga"}
		generousLimits(c)
	})
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "secret", "private": true, "topic": "plans"})
	carol := ts.user(t, "carol")
	for _, cmd := range []map[string]any{
		{"type": "join", "room": "%s"},
		{"type": "say", "room": "%s", "text": "hi"},
		{"type": "invite", "room": "%s", "user": "dev:carol"},
		{"type": "kick", "room": "%s", "user": "dev:olga"},
		{"type": "topic", "room": "%s", "topic": "x"},
	} {
		answer := func(room string) string {
			c := map[string]any{}
			for k, v := range cmd {
				c[k] = v
			}
			c["room"] = room
			ev := carol.cmd(c)
			delete(ev, "ref")
			delete(ev, "room")
			b, _ := json.Marshal(ev)
			return string(b)
		}
		secret, missing := answer("secret"), answer("no-such-room-here")
		if secret != missing || !strings.Contains(secret, codeNoSuchRoom) {
			t.Fatalf("%v: private room answers %s, missing room %s", cmd["type"], secret, missing)
		}
	}
	carol.send(map[string]any{"type": "rooms"})
	if rooms := carol.expect("rooms"); strings.Contains(toJSON(rooms), "secret") {
		t.Fatalf("rooms list shows the private room: %v", rooms)
	}

	owner.mustAck(map[string]any{"type": "invite", "room": "secret", "user": "dev:bob"})
	bob := ts.user(t, "bob")
	bob.mustAck(map[string]any{"type": "join", "room": "secret"})
	owner.expect("presence")
	bob.mustAck(map[string]any{"type": "say", "room": "secret", "text": "thanks for the invite"})
	if m := owner.expect("message"); m["text"] != "thanks for the invite" {
		t.Fatalf("owner got %v", m)
	}
	noneOfType(t, carol.barrier(), "message")
	carol.mustRefuse(map[string]any{"type": "join", "room": "secret"}, codeNoSuchRoom)
}

// toJSON encodes v for substring checks in tests.
func toJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// TestRoleChangeAppliesLive: a role granted or revoked while connected applies to the
// very next command, and the user is told.
func TestRoleChangeAppliesLive(t *testing.T) {
	ts := adminServer(t, nil)
	root, bob, carol := ts.user(t, "root"), ts.user(t, "bob"), ts.user(t, "carol")
	bob.mustRefuse(map[string]any{"type": "kick", "room": "lobby", "user": "dev:carol"}, codeForbidden)
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:bob", "role": "moderator"})
	if you := bob.expect("you"); you["role"] != "moderator" {
		t.Fatalf("you event %v", you)
	}
	bob.mustAck(map[string]any{"type": "kick", "room": "lobby", "user": "dev:carol"})
	carol.expect("kicked")
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:bob", "role": "readonly"})
	bob.mustRefuse(map[string]any{"type": "say", "room": "lobby", "text": "can I still talk?"}, codeForbidden)
	bob.mustRefuse(map[string]any{"type": "kick", "room": "lobby", "user": "dev:root"}, codeForbidden)
	root.mustRefuse(map[string]any{"type": "set_role", "user": "dev:root", "role": "member"}, codeForbidden)
}

// TestLockedRoomReadOnly: a locked room refuses members' messages but not the owner's.
func TestLockedRoomReadOnly(t *testing.T) {
	ts := startServer(t, generousLimits)
	owner, bob := ts.user(t, "olga"), ts.user(t, "bob")
	owner.mustAck(map[string]any{"type": "create", "room": "news"})
	bob.mustAck(map[string]any{"type": "join", "room": "news"})
	owner.mustAck(map[string]any{"type": "lock", "room": "news", "locked": true})
	if ev := bob.expect("room"); ev["locked"] != true {
		t.Fatalf("room event %v", ev)
	}
	bob.mustRefuse(map[string]any{"type": "say", "room": "news", "text": "hello?"}, codeReadOnly)
	owner.mustAck(map[string]any{"type": "say", "room": "news", "text": "announcement"})
	owner.mustAck(map[string]any{"type": "delete_room", "room": "news"})
	bob.expect("room_deleted")
	bob.mustRefuse(map[string]any{"type": "say", "room": "news", "text": "gone?"}, codeNoSuchRoom)
}

// TestSettingsLiveAndValidated: a lowered rate limit bites on live connections at
// once; absurd values are refused; the change is audited.
func TestSettingsLiveAndValidated(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.Admins = []string{"dev:root"}; generousLimits(c) })
	root, bob := ts.user(t, "root"), ts.user(t, "bob")
	for _, bad := range []map[string]any{
		{"msg_rate": 0}, {"msg_burst": -1}, {"read_limit": 1 << 30}, {"msg_rate": 1e9},
		{"no_such_setting": 1}, {"motd": "\u202eevil"}, {"allowed_domains": []string{"a b"}},
	} {
		root.mustRefuse(map[string]any{"type": "set_settings", "settings": bad}, codeBadSetting)
	}
	root.mustAck(map[string]any{"type": "set_settings", "settings": map[string]any{"msg_rate": 0.001, "msg_burst": 1, "motd": "be nice"}})
	if ev := bob.expect("motd"); ev["motd"] != "be nice" {
		t.Fatalf("motd event %v", ev)
	}
	bob.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "one"})
	bob.mustRefuse(map[string]any{"type": "say", "room": "lobby", "text": "two"}, codeRateLimited)
	root.send(map[string]any{"type": "audit"})
	audit := root.expect("audit")
	entries := audit["entries"].([]any)
	first := entries[0].(map[string]any)
	if first["action"] != "set_settings" || first["actor"] != "dev:root" || first["old"] == nil || first["new"] == nil {
		t.Fatalf("audit %v", first)
	}
}

// TestStateSurvivesRestart: rooms, invitations, bans, grants and settings are in the
// store and come back after a restart on the same data directory.
func TestStateSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	boot := func() *testServer {
		return startServer(t, func(c *Config) { c.DataDir = dir; c.Store = "bolt"; c.Admins = []string{"dev:root"}; generousLimits(c) })
	}
	ts := boot()
	root := ts.user(t, "root")
	root.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	root.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	root.mustAck(map[string]any{"type": "create", "room": "pub"})
	root.mustAck(map[string]any{"type": "ban", "room": "pub", "user": "dev:eve"})
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:mod", "role": "moderator"})
	root.mustAck(map[string]any{"type": "set_settings", "settings": map[string]any{"motd": "persisted", "msg_burst": 3}})
	ts.App.shutdown(time.Second)
	ts.srv.Close()

	ts = boot()
	if s := ts.App.settings(); s.MOTD != "persisted" || s.MsgBurst != 3 {
		t.Fatalf("settings after restart: motd %q burst %d", s.MOTD, s.MsgBurst)
	}
	ts.user(t, "bob").mustAck(map[string]any{"type": "join", "room": "vault"})
	ts.user(t, "eve").mustRefuse(map[string]any{"type": "join", "room": "pub"}, codeBanned)
	mod := ts.user(t, "mod")
	mod.mustAck(map[string]any{"type": "kick", "room": "lobby", "user": "dev:eve"})
	ts.user(t, "carol").mustRefuse(map[string]any{"type": "join", "room": "vault"}, codeNoSuchRoom)
}

// TestOwnedRoomsCapped: one account cannot take every room the server may keep, and
// the server-wide room bound holds.
func TestOwnedRoomsCapped(t *testing.T) {
	ts := startServer(t, func(c *Config) { generousLimits(c); c.MaxRoomsPerClient = 100 })
	a := ts.user(t, "hoarder")
	for i := 0; i < maxOwnedRooms; i++ {
		a.mustAck(map[string]any{"type": "create", "room": fmt.Sprint("r", i)})
		a.mustAck(map[string]any{"type": "leave", "room": fmt.Sprint("r", i)})
	}
	a.mustRefuse(map[string]any{"type": "join", "room": "one-too-many"}, codeRoomLimit)
	a.mustRefuse(map[string]any{"type": "create", "room": "one-too-many"}, codeRoomLimit)

	ts2 := startServer(t, func(c *Config) { generousLimits(c); c.MaxRooms = 3 })
	b := ts2.user(t, "bob") // lobby is one
	b.mustAck(map[string]any{"type": "join", "room": "two"})
	b.mustAck(map[string]any{"type": "join", "room": "three"})
	b.mustRefuse(map[string]any{"type": "join", "room": "four"}, codeRoomLimit)
}

// TestPolicyRoles: start-up roles by email, by domain and by user id; an explicit
// entry beats a domain-wide one.
func TestPolicyRoles(t *testing.T) {
	p := newPolicy([]string{"boss@example.org", "dev:root"}, []string{"example.org"}, []string{"@readers.example"})
	cases := []struct {
		id   identity
		want string
	}{
		{identity{ID: "iss|1", Email: "Boss@Example.org"}, roleAdmin},
		{identity{ID: "iss|2", Email: "someone@example.org"}, roleModerator},
		{identity{ID: "iss|3", Email: "x@readers.example"}, roleReadOnly},
		{identity{ID: "dev:root"}, roleAdmin},
		{identity{ID: "iss|4", Email: "x@example.org.evil.com"}, ""},
	}
	for _, tc := range cases {
		got, _ := p.roleFor(tc.id)
		if got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.id, got, tc.want)
		}
	}
}

// TestRoomModeratorOnlyInTheirRoom: a room moderator may expel in that room only.
func TestRoomModeratorOnlyInTheirRoom(t *testing.T) {
	ts := startServer(t, generousLimits)
	owner, bob, carol := ts.user(t, "olga"), ts.user(t, "bob"), ts.user(t, "carol")
	owner.mustAck(map[string]any{"type": "create", "room": "pub"})
	owner.mustAck(map[string]any{"type": "set_room_role", "room": "pub", "user": "dev:bob", "role": "moderator"})
	carol.mustAck(map[string]any{"type": "join", "room": "pub"})
	bob.mustAck(map[string]any{"type": "join", "room": "pub"})
	bob.mustRefuse(map[string]any{"type": "kick", "room": "lobby", "user": "dev:carol"}, codeForbidden)
	bob.mustAck(map[string]any{"type": "kick", "room": "pub", "user": "dev:carol"})
	carol.expect("kicked")
}

// TestPolicyFileReloadOnSIGHUP: the policy file is re-read on SIGHUP by the running
// server, and the new roles apply to the next command of an open connection.
func TestPolicyFileReloadOnSIGHUP(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	policyPath := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policyPath, []byte(`{"admins":["dev:pol"]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("CHAT_POLICY_FILE", policyPath)
	child := startChild(t, dir, port)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	root := ts.user(t, "pol")
	if ev := root.cmd(map[string]any{"type": "get_settings"}); ev["type"] != "settings" {
		t.Fatalf("policy-file admin refused: %v", ev)
	}
	if err := os.WriteFile(policyPath, []byte(`{"admins":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := child.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	child.await(t, child.reloaded, "the policy to be reloaded")
	if ev := root.cmd(map[string]any{"type": "get_settings"}); ev["type"] != "error" || ev["code"] != codeForbidden {
		t.Fatalf("after the reload took admin away, get_settings answered %v", ev)
	}
}

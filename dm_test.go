package main

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// answer sends a command with a ref and returns the event of type typ (or the error)
// carrying that ref.
func (c *wsClient) answer(v map[string]any, typ string) map[string]any {
	c.t.Helper()
	return c.sendAwait(v, uniqueRef(), func(ev map[string]any) bool { return ev["type"] == typ || ev["type"] == "error" })
}

// openDM opens a conversation and returns its joined event, failing on a refusal.
func (c *wsClient) openDM(user string) map[string]any {
	c.t.Helper()
	ev := c.cmd(map[string]any{"type": "open_dm", "user": user})
	if ev["type"] != "joined" {
		c.t.Fatalf("open_dm %s: %v", user, ev)
	}
	return ev
}

// TestDMOneRoomPerPair: opening a conversation from either side lands in the same
// private room, listed as a conversation named after the other person; a message
// reaches the other side even if they never opened it.
func TestDMOneRoomPerPair(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	j := alice.openDM("dev:bob")
	room, _ := j["room"].(string)
	if !strings.HasPrefix(room, dmPrefix) || j["kind"] != "dm" || j["private"] != true {
		t.Fatalf("joined %v, want a private dm", j)
	}
	if peer, _ := j["peer"].(map[string]any); peer["id"] != "dev:bob" || peer["name"] != "bob" {
		t.Fatalf("peer %v, want bob", j["peer"])
	}
	alice.expectHistory(room)

	// Bob has not opened it; a message pulls his connection in first.
	alice.send(map[string]any{"type": "say", "room": room, "text": "hi bob"})
	bj := bob.expect("joined")
	if bj["room"] != room || bj["kind"] != "dm" {
		t.Fatalf("bob was pulled into %v, want %s", bj, room)
	}
	if peer, _ := bj["peer"].(map[string]any); peer["id"] != "dev:alice" {
		t.Fatalf("bob sees peer %v, want alice", bj["peer"])
	}
	if m := bob.expect("message"); m["room"] != room || m["text"] != "hi bob" {
		t.Fatalf("bob got %v", m)
	}
	// Opening from the other side is the same conversation.
	if again := bob.openDM("dev:alice"); again["room"] != room {
		t.Fatalf("bob opened %v, alice %s", again["room"], room)
	}
	// The rooms list tells it apart from rooms.
	alice.send(map[string]any{"type": "rooms"})
	rooms := alice.expect("rooms")["rooms"].([]any)
	found := false
	for _, r := range rooms {
		r := r.(map[string]any)
		if r["room"] == room {
			found = r["kind"] == "dm" && r["peer"].(map[string]any)["name"] == "bob"
		} else if r["kind"] != "room" {
			t.Fatalf("room %v has kind %v", r["room"], r["kind"])
		}
	}
	if !found {
		t.Fatalf("rooms %v do not list the conversation as a dm with bob", rooms)
	}
	// By email, for a user the server knows (the development login has none): the
	// same answer as a user who does not exist.
	alice.mustRefuse(map[string]any{"type": "open_dm", "email": "bob@example.com"}, codeDMRefused)
}

// TestDMInvisibleToOthers attacks a conversation from outside: a third user, even an
// admin, cannot join it, speak in it, see it listed, create or join its name, or
// delete from it; its members cannot use room-management commands in it.
func TestDMInvisibleToOthers(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		generousLimits(c)
		c.Admins = []string{"dev:root"}
		c.Moderators = []string{"dev:alice"}
	})
	alice, bob, root := ts.user(t, "alice"), ts.user(t, "bob"), ts.user(t, "root")
	room := alice.openDM("dev:bob")["room"].(string)
	alice.mustAck(map[string]any{"type": "say", "room": room, "text": "secret"})

	for _, cmd := range []map[string]any{
		{"type": "join", "room": room},
		{"type": "say", "room": room, "text": "let me in"},
		{"type": "invite", "room": room, "user": "dev:root"},
		{"type": "delete", "room": room, "id": 1},
		{"type": "delete_room", "room": room},
	} {
		root.mustRefuse(cmd, codeNoSuchRoom)
	}
	for _, name := range root.roomNames() {
		if name == room {
			t.Fatal("an admin sees the conversation in rooms")
		}
	}
	// The reserved name cannot be made by join or create, for this pair or any other.
	root.mustRefuse(map[string]any{"type": "create", "room": room}, codeBadRoom)
	other := dmName("dev:root", "dev:nobody")
	root.mustRefuse(map[string]any{"type": "join", "room": other}, codeNoSuchRoom)
	// A global moderator in the conversation still cannot run a room there.
	for _, cmd := range []map[string]any{
		{"type": "invite", "room": room, "user": "dev:root"},
		{"type": "kick", "room": room, "user": "dev:bob"},
		{"type": "topic", "room": room, "topic": "mine"},
		{"type": "delete_room", "room": room},
	} {
		alice.mustRefuse(cmd, codeForbidden)
	}
	evs := bob.barrier()
	noneOfType(t, evs, "kicked")
	noneOfType(t, evs, "room_deleted")
	for _, ev := range evs {
		if ev["type"] == "message" && ev["text"] != "secret" {
			t.Fatalf("bob got %v", ev)
		}
	}
}

// TestDMRefused: a user who blocks another, or refuses strangers, is not reachable;
// the refused sender gets dm_refused, exactly as for a user who does not exist, and
// nothing is delivered. Every refusal is counted.
func TestDMRefused(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob, carol := ts.user(t, "alice"), ts.user(t, "bob"), ts.user(t, "carol")
	before := testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues(codeDMRefused))

	ghost := alice.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:ghost"}, codeDMRefused)
	self := alice.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:alice"}, codeDMRefused)

	p := bob.answer(map[string]any{"type": "dm_prefs", "block": "dev:alice"}, "dm_prefs")
	if b, _ := p["blocked"].([]any); len(b) != 1 || b[0] != "dev:alice" {
		t.Fatalf("dm_prefs %v", p)
	}
	blocked := alice.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:bob"}, codeDMRefused)
	if blocked["message"] != ghost["message"] || self["message"] != ghost["message"] {
		t.Fatalf("a block (%v) reads differently from a missing user (%v)", blocked["message"], ghost["message"])
	}

	// An existing conversation: a block refuses what is said in it.
	room := carol.openDM("dev:bob")["room"].(string)
	carol.mustAck(map[string]any{"type": "say", "room": room, "text": "before"})
	bob.answer(map[string]any{"type": "dm_prefs", "block": "dev:carol"}, "dm_prefs")
	carol.mustRefuse(map[string]any{"type": "say", "room": room, "text": "after"}, codeDMRefused)
	bob.answer(map[string]any{"type": "dm_prefs", "unblock": "dev:carol"}, "dm_prefs")
	carol.mustAck(map[string]any{"type": "say", "room": room, "text": "again"})

	// Strangers: only users who share a room (the lobby does not count).
	bob.answer(map[string]any{"type": "dm_prefs", "unblock": "dev:alice", "refuse_strangers": true}, "dm_prefs")
	dave := ts.user(t, "dave")
	dave.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:bob"}, codeDMRefused)
	bob.mustAck(map[string]any{"type": "join", "room": "club"})
	dave.mustAck(map[string]any{"type": "join", "room": "club"})
	dave.openDM("dev:bob")

	for _, ev := range bob.barrier() {
		if ev["type"] == "message" && ev["text"] == "after" {
			t.Fatal("a blocked message was delivered")
		}
	}
	if got := testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues(codeDMRefused)); got != before+5 {
		t.Fatalf("dm_refused counted %v times, want 5", got-before)
	}
}

// TestDMOpenRateLimited: opening new conversations is bounded per user (a burst, then
// one now and then); reopening an existing one costs nothing.
func TestDMOpenRateLimited(t *testing.T) {
	ts := startServer(t, generousLimits)
	spammer := ts.user(t, "spammer")
	var first string
	for i := range dmOpenBurst + 1 {
		ts.user(t, "target"+string(rune('a'+i)))
	}
	for i := range dmOpenBurst {
		room := spammer.openDM("dev:target" + string(rune('a'+i)))["room"].(string)
		if i == 0 {
			first = room
		}
	}
	before := testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues(codeRateLimited))
	spammer.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:target" + string(rune('a'+dmOpenBurst))}, codeRateLimited)
	if got := testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues(codeRateLimited)); got != before+1 {
		t.Fatalf("rate_limited counted %v, want 1", got-before)
	}
	if again := spammer.openDM("dev:targeta"); again["room"] != first {
		t.Fatalf("reopening landed in %v, want %s", again["room"], first)
	}
	var dms int
	ts.App.hub.do(func() { dms = ts.App.hub.dmsOf("dev:spammer") })
	if dms != dmOpenBurst {
		t.Fatalf("%d conversations exist, want %d", dms, dmOpenBurst)
	}
}

// TestDMDurable: conversations and preferences survive a restart.
func TestDMDurable(t *testing.T) {
	st := newFaultStore() // outlives the first server
	ts := startServerOn(t, st, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	room := alice.openDM("dev:bob")["room"].(string)
	alice.mustAck(map[string]any{"type": "say", "room": room, "text": "kept"})
	bob.answer(map[string]any{"type": "dm_prefs", "block": "dev:carol", "refuse_strangers": true}, "dm_prefs")
	ts.stop()

	ts = startServerOn(t, st, generousLimits)
	bob = ts.user(t, "bob")
	p := bob.answer(map[string]any{"type": "dm_prefs"}, "dm_prefs")
	if p["refuse_strangers"] != true || len(p["blocked"].([]any)) != 1 {
		t.Fatalf("after a restart dm_prefs is %v", p)
	}
	if j := bob.openDM("dev:alice"); j["room"] != room {
		t.Fatalf("after a restart the conversation is %v, want %s", j["room"], room)
	}
	if msgs := bob.expectHistory(room)["messages"].([]any); len(msgs) != 1 {
		t.Fatalf("history %v", msgs)
	}
}

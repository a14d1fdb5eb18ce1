package main

import (
	"fmt"
	"strconv"
	"testing"
	"time"
)

// historyIDs returns the ids and texts of a history event's messages.
func historyIDs(ev map[string]any) ([]uint64, []string) {
	var ids []uint64
	var texts []string
	for _, m := range ev["messages"].([]any) {
		msg := m.(map[string]any)
		ids = append(ids, uint64(msg["id"].(float64)))
		texts = append(texts, fmt.Sprint(msg["text"]))
	}
	return ids, texts
}

// expectHistory waits for the history event of a room.
func (c *wsClient) expectHistory(room string) map[string]any {
	c.t.Helper()
	for {
		ev := c.expect("history")
		if ev["room"] == room {
			return ev
		}
	}
}

// TestHistoryOnJoinBounded: a joiner receives the newest messages of the room, as many
// as configured, oldest first.
func TestHistoryOnJoinBounded(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HistoryOnJoin = 3; generousLimits(c) })
	a := ts.user(t, "alice")
	for i := 1; i <= 5; i++ {
		a.mustAck(map[string]any{"type": "say", "room": "lobby", "text": fmt.Sprint("m", i)})
	}
	b := ts.user(t, "bob")
	_, texts := historyIDs(b.expectHistory("lobby"))
	if fmt.Sprint(texts) != "[m3 m4 m5]" {
		t.Fatalf("history %v", texts)
	}
}

// TestHistoryPrivateOnlyMembers: a private room's history goes to its members only.
func TestHistoryPrivateOnlyMembers(t *testing.T) {
	ts := startServer(t, generousLimits)
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	owner.mustAck(map[string]any{"type": "say", "room": "vault", "text": "the code is 1234"})
	eve := ts.user(t, "eve")
	eve.mustRefuse(map[string]any{"type": "join", "room": "vault", "after": 0}, codeNoSuchRoom)
	for _, ev := range eve.barrier() {
		if ev["type"] == "history" && ev["room"] == "vault" {
			t.Fatalf("non-member got history %v", ev)
		}
	}
	owner.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	bob := ts.user(t, "bob")
	bob.send(map[string]any{"type": "join", "room": "vault"})
	if _, texts := historyIDs(bob.expectHistory("vault")); fmt.Sprint(texts) != "[the code is 1234]" {
		t.Fatalf("member history %v", texts)
	}
}

// TestResumeAfterReconnect: a connection dies mid-conversation while others keep
// talking; reconnecting with the last id seen delivers every missed message exactly
// once and in order.
func TestResumeAfterReconnect(t *testing.T) {
	ts := startServer(t, generousLimits)
	talker := ts.user(t, "talker")
	cookie := devLogin(t, ts.URL, "reader")
	reader := ts.dial(t, cookie)
	var lastSeen uint64
	for i := 0; i < 5; i++ {
		talker.mustAck(map[string]any{"type": "say", "room": "lobby", "text": fmt.Sprint("before", i)})
		m := reader.expect("message")
		lastSeen = uint64(m["id"].(float64))
	}
	reader.conn.Close() // the network drops
	var sent []string
	for i := 0; i < 20; i++ {
		text := fmt.Sprint("during", i)
		talker.mustAck(map[string]any{"type": "say", "room": "lobby", "text": text})
		sent = append(sent, text)
	}
	reader = ts.dial(t, cookie)
	reader.send(map[string]any{"type": "join", "room": "lobby", "after": lastSeen})
	for i := 20; i < 25; i++ { // the conversation goes on during the catch-up
		text := fmt.Sprint("after", i)
		talker.mustAck(map[string]any{"type": "say", "room": "lobby", "text": text})
		sent = append(sent, text)
	}
	// Collect the catch-up and live messages, de-duplicating by id as the page does.
	seen := map[uint64]bool{}
	var got []string
	var gotIDs []uint64
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < len(sent) {
		ev, err := reader.next(time.Until(deadline))
		if err != nil {
			t.Fatalf("after %d of %d: %v", len(got), len(sent), err)
		}
		var msgs []map[string]any
		switch {
		case ev["type"] == "message":
			msgs = []map[string]any{ev}
		case ev["type"] == "history" && ev["room"] == "lobby":
			if ev["gap"] == true {
				t.Fatal("gap reported for a short outage")
			}
			for _, m := range ev["messages"].([]any) {
				msgs = append(msgs, m.(map[string]any))
			}
		}
		for _, m := range msgs {
			id := uint64(m["id"].(float64))
			if id <= lastSeen || seen[id] {
				// The lobby's join-time history repeats what was seen before
				// the outage; the page drops what it already has, as here.
				continue
			}
			seen[id] = true
			got = append(got, m["text"].(string))
			gotIDs = append(gotIDs, id)
		}
	}
	// The catch-up (history) may interleave with live messages; ordered by id, the
	// page shows them in exactly the order sent.
	sortByID(gotIDs, got)
	if fmt.Sprint(got) != fmt.Sprint(sent) {
		t.Fatalf("got %v\nwant %v", got, sent)
	}
}

// sortByID sorts texts by their ids (insertion sort; tests are small).
func sortByID(ids []uint64, texts []string) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
			texts[j], texts[j-1] = texts[j-1], texts[j]
		}
	}
}

// TestHistoryPrunedAndGap: pruning keeps the configured count; a client resuming from
// before the pruned part is told there is a gap.
func TestHistoryPrunedAndGap(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HistoryMax = 3; generousLimits(c) })
	a := ts.user(t, "alice")
	for i := 1; i <= 6; i++ {
		a.mustAck(map[string]any{"type": "say", "room": "lobby", "text": fmt.Sprint("m", i)})
	}
	if err := ts.App.pruneHistory(time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, _ := ts.App.store.Count(historyBucket("lobby")); n != 3 {
		t.Fatalf("%d messages kept, want 3", n)
	}
	b := ts.user(t, "bob")
	b.send(map[string]any{"type": "join", "room": "lobby", "after": 1})
	ev := b.expectHistory("lobby")
	for ev["gap"] != true {
		ev = b.expectHistory("lobby") // the join-time history came first
	}
	if _, texts := historyIDs(ev); fmt.Sprint(texts) != "[m4 m5 m6]" {
		t.Fatalf("after pruning %v", texts)
	}
	// Age: everything is older than a day from the far future.
	if err := ts.App.pruneHistory(time.Now().Add(31 * 24 * time.Hour)); err != nil {
		t.Fatal(err)
	}
	if n, _ := ts.App.store.Count(historyBucket("lobby")); n != 0 {
		t.Fatalf("%d old messages kept", n)
	}
}

// TestDeletedRoomHistoryDoesNotLeak: a new room with a deleted room's name starts
// empty, and the janitor purges the old history.
func TestDeletedRoomHistoryDoesNotLeak(t *testing.T) {
	ts := startServer(t, generousLimits)
	owner := ts.user(t, "olga")
	owner.mustAck(map[string]any{"type": "create", "room": "temp", "private": true})
	owner.mustAck(map[string]any{"type": "say", "room": "temp", "text": "private words"})
	owner.mustAck(map[string]any{"type": "delete_room", "room": "temp"})
	eve := ts.user(t, "eve")
	eve.send(map[string]any{"type": "join", "room": "temp", "after": 0})
	if ids, _ := historyIDs(eve.expectHistory("temp")); len(ids) != 0 {
		t.Fatalf("new room shows the deleted room's history: %v", ids)
	}
	if err := ts.App.pruneHistory(time.Now()); err != nil {
		t.Fatal(err)
	}
	if n, _ := ts.App.store.Count(historyBucket("temp")); n != 0 {
		t.Fatalf("purge left %d messages", n)
	}
}

// TestKill9KeepsAckedMessages: every message acknowledged before a SIGKILL is in the
// history after a restart, and ids keep increasing.
func TestKill9KeepsAckedMessages(t *testing.T) {
	dir, port := t.TempDir(), freePort(t)
	child := startChild(t, dir, port)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	a := ts.user(t, "alice")
	for i := 0; i < 40; i++ {
		a.send(map[string]any{"type": "say", "room": "lobby", "text": fmt.Sprint("t", i), "ref": strconv.Itoa(i)})
	}
	acked := map[string]float64{}
	for len(acked) < 15 {
		ev, err := a.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev["type"] == "ack" {
			acked["t"+ev["ref"].(string)] = ev["id"].(float64)
		}
	}
	child.Process.Kill()
	child.Wait()
	startChild(t, dir, port)
	b := ts.user(t, "bob")
	b.send(map[string]any{"type": "join", "room": "lobby", "after": 0})
	var ev map[string]any
	for ev == nil || len(ev["messages"].([]any)) < len(acked) {
		ev = b.expectHistory("lobby")
	}
	ids, texts := historyIDs(ev)
	have := map[string]bool{}
	for _, tx := range texts {
		have[tx] = true
	}
	for text := range acked {
		if !have[text] {
			t.Fatalf("acked %s lost after kill -9 (have %v)", text, texts)
		}
	}
	ack := b.cmd(map[string]any{"type": "say", "room": "lobby", "text": "after restart"})
	if id, ok := ack["id"].(float64); !ok || uint64(id) <= ids[len(ids)-1] {
		t.Fatalf("id %v after restart is not above %d", ack["id"], ids[len(ids)-1])
	}
}

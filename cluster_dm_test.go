package main

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/cluster/redistest"
)

// Conversations across cluster nodes (issue 14): a conversation is one room record in
// Redis whichever node opens it, its messages reach both members on any node in one
// order with the same ids, the peer's node brings the peer in as one node does, and
// a block set on either node refuses what the other sends.

// transcript is the messages of one conversation a socket was shown, live or in a
// history page, in the order it was shown them.
type transcript struct {
	room  string
	ids   []uint64
	texts []string
}

// take keeps ev's messages of the conversation: a message, or a history page's.
func (tr *transcript) take(ev map[string]any) {
	if ev["room"] != tr.room {
		return
	}
	switch ev["type"] {
	case "message":
		tr.ids, tr.texts = append(tr.ids, idOf(ev)), append(tr.texts, fmt.Sprint(ev["text"]))
	case "history":
		msgs, _ := ev["messages"].([]any)
		for _, m := range msgs {
			tr.take(m.(map[string]any))
		}
	}
}

// readUntil reads c's events, keeping the conversation's messages, until stop holds
// for one (which is returned), failing after 5 s.
func (tr *transcript) readUntil(c *wsClient, what string, stop func(ev map[string]any) bool) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %s: %v (shown %v)", what, err, tr.texts)
		}
		tr.take(ev)
		if stop(ev) {
			return ev
		}
	}
}

// say has c say text in the conversation and returns its ack's id, keeping what c is
// shown meanwhile.
func (tr *transcript) say(c *wsClient, text string) uint64 {
	c.t.Helper()
	ref := uniqueRef()
	c.send(map[string]any{"type": "say", "room": tr.room, "text": text, "ref": ref})
	ev := tr.readUntil(c, "the ack of "+text, func(ev map[string]any) bool { return ev["ref"] == ref })
	if ev["type"] != "ack" {
		c.t.Fatalf("say %q: %v", text, ev)
	}
	return idOf(ev)
}

// upTo reads c's events until n messages of the conversation were shown.
func (tr *transcript) upTo(c *wsClient, n int) {
	c.t.Helper()
	if len(tr.ids) < n {
		tr.readUntil(c, fmt.Sprint(n, " messages"), func(map[string]any) bool { return len(tr.ids) >= n })
	}
}

// isDMOf checks a joined event: the conversation room, as seen with peer.
func isDMOf(t *testing.T, j map[string]any, room, peer, what string) {
	t.Helper()
	p, _ := j["peer"].(map[string]any)
	if j["type"] != "joined" || j["room"] != room || j["kind"] != "dm" || j["private"] != true || p["id"] != peer {
		t.Fatalf("%s: %v, want joined of the conversation %s with peer %s", what, j, room, peer)
	}
}

// TestClusterDMAcrossNodes: alice on node 1 opens a conversation with bob, who is
// only on node 2 (node 1 has never seen him; a user connected nowhere is dm_refused). Her first message brings bob's node-2
// socket into it as one node does: `joined` (kind dm, peer alice), then the message,
// once, with her ack's id; a second socket of bob's there is brought in by the next.
// Messages both ways reach both in one order with the same
// ids. bob's open_dm on node 2 is the same conversation. bob leaves node 2, alice
// says three more, and bob's join on node 1 with `after` gets exactly those three,
// gap false.
func TestClusterDMAcrossNodes(t *testing.T) {
	_, nodes := startPair(t)
	alice := ready(nodes[0].ts.user(t, "alice"))
	bob := ready(nodes[1].ts.user(t, "bob"))
	room := dmName("dev:alice", "dev:bob")
	alice.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:ghost"}, codeDMRefused) // on no node
	isDMOf(t, alice.openDM("dev:bob"), room, "dev:bob", "alice's open_dm on node 1")
	alice.expectHistory(room)

	a, b := &transcript{room: room}, &transcript{room: room}
	var want []uint64
	var texts []string
	said := func(c *wsClient, tr *transcript, text string) {
		want, texts = append(want, tr.say(c, text)), append(texts, text)
	}
	said(alice, a, "hi bob")
	start := time.Now()
	isDMOf(t, b.readUntil(bob, "bob's pull into the conversation", func(ev map[string]any) bool {
		return ev["type"] == "joined"
	}), room, "dev:alice", "bob on node 2 after alice's first message")
	b.upTo(bob, 1)
	t.Logf("bob on node 2 had the first message %v after its ack", time.Since(start))
	// A second socket of bob's on node 2, opened after that, is brought in by the next
	// message as well (node 2 follows the conversation now and does it itself).
	bob2 := ready(nodes[1].ts.user(t, "bob"))
	said(alice, a, "for both of you")
	b2 := &transcript{room: room}
	isDMOf(t, b2.readUntil(bob2, "bob's second socket pulled in", func(ev map[string]any) bool {
		return ev["type"] == "joined"
	}), room, "dev:alice", "bob's second socket on node 2")
	b2.upTo(bob2, 2)
	// The first in its history, the second live; as on one node the live one may come
	// before the history page (a client places them by id).
	if slices.Sort(b2.ids); !slices.Equal(b2.ids, want) {
		t.Fatalf("bob's second socket was shown %v, want %v", b2.ids, want)
	}
	for i := range 3 {
		said(bob, b, fmt.Sprint("bob ", i))
		said(alice, a, fmt.Sprint("alice ", i))
	}
	a.upTo(alice, len(want))
	b.upTo(bob, len(want))
	for who, tr := range map[string]*transcript{"alice (node 1)": a, "bob (node 2)": b} {
		if !slices.Equal(tr.ids, want) || !slices.Equal(tr.texts, texts) {
			t.Fatalf("%s was shown %v %q, want %v %q", who, tr.ids, tr.texts, want, texts)
		}
	}
	for _, c := range []*wsClient{alice, bob} {
		for _, ev := range c.barrier() {
			if ev["room"] == room && (ev["type"] == "message" || ev["type"] == "history") {
				t.Fatalf("shown again: %v", ev)
			}
		}
	}
	isDMOf(t, bob.openDM("dev:alice"), room, "dev:alice", "bob's open_dm on node 2")

	bob.conn.Close()
	last := want[len(want)-1]
	var missed []uint64
	for i := range 3 {
		missed = append(missed, a.say(alice, fmt.Sprint("while away ", i)))
	}
	bob1 := ready(nodes[0].ts.user(t, "bob"))
	bob1.send(map[string]any{"type": "join", "room": room, "after": last})
	isDMOf(t, bob1.expect("joined"), room, "dev:alice", "bob's join on node 1")
	h := bob1.expectHistory(room)
	resumed := &transcript{room: room}
	resumed.take(h)
	if !slices.Equal(resumed.ids, missed) || h["gap"] != false {
		t.Fatalf("bob's resume on node 1 after %d: %v gap %v, want %v gap false", last, resumed.ids, h["gap"], missed)
	}
}

// createdEntries counts the first records in a room's or conversation's log in Redis:
// one is made once, whichever nodes make it.
func createdEntries(t *testing.T, rs *redistest.Server, room string) int {
	t.Helper()
	rc := newAdminRedis(t, rs)
	key := "mc:{r:" + room + "}:log"
	if isDMName(room) {
		key = "mc:{d:" + strings.TrimPrefix(room, dmPrefix) + "}:log"
	}
	es, err := rc.Do(context.Background(), rc.B().Xrange().Key(key).Start("-").End("+").Build()).AsXRange()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range es {
		if strings.Contains(e.FieldValues["e"], `"created":true`) {
			n++
		}
	}
	return n
}

// TestClusterDMOpenedOnceAcrossNodes: pairs of users, one on each node, open their
// conversation at the same moment from both sides. Each side gets `joined` of the
// same conversation (never busy, never a refusal), its log in Redis holds exactly one
// first record, and a message from either side reaches the other. A pair opening one
// after the other (bob on node 2 just after alice's ack) is one conversation too.
func TestClusterDMOpenedOnceAcrossNodes(t *testing.T) {
	rs, nodes := startPair(t)
	for i := range 6 {
		an, bn := fmt.Sprint("ann", i), fmt.Sprint("ben", i)
		x, y := ready(nodes[0].ts.user(t, an)), ready(nodes[1].ts.user(t, bn))
		room := dmName("dev:"+an, "dev:"+bn)
		x.send(map[string]any{"type": "open_dm", "user": "dev:" + bn, "ref": "open-x"})
		y.send(map[string]any{"type": "open_dm", "user": "dev:" + an, "ref": "open-y"})
		for c, ref := range map[*wsClient]string{x: "open-x", y: "open-y"} {
			var j map[string]any
			for j == nil || j["ref"] != ref {
				j = c.expectWithin(5*time.Second, "joined", "error")
			}
			if j["type"] != "joined" || j["room"] != room {
				t.Fatalf("round %d: open_dm at once: %v, want joined of %s", i, j, room)
			}
		}
		if n := createdEntries(t, rs, room); n != 1 {
			t.Fatalf("round %d: %d first records in the conversation's log, want 1", i, n)
		}
		tx, ty := &transcript{room: room}, &transcript{room: room}
		id := tx.say(x, "from node 1")
		ty.upTo(y, 1)
		id2 := ty.say(y, "from node 2")
		tx.upTo(x, 2)
		if !slices.Equal(tx.ids, []uint64{id, id2}) || !slices.Equal(ty.ids, []uint64{id, id2}) {
			t.Fatalf("round %d: shown %v and %v, want %v", i, tx.ids, ty.ids, []uint64{id, id2})
		}
	}
	alice, bob := ready(nodes[0].ts.user(t, "alice")), ready(nodes[1].ts.user(t, "bob"))
	room := alice.openDM("dev:bob")["room"].(string)
	isDMOf(t, bob.openDM("dev:alice"), room, "dev:alice", "bob's open_dm on node 2 after alice's")
	if n := createdEntries(t, rs, room); n != 1 {
		t.Fatalf("opened one after the other: %d first records, want 1", n)
	}
}

// TestClusterDMBlockAcrossNodes: bob, on node 2, blocks alice, on node 1, in the
// middle of their conversation. Within about a second alice's say on node 1 is refused
// dm_refused (the single-node code), her open_dm too, and bob is shown nothing she
// sent after the first refusal. Unblocked on node 2, her next say is acked again.
func TestClusterDMBlockAcrossNodes(t *testing.T) {
	_, nodes := startPair(t)
	alice := ready(nodes[0].ts.user(t, "alice"))
	bob := ready(nodes[1].ts.user(t, "bob"))
	room := alice.openDM("dev:bob")["room"].(string)
	a, b := &transcript{room: room}, &transcript{room: room}
	first := a.say(alice, "before")
	b.upTo(bob, 1)
	if p := bob.answer(map[string]any{"type": "dm_prefs", "block": "dev:alice"}, "dm_prefs"); p["type"] != "dm_prefs" {
		t.Fatalf("block on node 2: %v", p)
	}
	start := time.Now()
	var through []uint64
	for {
		ev := alice.cmd(map[string]any{"type": "say", "room": room, "text": "still?"})
		if ev["type"] == "error" {
			if ev["code"] != codeDMRefused {
				t.Fatalf("say after the block: %v, want dm_refused", ev)
			}
			break
		}
		through = append(through, idOf(ev))
		if time.Since(start) > 2*ctlBound {
			t.Fatalf("alice's say on node 1 still acked %v after bob's block on node 2", time.Since(start))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Logf("the block reached node 1 within %v (%d says acked before)", time.Since(start), len(through))
	alice.mustRefuse(map[string]any{"type": "say", "room": room, "text": "after"}, codeDMRefused)
	alice.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:bob"}, codeDMRefused)
	b.upTo(bob, 1+len(through))
	for _, ev := range bob.barrier() {
		b.take(ev)
	}
	if want := append([]uint64{first}, through...); !slices.Equal(b.ids, want) {
		t.Fatalf("bob was shown %v %q, want only %v", b.ids, b.texts, want)
	}
	bob.answer(map[string]any{"type": "dm_prefs", "unblock": "dev:alice"}, "dm_prefs")
	deadline := time.Now().Add(2 * ctlBound)
	for alice.cmd(map[string]any{"type": "say", "room": room, "text": "again"})["type"] != "ack" {
		if time.Now().After(deadline) {
			t.Fatal("alice still refused after bob's unblock")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterDMForgedAnnouncement: an OpDM entry sealed with another key is put in the
// control log, naming alice and bob's conversation (made, nothing said yet). Node 2
// drops it and counts it (chat_cluster_ctl_dropped_total{reason="forged"} 1): bob's
// socket there is not brought into the conversation, while a genuine entry behind it
// is applied.
func TestClusterDMForgedAnnouncement(t *testing.T) {
	rs := redistest.Start(t)
	files := newClusterFiles(t)
	n1 := startNodes(t, 1, rs, files)[0]
	metrics := "127.0.0.1:" + freePort(t)
	n2 := startNodes(t, 1, rs, files, "CHAT_METRICS_ADDR="+metrics)[0]
	alice := ready(n1.ts.user(t, "alice"))
	bob := ready(n2.ts.user(t, "bob"))
	carol1, carol2 := ready(n1.ts.user(t, "carol")), ready(n2.ts.user(t, "carol"))
	room := alice.openDM("dev:bob")["room"].(string)
	before := scrapeCounter(t, metrics, `chat_cluster_ctl_dropped_total{reason="forged"}`)

	rogue, err := cluster.NewSealer([][]byte{bytes.Repeat([]byte{1}, cluster.ClusterKeySize)}, "abcd", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	const ctl = "mc:{g}:ctl"
	forged := rogue.Seal(ctl, []byte(`{"op":"dm","room":"`+room+`"}`))
	rc := newAdminRedis(t, rs)
	if err := rc.Do(context.Background(), rc.B().Xadd().Key(ctl).Id("*").FieldValue().FieldValue("e", string(forged)).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	// A genuine entry behind it: once carol's node-2 socket has it, node 2 read past both.
	carol1.answer(map[string]any{"type": "dm_prefs", "refuse_strangers": true}, "dm_prefs")
	carol2.expectWithin(2*ctlBound, "dm_prefs")
	for _, ev := range bob.barrier() {
		if ev["room"] == room {
			t.Fatalf("bob on node 2 after a forged announcement: %v", ev)
		}
	}
	if got := scrapeCounter(t, metrics, `chat_cluster_ctl_dropped_total{reason="forged"}`); got != before+1 {
		t.Fatalf("forged entries counted %v, want %v", got, before+1)
	}
}

// TestClusterDMCountsTowardMaxRooms: a conversation takes a place among the cluster's
// -max-rooms as it does on one node, reserved before its first record like a room's.
// With -max-rooms 4 (the lobby and three more), alice on node 1 makes two rooms while
// bob on node 2 opens two conversations, all at once: exactly three are made, one is
// room_limit, and a further create or open_dm on either node is room_limit too.
func TestClusterDMCountsTowardMaxRooms(t *testing.T) {
	_, nodes := startPair(t, "CHAT_MAX_ROOMS=4")
	alice, bob := ready(nodes[0].ts.user(t, "alice")), ready(nodes[1].ts.user(t, "bob"))
	for _, name := range []string{"cleo", "dora", "emil"} {
		ready(nodes[1].ts.user(t, name))
	}
	for i, room := range []string{"den", "attic"} {
		alice.send(map[string]any{"type": "create", "room": room, "ref": "new-" + room})
		peer := []string{"dev:cleo", "dev:dora"}[i]
		bob.send(map[string]any{"type": "open_dm", "user": peer, "ref": "new-" + peer})
	}
	made, refused := 0, 0
	for _, c := range []*wsClient{alice, bob} {
		for range 2 {
			var ev map[string]any
			for ev == nil || !strings.HasPrefix(fmt.Sprint(ev["ref"]), "new-") {
				ev = c.expectWithin(5*time.Second, "ack", "joined", "error")
			}
			switch {
			case ev["type"] == "ack" || ev["type"] == "joined":
				made++
			case ev["code"] == codeRoomLimit:
				refused++
			default:
				t.Fatalf("%v: %v, want made or room_limit", ev["ref"], ev)
			}
		}
	}
	if made != 3 || refused != 1 {
		t.Fatalf("two rooms and two conversations at once: %d made, %d room_limit; want 3 and 1", made, refused)
	}
	alice.mustRefuse(map[string]any{"type": "create", "room": "cellar"}, codeRoomLimit)
	bob.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:emil"}, codeRoomLimit)
}

// TestMigrateRedisDM: a single node's conversation survives migrate-redis. On one node
// alice opens a conversation with bob and each says one message in it. After the move
// the conversation is in the cluster's rooms index, its log holds one first record,
// and bob's open_dm on node 2 and alice's on node 1 both join it with those two
// messages (same ids, same texts); alice's next message there is numbered after them
// and reaches bob on node 2.
func TestMigrateRedisDM(t *testing.T) {
	files := newClusterFiles(t)
	single, ts, dir := singleForMigration(t, files)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	alice.mustAck(map[string]any{"type": "say", "room": lobby, "text": "id 1 stays behind"})
	room := alice.openDM("dev:bob")["room"].(string)
	a, b := &transcript{room: room}, &transcript{room: room}
	want := []uint64{a.say(alice, "hello bob")}
	b.upTo(bob, 1)
	want = append(want, b.say(bob, "hello alice"))
	single.Process.Kill()
	single.Wait()

	rs := redistest.Start(t)
	if err := migrateRedisCommand(nil, migrationEnv(dir, rs, files)); err != nil {
		t.Fatalf("migrate-redis: %v", err)
	}
	rc := newAdminRedis(t, rs)
	if listed, err := rc.Do(context.Background(), rc.B().Hexists().Key("mc:{g}:rooms").Field(room).Build()).AsBool(); err != nil || !listed {
		t.Fatalf("conversation in the rooms index after the move: %v %v", listed, err)
	}
	if n := createdEntries(t, rs, room); n != 1 {
		t.Fatalf("%d first records in the moved conversation's log, want 1", n)
	}
	nodes := startNodes(t, 2, rs, files)
	texts := []string{"hello bob", "hello alice"}
	views := map[string]*transcript{}
	socks := map[string]*wsClient{}
	for who, peer := range map[string]string{"bob": "dev:alice", "alice": "dev:bob"} {
		nd := nodes[0]
		if who == "bob" {
			nd = nodes[1]
		}
		c := ready(nd.ts.user(t, who))
		isDMOf(t, c.openDM(peer), room, peer, who+"'s open_dm after the move")
		tr := &transcript{room: room}
		tr.take(c.expectHistory(room))
		if !slices.Equal(tr.ids, want) || !slices.Equal(tr.texts, texts) {
			t.Fatalf("%s's history after the move: %v %q, want %v %q", who, tr.ids, tr.texts, want, texts)
		}
		views[who], socks[who] = tr, c
	}
	if n := createdEntries(t, rs, room); n != 1 {
		t.Fatalf("%d first records after both opened it, want 1", n)
	}
	next := views["alice"].say(socks["alice"], "after the move")
	if next != want[1]+1 {
		t.Fatalf("first message after the move: id %d, want %d", next, want[1]+1)
	}
	views["bob"].upTo(socks["bob"], 3)
	if got := views["bob"].ids[2]; got != next {
		t.Fatalf("bob on node 2 was shown id %d, want %d", got, next)
	}
}

// TestClusterDMListedAfterRestart: a conversation opened on node 1 is loaded from the
// rooms index by node 2 when it starts again (nothing of it in node 2's own store):
// bob's `rooms` there lists it as a conversation with alice before he opens it.
func TestClusterDMListedAfterRestart(t *testing.T) {
	_, nodes := startPair(t)
	alice := ready(nodes[0].ts.user(t, "alice"))
	ready(nodes[1].ts.user(t, "bob")) // connected: a user of the cluster for node 1
	room := alice.openDM("dev:bob")["room"].(string)
	nd := nodes[1]
	nd.Process.Kill()
	nd.Wait()
	nd.restart(t)
	bob := ready(nd.ts.user(t, "bob"))
	bob.send(map[string]any{"type": "rooms"})
	found := false
	for _, r := range bob.expect("rooms")["rooms"].([]any) {
		r := r.(map[string]any)
		if r["room"] == room {
			p, _ := r["peer"].(map[string]any)
			found = r["kind"] == "dm" && p["id"] == "dev:alice"
		}
	}
	if !found {
		t.Fatalf("node 2 after its restart does not list %s as bob's conversation with alice", room)
	}
}

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"modified-chat/internal/mlsoracle"
)

// openDMWith opens a conversation with extra fields on open_dm and returns its joined
// event, keeping every other event for later expects.
func (c *wsClient) openDMWith(user string, extra map[string]any) map[string]any {
	c.t.Helper()
	v := map[string]any{"type": "open_dm", "user": user}
	for k, x := range extra {
		v[k] = x
	}
	ev := c.keep(v)
	if ev["type"] != "joined" {
		c.t.Fatalf("open_dm %s: %v", user, ev)
	}
	return ev
}

// dmMLS is the mls field of a conversation's joined event, nil when it is plain.
func dmMLS(t *testing.T, j map[string]any) map[string]any {
	t.Helper()
	info, _ := j["mls"].(map[string]any)
	if (j["e2ee"] == true) != (info != nil) {
		t.Fatalf("joined says e2ee %v with mls %v", j["e2ee"], j["mls"])
	}
	return info
}

// TestDME2EEChosen: a new conversation is end-to-end encrypted exactly when both
// users have a live device in the key directory, unless the opener asks for a plain
// one with e2ee:false; a conversation that exists keeps what it is, whoever reopens
// it and whatever they ask.
func TestDME2EEChosen(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob := newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob")
	dave := newMLSDevice(t, ts, o, "dave")
	carol := ts.user(t, "carol") // no device

	j := alice.c.openDMWith("dev:bob", nil)
	info := dmMLS(t, j)
	if info == nil || info["ready"] != false || info["group_id"] == "" || j["kind"] != "dm" {
		t.Fatalf("a new conversation between two users with devices: %v", j)
	}
	room := j["room"].(string)
	if dmMLS(t, alice.c.openDMWith("dev:carol", nil)) != nil {
		t.Fatal("a conversation with a user without a device is E2EE")
	}
	if dmMLS(t, carol.openDM("dev:dave")) != nil {
		t.Fatal("a conversation opened by a user without a device is E2EE")
	}
	if dmMLS(t, alice.c.openDMWith("dev:dave", map[string]any{"e2ee": false})) != nil {
		t.Fatal("e2ee:false gave an E2EE conversation")
	}
	// Existing ones keep what they are, from either side.
	if again := bob.c.openDMWith("dev:alice", map[string]any{"e2ee": false}); again["room"] != room || dmMLS(t, again) == nil ||
		dmMLS(t, again)["group_id"] != info["group_id"] {
		t.Fatalf("bob reopening the E2EE conversation with e2ee:false: %v", again)
	}
	if again := dave.c.openDMWith("dev:alice", map[string]any{"e2ee": true}); dmMLS(t, again) != nil {
		t.Fatalf("dave reopening the plain conversation with e2ee:true: %v", again)
	}
	// A revoked device does not count: dave's only one goes, and a new conversation
	// with him is plain.
	dave.c.mustKeep(map[string]any{"type": "revoke_device", "device": dave.id.device})
	if dmMLS(t, bob.c.openDMWith("dev:dave", nil)) != nil {
		t.Fatal("a conversation with a user whose only device is revoked is E2EE")
	}
	// The plain conversations refuse E2EE commands as any plain room does.
	plain := carol.openDM("dev:dave")["room"].(string)
	carol.mustRefuse(map[string]any{"type": "mls_resync", "room": plain}, codeBadMLS)
}

// TestDME2EEFlow: an end-to-end encrypted conversation under the Delivery Service's
// rules, with ts-mls clients. Alice opens it and creates its group; bob's device,
// which had no KeyPackage then, is added once it uploads some; the Welcome waits for
// bob until he opens the conversation. He reads alice's message, which the bolt
// store holds only as ciphertext. A block refuses alice's mls_app (also announced as
// bin) with dm_refused and delivers nothing; leaving keeps bob a member, with no
// Remove proposed, and a message pulls him in again. Alice deletes her message: bob
// is told, it is gone from history and from the file; her commit cannot be deleted.
func TestDME2EEFlow(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, func(c *Config) { c.Store = "bolt"; c.DataDir = dir; generousLimits(c) })
	o := mlsoracle.Start(t)
	alice, bob := newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob")
	alice.upload(2)

	j := alice.c.openDMWith("dev:bob", nil)
	room, gid := j["room"].(string), dmMLS(t, j)["group_id"].(string)
	pub, identity := ext(ts)
	g := o.Do(map[string]any{"op": "create", "id": "alice", "group_id": gid, "ext_pub": pub, "ext_identity": identity})
	alice.c.mustKeep(map[string]any{"type": "mls_group_init", "room": room, "group_info": g.Str("group_info"), "key_package": g.Str("key_package")})

	// Bob's device uploads KeyPackages only now: the hub proposes its Add to the room.
	bob.upload(2)
	p := alice.processNext("mls_proposals")
	if ch := p["changes"].([]any); len(ch) != 1 || ch[0].(map[string]any)["device"] != bob.id.device {
		t.Fatalf("proposals once bob's device has KeyPackages: %v", p)
	}
	commit := alice.commit(room, 0)
	if commit["type"] != "ack" || commit["epoch"] != float64(1) {
		t.Fatalf("alice's Add commit: %v", commit)
	}
	// Bob was never in the conversation's live room: the Welcome waits for his join.
	noneOfType(t, bob.c.barrier(), "mls_welcome")
	if bj := bob.c.openDMWith("dev:alice", nil); bj["room"] != room || dmMLS(t, bj)["ready"] != true {
		t.Fatalf("bob's joined: %v", bj)
	}
	bob.processNext("mls_welcome")

	const secret, plain = "okapi-canary-51d0", "plain-dm-canary-e3"
	sent := alice.send(room, 1, secret)
	if sent["type"] != "ack" {
		t.Fatalf("mls_app in the conversation: %v", sent)
	}
	m := bob.c.awaitKeep("mls_app")
	if got := o.Do(map[string]any{"op": "process", "id": "bob", "msg": m["msg"]}); got.Str("text") != secret {
		t.Fatalf("bob read %q", got.Str("text"))
	}

	// A block since: refused like a say, announced or not, and nothing reaches bob.
	bob.c.answer(map[string]any{"type": "dm_prefs", "block": "dev:alice"}, "dm_prefs")
	blocked := o.Do(map[string]any{"op": "encrypt", "id": "alice", "text": "after-the-block"}).Bytes("msg")
	alice.c.refusedWith(map[string]any{"type": "mls_app", "room": room, "epoch": 1, "msg": mlsoracle.B64(blocked)}, codeDMRefused)
	ref := uniqueRef()
	alice.c.send(map[string]any{"type": "mls_app", "room": room, "epoch": 1, "bin": len(blocked), "ref": ref})
	alice.c.sendRaw(2, blocked)
	if ev := alice.c.awaitKeep("error"); ev["code"] != codeDMRefused || ev["ref"] != ref {
		t.Fatalf("a bin mls_app after the block: %v", ev)
	}
	noneOfType(t, bob.c.barrier(), "mls_app")
	bob.c.answer(map[string]any{"type": "dm_prefs", "unblock": "dev:alice"}, "dm_prefs")

	// Leaving a conversation only leaves its live room: no Remove of bob's leaf.
	bob.c.mustAck(map[string]any{"type": "leave", "room": room})
	noneOfType(t, alice.c.barrier(), "mls_proposals")
	if ack := alice.send(room, 1, "back-again"); ack["type"] != "ack" {
		t.Fatalf("mls_app after bob left the live room: %v", ack)
	}
	if pj := bob.c.awaitKeep("joined"); pj["room"] != room {
		t.Fatalf("bob was pulled into %v", pj)
	}
	m2 := bob.c.awaitKeep("mls_app")
	if got := o.Do(map[string]any{"op": "process", "id": "bob", "msg": m2["msg"]}); got.Str("text") != "back-again" {
		t.Fatalf("bob read %q after being pulled in", got.Str("text"))
	}

	alice.c.mustAck(map[string]any{"type": "say", "room": lobby, "text": plain})
	raw, err := os.ReadFile(filepath.Join(dir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(plain)) {
		t.Fatal("the plain canary is not in the store file: the scan sees nothing")
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the E2EE conversation's plaintext is in the store file")
	}
	msg := m["msg"].(string)
	if !bytes.Contains(raw, []byte(msg)) {
		t.Fatal("the conversation's ciphertext is not in the store file")
	}

	// Deleting: the ciphertext goes, bob's page is told; the group's log stays.
	id := uint64(sent["id"].(float64))
	alice.c.refusedWith(map[string]any{"type": "delete", "room": room, "id": commit["id"]}, codeNoSuchMessage)
	alice.c.mustKeep(map[string]any{"type": "delete", "room": room, "id": id})
	if ev := bob.c.awaitKeep("deleted"); ev["room"] != room || uint64(ev["id"].(float64)) != id || ev["by"] != deletedBySender {
		t.Fatalf("bob was told %v", ev)
	}
	h := bob.c.answer(map[string]any{"type": "history", "room": room}, "history")
	if h["type"] != "history" {
		t.Fatalf("history: %v", h)
	}
	kept := map[string]int{}
	for _, e := range h["messages"].([]any) {
		e := e.(map[string]any)
		kept[e["type"].(string)]++
		if uint64(e["id"].(float64)) == id {
			t.Fatalf("the deleted mls_app is still in history: %v", e)
		}
	}
	if kept["mls_app"] != 1 || kept["mls_commit"] != 1 || kept["mls_group_info"] != 1 || kept["mls_proposals"] != 1 {
		t.Fatalf("history after the delete holds %v", kept)
	}
	raw, err = os.ReadFile(filepath.Join(dir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(msg)) {
		t.Fatal("the deleted ciphertext is still in the store file")
	}
}

// TestE2EERoomModeratorDelete: in an E2EE room the owner removes bob's mls_app by its
// id: both get `deleted` by moderator, the ciphertext is gone from history, and bob, a
// member without expel, cannot delete alice's.
func TestE2EERoomModeratorDelete(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "vault")
	mine := alice.send("vault", 1, "alice-says")
	bobs := bob.send("vault", 1, "bob-says")
	if mine["type"] != "ack" || bobs["type"] != "ack" {
		t.Fatalf("mls_app: %v %v", mine, bobs)
	}
	bob.c.refusedWith(map[string]any{"type": "delete", "room": "vault", "id": mine["id"]}, codeForbidden)
	id := uint64(bobs["id"].(float64))
	alice.c.mustKeep(map[string]any{"type": "delete", "room": "vault", "id": id})
	for _, d := range []*mlsDevice{alice, bob} {
		if ev := d.c.awaitKeep("deleted"); uint64(ev["id"].(float64)) != id || ev["by"] != deletedByModerator {
			t.Fatalf("%s was told %v", d.name, ev)
		}
	}
	h := bob.c.answer(map[string]any{"type": "history", "room": "vault"}, "history")
	for _, e := range h["messages"].([]any) {
		if e := e.(map[string]any); uint64(e["id"].(float64)) == id {
			t.Fatalf("the removed mls_app is still in history: %v", e)
		}
	}
}

// TestClusterDME2EE: an encrypted conversation between alice on node 1 and bob on
// node 2. Both have live devices, so it is end-to-end encrypted as on one node; alice
// makes its group, node 1 proposes bob's device from the KeyPackages he uploaded
// through node 2, alice commits; her first message brings bob's socket on node 2 into
// the conversation, where it gets his Welcome (read from the commit's entry) and the
// message, and reads it; his answer reaches her.
func TestClusterDME2EE(t *testing.T) {
	_, nodes := startPair(t)
	o := mlsoracle.Start(t)
	alice, bob := newMLSDevice(t, nodes[0].ts, o, "alice"), newMLSDevice(t, nodes[1].ts, o, "bob")
	alice.upload(2)
	bob.upload(2)
	j := alice.c.openDMWith("dev:bob", nil)
	info := dmMLS(t, j)
	if info == nil || info["ready"] != false {
		t.Fatalf("a conversation in a cluster between two users with devices: %v", j)
	}
	room := j["room"].(string)
	pub, identity := alice.extSender(nodes[0].ts)
	g := o.Do(map[string]any{"op": "create", "id": "alice", "group_id": info["group_id"], "ext_pub": pub, "ext_identity": identity})
	alice.c.mustKeep(map[string]any{"type": "mls_group_init", "room": room, "group_info": g.Str("group_info"), "key_package": g.Str("key_package")})
	wantChanges(t, alice, "the group's creation", "add dev:bob/"+bob.id.device)
	if ack := alice.commit(room, 0); ack["type"] != "ack" || ack["epoch"] != float64(1) {
		t.Fatalf("alice's Add commit: %v", ack)
	}
	const secret = "okapi-canary-across-nodes"
	if ack := alice.send(room, 1, secret); ack["type"] != "ack" {
		t.Fatalf("mls_app in the conversation: %v", ack)
	}
	if pj := bob.c.awaitKeep("joined"); pj["room"] != room || pj["e2ee"] != true {
		t.Fatalf("bob was brought into %v", pj)
	}
	bob.processNext("mls_welcome")
	// Live, or in the history of the join that brought him in (the message's entry
	// and the control log's announcement reach node 2 in either order).
	var msg any
	for msg == nil {
		ev := bob.c.awaitKeep("mls_app", "history")
		if ev["type"] == "mls_app" {
			msg = ev["msg"]
		}
		for _, m := range historyMessages(ev) {
			if m["type"] == "mls_app" {
				msg = m["msg"]
			}
		}
	}
	if o.Do(map[string]any{"op": "process", "id": "bob", "msg": msg}).Str("text") != secret {
		t.Fatal("bob could not read alice's message on node 2")
	}
	if ack := bob.send(room, 1, "and back"); ack["type"] != "ack" {
		t.Fatalf("bob's answer: %v", ack)
	}
	if m := alice.c.awaitKeep("mls_app"); o.Do(map[string]any{"op": "process", "id": "alice", "msg": m["msg"]}).Str("text") != "and back" {
		t.Fatal("alice could not read bob's answer from node 2")
	}
}

// historyMessages lists a history event's messages (none for another event).
func historyMessages(ev map[string]any) []map[string]any {
	var out []map[string]any
	list, _ := ev["messages"].([]any)
	for _, m := range list {
		if mm, ok := m.(map[string]any); ok {
			out = append(out, mm)
		}
	}
	return out
}

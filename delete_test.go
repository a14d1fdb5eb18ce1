package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

// sayID says text in room and returns the stored message's id from the ack.
func (c *wsClient) sayID(room, text string) uint64 {
	c.t.Helper()
	ev := c.cmd(map[string]any{"type": "say", "room": room, "text": text})
	if ev["type"] != "ack" {
		c.t.Fatalf("say %q: %v", text, ev)
	}
	return uint64(ev["id"].(float64))
}

// expectDeleted waits for the deleted event of a message and checks who it says did it.
func (c *wsClient) expectDeleted(room string, id uint64, by string) {
	c.t.Helper()
	ev := c.expect("deleted")
	if ev["room"] != room || uint64(ev["id"].(float64)) != id || ev["by"] != by {
		c.t.Fatalf("deleted %v, want %s %d by %s", ev, room, id, by)
	}
}

// historyTexts lists the texts of a history event's messages.
func historyTexts(ev map[string]any) []string {
	_, texts := historyIDs(ev)
	return texts
}

// TestDeleteOwnMessage: a sender deletes their message; every open page is told, and
// it is absent from a fresh joiner's history and from a reconnect's catch-up.
func TestDeleteOwnMessage(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	first := alice.sayID(lobby, "first")
	doomed := alice.sayID(lobby, "doomed")
	alice.sayID(lobby, "third")

	alice.send(map[string]any{"type": "delete", "room": lobby, "id": doomed})
	alice.expectDeleted(lobby, doomed, deletedBySender)
	bob.expectDeleted(lobby, doomed, deletedBySender)

	carol := ts.user(t, "carol")
	if got := historyTexts(carol.expectHistory(lobby)); len(got) != 2 || got[0] != "first" || got[1] != "third" {
		t.Fatalf("fresh joiner's history %v", got)
	}
	bob2 := ts.user(t, "bob")
	bob2.expectHistory(lobby)
	bob2.send(map[string]any{"type": "join", "room": lobby, "after": first})
	if got := historyTexts(bob2.expectHistory(lobby)); len(got) != 1 || got[0] != "third" {
		t.Fatalf("catch-up after %d: %v", first, got)
	}
	// Deleting it again: it is gone.
	alice.mustRefuse(map[string]any{"type": "delete", "room": lobby, "id": doomed}, codeNoSuchMessage)
}

// TestDeleteOthersForbidden attacks deletion: a member cannot delete another's message
// (forbidden), nothing is announced and it stays in history; an id that was never a
// message is no_such_message; a room one cannot see is no_such_room.
func TestDeleteOthersForbidden(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	id := alice.sayID(lobby, "mine")
	bob.mustRefuse(map[string]any{"type": "delete", "room": lobby, "id": id}, codeForbidden)
	bob.mustRefuse(map[string]any{"type": "delete", "room": lobby, "id": id + 1000}, codeNoSuchMessage)
	alice.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	secret := alice.sayID("vault", "hidden")
	bob.mustRefuse(map[string]any{"type": "delete", "room": "vault", "id": secret}, codeNoSuchRoom)
	noneOfType(t, alice.barrier(), "deleted")
	noneOfType(t, bob.barrier(), "deleted")
	if got := historyTexts(ts.user(t, "carol").expectHistory(lobby)); len(got) != 1 || got[0] != "mine" {
		t.Fatalf("history after a refused delete: %v", got)
	}
}

// TestModeratorDeletes: a room's owner removes a member's message, an admin one in the
// lobby; both are announced as a moderator's removal and audited without the text. In
// a conversation, not even a global moderator may remove the other side's message.
func TestModeratorDeletes(t *testing.T) {
	ts := adminServer(t, func(c *Config) { c.Moderators = []string{"dev:mod"} })
	root, olga, bob, mod := ts.user(t, "root"), ts.user(t, "olga"), ts.user(t, "bob"), ts.user(t, "mod")
	olga.mustAck(map[string]any{"type": "create", "room": "club"})
	bob.mustAck(map[string]any{"type": "join", "room": "club"})
	id := bob.sayID("club", "spam spam spam")
	olga.mustAck(map[string]any{"type": "delete", "room": "club", "id": id})
	bob.expectDeleted("club", id, deletedByModerator)

	lid := bob.sayID(lobby, "more spam")
	root.mustAck(map[string]any{"type": "delete", "room": lobby, "id": lid})
	bob.expectDeleted(lobby, lid, deletedByModerator)

	root.send(map[string]any{"type": "audit", "limit": 10})
	audit := root.expect("audit")
	raw, _ := json.Marshal(audit)
	if bytes.Contains(raw, []byte("spam")) {
		t.Fatalf("the audit log holds the deleted text: %s", raw)
	}
	n := 0
	for _, e := range audit["entries"].([]any) {
		if e := e.(map[string]any); e["action"] == "delete_message" {
			n++
			if e["old"] != "dev:bob" {
				t.Fatalf("audit entry %v does not name the sender", e)
			}
		}
	}
	if n != 2 {
		t.Fatalf("%d delete_message audit entries, want 2: %s", n, raw)
	}

	room := bob.openDM("dev:mod")["room"].(string)
	bob.expectHistory(room)
	dm := bob.sayID(room, "between us")
	mod.mustRefuse(map[string]any{"type": "delete", "room": room, "id": dm}, codeForbidden)
	bob.mustAck(map[string]any{"type": "delete", "room": room, "id": dm})
	mod.expectDeleted(room, dm, deletedBySender)
}

// TestDeleteFileGoesWithMessage: deleting a file message takes its bytes with it.
func TestDeleteFileGoesWithMessage(t *testing.T) {
	ts := fileServer(t, nil)
	mod := ts.user(t, "mod")
	mod.sendFile(lobby, "dot.png", "image/png", testPNG(t), "f1")
	ack := mod.expect("ack")
	id := uint64(ack["id"].(float64))
	mod.mustAck(map[string]any{"type": "delete", "room": lobby, "id": id})
	if msgs := ts.user(t, "bob").expectHistory(lobby)["messages"].([]any); len(msgs) != 0 {
		t.Fatalf("history after deleting the file: %v", msgs)
	}
}

// TestDeletedGoneFromDisk: once the delete is committed, the text is nowhere in the
// bbolt file, not in a page still in use and not in a freed one.
func TestDeletedGoneFromDisk(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, func(c *Config) { c.Store = "bolt"; c.DataDir = dir; generousLimits(c) })
	alice := ts.user(t, "alice")
	const secret = "zebra-unicorn-4711-do-not-keep"
	alice.sayID(lobby, "before")
	id := alice.sayID(lobby, secret)
	alice.sayID(lobby, "after")
	raw, err := os.ReadFile(filepath.Join(dir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the text is not in the file before the delete: the scan proves nothing")
	}
	alice.mustAck(map[string]any{"type": "delete", "room": lobby, "id": id})
	raw, err = os.ReadFile(filepath.Join(dir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if n := bytes.Count(raw, []byte(secret)); n != 0 {
		t.Fatalf("the deleted text is still in the store file %d times", n)
	}
}

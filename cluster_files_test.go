package main

import (
	"bytes"
	"encoding/base64"
	"testing"

	"modified-chat/internal/cluster/redistest"
)

// Files and deletions across nodes: a message's only copy is its entry in the room's
// Stream, so fetch_file and delete work on any node, whichever node took the message.

// fetchOn asks c for file id of room and returns the answer (file or error).
func fetchOn(c *wsClient, room string, id uint64) map[string]any {
	c.t.Helper()
	return c.sendAwait(map[string]any{"type": "fetch_file", "room": room, "id": id}, uniqueRef(),
		func(ev map[string]any) bool { return ev["type"] == "file" || ev["type"] == "error" })
}

// TestClusterFetchFileAcrossNodes: a file sent on node 1 is fetched on node 2 byte for
// byte; a text message's id and an id never used are no_such_file there.
func TestClusterFetchFileAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t), "CHAT_MODERATORS=dev:mod")
	mod, bob := ready(nodes[0].ts.user(t, "mod")), ready(nodes[1].ts.user(t, "bob"))
	img := testPNG(t)
	mod.sendFile(lobby, "dot.png", "image/png", img, "f1")
	ack := mod.answerTo("f1")
	if ack["type"] != "ack" {
		t.Fatalf("file answered %v", ack)
	}
	id := idOf(ack)
	f := fetchOn(bob, lobby, id)
	got, err := base64.StdEncoding.DecodeString(f["data"].(string))
	if f["type"] != "file" || idOf(f) != id || f["name"] != "dot.png" || err != nil || !bytes.Equal(got, img) {
		t.Fatalf("fetch_file on node 2: %v (err %v), want the file's bytes", f, err)
	}
	text := mod.sayID(lobby, "not a file")
	for _, id := range []uint64{text, text + 1000} {
		if ev := fetchOn(bob, lobby, id); ev["type"] != "error" || ev["code"] != codeNoSuchFile {
			t.Fatalf("fetch_file of %d on node 2: %v, want no_such_file", id, ev)
		}
	}
}

// TestClusterDeleteAcrossNodes: alice, on node 1, deletes her message on node 2 too:
// every member on both nodes is told once, a fresh joiner's history and a resume
// from before it on either node leave it out with gap false, and its file is gone.
// bob on node 2 cannot delete alice's message (forbidden, nothing announced); a
// second delete is no_such_message.
func TestClusterDeleteAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t), "CHAT_MODERATORS=dev:alice")
	alice, bob := ready(nodes[0].ts.user(t, "alice")), ready(nodes[1].ts.user(t, "bob"))
	first := alice.sayID(lobby, "first")
	alice.sendFile(lobby, "dot.png", "image/png", testPNG(t), "f1")
	doomed := idOf(alice.answerTo("f1"))
	alice.sayID(lobby, "third")

	bob.mustRefuse(map[string]any{"type": "delete", "room": lobby, "id": doomed}, codeForbidden)
	noneOfType(t, alice.barrier(), "deleted")

	bob.send(map[string]any{"type": "delete", "room": lobby, "id": first - 1})
	bob.expectError(codeNoSuchMessage)

	alice2 := ready(nodes[1].ts.user(t, "alice"))
	alice2.send(map[string]any{"type": "delete", "room": lobby, "id": doomed, "ref": "d1"})
	for _, c := range []*wsClient{alice2, bob, alice} {
		c.expectDeleted(lobby, doomed, deletedBySender)
		if c == alice2 {
			if ev := c.answerTo("d1"); ev["type"] != "ack" {
				t.Fatalf("delete on node 2 answered %v", ev)
			}
		}
		noneOfType(t, c.barrier(), "deleted")
	}
	if ev := fetchOn(bob, lobby, doomed); ev["code"] != codeNoSuchFile {
		t.Fatalf("fetch_file of the deleted file: %v", ev)
	}
	for i, nd := range nodes {
		carol := nd.ts.user(t, "carol")
		if got := historyTexts(carol.expect("history")); len(got) != 2 || got[0] != "first" || got[1] != "third" {
			t.Fatalf("fresh joiner's history on node %d: %v", i+1, got)
		}
		ev := carol.sendAwait(map[string]any{"type": "history", "room": lobby, "after": first}, uniqueRef(),
			func(ev map[string]any) bool { return ev["type"] == "history" })
		if got := historyTexts(ev); len(got) != 1 || got[0] != "third" || ev["gap"] != false {
			t.Fatalf("resume after %d on node %d: %v gap %v, want third and gap false", first, i+1, got, ev["gap"])
		}
	}
	alice.mustRefuse(map[string]any{"type": "delete", "room": lobby, "id": doomed}, codeNoSuchMessage)
}

package main

import (
	"slices"
	"testing"

	"modified-chat/internal/mlsoracle"
)

// changesOf lists an mls_proposals event's changes as "op user/device".
func changesOf(p map[string]any) []string {
	var out []string
	for _, c := range p["changes"].([]any) {
		ch := c.(map[string]any)
		out = append(out, ch["op"].(string)+" "+ch["user"].(string)+"/"+ch["device"].(string))
	}
	return out
}

// wantChanges fails unless the next mls_proposals alice processes proposes exactly want.
func wantChanges(t *testing.T, d *mlsDevice, what string, want ...string) {
	t.Helper()
	if got := changesOf(d.processNext("mls_proposals")); !slices.Equal(got, want) {
		t.Fatalf("proposals on %s: %v, want %v", what, got, want)
	}
}

// cannotRead fails if d's kept MLS state decrypts msg.
func cannotRead(t *testing.T, d *mlsDevice, msg string) {
	t.Helper()
	if r := d.o.Try(map[string]any{"op": "process", "id": d.name, "msg": msg}); r.Err() == "" {
		t.Fatalf("%s's kept state read the message after its removal: %q", d.name, r.Str("text"))
	}
}

// sendNew has d encrypt text at epoch and send it, failing unless it is acked; it
// returns the ciphertext.
func (d *mlsDevice) sendNew(room string, epoch uint64, text string) string {
	d.t.Helper()
	m := d.o.Do(map[string]any{"op": "encrypt", "id": d.name, "text": text}).Str("msg")
	d.c.mustKeep(map[string]any{"type": "mls_app", "room": room, "epoch": epoch, "msg": m})
	return m
}

// TestE2EELeaveRemoves: a member who leaves an E2EE room has their leaf proposed for
// removal by the hub; until a member commits, sending is refused (commit_required);
// after the commit the epoch moves on and the leaver's kept state cannot read the next
// message (acceptance 1 for leave).
func TestE2EELeaveRemoves(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "vault")
	m := o.Do(map[string]any{"op": "encrypt", "id": "alice", "text": "too early"}).Str("msg")
	bob.c.send(map[string]any{"type": "leave", "room": "vault"})
	bob.c.awaitKeep("left")
	wantChanges(t, alice, "bob's leave", "remove dev:bob/bob-device")
	alice.c.refusedWith(map[string]any{"type": "mls_app", "room": "vault", "epoch": 1, "msg": m}, codeCommitRequired)
	if ack := alice.commit("vault", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("alice's Remove commit: %v", ack)
	}
	cannotRead(t, bob, alice.sendNew("vault", 2, "after bob left"))
}

// TestE2EERevokeRemoves: revoking a device removes its leaf from every E2EE room (a
// Remove proposal of exactly that device); the revoked device's connection can send
// nothing more there (unknown_device), and its kept state cannot read what follows.
func TestE2EERevokeRemoves(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "vault")
	bob.c.mustKeep(map[string]any{"type": "revoke_device", "device": bob.id.device})
	wantChanges(t, alice, "the revoke", "remove dev:bob/bob-device")
	if ack := alice.commit("vault", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("alice's Remove commit: %v", ack)
	}
	m := o.Do(map[string]any{"op": "encrypt", "id": "bob", "text": "from a revoked device"}).Str("msg")
	bob.c.refusedWith(map[string]any{"type": "mls_app", "room": "vault", "epoch": 2, "msg": m}, codeUnknownDevice)
	cannotRead(t, bob, alice.sendNew("vault", 2, "after the revoke"))
}

// TestE2EEResync: mls_resync proposes, in one event, the Remove of the device's leaf
// and its Add from a fresh KeyPackage; the commit's Welcome brings the device back and
// it reads the next message. With no KeyPackage left, a second resync is refused
// (no_keypackage) and only the Remove is proposed: a device that lost its state must
// not keep a leaf it cannot use.
func TestE2EEResync(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "vault") // bob has one KeyPackage left
	bob.c.mustKeep(map[string]any{"type": "mls_resync", "room": "vault"})
	wantChanges(t, alice, "bob's resync", "remove dev:bob/bob-device", "add dev:bob/bob-device")
	if ack := alice.commit("vault", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("alice's commit of the resync: %v", ack)
	}
	if w := bob.processNext("mls_welcome"); w["epoch"] != float64(2) {
		t.Fatalf("bob's Welcome: %v", w)
	}
	alice.sendNew("vault", 2, "after the resync")
	if got := o.Do(map[string]any{"op": "process", "id": "bob", "msg": bob.c.awaitKeep("mls_app")["msg"]}); got.Str("text") != "after the resync" {
		t.Fatalf("bob read %q", got.Str("text"))
	}
	bob.c.refusedWith(map[string]any{"type": "mls_resync", "room": "vault"}, codeNoKeyPackage)
	wantChanges(t, alice, "a resync without KeyPackages", "remove dev:bob/bob-device")
}

// TestE2EESelfUpdateLimited: a member may commit with nothing outstanding (a
// self-update) selfUpdateBurst times; the next is refused with update_limited and
// changes nothing (the epoch stays, so the same commit is refused again, not stale).
// The budget is the device's: bob may still self-update, and a commit of the hub's
// proposals is never limited.
func TestE2EESelfUpdateLimited(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "vault")
	epoch := uint64(1)
	for range selfUpdateBurst {
		if ack := alice.commit("vault", epoch); ack["type"] != "ack" {
			t.Fatalf("self-update at epoch %d: %v", epoch, ack)
		}
		epoch++
		bob.processNext("mls_commit")
	}
	for range 2 {
		if ev := alice.commit("vault", epoch); ev["type"] != "error" || ev["code"] != codeUpdateLimited {
			t.Fatalf("self-update %d: %v, want %s", selfUpdateBurst+1, ev, codeUpdateLimited)
		}
	}
	if ack := bob.commit("vault", epoch); ack["type"] != "ack" {
		t.Fatalf("bob's self-update: %v", ack)
	}
	epoch++
	alice.processNext("mls_commit")
	alice.c.mustKeep(map[string]any{"type": "kick", "room": "vault", "user": "dev:bob"})
	wantChanges(t, alice, "bob's kick", "remove dev:bob/bob-device")
	if ack := alice.commit("vault", epoch); ack["type"] != "ack" {
		t.Fatalf("alice's commit of the hub's Remove: %v", ack)
	}
}

// TestKPUploadHandsOverWelcomesOnce: a connection gets the Welcome kept for its device
// when its kp_upload first binds it, and repeating kp_upload for the same device hands
// over nothing again (each would re-send every kept Welcome, tens of kB, for a few
// bytes). bob's second connection joins the room before it binds the device.
func TestKPUploadHandsOverWelcomesOnce(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	_, bob, _ := twoInRoom(t, ts, o, "vault")
	second := ts.user(t, "bob")
	second.mustKeep(map[string]any{"type": "join", "room": "vault"})
	second.mustKeep(map[string]any{"type": "kp_upload", "device": bob.id.device, "kps": []string{}})
	if w := second.awaitKeep("mls_welcome"); w["room"] != "vault" {
		t.Fatalf("the Welcome handed over: %v", w)
	}
	for range 3 {
		second.mustKeep(map[string]any{"type": "kp_upload", "device": bob.id.device, "kps": []string{}})
	}
	noneOfType(t, second.barrier(), "mls_welcome")
}

package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"testing"

	"github.com/gorilla/websocket"

	"modified-chat/internal/keydir"
	"modified-chat/internal/sigmsg"
)

// testIdentity is a user's root key and one device, as a page would hold them.
type testIdentity struct {
	user    string
	urk     ed25519.PrivateKey
	device  string
	dik     ed25519.PrivateKey
	counter uint64
}

// newTestIdentity makes a root key and a first device for user.
func newTestIdentity(user, device string) *testIdentity {
	_, urk, _ := ed25519.GenerateKey(nil)
	_, dik, _ := ed25519.GenerateKey(nil)
	return &testIdentity{user: user, urk: urk, device: device, dik: dik}
}

// b64 is standard base64, as the protocol uses for keys and signatures.
func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// registration is a register_device for id's device, certified by its root key for
// certUser (normally id.user).
func (id *testIdentity) registration(certUser string) map[string]any {
	c := sigmsg.DeviceCert{User: certUser, Device: id.device, Created: 1700000000000}
	copy(c.DIK[:], id.dik.Public().(ed25519.PublicKey))
	return map[string]any{
		"type": "register_device", "urk": b64(id.urk.Public().(ed25519.PublicKey)), "device": id.device,
		"dik": b64(id.dik.Public().(ed25519.PublicKey)), "created": c.Created, "cert": b64(ed25519.Sign(id.urk, c.Encode())),
	}
}

// signedSay is a say in room signed by id's device with the next counter.
func (id *testIdentity) signedSay(room, text string) map[string]any {
	id.counter++
	m := &sigmsg.Message{Kind: "say", Room: room, User: id.user, Device: id.device, Counter: id.counter, TS: 1700000000000, Text: text}
	rand.Read(m.ID[:])
	return map[string]any{"type": "say", "room": room, "text": text, "sig": map[string]any{
		"device": id.device, "counter": m.Counter, "msg_id": b64(m.ID[:]), "ts": m.TS,
		"signature": b64(ed25519.Sign(id.dik, m.Encode())),
	}}
}

// historyCount is how many messages the store holds for room.
func historyCount(t *testing.T, ts *testServer, room string) int {
	t.Helper()
	ts.App.hub.do(func() {}) // every stamped message is handed to the writer
	done := make(chan struct{})
	ts.App.writer.Submit(nil, func(error) { close(done) }) // and committed
	<-done
	n, err := ts.App.store.Count(historyBucket(room))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestSignedSayDelivered: a signed say reaches the room with its signature, which a
// recipient can verify from the delivered fields alone, and keeps it in history.
func TestSignedSayDelivered(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	alice.mustAck(id.signedSay("lobby", "hello, signed"))
	msg := bob.expect("message")
	sig, ok := msg["sig"].(map[string]any)
	if !ok || msg["text"] != "hello, signed" {
		t.Fatalf("delivered %v", msg)
	}
	m := &sigmsg.Message{Kind: "say", Room: msg["room"].(string), User: msg["from"].(map[string]any)["id"].(string),
		Device: sig["device"].(string), Counter: uint64(sig["counter"].(float64)), TS: uint64(sig["ts"].(float64)), Text: msg["text"].(string)}
	mid, _ := base64.StdEncoding.DecodeString(sig["msg_id"].(string))
	copy(m.ID[:], mid)
	s, _ := base64.StdEncoding.DecodeString(sig["signature"].(string))
	if !m.Verify(id.dik.Public().(ed25519.PublicKey), s) {
		t.Fatalf("the delivered signature does not verify: %v", sig)
	}
	carol := ts.user(t, "carol")
	hist := carol.expectHistory("lobby")
	last := hist["messages"].([]any)[len(hist["messages"].([]any))-1].(map[string]any)
	if hs, ok := last["sig"].(map[string]any); !ok || hs["signature"] != sig["signature"] {
		t.Fatalf("history lost the signature: %v", last)
	}
}

// TestSignedSayAttacks: every forged, altered, replayed or misdirected signed say is
// refused with its code, reaches nobody and is not stored.
func TestSignedSayAttacks(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	spare := newTestIdentity("dev:alice", "alice-old-phone")
	spare.urk = id.urk
	alice.mustAck(spare.registration(id.user))
	alice.mustAck(map[string]any{"type": "revoke_device", "device": spare.device})
	bobID := newTestIdentity("dev:bob", "bob-laptop")
	bob.mustAck(bobID.registration(bobID.user))
	alice.mustAck(id.signedSay("lobby", "one genuine message"))
	bob.expect("message")
	stored := historyCount(t, ts, "lobby")

	replay := id.signedSay("lobby", "said once")
	alice.mustAck(replay)
	bob.expect("message")
	stored++

	attacks := []struct {
		name string
		as   *wsClient
		msg  map[string]any
		code string
	}{
		{"signature over other bytes", alice, func() map[string]any {
			m := id.signedSay("lobby", "pay alice 10")
			m["text"] = "pay alice 1000"
			return m
		}(), codeBadSignature},
		{"signed for another room", alice, func() map[string]any {
			m := id.signedSay("elsewhere", "meant for elsewhere")
			m["room"] = "lobby"
			return m
		}(), codeBadSignature},
		{"signed by another key", alice, func() map[string]any {
			forger := *id
			_, forger.dik, _ = ed25519.GenerateKey(nil)
			return forger.signedSay("lobby", "forged")
		}(), codeBadSignature},
		{"unknown device id", alice, func() map[string]any {
			ghost := *id
			ghost.device = "ghost-device"
			return ghost.signedSay("lobby", "from a ghost")
		}(), codeBadDevice},
		{"revoked device", alice, spare.signedSay("lobby", "from a revoked device"), codeBadDevice},
		{"another user's device", bob, id.signedSay("lobby", "bob posing as alice's device"), codeBadDevice},
		{"another user's message replayed", bob, replay, codeBadDevice},
		{"replayed message", alice, replay, "replayed"},
		{"text the server would clean", alice, id.signedSay("lobby", "trailing space "), codeBadSignedText},
		{"bidi control in signed text", alice, id.signedSay("lobby", "abc\u202edef"), codeBadSignedText},
	}
	for _, a := range attacks {
		a.as.mustRefuse(a.msg, a.code)
	}
	noneOfType(t, bob.barrier(), "message")
	noneOfType(t, alice.barrier(), "message")
	if n := historyCount(t, ts, "lobby"); n != stored {
		t.Fatalf("%d messages stored, want %d", n, stored)
	}
	if n := testutilCounter(t, ts, "chat_rejected_total", "reason", codeBadSignature); n != 3 {
		t.Fatalf("bad_signature counted %v times, want 3", n)
	}
}

// TestDeviceRegistrationAttacks: uploads that are not the session user's own,
// certified by their root key, are refused with their code and change nothing.
func TestDeviceRegistrationAttacks(t *testing.T) {
	ts := startServer(t, func(c *Config) { generousLimits(c); c.MaxDevicesPerUser = 2 })
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	records := func() int {
		n, err := ts.App.store.Count("keydir")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	historyCount(t, ts, "lobby") // commits everything so far
	before := records()

	// Bob sends alice's own, valid registration, or one certified for alice: the
	// certificate binds the user, so under bob's session it does not verify.
	bob.mustRefuse(id.registration(id.user), "bad_certificate")
	forAlice := newTestIdentity("dev:alice", "bob-sneaky-1")
	bob.mustRefuse(forAlice.registration("dev:alice"), "bad_certificate")
	named := newTestIdentity("dev:bob", "bob-sneaky-2").registration("dev:bob")
	named["user"] = "dev:alice"
	bob.mustRefuse(named, codeForbidden)
	// A second device certified by a root key that is not alice's.
	other := newTestIdentity("dev:alice", "alice-phone")
	other.urk = newTestIdentity("", "").urk
	wrongURK := other.registration(id.user)
	wrongURK["urk"] = b64(id.urk.Public().(ed25519.PublicKey))
	alice.mustRefuse(wrongURK, "bad_certificate")
	// Or naming another root key outright.
	alice.mustRefuse(other.registration(id.user), "urk_mismatch")
	// certify_device without a root key on record.
	carol := ts.user(t, "carol")
	cert := newTestIdentity("dev:carol", "carol-laptop").registration("dev:carol")
	cert["type"] = "certify_device"
	delete(cert, "urk")
	carol.mustRefuse(cert, "bad_certificate")
	// Malformed fields.
	bad := id.registration(id.user)
	bad["dik"] = "not base64"
	alice.mustRefuse(bad, codeBadEnvelope)
	bad = id.registration(id.user)
	bad["device"] = "x"
	alice.mustRefuse(bad, codeBadDevice)
	// Bob may not revoke alice's device.
	bob.mustRefuse(map[string]any{"type": "revoke_device", "user": "dev:alice", "device": id.device}, codeForbidden)

	if n := records(); n != before {
		t.Fatalf("%d directory records after refusals, want %d", n, before)
	}
	if ts.App.keys.User("dev:bob") != nil || ts.App.keys.User("dev:carol") != nil {
		t.Fatal("a refused upload made a record")
	}
	// The device limit: alice's second device is certified by her root key.
	phone := newTestIdentity("dev:alice", "alice-phone")
	phone.urk = id.urk
	alice.mustAck(phone.registration(id.user))
	third := newTestIdentity("dev:alice", "alice-tablet")
	third.urk = id.urk
	alice.mustRefuse(third.registration(id.user), "too_many_devices")
}

// TestDeviceEvents: contacts hear of added and revoked devices and of a reset root
// key; an admin may revoke anyone's device; `devices` describes a user's record.
func TestDeviceEvents(t *testing.T) {
	ts := adminServer(t, nil)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	if ev := bob.expect("device_added"); ev["user"] != "dev:alice" || ev["device"].(map[string]any)["device"] != id.device {
		t.Fatalf("device_added %v", ev)
	}
	bob.send(map[string]any{"type": "devices", "user": "dev:alice"})
	if ev := bob.expect("devices"); ev["urk"] != b64(id.urk.Public().(ed25519.PublicKey)) || len(ev["devices"].([]any)) != 1 {
		t.Fatalf("devices %v", ev)
	}

	// A certify_device from the laptop adds the phone under the same root key.
	phone := newTestIdentity("dev:alice", "alice-phone")
	phone.urk = id.urk
	cert := phone.registration(id.user)
	cert["type"] = "certify_device"
	delete(cert, "urk")
	alice.mustAck(cert)
	bob.expect("device_added")

	root := ts.user(t, "root")
	root.mustAck(map[string]any{"type": "revoke_device", "user": "dev:alice", "device": phone.device})
	if ev := bob.expect("device_revoked"); ev["device"] != phone.device || ev["by"] != "dev:root" {
		t.Fatalf("device_revoked %v", ev)
	}

	fresh := newTestIdentity("dev:alice", "alice-new-laptop")
	reset := fresh.registration(fresh.user)
	reset["type"] = "reset_identity"
	alice.mustAck(reset)
	ev := bob.expect("key_changed")
	if ev["urk"] != b64(fresh.urk.Public().(ed25519.PublicKey)) {
		t.Fatalf("key_changed %v", ev)
	}
	// The old laptop is revoked by the reset: its signatures are refused.
	alice.mustRefuse(id.signedSay("lobby", "from before the reset"), codeBadDevice)
	alice.mustAck(fresh.signedSay("lobby", "after the reset"))
}

// TestKeyDirectorySurvivesRestart: devices and counters are durable, so a message
// replayed after a restart is still refused.
func TestKeyDirectorySurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	onDisk := func(c *Config) { generousLimits(c); c.Store, c.DataDir = "bolt", dir }
	ts := startServer(t, onDisk)
	cookie := devLogin(t, ts.URL, "alice")
	alice := ts.dial(t, cookie)
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	said := id.signedSay("lobby", "before the restart")
	alice.mustAck(said)
	ts.App.shutdown(2e9)
	ts.srv.Close()

	ts = startServer(t, onDisk)
	alice = ts.dial(t, cookie)
	alice.send(map[string]any{"type": "devices"})
	if ev := alice.expect("devices"); len(ev["devices"].([]any)) != 1 {
		t.Fatalf("after a restart: %v", ev)
	}
	alice.mustRefuse(said, "replayed")
	alice.mustAck(id.signedSay("lobby", "after the restart"))
}

// testutilCounter reads one labelled counter from the app's registry.
func testutilCounter(t *testing.T, ts *testServer, name, label, value string) float64 {
	t.Helper()
	families, err := ts.App.metrics.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// signedFile is a file announcement for data signed by id's device.
func (id *testIdentity) signedFile(room, name, mime string, data []byte, ref string) map[string]any {
	id.counter++
	m := &sigmsg.Message{Kind: "file", Room: room, User: id.user, Device: id.device, Counter: id.counter, TS: 1700000000000, Name: name, Mime: mime, SHA256: sha256.Sum256(data)}
	rand.Read(m.ID[:])
	return map[string]any{"type": "file", "room": room, "name": name, "mime": mime, "size": len(data), "ref": ref, "sig": map[string]any{
		"device": id.device, "counter": m.Counter, "msg_id": b64(m.ID[:]), "ts": m.TS,
		"signature": b64(ed25519.Sign(id.dik, m.Encode())),
	}}
}

// TestSignedFile: a signed file covers its bytes: delivered with its signature when
// they match, refused with bad_signature and delivered to nobody when they do not.
func TestSignedFile(t *testing.T) {
	ts := fileServer(t, nil)
	mod, bob := ts.user(t, "mod"), ts.user(t, "bob")
	id := newTestIdentity("dev:mod", "mod-laptop")
	mod.mustAck(id.registration(id.user))
	img := testPNG(t)
	mod.send(id.signedFile("lobby", "dot.png", "image/png", img, "f1"))
	mod.sendRaw(websocket.BinaryMessage, img)
	if f := bob.expect("file"); f["sig"] == nil {
		t.Fatalf("signed file delivered without its signature: %v", f["sig"])
	}
	other := testPNG(t)
	other[len(other)-5] ^= 1 // same size and type, other bytes
	mod.send(id.signedFile("lobby", "dot.png", "image/png", img, "f2"))
	mod.sendRaw(websocket.BinaryMessage, other)
	if ev := mod.expectError(codeBadSignature); ev["ref"] != "f2" {
		t.Fatalf("refusal %v", ev)
	}
	noneOfType(t, bob.barrier(), "file")
}

// TestHubRefusesDeviceRevokedAfterCheck: a device revoked after the readPump verified
// its signature (the two run on different goroutines) is refused by the hub's own
// recheck; the message reaches nobody.
func TestHubRefusesDeviceRevokedAfterCheck(t *testing.T) {
	h := newTestHub(t, nil)
	alice, bob := fakeClient("alice", 64), fakeClient("bob", 64)
	h.register <- alice
	h.register <- bob
	id := newTestIdentity("dev:alice", "alice-laptop")
	reg := id.registration(id.user)
	up := &keydir.Upload{Device: id.device, DIK: id.dik.Public().(ed25519.PublicKey), Created: reg["created"].(uint64)}
	up.URK = id.urk.Public().(ed25519.PublicKey)
	up.Cert, _ = base64.StdEncoding.DecodeString(reg["cert"].(string))
	h.do(func() {
		ch, kerr := h.app.keys.Register("dev:alice", up)
		if kerr != nil {
			t.Errorf("register: %v", kerr)
			return
		}
		ch.Apply()
		ch.Release()
	})
	drain(t, h, alice)
	drain(t, h, bob)

	// What the readPump hands over once the signature verified.
	cmd := sayCmd(alice, lobby, "checked, then revoked")
	cmd.env.sig = &signature{device: id.device, counter: 1, sig: make([]byte, 64), dik: up.DIK}
	h.do(func() {
		ch, kerr := h.app.keys.Revoke("dev:alice", id.device, "dev:alice")
		if kerr != nil {
			t.Errorf("revoke: %v", kerr)
			return
		}
		ch.Apply()
	})
	h.inbound <- cmd
	got := drain(t, h, alice)
	if len(got) != 1 || got[0]["type"] != "error" || got[0]["code"] != codeBadDevice {
		t.Fatalf("alice got %v, want one bad_device error", got)
	}
	noneOfType(t, drain(t, h, bob), "message")
}

// TestDevicesForManyUsers: one `devices` names up to 50 users and gets an answer for
// each; more is refused.
func TestDevicesForManyUsers(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice := ts.user(t, "alice")
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	alice.send(map[string]any{"type": "devices", "users": []string{"dev:alice", "dev:nobody"}})
	got := map[string]int{}
	for range 2 {
		ev := alice.expect("devices")
		got[ev["user"].(string)] = len(ev["devices"].([]any))
	}
	if got["dev:alice"] != 1 || got["dev:nobody"] != 0 || len(got) != 2 {
		t.Fatalf("answers %v", got)
	}
	many := make([]string, maxDevicesQuery+1)
	for i := range many {
		many[i] = fmt.Sprintf("dev:u%d", i)
	}
	alice.mustRefuse(map[string]any{"type": "devices", "users": many}, codeBadEnvelope)
	noneOfType(t, alice.barrier(), "devices")
}

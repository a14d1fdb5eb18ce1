package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"io"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"modified-chat/internal/mls"
	"modified-chat/internal/mlsoracle"
)

// wire is a tiny writer of the MLS wire format, for commits no honest client makes.
type wire struct{ b []byte }

func (e *wire) u8(v byte) *wire    { e.b = append(e.b, v); return e }
func (e *wire) u16(v uint16) *wire { e.b = binary.BigEndian.AppendUint16(e.b, v); return e }
func (e *wire) u32(v uint32) *wire { e.b = binary.BigEndian.AppendUint32(e.b, v); return e }
func (e *wire) u64(v uint64) *wire { e.b = binary.BigEndian.AppendUint64(e.b, v); return e }
func (e *wire) raw(v []byte) *wire { e.b = append(e.b, v...); return e }

// vec writes an opaque<V> (varint length; the test values are below 16 KiB).
func (e *wire) vec(v []byte) *wire {
	if len(v) < 64 {
		e.b = append(e.b, byte(len(v)))
	} else {
		e.b = binary.BigEndian.AppendUint16(e.b, uint16(len(v))|0x4000)
	}
	return e.raw(v)
}

// forgedCommit builds a PublicMessage commit from leaf, naming refs by reference,
// with or without a path whose leaf has sigKey and identity. The signature and tags
// are junk: the hub cannot check them (members do), only the structure and the rules.
func forgedCommit(gid []byte, epoch uint64, leaf uint32, refs [][]byte, byValue []byte, path bool, sigKey, identity []byte) []byte {
	props := &wire{}
	for _, r := range refs {
		props.u8(2).vec(r)
	}
	if byValue != nil {
		props.u8(1).raw(byValue)
	}
	e := (&wire{}).u16(1).u16(mls.WirePublic).vec(gid).u64(epoch).u8(mls.SenderMember).u32(leaf).vec(nil).u8(mls.ContentCommit)
	e.vec(props.b)
	if path {
		caps := (&wire{}).vec(nil).vec(nil).vec(nil).vec(nil).vec(nil)
		ln := (&wire{}).vec(bytes.Repeat([]byte{7}, 32)).vec(sigKey).u16(mls.CredentialBasic).vec(identity).raw(caps.b).u8(3).vec(nil).vec(nil).vec(bytes.Repeat([]byte{1}, 64))
		e.u8(1).raw(ln.b).vec(nil)
	} else {
		e.u8(0)
	}
	return e.vec(bytes.Repeat([]byte{2}, 64)).vec(bytes.Repeat([]byte{3}, 32)).vec(bytes.Repeat([]byte{4}, 32)).b
}

// twoInRoom sets up alice (owner, leaf 0) and bob (leaf 1) in an E2EE room at epoch 1.
func twoInRoom(t *testing.T, ts *testServer, o *mlsoracle.Oracle, room string) (alice, bob *mlsDevice, gid []byte) {
	t.Helper()
	alice, bob = newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob")
	alice.upload(2)
	bob.upload(2)
	g := alice.e2eeRoom(ts, room)
	gid, _ = base64.StdEncoding.DecodeString(g)
	alice.c.mustKeep(map[string]any{"type": "invite", "room": room, "user": "dev:bob"})
	bob.c.mustKeep(map[string]any{"type": "join", "room": room})
	alice.processNext("mls_proposals")
	if ack := alice.commit(room, 0); ack["type"] != "ack" {
		t.Fatalf("add bob: %v", ack)
	}
	bob.processNext("mls_welcome")
	return alice, bob, gid
}

// TestE2EECommitInvalid (acceptance test 10): with the hub's Remove of bob
// outstanding, a commit that omits its reference, one without a path, one that
// changes the committer's key, one that adds a proposal by value, one from another
// leaf and a PrivateMessage commit are each refused with commit_invalid, and change
// nothing: alice's honest commit is then accepted at the same epoch.
func TestE2EECommitInvalid(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, _, gid := twoInRoom(t, ts, o, "vault")
	alice.c.mustKeep(map[string]any{"type": "kick", "room": "vault", "user": "dev:bob"})
	p := alice.processNext("mls_proposals")
	ref, _ := base64.StdEncoding.DecodeString(p["refs"].([]any)[0].(string))
	key, id := alice.leafPub, alice.id.identityBytes(alice.leafPub)
	other := newTestIdentity("dev:alice", "alice-other")
	gi := o.Do(map[string]any{"op": "commit", "id": "alice"}) // the honest commit, kept for last
	b64 := base64.StdEncoding.EncodeToString
	for name, commit := range map[string][]byte{
		"omits the Remove ref":   forgedCommit(gid, 1, 0, nil, nil, true, key, id),
		"no path with a Remove":  forgedCommit(gid, 1, 0, [][]byte{ref}, nil, false, nil, nil),
		"changed committer key":  forgedCommit(gid, 1, 0, [][]byte{ref}, nil, true, bytes.Repeat([]byte{9}, 32), id),
		"changed credential":     forgedCommit(gid, 1, 0, [][]byte{ref}, nil, true, key, other.identityBytes(key)),
		"a proposal by value":    forgedCommit(gid, 1, 0, [][]byte{ref}, mls.RemoveProposal(1), true, key, id),
		"another leaf as sender": forgedCommit(gid, 1, 1, [][]byte{ref}, nil, true, key, id),
		"a ref named twice":      forgedCommit(gid, 1, 0, [][]byte{ref, ref}, nil, true, key, id),
	} {
		ev := alice.c.keep(map[string]any{"type": "mls_commit", "room": "vault", "epoch": 1, "commit": b64(commit), "group_info": gi.Str("group_info")})
		if ev["code"] != codeCommitInvalid {
			t.Errorf("%s: %v %v, want commit_invalid", name, ev["code"], ev["message"])
		}
	}
	priv := o.Do(map[string]any{"op": "commit", "id": "alice", "private": true})
	if ev := alice.c.keep(map[string]any{"type": "mls_commit", "room": "vault", "epoch": 1, "commit": priv.Str("commit"), "group_info": priv.Str("group_info")}); ev["code"] != codeCommitInvalid {
		t.Errorf("a PrivateMessage commit: %v %v", ev["code"], ev["message"])
	}
	if ev := alice.c.keep(map[string]any{"type": "mls_commit", "room": "vault", "epoch": 1, "commit": gi.Str("commit"), "group_info": gi.Str("group_info")}); ev["type"] != "ack" || ev["epoch"] != float64(2) {
		t.Fatalf("the honest commit after the refused ones: %v", ev)
	}
}

// TestE2EECommitRace (acceptance test 9): bob and carol send a commit for the same
// epoch at once; exactly one is accepted, the other gets stale_epoch with the new
// epoch, and after the loser processes the winner all three members share the epoch
// and the epoch authenticator (the room code). The Add commit goes as a binary frame.
func TestE2EECommitRace(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob, carol := newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob"), newMLSDevice(t, ts, o, "carol")
	for _, d := range []*mlsDevice{alice, bob, carol} {
		d.upload(2)
	}
	alice.e2eeRoom(ts, "race")
	for _, d := range []*mlsDevice{bob, carol} {
		alice.c.mustKeep(map[string]any{"type": "invite", "room": "race", "user": d.id.user})
		d.c.mustKeep(map[string]any{"type": "join", "room": "race"})
		alice.processNext("mls_proposals")
	}
	// Both Adds in one commit, sent as a binary frame after a bin announcement.
	c := o.Do(map[string]any{"op": "commit", "id": "alice"})
	frame := lengthPrefixed(c.Bytes("commit"), c.Bytes("welcome"), c.Bytes("group_info"))
	alice.c.send(map[string]any{"type": "mls_commit", "room": "race", "epoch": 0, "bin": len(frame), "ref": "bin1"})
	alice.c.sendRaw(websocket.BinaryMessage, frame)
	if ack := alice.c.expect("ack"); ack["ref"] != "bin1" || ack["epoch"] != float64(1) {
		t.Fatalf("binary commit: %v", ack)
	}
	o.Do(map[string]any{"op": "apply", "id": "alice"})
	bob.processNext("mls_welcome")
	carol.processNext("mls_welcome")

	cb := o.Do(map[string]any{"op": "commit", "id": "bob"})
	cc := o.Do(map[string]any{"op": "commit", "id": "carol"})
	bob.c.send(map[string]any{"type": "mls_commit", "room": "race", "epoch": 1, "commit": cb.Str("commit"), "group_info": cb.Str("group_info"), "ref": "b"})
	carol.c.send(map[string]any{"type": "mls_commit", "room": "race", "epoch": 1, "commit": cc.Str("commit"), "group_info": cc.Str("group_info"), "ref": "c"})
	answer := func(d *mlsDevice) map[string]any { return d.c.awaitKeep("ack", "error") }
	ab, ac := answer(bob), answer(carol)
	var winner, loser *mlsDevice
	var lost map[string]any
	switch {
	case ab["type"] == "ack" && ac["code"] == codeStaleEpoch:
		winner, loser, lost = bob, carol, ac
	case ac["type"] == "ack" && ab["code"] == codeStaleEpoch:
		winner, loser, lost = carol, bob, ab
	default:
		t.Fatalf("two commits for one epoch: bob %v, carol %v", ab, ac)
	}
	if lost["epoch"] != float64(2) {
		t.Fatalf("stale_epoch carries %v, want 2", lost["epoch"])
	}
	o.Do(map[string]any{"op": "apply", "id": winner.name})
	loser.processNext("mls_commit")
	alice.processNext("mls_commit")
	var auth string
	for _, d := range []*mlsDevice{alice, bob, carol} {
		s := o.Do(map[string]any{"op": "state", "id": d.name})
		if s.Str("epoch") != "2" || (auth != "" && s.Str("auth") != auth) {
			t.Fatalf("%s ends at epoch %s with room code %s (others %s)", d.name, s.Str("epoch"), s.Str("auth"), auth)
		}
		auth = s.Str("auth")
	}
}

// lengthPrefixed joins parts as PROTOCOL.md's binary MLS frame: u32 length, bytes.
func lengthPrefixed(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// TestE2EEFastRejects (acceptance test 16): an announcement over the frame bound is
// refused as an envelope; a commit announced for an epoch far behind gets stale_epoch
// before its frame is read, the frame is dropped and the connection goes on; an
// mls_app of an old epoch is refused before its bytes are parsed (junk gets
// stale_epoch, not bad_mls); a frame longer than announced closes with 1009.
func TestE2EEFastRejects(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, _, _ := twoInRoom(t, ts, o, "fast")
	alice.c.refusedWith(map[string]any{"type": "mls_commit", "room": "fast", "epoch": 1, "bin": mlsMaxFrame + 1}, codeBadEnvelope)
	alice.c.send(map[string]any{"type": "mls_commit", "room": "fast", "epoch": 0, "bin": 5000, "ref": "old"})
	alice.c.sendRaw(websocket.BinaryMessage, make([]byte, 5000))
	if ev := alice.c.expect("error"); ev["code"] != codeStaleEpoch || ev["ref"] != "old" || ev["epoch"] != float64(1) {
		t.Fatalf("commit of an old epoch: %v", ev)
	}
	junk := base64.StdEncoding.EncodeToString([]byte("not MLS at all"))
	alice.c.refusedWith(map[string]any{"type": "mls_app", "room": "fast", "epoch": 0, "msg": junk}, codeStaleEpoch)
	alice.c.refusedWith(map[string]any{"type": "mls_app", "room": "fast", "epoch": 1, "msg": junk}, codeBadMLS)
	if ack := alice.send("fast", 1, "still here"); ack["type"] != "ack" {
		t.Fatalf("the connection after the refusals: %v", ack)
	}
	alice.c.send(map[string]any{"type": "mls_app", "room": "fast", "epoch": 1, "bin": 100})
	alice.c.sendRaw(websocket.BinaryMessage, make([]byte, 101))
	alice.c.expectClose(websocket.CloseMessageTooBig)
}

// TestKeyPackageDirectory: the directory's rules, each with its exact refusal: a
// KeyPackage of another user, one with a broken signature, an expired one, one that
// lives longer than 30 days, the same one twice, one already used, the 21st of a
// device, a device that is not the user's; a member without KeyPackages joins with
// no_keypackage and is added once a device uploads; so is a member with no device at
// all, and the hub goes on.
func TestKeyPackageDirectory(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob := newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob")
	up := func(d *mlsDevice, kps ...string) map[string]any {
		return d.c.keep(map[string]any{"type": "kp_upload", "device": d.id.device, "kps": kps})
	}
	bobs := bob.keyPackages(1)[0]
	if ev := up(alice, bobs); ev["code"] != codeBadMLS {
		t.Errorf("bob's KeyPackage uploaded by alice: %v", ev)
	}
	raw, _ := base64.StdEncoding.DecodeString(alice.keyPackages(1)[0])
	raw[len(raw)-1] ^= 1
	if ev := up(alice, base64.StdEncoding.EncodeToString(raw)); ev["code"] != codeBadMLS || !strings.Contains(ev["message"].(string), "signature") {
		t.Errorf("a KeyPackage with a broken signature: %v", ev)
	}
	now := time.Now().Unix()
	idb := mlsoracle.B64(alice.id.identityBytes(alice.leafPub))
	expired := o.Do(map[string]any{"op": "kp", "id": "alice", "identity": idb, "not_before": now - 7200, "not_after": now - 3600}).Str("kp")
	long := o.Do(map[string]any{"op": "kp", "id": "alice", "identity": idb, "not_before": now - 3600, "not_after": now + 31*86400}).Str("kp")
	// A page's usual one: from an hour back (slow clocks) to 30 days ahead.
	if ev := up(alice, o.Do(map[string]any{"op": "kp", "id": "alice", "identity": idb, "not_before": now - 3600, "not_after": now + 30*86400}).Str("kp")); ev["type"] != "ack" {
		t.Fatalf("a KeyPackage from an hour back to 30 days ahead: %v", ev)
	}
	for name, kp := range map[string]string{"expired": expired, "31 days": long} {
		if ev := up(alice, kp); ev["code"] != codeBadMLS || !strings.Contains(ev["message"].(string), "lifetime") {
			t.Errorf("%s: %v", name, ev)
		}
	}
	if ev := alice.c.keep(map[string]any{"type": "kp_upload", "device": "bob-device", "kps": []string{}}); ev["code"] != codeUnknownDevice {
		t.Errorf("another user's device: %v", ev)
	}
	one := alice.keyPackages(1)[0]
	if ev := up(alice, one, one); ev["code"] != codeBadMLS {
		t.Errorf("the same KeyPackage twice: %v", ev)
	}
	if ev := up(alice, one); ev["type"] != "ack" || ev["count"] != float64(2) {
		t.Fatalf("a good KeyPackage: %v", ev)
	}
	if ev := up(alice, one); ev["code"] != codeBadMLS {
		t.Errorf("a stored KeyPackage again: %v", ev)
	}
	if ev := up(alice, alice.keyPackages(kpPerDevice/2)...); ev["type"] != "ack" || ev["count"] != float64(kpPerDevice/2+2) {
		t.Fatalf("ten more: %v", ev)
	}
	if ev := up(alice, alice.keyPackages(kpPerDevice/2-1)...); ev["code"] != codeKPFull {
		t.Errorf("the 21st KeyPackage: %v", ev)
	}

	// bob has none: his join says so, and his upload adds him.
	alice.e2eeRoom(ts, "dir") // the creator's own KeyPackage is not one from the directory
	alice.c.mustKeep(map[string]any{"type": "invite", "room": "dir", "user": "dev:bob"})
	bob.c.mustKeep(map[string]any{"type": "join", "room": "dir"})
	if ev := bob.c.expect("error"); ev["code"] != codeNoKeyPackage || ev["room"] != "dir" {
		t.Fatalf("bob's join without KeyPackages: %v", ev)
	}
	bob.c.mustKeep(map[string]any{"type": "kp_upload", "device": bob.id.device, "kps": []string{bobs}})
	alice.processNext("mls_proposals")
	if ack := alice.commit("dir", 0); ack["type"] != "ack" {
		t.Fatalf("adding bob: %v", ack)
	}
	bob.processNext("mls_welcome")
	// bob's KeyPackage is used: uploading it again is refused.
	if ev := up(bob, bobs); ev["code"] != codeBadMLS {
		t.Errorf("a used KeyPackage again: %v", ev)
	}
	if ev := bob.c.awaitKeep("kp_low"); ev["count"] != float64(1) || ev["device"] != bob.id.device {
		t.Errorf("kp_low after the upload: %v", ev)
	}
	if ev := bob.c.awaitKeep("kp_low"); ev["count"] != float64(0) {
		t.Errorf("kp_low once the KeyPackage is used: %v", ev)
	}

	// carol never registered a device (a browser without Ed25519, a bot): she has no
	// record in the key directory at all. Her join is answered like bob's was, and
	// the hub keeps serving the room.
	carol := ts.user(t, "carol")
	alice.c.mustKeep(map[string]any{"type": "invite", "room": "dir", "user": "dev:carol"})
	carol.mustKeep(map[string]any{"type": "join", "room": "dir"})
	if ev := carol.expect("error"); ev["code"] != codeNoKeyPackage || ev["room"] != "dir" {
		t.Fatalf("carol's join without any device: %v", ev)
	}
	if ev := alice.c.keep(map[string]any{"type": "kp_upload", "device": alice.id.device, "kps": []string{}}); ev["type"] != "ack" {
		t.Fatalf("the hub after carol's join: %v", ev)
	}
}

// syncBuffer is a log sink tests read while the server writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestE2EENoPlaintextStored (acceptance test 14): after an E2EE conversation on the
// bbolt store, with debug logging, neither the data file nor the log holds the
// plaintext canary, while a canary said in a plain room is found in the file (the
// scan can see), and every stored E2EE message is MLS ciphertext.
func TestE2EENoPlaintextStored(t *testing.T) {
	cfg := testConfig(t)
	cfg.Store = "bolt"
	generousLimits(cfg)
	if err := cfg.validate(); err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	app, err := newAppWithClock(cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(app.routes())
	ts := &testServer{URL: srv.URL, App: app, srv: srv}
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "canary")
	const secret, plain = "zebra-canary-7f3a", "plain-canary-19c2"
	alice.send("canary", 1, secret)
	got := bob.c.expect("mls_app")
	if r := o.Do(map[string]any{"op": "process", "id": "bob", "msg": got["msg"]}); r.Str("text") != secret {
		t.Fatalf("bob read %q", r.Str("text"))
	}
	alice.c.mustAck(map[string]any{"type": "say", "room": "lobby", "text": plain})
	// A plaintext say into the E2EE room is refused, not stored beside the ciphertext.
	const stray = "stray-canary-5d01"
	if ev := alice.c.keep(map[string]any{"type": "say", "room": "canary", "text": stray}); ev["code"] != codeE2EERoom {
		t.Fatalf("a plaintext say in the E2EE room: %v", ev)
	}
	n := historyCount(t, ts, "canary")
	app.shutdown(2 * time.Second)
	srv.Close()
	db, err := os.ReadFile(filepath.Join(cfg.DataDir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(db, []byte(plain)) {
		t.Fatal("the plain room's canary is not in the data file: the scan sees nothing")
	}
	if bytes.Contains(db, []byte(stray)) {
		t.Fatal("the plaintext say refused in the E2EE room is in the data file")
	}
	if bytes.Contains(db, []byte(secret)) || strings.Contains(logs.String(), secret) {
		t.Fatal("the E2EE canary is in the data file or the log")
	}
	if n < 3 {
		t.Fatalf("the E2EE room's history holds %d events", n)
	}
	_ = io.Discard
	key, _ := os.ReadFile(filepath.Join(cfg.DataDir, externalSenderKeyFile))
	if fi, err := os.Stat(filepath.Join(cfg.DataDir, externalSenderKeyFile)); err != nil || fi.Mode().Perm() != 0o600 || len(key) == 0 {
		t.Fatalf("the external-sender key file: %v %v", fi, err)
	}
	_ = ed25519.PublicKeySize
}

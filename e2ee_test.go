package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"slices"
	"strconv"
	"testing"
	"time"

	"modified-chat/internal/mls"
	"modified-chat/internal/mlsoracle"
	"modified-chat/internal/sigmsg"
)

// mlsDevice is one test user's connection acting as an E2EE device: its directory
// identity and the ts-mls client (in the oracle) holding its MLS state.
type mlsDevice struct {
	t    *testing.T
	c    *wsClient
	id   *testIdentity
	o    *mlsoracle.Oracle
	name string // the oracle client's name
	// leafPub is the device's MLS signature key (made in the oracle).
	leafPub []byte
}

// keep answers a command with a ref like cmd, but keeps every other event for later
// expects: E2EE events arrive between a command and its answer.
func (c *wsClient) keep(v map[string]any) map[string]any {
	c.t.Helper()
	ref := "ref-" + time.Now().Format("150405.000000000")
	v["ref"] = ref
	c.send(v)
	var kept []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for the answer to %v: %v", v["type"], err)
		}
		if ev["ref"] == ref && (ev["type"] == "ack" || ev["type"] == "error" || ev["type"] == "joined") {
			c.pending = append(kept, c.pending...)
			c.pendingLen = append(make([]int, len(kept)), c.pendingLen...)
			return ev
		}
		kept = append(kept, ev)
	}
}

// awaitKeep returns the next event of one of types, keeping the others for later.
func (c *wsClient) awaitKeep(types ...string) map[string]any {
	c.t.Helper()
	var kept []map[string]any
	deadline := time.Now().Add(10 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %v: %v", types, err)
		}
		if slices.Contains(types, ev["type"].(string)) {
			c.pending = append(kept, c.pending...)
			c.pendingLen = append(make([]int, len(kept)), c.pendingLen...)
			return ev
		}
		kept = append(kept, ev)
	}
}

// mustKeep is keep that fails unless the answer is an ack (or joined).
func (c *wsClient) mustKeep(v map[string]any) map[string]any {
	c.t.Helper()
	ev := c.keep(v)
	if ev["type"] == "error" {
		c.t.Fatalf("%v refused: %v %v", v["type"], ev["code"], ev["message"])
	}
	return ev
}

// refusedWith fails unless the command is refused with code.
func (c *wsClient) refusedWith(v map[string]any, code string) map[string]any {
	c.t.Helper()
	ev := c.keep(v)
	if ev["type"] != "error" || ev["code"] != code {
		c.t.Fatalf("%v: got %v %v, want error %s", v["type"], ev["code"], ev["message"], code)
	}
	return ev
}

// identityBytes is the mc1 credential identity of the device for an MLS leaf key.
func (id *testIdentity) identityBytes(leafPub []byte) []byte {
	c := sigmsg.DeviceCert{User: id.user, Device: id.device, Created: 1700000000000}
	copy(c.DIK[:], id.dik.Public().(ed25519.PublicKey))
	mid := &mls.Identity{User: id.user, Device: id.device, URK: id.urk.Public().(ed25519.PublicKey),
		DIK: id.dik.Public().(ed25519.PublicKey), Created: c.Created, Cert: ed25519.Sign(id.urk, c.Encode()),
		LeafSig: ed25519.Sign(id.dik, mls.LeafBinding(id.user, id.device, leafPub))}
	return mid.Encode()
}

// newMLSDevice signs name in, registers a device and makes its MLS signature key.
func newMLSDevice(t *testing.T, ts *testServer, o *mlsoracle.Oracle, name string) *mlsDevice {
	t.Helper()
	d := &mlsDevice{t: t, c: ts.user(t, name), id: newTestIdentity("dev:"+name, name+"-device"), o: o, name: name}
	d.c.mustAck(d.id.registration(d.id.user))
	d.leafPub = o.Do(map[string]any{"op": "keygen", "id": name}).Bytes("pub")
	return d
}

// keyPackages makes n KeyPackages of the device (b64 MLSMessages).
func (d *mlsDevice) keyPackages(n int) []string {
	d.t.Helper()
	var out []string
	for range n {
		out = append(out, d.o.Do(map[string]any{"op": "kp", "id": d.name, "identity": mlsoracle.B64(d.id.identityBytes(d.leafPub))}).Str("kp"))
	}
	return out
}

// upload binds the connection to the device and uploads n KeyPackages.
func (d *mlsDevice) upload(n int) {
	d.t.Helper()
	d.c.mustKeep(map[string]any{"type": "kp_upload", "device": d.id.device, "kps": d.keyPackages(n)})
}

// ext is the hub's external sender of the test server.
func ext(ts *testServer) (pub, identity string) {
	return base64.StdEncoding.EncodeToString(ts.App.mlsKey.Public().(ed25519.PublicKey)), base64.StdEncoding.EncodeToString([]byte(mls.ExternalSenderIdentity))
}

// extSender is the external sender the device's server announced in its welcome
// event (a server in another process, such as a cluster node, has no App here).
func (d *mlsDevice) extSender(ts *testServer) (pub, identity string) {
	if ts.App != nil {
		return ext(ts)
	}
	e2ee, _ := d.c.hello["e2ee"].(map[string]any)
	es, _ := e2ee["external_sender"].(map[string]any)
	if es == nil {
		d.t.Fatalf("welcome without an external sender: %v", d.c.hello)
	}
	return es["signature_key"].(string), es["identity"].(string)
}

// e2eeRoom has d create an E2EE room and its group; it returns the group_id.
func (d *mlsDevice) e2eeRoom(ts *testServer, room string) string {
	d.t.Helper()
	j := d.c.mustKeep(map[string]any{"type": "create", "room": room, "private": true, "e2ee": true})
	if j["type"] != "joined" {
		j = d.c.expect("joined")
	}
	info, _ := j["mls"].(map[string]any)
	if j["e2ee"] != true || info == nil || info["ready"] != false {
		d.t.Fatalf("joined of a new E2EE room: %v", j)
	}
	gid := info["group_id"].(string)
	pub, identity := d.extSender(ts)
	g := d.o.Do(map[string]any{"op": "create", "id": d.name, "group_id": gid, "ext_pub": pub, "ext_identity": identity})
	d.c.mustKeep(map[string]any{"type": "mls_group_init", "room": room, "group_info": g.Str("group_info"), "key_package": g.Str("key_package")})
	return gid
}

// processNext makes the device's MLS client process the next event of typ (its
// proposals, commit or message) and returns the event.
func (d *mlsDevice) processNext(typ string) map[string]any {
	d.t.Helper()
	ev := d.c.awaitKeep(typ)
	for typ == "mls_commit" {
		// A commit from before the device joined (it came in by a later Welcome).
		st := d.o.Try(map[string]any{"op": "state", "id": d.name})
		have, _ := strconv.ParseUint(st.Str("epoch"), 10, 64)
		if st.Err() != "" || have <= uint64(ev["epoch"].(float64)) {
			break
		}
		ev = d.c.awaitKeep(typ)
	}
	switch typ {
	case "mls_proposals":
		for _, p := range ev["proposals"].([]any) {
			d.o.Do(map[string]any{"op": "process", "id": d.name, "msg": p})
		}
	case "mls_commit":
		d.o.Do(map[string]any{"op": "process", "id": d.name, "msg": ev["commit"]})
	case "mls_welcome":
		d.o.Do(map[string]any{"op": "join", "id": d.name, "welcome": ev["welcome"]})
	}
	return ev
}

// commit makes the device commit what is outstanding and sends it; on ack the device
// applies it. It returns the server's answer.
func (d *mlsDevice) commit(room string, epoch uint64) map[string]any {
	d.t.Helper()
	c := d.o.Do(map[string]any{"op": "commit", "id": d.name})
	cmd := map[string]any{"type": "mls_commit", "room": room, "epoch": epoch, "commit": c.Str("commit"), "group_info": c.Str("group_info")}
	if w := c.Str("welcome"); w != "" {
		cmd["welcome"] = w
	}
	ev := d.c.keep(cmd)
	if ev["type"] == "ack" {
		d.o.Do(map[string]any{"op": "apply", "id": d.name})
	}
	return ev
}

// send encrypts text in the device's group and sends it as mls_app.
func (d *mlsDevice) send(room string, epoch uint64, text string) map[string]any {
	d.t.Helper()
	m := d.o.Do(map[string]any{"op": "encrypt", "id": d.name, "text": text})
	return d.c.keep(map[string]any{"type": "mls_app", "room": room, "epoch": epoch, "msg": m.Str("msg")})
}

// TestE2EEFlow: the hub as Delivery Service, end to end with ts-mls clients: alice
// makes a room and its group, bob is invited and joins, the hub proposes his Add,
// alice commits it, bob joins by the Welcome only he gets and reads alice's message;
// then bob is kicked: the hub proposes his Remove, refuses mls_app until a commit
// (commit_required), and after alice's commit refuses the old epoch (stale_epoch) and
// bob cannot read the new epoch (acceptance test 1, server side).
func TestE2EEFlow(t *testing.T) {
	ts := startServer(t, generousLimits)
	o := mlsoracle.Start(t)
	alice, bob := newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob")
	alice.upload(3)
	bob.upload(3)
	alice.e2eeRoom(ts, "secret")
	alice.c.mustKeep(map[string]any{"type": "invite", "room": "secret", "user": "dev:bob"})
	if j := bob.c.mustKeep(map[string]any{"type": "join", "room": "secret"}); j["e2ee"] != true {
		t.Fatalf("bob's joined: %v", j)
	}
	p := alice.processNext("mls_proposals")
	if ch := p["changes"].([]any); len(ch) != 1 || ch[0].(map[string]any)["op"] != "add" || ch[0].(map[string]any)["device"] != "bob-device" {
		t.Fatalf("proposals on bob's join: %v", p)
	}
	if ack := alice.commit("secret", 0); ack["type"] != "ack" || ack["epoch"] != float64(1) {
		t.Fatalf("alice's Add commit: %v", ack)
	}
	bob.processNext("mls_welcome")

	if ack := alice.send("secret", 1, "canary-flow-1"); ack["type"] != "ack" {
		t.Fatalf("mls_app: %v", ack)
	}
	m := bob.c.expect("mls_app")
	if got := o.Do(map[string]any{"op": "process", "id": "bob", "msg": m["msg"]}); got.Str("text") != "canary-flow-1" {
		t.Fatalf("bob read %q", got.Str("text"))
	}
	if from := m["from"].(map[string]any); from["id"] != "dev:alice" || from["dev"] != "alice-device" {
		t.Errorf("from: %v", from)
	}

	alice.c.mustKeep(map[string]any{"type": "kick", "room": "secret", "user": "dev:bob"})
	p = alice.processNext("mls_proposals")
	if ch := p["changes"].([]any); len(ch) != 1 || ch[0].(map[string]any)["op"] != "remove" || ch[0].(map[string]any)["leaf"] != float64(1) {
		t.Fatalf("proposals on bob's kick: %v", p)
	}
	msg := map[string]any{"type": "mls_app", "room": "secret", "epoch": 1, "msg": m["msg"]}
	alice.c.refusedWith(msg, codeCommitRequired)
	if ack := alice.commit("secret", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("alice's Remove commit: %v", ack)
	}
	if ev := alice.c.refusedWith(msg, codeStaleEpoch); ev["epoch"] != float64(2) {
		t.Fatalf("stale_epoch without the room's epoch: %v", ev)
	}
	if ack := alice.send("secret", 2, "canary-flow-2"); ack["type"] != "ack" {
		t.Fatalf("mls_app after the Remove: %v", ack)
	}
}

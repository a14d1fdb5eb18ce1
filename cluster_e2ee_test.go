package main

import (
	"crypto/ed25519"
	"slices"
	"strconv"
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
	"modified-chat/internal/mlsoracle"
)

// clusterVault starts two nodes (with extra settings) and puts alice (node 1, owner),
// bob and carol (node 2) in the E2EE room "vault" at epoch 1: node 2 proposes the
// joiners' Adds, alice's commit reaches them as Welcomes there. Both nodes announce
// one external sender.
func clusterVault(t *testing.T, extra ...string) (nodes []*node, o *mlsoracle.Oracle, alice, bob, carol *mlsDevice) {
	t.Helper()
	_, nodes = startPair(t, extra...)
	n1, n2 := nodes[0], nodes[1]
	o = mlsoracle.Start(t)
	alice = newMLSDevice(t, n1.ts, o, "alice")
	bob, carol = newMLSDevice(t, n2.ts, o, "bob"), newMLSDevice(t, n2.ts, o, "carol")
	for _, d := range []*mlsDevice{alice, bob, carol} {
		d.upload(3)
	}
	p1, _ := alice.extSender(n1.ts)
	if p2, _ := bob.extSender(n2.ts); p1 != p2 {
		t.Fatalf("the nodes announce two external senders: %s and %s", p1, p2)
	}
	alice.e2eeRoom(n1.ts, "vault")
	for _, d := range []*mlsDevice{bob, carol} {
		alice.c.mustKeep(map[string]any{"type": "invite", "room": "vault", "user": d.id.user})
		if j := d.c.mustKeep(map[string]any{"type": "join", "room": "vault"}); j["e2ee"] != true {
			t.Fatalf("%s's joined on node 2: %v", d.name, j)
		}
		wantChanges(t, alice, d.name+"'s join on node 2", "add "+d.id.user+"/"+d.id.device)
	}
	if ack := alice.commit("vault", 0); ack["type"] != "ack" || ack["epoch"] != float64(1) {
		t.Fatalf("alice's commit of two Adds made on node 2: %v", ack)
	}
	for _, d := range []*mlsDevice{bob, carol} {
		d.processNext("mls_welcome")
		// What came before the Welcome (the proposals and commit that added them)
		// is not theirs to process.
		d.c.pending, d.c.pendingLen = nil, nil
	}

	return nodes, o, alice, bob, carol
}

// TestClusterE2EERoom (issue 13 across nodes): one end-to-end encrypted room with
// members on two nodes, real ts-mls clients and a real redis-server. alice (node 1)
// makes the room and its group; bob and carol join on node 2, where node 2 proposes
// their Adds; alice's commit reaches them as Welcomes on node 2; messages cross both
// ways with one id each, readable on the other node. Every node signs as the same
// external sender. Then bob is kicked on node 1: the Remove is proposed, mls_app is
// refused commit_required on both nodes; alice and carol commit it at once from two
// nodes: exactly one is accepted, the other gets stale_epoch, all end at one epoch,
// and bob's kept state cannot read what is sent next.
func TestClusterE2EERoom(t *testing.T) {
	_, o, alice, bob, carol := clusterVault(t)
	ack := alice.send("vault", 1, "canary-cluster-1")
	if ack["type"] != "ack" {
		t.Fatalf("mls_app on node 1: %v", ack)
	}
	for _, d := range []*mlsDevice{bob, carol} {
		m := d.c.awaitKeep("mls_app")
		if m["id"] != ack["id"] {
			t.Fatalf("%s got id %v, alice's ack says %v", d.name, m["id"], ack["id"])
		}
		if got := o.Do(map[string]any{"op": "process", "id": d.name, "msg": m["msg"]}); got.Str("text") != "canary-cluster-1" {
			t.Fatalf("%s read %q", d.name, got.Str("text"))
		}
	}
	if ack := bob.send("vault", 1, "canary-cluster-2"); ack["type"] != "ack" {
		t.Fatalf("mls_app on node 2: %v", ack)
	}
	if m := alice.c.awaitKeep("mls_app"); o.Do(map[string]any{"op": "process", "id": "alice", "msg": m["msg"]}).Str("text") != "canary-cluster-2" {
		t.Fatalf("alice could not read bob's message from node 2")
	}
	carol.processNext("mls_app")

	// Encrypted before the kick (a client with the Remove pending would not encrypt).
	old := o.Do(map[string]any{"op": "encrypt", "id": "carol", "text": "under-the-old-keys"}).Str("msg")
	alice.c.mustKeep(map[string]any{"type": "kick", "room": "vault", "user": bob.id.user})
	wantChanges(t, alice, "bob's kick", "remove "+bob.id.user+"/"+bob.id.device)
	carol.processNext("mls_proposals")
	carol.c.refusedWith(map[string]any{"type": "mls_app", "room": "vault", "epoch": 1, "msg": old}, codeCommitRequired)
	alice.c.refusedWith(map[string]any{"type": "mls_app", "room": "vault", "epoch": 1, "msg": old}, codeCommitRequired)

	ca := o.Do(map[string]any{"op": "commit", "id": "alice"})
	cc := o.Do(map[string]any{"op": "commit", "id": "carol"})
	alice.c.send(map[string]any{"type": "mls_commit", "room": "vault", "epoch": 1, "commit": ca.Str("commit"), "group_info": ca.Str("group_info"), "ref": "a"})
	carol.c.send(map[string]any{"type": "mls_commit", "room": "vault", "epoch": 1, "commit": cc.Str("commit"), "group_info": cc.Str("group_info"), "ref": "c"})
	aa, ac := alice.c.awaitKeep("ack", "error"), carol.c.awaitKeep("ack", "error")
	var winner, loser *mlsDevice
	switch {
	case aa["type"] == "ack" && ac["code"] == codeStaleEpoch:
		winner, loser = alice, carol
	case ac["type"] == "ack" && aa["code"] == codeStaleEpoch:
		winner, loser = carol, alice
	default:
		t.Fatalf("two commits for one epoch from two nodes: alice %v, carol %v", aa, ac)
	}
	o.Do(map[string]any{"op": "apply", "id": winner.name})
	loser.processNext("mls_commit")
	var auth string
	for _, d := range []*mlsDevice{alice, carol} {
		s := o.Do(map[string]any{"op": "state", "id": d.name})
		if s.Str("epoch") != "2" || (auth != "" && s.Str("auth") != auth) {
			t.Fatalf("%s ends at epoch %s with room code %s (other %s)", d.name, s.Str("epoch"), s.Str("auth"), auth)
		}
		auth = s.Str("auth")
	}
	msg := winner.sendNew("vault", 2, "canary-cluster-3")
	if m := loser.c.awaitKeep("mls_app"); o.Do(map[string]any{"op": "process", "id": loser.name, "msg": m["msg"]}).Str("text") != "canary-cluster-3" {
		t.Fatalf("%s could not read the message after the Remove", loser.name)
	}
	cannotRead(t, bob, msg)
}

// TestClusterE2EEAppRacesRemove: an application message checked on node 2 just before
// the Remove proposed on node 1 reaches node 2 must not be sequenced after it (it is
// encrypted under keys the removed member holds). carol (node 2) pipelines messages
// while alice (node 1) kicks bob: every one acked has an id below the proposals', the
// others are refused commit_required (Redis refused them as sent at an old revision,
// and they were checked again on the record read afresh).
func TestClusterE2EEAppRacesRemove(t *testing.T) {
	_, o, alice, bob, carol := clusterVault(t, "CHAT_MSG_RATE=1000", "CHAT_MSG_BURST=1000",
		"CHAT_USER_MSG_RATE=1000", "CHAT_USER_MSG_BURST=1000", "CHAT_BYTE_RATE=1000000", "CHAT_BYTE_BURST=1000000")
	old := o.Do(map[string]any{"op": "encrypt", "id": "carol", "text": "racing-the-remove"}).Str("msg")
	const n = 150
	for i := range n {
		if i == n/3 {
			alice.c.send(map[string]any{"type": "kick", "room": "vault", "user": bob.id.user, "ref": "kick"})
		}
		carol.c.send(map[string]any{"type": "mls_app", "room": "vault", "epoch": 1, "msg": old, "ref": "m" + strconv.Itoa(i)})
		if i < n/3 {
			time.Sleep(200 * time.Microsecond) // a steady stream the kick lands in
		}
	}
	p := alice.c.awaitKeep("mls_proposals")
	pid := p["id"].(float64)
	acked, refused := 0, 0
	for range n {
		ev := carol.c.awaitKeep("ack", "error")
		switch {
		case ev["type"] == "ack" && ev["id"].(float64) < pid:
			acked++
		case ev["type"] == "ack":
			t.Fatalf("%v acked with id %v, after the Remove's proposals (%v)", ev["ref"], ev["id"], pid)
		case ev["code"] == codeCommitRequired:
			refused++
		default:
			t.Fatalf("%v: %v %v", ev["ref"], ev["code"], ev["message"])
		}
	}
	t.Logf("%d sent before the Remove's proposals, %d refused commit_required", acked, refused)
	if refused == 0 || acked == 0 {
		t.Fatalf("%d acked and %d refused: the race was not run", acked, refused)
	}
}

// TestMigrateRedisE2EE: migrate-redis moves an E2EE room's group and the node's
// external-sender key with it. alice and bob share a group at epoch 1 on a single
// node; after the move, alice on node 1 and bob on node 2 go on in the same group: a
// message crosses, and the Remove node 1 proposes on bob's kick is accepted by alice's
// MLS client (signed by the key the group lists) and committed.
func TestMigrateRedisE2EE(t *testing.T) {
	files := newClusterFiles(t)
	single, ts, dir := singleForMigration(t, files)
	o := mlsoracle.Start(t)
	alice, bob, _ := twoInRoom(t, ts, o, "vault")
	single.Process.Kill()
	single.Wait()

	rs := redistest.Start(t)
	if err := migrateRedisCommand(nil, migrationEnv(dir, rs, files)); err != nil {
		t.Fatalf("migrate-redis: %v", err)
	}
	nodes := startNodes(t, 2, rs, files)
	for i, d := range []*mlsDevice{alice, bob} {
		d.c = nodes[i].dialAs(t, d.name)
		d.upload(1) // binds the new connection to the device
		if j := d.c.mustKeep(map[string]any{"type": "join", "room": "vault"}); j["e2ee"] != true || j["mls"].(map[string]any)["epoch"] != float64(1) {
			t.Fatalf("%s's joined on node %d: %v", d.name, i+1, j)
		}
	}
	alice.sendNew("vault", 1, "canary-migrated")
	if m := bob.c.awaitKeep("mls_app"); o.Do(map[string]any{"op": "process", "id": "bob", "msg": m["msg"]}).Str("text") != "canary-migrated" {
		t.Fatal("bob could not read alice's message after the move")
	}
	alice.c.mustKeep(map[string]any{"type": "kick", "room": "vault", "user": bob.id.user})
	wantChanges(t, alice, "bob's kick after the move", "remove "+bob.id.user+"/"+bob.id.device)
	if ack := alice.commit("vault", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("alice's Remove commit after the move: %v", ack)
	}
}

// TestClusterE2EESelfUpdateBudget: a device's self-update budget in a room is one
// across the cluster (it is part of the group's state): bob's device self-updates
// selfUpdateBurst times through node 2, and the next, sent through a connection of the
// same device on node 1, is refused update_limited.
func TestClusterE2EESelfUpdateBudget(t *testing.T) {
	nodes, o, _, bob, _ := clusterVault(t)
	epoch := uint64(1)
	for range selfUpdateBurst {
		if ack := bob.commit("vault", epoch); ack["type"] != "ack" {
			t.Fatalf("self-update at epoch %d: %v", epoch, ack)
		}
		epoch++
	}
	other := nodes[0].dialAs(t, bob.name)
	other.mustKeep(map[string]any{"type": "kp_upload", "device": bob.id.device, "kps": []string{}})
	other.mustKeep(map[string]any{"type": "join", "room": "vault"})
	c := o.Do(map[string]any{"op": "commit", "id": bob.name})
	ev := other.keep(map[string]any{"type": "mls_commit", "room": "vault", "epoch": epoch, "commit": c.Str("commit"), "group_info": c.Str("group_info")})
	if ev["type"] != "error" || ev["code"] != codeUpdateLimited {
		t.Fatalf("self-update %d through node 1: %v, want %s", selfUpdateBurst+1, ev, codeUpdateLimited)
	}
}

// TestClusterE2EEOfflineDevice: the KeyPackage directory and the Welcomes are the
// cluster's. bob's laptop uploads KeyPackages through node 1 and goes away; bob's
// phone joins on node 2, and node 2 proposes both devices (the laptop's KeyPackage
// taken from Redis); when the laptop comes back on node 1 after alice's commit, node 1
// hands it the Welcome read from the commit's entry once it says which device it is,
// and it reads the next message.
func TestClusterE2EEOfflineDevice(t *testing.T) {
	_, nodes := startPair(t)
	o := mlsoracle.Start(t)
	alice, bob := newMLSDevice(t, nodes[0].ts, o, "alice"), newMLSDevice(t, nodes[1].ts, o, "bob")
	lid := &testIdentity{user: bob.id.user, urk: bob.id.urk, device: "bob-laptop"}
	_, lid.dik, _ = ed25519.GenerateKey(nil)
	laptop := &mlsDevice{t: t, c: nodes[0].dialAs(t, "bob"), id: lid, o: o, name: "bob-laptop"}
	laptop.c.mustAck(lid.registration(lid.user))
	laptop.leafPub = o.Do(map[string]any{"op": "keygen", "id": laptop.name}).Bytes("pub")
	for _, d := range []*mlsDevice{alice, bob, laptop} {
		d.upload(2)
	}
	laptop.c.conn.Close()

	alice.e2eeRoom(nodes[0].ts, "vault")
	alice.c.mustKeep(map[string]any{"type": "invite", "room": "vault", "user": bob.id.user})
	bob.c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	got := changesOf(alice.processNext("mls_proposals"))
	slices.Sort(got)
	if want := []string{"add dev:bob/bob-device", "add dev:bob/bob-laptop"}; !slices.Equal(got, want) {
		t.Fatalf("proposals on bob's join on node 2: %v, want %v", got, want)
	}
	if ack := alice.commit("vault", 0); ack["type"] != "ack" {
		t.Fatalf("alice's commit: %v", ack)
	}
	bob.processNext("mls_welcome")

	// The connection joins before it says which device it is: its kp_upload is what
	// brings the Welcome.
	laptop.c = nodes[0].dialAs(t, "bob")
	laptop.c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	laptop.c.mustKeep(map[string]any{"type": "kp_upload", "device": lid.device, "kps": []string{}})
	laptop.processNext("mls_welcome")
	alice.sendNew("vault", 1, "canary-offline-device")
	if m := laptop.c.awaitKeep("mls_app"); o.Do(map[string]any{"op": "process", "id": laptop.name, "msg": m["msg"]}).Str("text") != "canary-offline-device" {
		t.Fatal("the laptop could not read the message after its Welcome")
	}
}

// welcomeOnNewConn opens a new connection of d's device on nd, in "vault", and
// reports whether an mls_welcome reaches it within window. The connection is left
// unusable (its read timed out) and closed.
func welcomeOnNewConn(t *testing.T, nd *node, d *mlsDevice, window time.Duration) bool {
	t.Helper()
	c := nd.dialAs(t, d.name)
	defer c.conn.Close()
	c.mustKeep(map[string]any{"type": "kp_upload", "device": d.id.device, "kps": []string{}})
	c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	deadline := time.Now().Add(window)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			return false
		}
		if ev["type"] == "mls_welcome" {
			return true
		}
	}
}

// noWelcomeSoon fails unless, within a few tries (the drop is a group change that
// reaches every node through the room's log), a new connection of d's device on nd
// gets no mls_welcome.
func noWelcomeSoon(t *testing.T, nd *node, d *mlsDevice, what string) {
	t.Helper()
	for try := 0; welcomeOnNewConn(t, nd, d, time.Second); try++ {
		if try == 4 {
			t.Fatalf("%s: every new connection of %s's device still gets its Welcome", what, d.name)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestClusterE2EEWelcomeGoesOnceJoined: in cluster mode too a Welcome's pointer goes
// once its device showed it joined. bob (node 2) sends an mls_app: a new connection of
// his device, on either node, gets no mls_welcome; carol, who has not spoken, still
// gets hers on a new connection; once her self-update commit is acked, hers goes too,
// on both nodes.
func TestClusterE2EEWelcomeGoesOnceJoined(t *testing.T) {
	nodes, _, _, bob, carol := clusterVault(t)
	if ack := bob.send("vault", 1, "canary-cluster-joined"); ack["type"] != "ack" {
		t.Fatalf("bob's first mls_app: %v", ack)
	}
	for i, nd := range nodes {
		noWelcomeSoon(t, nd, bob, "after bob's mls_app, on node "+strconv.Itoa(i+1))
	}
	if !welcomeOnNewConn(t, nodes[0], carol, 5*time.Second) {
		t.Fatal("carol, who has not spoken, gets no Welcome on a new connection")
	}
	if ack := carol.commit("vault", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("carol's self-update: %v", ack)
	}
	for i, nd := range nodes {
		noWelcomeSoon(t, nd, carol, "after carol's commit, on node "+strconv.Itoa(i+1))
	}
}

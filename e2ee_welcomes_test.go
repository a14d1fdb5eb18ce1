package main

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"testing"

	"modified-chat/internal/cluster/redistest"
	"modified-chat/internal/mlsoracle"
	"modified-chat/internal/store"
)

// groupSizeStore wraps a Mem and records the size of every group record written, by
// room: what a change of the group costs the disk. Close leaves the Mem open, so a
// second server can restart on the same state.
type groupSizeStore struct {
	store.Store
	mu    sync.Mutex
	sizes map[string][]int
}

// newGroupSizeStore wraps a fresh Mem.
func newGroupSizeStore() *groupSizeStore {
	return &groupSizeStore{Store: store.NewMem(), sizes: map[string][]int{}}
}

// Apply records the group records' sizes and passes the batch on.
func (s *groupSizeStore) Apply(batch []store.Write) error {
	s.mu.Lock()
	for _, w := range batch {
		if w.Bucket == bucketMLSGroups && w.Value != nil {
			s.sizes[string(w.Key)] = append(s.sizes[string(w.Key)], len(w.Value))
		}
	}
	s.mu.Unlock()
	return s.Store.Apply(batch)
}

// Close keeps the wrapped store open for the next server.
func (s *groupSizeStore) Close() error { return nil }

// lastGroupWrite is the size of the newest record of room's group written.
func (s *groupSizeStore) lastGroupWrite(t *testing.T, room string) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	w := s.sizes[room]
	if len(w) == 0 {
		t.Fatalf("no group record of %q written", room)
	}
	return w[len(w)-1]
}

// welcomeRows is what the store keeps of room's Welcomes: the events and the waiting
// devices' pointers, by key.
func welcomeRows(t *testing.T, st store.Store, room string) (events, devs map[string][]byte) {
	t.Helper()
	rows := func(bucket string) map[string][]byte {
		out := map[string][]byte{}
		err := st.Scan(bucket, func(k, v []byte) error {
			if r, rest, ok := splitWelcomeKey(k); ok && r == room {
				out[string(rest)] = bytes.Clone(v)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	return rows(bucketMLSWelcomes), rows(bucketMLSWelcomeFor)
}

// rejoin connects a device again: a new connection of its user, bound to the device
// by an empty kp_upload, then in room.
func (d *mlsDevice) rejoin(ts *testServer, room string) {
	d.t.Helper()
	d.c = ts.user(d.t, d.id.user[len("dev:"):])
	d.c.mustKeep(map[string]any{"type": "kp_upload", "device": d.id.device, "kps": []string{}})
	d.c.mustKeep(map[string]any{"type": "join", "room": room})
}

// offlineJoiner has alice make "vault" on a server on st and add bob, whose
// connection is gone before alice's commit: his Welcome is kept for him.
func offlineJoiner(t *testing.T, st store.Store) (ts *testServer, o *mlsoracle.Oracle, alice, bob *mlsDevice) {
	t.Helper()
	ts = startServerOn(t, st, generousLimits)
	o = mlsoracle.Start(t)
	alice, bob = addOffline(t, ts, o)
	settleHub(t, ts.App.hub)
	return ts, o, alice, bob
}

// addOffline has alice make "vault" on ts and add bob while he is offline (see
// offlineJoiner); alice's mls_app after the commit is acked once the commit's writes
// before it are durable too.
func addOffline(t *testing.T, ts *testServer, o *mlsoracle.Oracle) (alice, bob *mlsDevice) {
	t.Helper()
	alice, bob = newMLSDevice(t, ts, o, "alice"), newMLSDevice(t, ts, o, "bob")
	alice.upload(2)
	bob.upload(2)
	alice.e2eeRoom(ts, "vault")
	alice.c.mustKeep(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	bob.c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	alice.processNext("mls_proposals")
	bob.c.conn.Close()
	if ack := alice.commit("vault", 0); ack["type"] != "ack" || ack["epoch"] != float64(1) {
		t.Fatalf("alice's commit adding bob: %v", ack)
	}
	if ack := alice.send("vault", 1, "canary-before-bob"); ack["type"] != "ack" {
		t.Fatalf("alice's mls_app after the commit: %v", ack)
	}
	return alice, bob
}

// TestE2EEWelcomesOutOfGroupRecord: the Welcomes of devices added and not yet joined
// are not in the group's record, which is written again at every change of the group:
// with four waiting, the record the commit that adds them writes is no larger than the
// one before it (which lists their Adds), and a later self-update writes about as
// much; the Welcome is stored once for the four, with a pointer each.
func TestE2EEWelcomesOutOfGroupRecord(t *testing.T) {
	st := newGroupSizeStore()
	ts := startServerOn(t, st, generousLimits)
	o := mlsoracle.Start(t)
	alice := newMLSDevice(t, ts, o, "alice")
	alice.upload(2)
	alice.e2eeRoom(ts, "crowd")
	const joiners = 4
	for i := range joiners {
		d := newMLSDevice(t, ts, o, "joiner"+strconv.Itoa(i))
		d.upload(2)
		alice.c.mustKeep(map[string]any{"type": "invite", "room": "crowd", "user": d.id.user})
		d.c.mustKeep(map[string]any{"type": "join", "room": "crowd"})
		alice.processNext("mls_proposals")
	}
	settleHub(t, ts.App.hub)
	before := st.lastGroupWrite(t, "crowd")
	if ack := alice.commit("crowd", 0); ack["type"] != "ack" || ack["epoch"] != float64(1) {
		t.Fatalf("the commit adding %d: %v", joiners, ack)
	}
	settleHub(t, ts.App.hub)
	events, devs := welcomeRows(t, st, "crowd")
	if len(events) != 1 || len(devs) != joiners {
		t.Fatalf("kept: %d events, %d pointers; want 1 and %d", len(events), len(devs), joiners)
	}
	var welcome int
	for _, ev := range events {
		welcome = len(ev)
	}
	committed := st.lastGroupWrite(t, "crowd")
	t.Logf("group record: %d bytes with the Adds outstanding, %d after the commit; the Welcome event %d", before, committed, welcome)
	if after := committed; after > before {
		t.Fatalf("the group record grew from %d to %d bytes with %d Welcomes of %d bytes pending", before, after, joiners, welcome)
	}
	if ack := alice.commit("crowd", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("alice's self-update: %v", ack)
	}
	settleHub(t, ts.App.hub)
	// The self-update adds alice's budget (under 100 bytes) to the record, no Welcome.
	if after := st.lastGroupWrite(t, "crowd"); after > before+100 || after-before >= welcome {
		t.Fatalf("a self-update with %d Welcomes pending wrote %d bytes of group record, %d before (a Welcome is %d)", joiners, after, before, welcome)
	}
}

// TestE2EEWelcomeKeptUntilJoined: a device added while offline gets its Welcome after
// a restart, joins and reads alice's group; once it has sent there, its Welcome is gone
// from the store and a later connection of it gets none.
func TestE2EEWelcomeKeptUntilJoined(t *testing.T) {
	st := newGroupSizeStore()
	ts, o, alice, bob := offlineJoiner(t, st)
	if events, devs := welcomeRows(t, st, "vault"); len(events) != 1 || len(devs) != 1 {
		t.Fatalf("kept for bob: %d events, %d pointers", len(events), len(devs))
	}
	ts.stop()

	ts = startServerOn(t, st, generousLimits)
	bob.rejoin(ts, "vault")
	if w := bob.processNext("mls_welcome"); w["epoch"] != float64(1) {
		t.Fatalf("bob's Welcome after the restart: %v", w)
	}
	alice.rejoin(ts, "vault")
	bobSpeaks(t, o, alice, bob, "canary-welcome-restart")
	settleHub(t, ts.App.hub)
	if events, devs := welcomeRows(t, st, "vault"); len(events) != 0 || len(devs) != 0 {
		t.Fatalf("after bob joined, still kept: %d events, %d pointers", len(events), len(devs))
	}
	again := *bob
	again.rejoin(ts, "vault")
	noneOfType(t, again.c.barrier(), "mls_welcome")
}

// TestE2EEWelcomeGoesWithRoom: deleting the room deletes the Welcomes kept in it.
func TestE2EEWelcomeGoesWithRoom(t *testing.T) {
	st := newGroupSizeStore()
	ts, _, alice, _ := offlineJoiner(t, st)
	alice.c.mustKeep(map[string]any{"type": "delete_room", "room": "vault"})
	settleHub(t, ts.App.hub)
	if events, devs := welcomeRows(t, st, "vault"); len(events) != 0 || len(devs) != 0 {
		t.Fatalf("after delete_room, still kept: %d events, %d pointers", len(events), len(devs))
	}
	ts.App.hub.do(func() {
		if n := len(ts.App.hub.mls.welcomes.rooms); n != 0 {
			t.Errorf("the hub still keeps Welcomes of %d rooms", n)
		}
	})
}

// TestE2EEWelcomesUpgradeOldRecord: a group record written by an older version, with
// the Welcomes inside, loads: they move to their own buckets and out of the record
// before the hub runs, and the offline device still gets its Welcome and joins.
func TestE2EEWelcomesUpgradeOldRecord(t *testing.T) {
	st := newGroupSizeStore()
	ts, _, _, bob := offlineJoiner(t, st)
	ts.stop()
	events, devs := welcomeRows(t, st, "vault")
	if len(events) != 1 || len(devs) != 1 {
		t.Fatalf("kept for bob: %d events, %d pointers", len(events), len(devs))
	}
	var ev []byte
	for id, e := range events {
		ev = e
		if err := st.Apply([]store.Write{{Bucket: bucketMLSWelcomes, Key: append([]byte("vault\x00"), id...)}}); err != nil {
			t.Fatal(err)
		}
	}
	dev := devKey(bob.id.user, bob.id.device)
	var record map[string]json.RawMessage
	if err := st.Scan(bucketMLSGroups, func(k, v []byte) error {
		if string(k) == "vault" {
			return json.Unmarshal(v, &record)
		}
		return nil
	}); err != nil || record == nil {
		t.Fatalf("the group record: %v", err)
	}
	record["welcomes"], _ = json.Marshal(map[string]mlsWelcome{dev: {Event: ev}})
	old, _ := json.Marshal(record)
	if err := st.Apply([]store.Write{
		{Bucket: bucketMLSWelcomeFor, Key: welcomeForKey("vault", dev)},
		{Bucket: bucketMLSGroups, Key: []byte("vault"), Value: old},
	}); err != nil {
		t.Fatal(err)
	}

	ts = startServerOn(t, st, generousLimits)
	err := st.Scan(bucketMLSGroups, func(k, v []byte) error {
		if string(k) == "vault" && bytes.Contains(v, []byte(`"welcomes"`)) {
			t.Errorf("the group record (%d bytes) still carries its Welcomes", len(v))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	moved, pointers := welcomeRows(t, st, "vault")
	if len(moved) != 1 || len(pointers) != 1 || !bytes.Equal(moved[string(pointers[dev])], ev) {
		t.Fatalf("moved: %d events, pointers %v", len(moved), pointers)
	}
	bob.rejoin(ts, "vault")
	bob.processNext("mls_welcome")
	if ack := bob.send("vault", 1, "canary-welcome-upgrade"); ack["type"] != "ack" {
		t.Fatalf("bob's first mls_app after the upgrade: %v", ack)
	}
}

// bobSpeaks has bob, just joined, send text to "vault" and fails unless alice, in the
// room, reads it.
func bobSpeaks(t *testing.T, o *mlsoracle.Oracle, alice, bob *mlsDevice, text string) {
	t.Helper()
	if ack := bob.send("vault", 1, text); ack["type"] != "ack" {
		t.Fatalf("bob's first mls_app: %v", ack)
	}
	for {
		m := alice.c.awaitKeep("mls_app")
		if from := m["from"].(map[string]any); from["id"] != bob.id.user {
			continue // alice's own, from the history of her join
		}
		if got := o.Do(map[string]any{"op": "process", "id": "alice", "msg": m["msg"]}); got.Str("text") != text {
			t.Fatalf("alice read %q", got.Str("text"))
		}
		return
	}
}

// TestMigrateRedisE2EEPendingWelcome: migrate-redis takes along the Welcome a single
// node keeps out of the group's record: bob, added while offline, gets it on node 2
// after the move, joins, and alice on node 1 reads him.
func TestMigrateRedisE2EEPendingWelcome(t *testing.T) {
	files := newClusterFiles(t)
	single, ts, dir := singleForMigration(t, files)
	o := mlsoracle.Start(t)
	alice, bob := addOffline(t, ts, o)
	single.Process.Kill()
	single.Wait()

	rs := redistest.Start(t)
	if err := migrateRedisCommand(nil, migrationEnv(dir, rs, files)); err != nil {
		t.Fatalf("migrate-redis: %v", err)
	}
	nodes := startNodes(t, 2, rs, files)
	alice.c = nodes[0].dialAs(t, alice.name)
	alice.c.mustKeep(map[string]any{"type": "kp_upload", "device": alice.id.device, "kps": []string{}})
	alice.c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	bob.c = nodes[1].dialAs(t, bob.name)
	bob.c.mustKeep(map[string]any{"type": "kp_upload", "device": bob.id.device, "kps": []string{}})
	bob.c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	if w := bob.processNext("mls_welcome"); w["epoch"] != float64(1) {
		t.Fatalf("bob's Welcome on node 2 after the move: %v", w)
	}
	bobSpeaks(t, o, alice, bob, "canary-welcome-migrated")
}

// TestE2EEWelcomeGoesOnCommitOrRemove: a Welcome also goes when its device's first
// word in the group is a commit (bob's self-update), and when the device loses its
// leaf before it joined (bob kicked while offline: the hub's Remove drops it).
func TestE2EEWelcomeGoesOnCommitOrRemove(t *testing.T) {
	st := newGroupSizeStore()
	ts := startServerOn(t, st, generousLimits)
	o := mlsoracle.Start(t)
	_, bob, _ := twoInRoom(t, ts, o, "vault")
	settleHub(t, ts.App.hub)
	if events, devs := welcomeRows(t, st, "vault"); len(events) != 1 || len(devs) != 1 {
		t.Fatalf("kept for bob: %d events, %d pointers", len(events), len(devs))
	}
	if ack := bob.commit("vault", 1); ack["type"] != "ack" || ack["epoch"] != float64(2) {
		t.Fatalf("bob's self-update: %v", ack)
	}
	settleHub(t, ts.App.hub)
	if events, devs := welcomeRows(t, st, "vault"); len(events) != 0 || len(devs) != 0 {
		t.Fatalf("after bob's commit, still kept: %d events, %d pointers", len(events), len(devs))
	}

	st = newGroupSizeStore()
	ts, _, alice, _ := offlineJoiner(t, st)
	alice.c.mustKeep(map[string]any{"type": "kick", "room": "vault", "user": "dev:bob"})
	alice.processNext("mls_proposals")
	settleHub(t, ts.App.hub)
	if events, devs := welcomeRows(t, st, "vault"); len(events) != 0 || len(devs) != 0 {
		t.Fatalf("after bob's Remove, still kept: %d events, %d pointers", len(events), len(devs))
	}
}

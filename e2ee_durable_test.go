package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync"
	"testing"

	"modified-chat/internal/backplane"
	"modified-chat/internal/mlsoracle"
	"modified-chat/internal/store"
)

// errKilled is what a batchBackplane answers once its process is "killed".
var errKilled = errors.New("test: the process was killed before this write")

// batchBackplane wraps a hub's backplane and records the writes of every request it
// submits: the store writer applies each request atomically (a batch of several is
// one Apply, and a failed one is retried request by request), so a request is what a
// SIGKILL cannot split. Once killAfter has matched a request, every later one writes
// nothing and fails, in order: the disk as a process killed right after that request
// leaves it.
type batchBackplane struct {
	backplane.Backplane
	mu        sync.Mutex
	batches   [][]store.Write
	killAfter func([]store.Write) bool
	dead      bool
}

// installBatches puts a batchBackplane in front of ts's hub.
func installBatches(ts *testServer, killAfter func([]store.Write) bool) *batchBackplane {
	var b *batchBackplane
	ts.App.hub.do(func() {
		b = &batchBackplane{Backplane: ts.App.hub.bp, killAfter: killAfter}
		ts.App.hub.bp = b
	})
	return b
}

// Submit records writes and passes them on, or, once killed, passes nothing on and
// fails the request.
func (b *batchBackplane) Submit(writes []store.Write, done func(error)) bool {
	b.mu.Lock()
	dead := b.dead
	if !dead {
		b.batches = append(b.batches, writes)
		b.dead = b.killAfter != nil && b.killAfter(writes)
	}
	b.mu.Unlock()
	if dead {
		return b.Backplane.Submit(nil, func(error) {
			if done != nil {
				done(errKilled)
			}
		})
	}
	return b.Backplane.Submit(writes, done)
}

// storesEvent reports whether writes store an event of typ in room's history.
func storesEvent(writes []store.Write, room, typ string) bool {
	for _, w := range writes {
		if w.Bucket == historyBucket(room) && bytes.Contains(w.Value, []byte(`{"type":"`+typ+`"`)) {
			return true
		}
	}
	return false
}

// groupIn is the record of room's group that writes store, nil when none.
func groupIn(t *testing.T, writes []store.Write, room string) *mlsGroup {
	t.Helper()
	var g *mlsGroup
	for _, w := range writes {
		if w.Bucket == bucketMLSGroups && string(w.Key) == room && w.Value != nil {
			g = &mlsGroup{}
			if err := json.Unmarshal(w.Value, g); err != nil {
				t.Fatal(err)
			}
		}
	}
	return g
}

// batchOf is the one request that stores an event of typ in room's history.
func (b *batchBackplane) batchOf(t *testing.T, room, typ string) []store.Write {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var found [][]store.Write
	for _, w := range b.batches {
		if storesEvent(w, room, typ) {
			found = append(found, w)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d requests store a %s of %q, want 1", len(found), typ, room)
	}
	return found[0]
}

// TestE2EEGroupChangeOneBatch: every MLS event that changes the group is stored in
// one request with the group's new record: the group's creation (mls_group_info, epoch
// 0, ready), the hub's proposals (bob's Add outstanding) and alice's commit (epoch 1,
// two leaves, with bob's Welcome rows), so no crash can keep one without the other.
func TestE2EEGroupChangeOneBatch(t *testing.T) {
	ts := startServer(t, generousLimits)
	b := installBatches(ts, nil)
	addOffline(t, ts, mlsoracle.Start(t)) // bob's Welcome is kept for him, in rows of its own
	settleHub(t, ts.App.hub)

	if g := groupIn(t, b.batchOf(t, "vault", "mls_group_info"), "vault"); g == nil || !g.Ready || g.Epoch != 0 || len(g.Leaves) != 1 {
		t.Fatalf("the group record stored with mls_group_info: %+v", g)
	}
	if g := groupIn(t, b.batchOf(t, "vault", "mls_proposals"), "vault"); g == nil || g.Epoch != 0 || len(g.Outstanding) != 1 || !g.Outstanding[0].Add {
		t.Fatalf("the group record stored with mls_proposals: %+v", g)
	}
	commit := b.batchOf(t, "vault", "mls_commit")
	if g := groupIn(t, commit, "vault"); g == nil || g.Epoch != 1 || len(g.Leaves) != 2 || len(g.Outstanding) != 0 {
		t.Fatalf("the group record stored with mls_commit: %+v", g)
	}
	var events, pointers int
	for _, w := range commit {
		switch {
		case w.Bucket == bucketMLSWelcomes && w.Value != nil:
			events++
		case w.Bucket == bucketMLSWelcomeFor && w.Value != nil:
			pointers++
		}
	}
	if events != 1 || pointers != 1 {
		t.Fatalf("the commit's request keeps %d Welcome events and %d pointers, want 1 and 1", events, pointers)
	}
}

// TestE2EECommitSurvivesKill: the process is killed right after the request that
// stores alice's acked commit (nothing later reaches the disk). After the restart the
// hub is at the epoch alice's ack gave her, 1, and takes her message at it; with the
// group's record in a later request the hub came back at epoch 0 and answered
// stale_epoch for ever.
func TestE2EECommitSurvivesKill(t *testing.T) {
	st := newGroupSizeStore()
	ts := startServerOn(t, st, generousLimits)
	installBatches(ts, func(w []store.Write) bool { return storesEvent(w, "vault", "mls_commit") })
	o := mlsoracle.Start(t)
	alice, _, _ := twoInRoom(t, ts, o, "vault")
	ts.stop()

	ts = startServerOn(t, st, generousLimits)
	alice.c = ts.user(t, "alice")
	alice.c.mustKeep(map[string]any{"type": "kp_upload", "device": alice.id.device, "kps": []string{}})
	j := alice.c.mustKeep(map[string]any{"type": "join", "room": "vault"})
	if j["type"] != "joined" {
		j = alice.c.expect("joined")
	}
	if info, _ := j["mls"].(map[string]any); info == nil || info["epoch"] != float64(1) || info["ready"] != true {
		t.Fatalf("the group after the kill: %v", j["mls"])
	}
	if ack := alice.send("vault", 1, "canary-after-kill"); ack["type"] != "ack" {
		t.Fatalf("alice's mls_app at the acked epoch after the kill: %v", ack)
	}
}

// groupRecord is the record of room's group the store holds, nil when none.
func groupRecord(t *testing.T, st store.Store, room string) *mlsGroup {
	t.Helper()
	var g *mlsGroup
	err := st.Scan(bucketMLSGroups, func(k, v []byte) error {
		if string(k) == room {
			g = &mlsGroup{}
			return json.Unmarshal(v, g)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestE2EEGroupGoesWithRoom: delete_room deletes the room's group record in the same
// request as the room's record, and the hub forgets the group; a new room of the same
// name then starts a fresh group (another group_id, not ready, epoch 0), whose record
// is the only one.
func TestE2EEGroupGoesWithRoom(t *testing.T) {
	st := newGroupSizeStore()
	ts := startServerOn(t, st, generousLimits)
	b := installBatches(ts, nil)
	o := mlsoracle.Start(t)
	alice, _, gid := twoInRoom(t, ts, o, "vault")
	settleHub(t, ts.App.hub)
	if g := groupRecord(t, st, "vault"); g == nil || g.Epoch != 1 {
		t.Fatalf("the group record before delete_room: %+v", g)
	}
	alice.c.mustKeep(map[string]any{"type": "delete_room", "room": "vault"})
	settleHub(t, ts.App.hub)
	if g := groupRecord(t, st, "vault"); g != nil {
		t.Fatalf("after delete_room the store still holds the group record (epoch %d)", g.Epoch)
	}
	b.mu.Lock()
	together := false
	for _, w := range b.batches {
		var room, group bool
		for _, x := range w {
			room = room || x.Bucket == bucketRooms && string(x.Key) == "vault" && x.Value == nil
			group = group || x.Bucket == bucketMLSGroups && string(x.Key) == "vault" && x.Value == nil
		}
		together = together || room && group
	}
	b.mu.Unlock()
	if !together {
		t.Fatal("no request deletes the room's record and its group's together")
	}
	ts.App.hub.do(func() {
		if g := ts.App.hub.mls.groups["vault"]; g != nil {
			t.Errorf("the hub still holds the deleted room's group (epoch %d)", g.Epoch)
		}
	})

	fresh := alice.e2eeRoom(ts, "vault") // fails unless the new room's group is not ready
	if fresh == base64.StdEncoding.EncodeToString(gid) {
		t.Fatalf("the new room has the deleted one's group_id %s", fresh)
	}
	settleHub(t, ts.App.hub)
	g := groupRecord(t, st, "vault")
	if g == nil || base64.StdEncoding.EncodeToString(g.GroupID) != fresh || g.Epoch != 0 || len(g.Leaves) != 1 {
		t.Fatalf("the new room's group record: %+v", g)
	}
}

// TestE2EEStaleGroupsDroppedAtStart: a group record an older version left behind for
// a deleted room, with a Welcome kept in it, is deleted at start-up, rows and all; a
// live room's group stays.
func TestE2EEStaleGroupsDroppedAtStart(t *testing.T) {
	st := newGroupSizeStore()
	ts := startServerOn(t, st, generousLimits)
	o := mlsoracle.Start(t)
	twoInRoom(t, ts, o, "vault")
	settleHub(t, ts.App.hub)
	ts.stop()
	ghost, _ := json.Marshal(&mlsGroup{GroupID: []byte("0123456789abcdef"), Ready: true, Epoch: 3})
	if err := st.Apply([]store.Write{
		{Bucket: bucketMLSGroups, Key: []byte("ghost"), Value: ghost},
		{Bucket: bucketMLSWelcomes, Key: welcomeEventKey("ghost", 7), Value: []byte(`{"type":"mls_welcome","id":7}`)},
		{Bucket: bucketMLSWelcomeFor, Key: welcomeForKey("ghost", "dev:bob/bob-device"), Value: store.SeqKey(7)},
	}); err != nil {
		t.Fatal(err)
	}

	ts = startServerOn(t, st, generousLimits)
	if g := groupRecord(t, st, "ghost"); g != nil {
		t.Fatalf("the deleted room's group record is still there after a restart (epoch %d)", g.Epoch)
	}
	if events, devs := welcomeRows(t, st, "ghost"); len(events) != 0 || len(devs) != 0 {
		t.Fatalf("the deleted room's Welcomes: %d events, %d pointers", len(events), len(devs))
	}
	if g := groupRecord(t, st, "vault"); g == nil || g.Epoch != 1 {
		t.Fatalf("the live room's group record after a restart: %+v", g)
	}
	ts.App.hub.do(func() {
		if ts.App.hub.mls.groups["ghost"] != nil || ts.App.hub.mls.groups["vault"] == nil {
			t.Errorf("the hub's groups after a restart: %d", len(ts.App.hub.mls.groups))
		}
	})
}

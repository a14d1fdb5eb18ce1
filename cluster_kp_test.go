package main

import (
	"context"
	"encoding/base64"
	"strings"
	"sync"
	"testing"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/cluster/redistest"
	"modified-chat/internal/mls"
	"modified-chat/internal/mlsoracle"
)

// kpTake is one clusterTakeKPs answer.
type kpTake struct {
	got  []*kpEntry
	left []int
	err  error
}

// takeOn runs clusterTakeKPs on ts's hub for want and waits for its answer.
func takeOn(t *testing.T, ts *testServer, want ...devRef) kpTake {
	t.Helper()
	h, res := ts.App.hub, make(chan kpTake, 1)
	h.post(command{fn: func() {
		h.clusterTakeKPs(want, func(got []*kpEntry, left []int, err error) { res <- kpTake{got, left, err} })
	}})
	select {
	case r := <-res:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("clusterTakeKPs did not answer within 5 s")
		return kpTake{}
	}
}

// kpRefOf is the KeyPackageRef of a b64 KeyPackage MLSMessage.
func kpRefOf(t *testing.T, b64kp string) string {
	t.Helper()
	raw, _ := base64.StdEncoding.DecodeString(b64kp)
	m, err := mls.ParseMessage(raw)
	if err != nil || m.KeyPackage == nil {
		t.Fatalf("not a KeyPackage: %v", err)
	}
	return string(mls.KeyPackageRef(m.KeyPackage))
}

// TestClusterKPDirectory: the KeyPackage directory is the cluster's. Alice's device
// uploads 6 real KeyPackages (ts-mls) on node 1 (in this process); on node 2 (a child)
// the same device's upload answers the count 6, one of those KeyPackages uploaded
// again is bad_mls naming kps[0], and a batch of a fresh one and a stored one is
// bad_mls naming kps[1] and stores nothing. Node 1 takes two: each a real entry of the
// device, distinct, and the second leaves 4 < kpLow, so kp_low with count 4 reaches
// the device on node 2 (through the control log, within the control bound) and on
// node 1. A taken one uploaded on node 2 is bad_mls, and node 1 counts 4. With Redis
// gone, an upload is unavailable with a retry hint.
func TestClusterKPDirectory(t *testing.T) {
	rs := redistest.Start(t)
	files := newClusterFiles(t)
	n2 := startNodes(t, 1, rs, files)[0]
	n1 := startServer(t, func(c *Config) {
		generousLimits(c)
		c.RedisURL, c.ClusterKeyFile, c.SessionKeyFile, c.RedisWait = rs.URL(), files.clusterKey, files.sessionKey, 5*time.Second
	})
	o := mlsoracle.Start(t)
	alice := &mlsDevice{t: t, c: n1.user(t, "alice"), id: newTestIdentity("dev:alice", "alice-device"), o: o, name: "alice"}
	alice.c.mustAck(alice.id.registration(alice.id.user))
	alice.leafPub = o.Do(map[string]any{"op": "keygen", "id": "alice"}).Bytes("pub")
	up := func(c *wsClient, kps ...string) map[string]any {
		return c.keep(map[string]any{"type": "kp_upload", "device": alice.id.device, "kps": kps})
	}
	kps := alice.keyPackages(6)
	if ev := up(alice.c, kps...); ev["type"] != "ack" || ev["count"] != float64(6) {
		t.Fatalf("6 KeyPackages on node 1: %v", ev)
	}

	on2 := n2.dialAs(t, "alice")
	var ev map[string]any
	for deadline := time.Now().Add(ctlBound + time.Second); ; time.Sleep(50 * time.Millisecond) {
		// Node 2 learns of the device through the control log.
		if ev = up(on2); ev["code"] != codeUnknownDevice || time.Now().After(deadline) {
			break
		}
	}
	if ev["type"] != "ack" || ev["count"] != float64(6) {
		t.Fatalf("the device's count on node 2: %v, want an ack with 6", ev)
	}
	if ev := up(on2, kps[2]); ev["code"] != codeBadMLS || !strings.HasPrefix(ev["message"].(string), "kps[0]:") {
		t.Errorf("a KeyPackage stored on node 1 uploaded on node 2: %v", ev)
	}
	if ev := up(on2, alice.keyPackages(1)[0], kps[5]); ev["code"] != codeBadMLS || !strings.HasPrefix(ev["message"].(string), "kps[1]:") {
		t.Errorf("a fresh KeyPackage and a stored one on node 2: %v", ev)
	}
	if ev := up(alice.c); ev["count"] != float64(6) {
		t.Errorf("after the refused batches node 1 counts %v, want 6", ev)
	}

	refs := map[string]bool{}
	for _, kp := range kps {
		refs[kpRefOf(t, kp)] = true
	}
	me := devRef{"dev:alice", alice.id.device}
	first, second := takeOn(t, n1, me), takeOn(t, n1, me)
	for i, r := range []kpTake{first, second} {
		if r.err != nil || len(r.got) != 1 || r.got[0] == nil || r.left[0] != 5-i {
			t.Fatalf("take %d on node 1: %+v, want an entry and %d left", i+1, r, 5-i)
		}
		e := r.got[0]
		if !refs[string(e.ref)] || e.user != "dev:alice" || e.device != alice.id.device || e.kp == nil ||
			string(mls.KeyPackageRef(e.kp)) != string(e.ref) || e.notAfter != int64(e.kp.Leaf.NotAfter) {
			t.Fatalf("take %d: entry %+v is not one of the device's KeyPackages", i+1, e)
		}
		delete(refs, string(e.ref))
	}
	if len(refs) != 4 {
		t.Fatalf("the two takes got the same KeyPackage")
	}
	if low := on2.expectWithin(ctlBound+time.Second, "kp_low"); low["device"] != alice.id.device || low["count"] != float64(4) {
		t.Errorf("kp_low on node 2: %v, want count 4", low)
	}
	if low := alice.c.awaitKeep("kp_low"); low["count"] != float64(4) {
		t.Errorf("kp_low on node 1: %v, want count 4", low)
	}
	used := base64.StdEncoding.EncodeToString(first.got[0].msg)
	if ev := up(on2, used); ev["code"] != codeBadMLS || !strings.Contains(ev["message"].(string), "used before") {
		t.Errorf("a KeyPackage taken on node 1 uploaded on node 2: %v", ev)
	}
	count := make(chan int, 1)
	h := n1.App.hub
	h.post(command{fn: func() {
		h.clusterKPCount(me.user, me.device, func(n int, err error) {
			if err != nil {
				t.Errorf("count: %v", err)
			}
			count <- n
		})
	}})
	select {
	case n := <-count:
		if n != 4 {
			t.Errorf("node 1 counts %d, want 4", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("clusterKPCount did not answer")
	}

	rs.Kill()
	if ev := up(alice.c, alice.keyPackages(1)[0]); ev["code"] != codeUnavailable || ev["retry_after_ms"] == nil {
		t.Errorf("an upload while Redis is away: %v, want unavailable", ev)
	}
}

// TestClusterKPQueueApart: the directory's calls have their own bounded queue. With
// its worker held and the queue full, a kp_upload is refused busy (nothing waits),
// while an admin's global_ban still goes through the control log at once; released,
// the next upload is answered by Redis again.
func TestClusterKPQueueApart(t *testing.T) {
	rs := redistest.Start(t)
	files := newClusterFiles(t)
	n1 := startServer(t, func(c *Config) {
		generousLimits(c)
		c.Admins = []string{"dev:root"}
		c.RedisURL, c.ClusterKeyFile, c.SessionKeyFile, c.RedisWait = rs.URL(), files.clusterKey, files.sessionKey, 5*time.Second
	})
	alice, id := n1.user(t, "alice"), newTestIdentity("dev:alice", "alice-device")
	alice.mustAck(id.registration(id.user))
	root := n1.user(t, "root")
	up := func() map[string]any {
		return alice.keep(map[string]any{"type": "kp_upload", "device": id.device, "kps": []string{}})
	}
	if ev := up(); ev["type"] != "ack" || ev["count"] != float64(0) {
		t.Fatalf("an empty upload: %v", ev)
	}
	cc, release := n1.App.ctl, make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	hold := ctlJob{run: func(context.Context, *cluster.Ctl) error { <-release; return nil }, done: func(error) {}}
	full := false
	for range kpQueue + 2 {
		if !cc.submitKP(hold) {
			full = true
			break
		}
	}
	if !full {
		t.Fatalf("the directory's queue took %d calls", kpQueue+2)
	}
	if ev := up(); ev["code"] != codeBusy {
		t.Errorf("an upload with the directory's queue full: %v, want busy", ev)
	}
	root.mustAck(map[string]any{"type": "global_ban", "user": "dev:bob"})
	free()
	if ev := up(); ev["type"] != "ack" || ev["count"] != float64(0) {
		t.Errorf("an upload once the queue drained: %v", ev)
	}
}

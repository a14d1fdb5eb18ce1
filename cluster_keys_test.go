package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/cluster/redistest"
)

// Acceptance tests of the key directory across nodes (issue 14): several server
// processes on one real redis-server. "Within 1 s" is measured from the actor's ack.

// liveDeviceIDs asks c's node for user's record and returns the live device ids, sorted.
func liveDeviceIDs(c *wsClient, user string) []string {
	c.t.Helper()
	ev := c.sendAwait(map[string]any{"type": "devices", "user": user}, uniqueRef(), func(ev map[string]any) bool {
		return ev["type"] == "devices" || ev["type"] == "error"
	})
	var out []string
	devs, _ := ev["devices"].([]any)
	for _, d := range devs {
		d := d.(map[string]any)
		if d["revoked"] == nil {
			out = append(out, d["device"].(string))
		}
	}
	slices.Sort(out)
	return out
}

// TestClusterDevicesAcrossNodes: a device registered on node 1 is known on node 2
// within 1 s (bob there hears device_added); its signed say sent on node 2 is
// accepted and delivered with its signature; a counter used on one node is refused
// as replayed on the other, both ways; a revoke on node 2 reaches alice's socket on
// node 1 as on one node (device_revoked within 1 s; the socket stays open, its next
// signed say from the device is bad_device).
func TestClusterDevicesAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	a1, a2 := ready(nodes[0].ts.dial(t, cookie)), ready(nodes[1].ts.dial(t, cookie))
	b2 := ready(nodes[1].ts.user(t, "bob"))
	laptop := newTestIdentity("dev:alice", "alice-laptop")
	phone := newTestIdentity("dev:alice", "alice-phone")
	phone.urk = laptop.urk

	a1.mustAck(laptop.registration(laptop.user))
	acked := time.Now()
	ev := b2.expectWithin(ctlBound, "device_added")
	took := time.Since(acked)
	if dev, _ := ev["device"].(map[string]any); ev["user"] != "dev:alice" || dev["device"] != laptop.device {
		t.Fatalf("node 2 told bob %v", ev)
	}
	t.Logf("node 2 knew the device %v after the ack", took)

	say := laptop.signedSay(lobby, "signed, sent on node 2")
	a2.mustAck(say)
	msg := b2.expectWithin(5*time.Second, "message")
	if sig, _ := msg["sig"].(map[string]any); msg["text"] != "signed, sent on node 2" || sig["device"] != laptop.device {
		t.Fatalf("bob got %v", msg)
	}
	a1.mustRefuse(say, "replayed")
	first := laptop.signedSay(lobby, "signed, sent on node 1")
	a1.mustAck(first)
	a2.mustRefuse(first, "replayed")

	a1.mustAck(phone.registration(phone.user))
	b2.expectWithin(ctlBound, "device_added")
	a1.mustAck(phone.signedSay(lobby, "from the phone, on node 1"))
	a2.mustAck(map[string]any{"type": "revoke_device", "device": phone.device})
	acked = time.Now()
	ev = a1.expectWithin(ctlBound, "device_revoked")
	took = time.Since(acked)
	if ev["user"] != "dev:alice" || ev["device"] != phone.device || ev["by"] != "dev:alice" {
		t.Fatalf("node 1 told alice %v", ev)
	}
	t.Logf("node 1 told of the revoke %v after the ack", took)
	a1.mustRefuse(phone.signedSay(lobby, "from the revoked phone"), codeBadDevice)
	for i, c := range []*wsClient{a1, a2} {
		if got := liveDeviceIDs(c, "dev:alice"); !slices.Equal(got, []string{laptop.device}) {
			t.Fatalf("node %d: live devices %v, want only the laptop", i+1, got)
		}
	}
}

// TestClusterDevicesConcurrent: alice registers a new device on each node at the same
// moment, three times over; each registration is acknowledged or refused busy, and
// afterwards both nodes hold exactly the acknowledged devices: no change is lost, no
// refused one is in effect.
func TestClusterDevicesConcurrent(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	conns := []*wsClient{ready(nodes[0].ts.dial(t, cookie)), ready(nodes[1].ts.dial(t, cookie))}
	root := newTestIdentity("dev:alice", "alice-first")
	conns[0].mustAck(root.registration(root.user))
	want := []string{root.device}
	waitFor(t, "node 2 to know the first device", func() bool { return len(liveDeviceIDs(conns[1], "dev:alice")) == 1 })
	busy := 0
	for round := range 3 {
		ids := make([]*testIdentity, 2)
		refs := make([]string, 2)
		for i, c := range conns {
			ids[i] = newTestIdentity("dev:alice", "alice-r"+strconv.Itoa(round)+"-n"+strconv.Itoa(i))
			ids[i].urk = root.urk
			refs[i] = uniqueRef() + strconv.Itoa(i)
			reg := ids[i].registration(root.user)
			reg["ref"] = refs[i]
			c.send(reg)
		}
		for i, c := range conns {
			for {
				ev := c.expectWithin(5*time.Second, "ack", "error")
				if ev["ref"] != refs[i] {
					continue
				}
				switch {
				case ev["type"] == "ack":
					want = append(want, ids[i].device)
				case ev["code"] == codeBusy:
					busy++
				default:
					t.Fatalf("registration on node %d answered %v", i+1, ev)
				}
				break
			}
		}
		// Let the winner's entry reach the other node before the next round.
		time.Sleep(ctlBound + 200*time.Millisecond)
	}
	slices.Sort(want)
	for i, c := range conns {
		if got := liveDeviceIDs(c, "dev:alice"); !slices.Equal(got, want) {
			t.Fatalf("node %d holds %v, want the acknowledged %v", i+1, got, want)
		}
	}
	t.Logf("%d of 6 registrations refused busy", busy)
}

// TestClusterForgedDeviceRecords: records put into Redis by hand are refused when a
// node starts: one sealed with another key, a genuine one filed under another user,
// and a genuine but older revision put back in place of the current one. Each is
// dropped and counted (chat_cluster_ctl_dropped_total{reason="forged"} is 3), and
// the node shows no record for those users; a genuine record is loaded.
func TestClusterForgedDeviceRecords(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	alice := ready(nodes[0].ts.user(t, "alice"))
	bob := ready(nodes[0].ts.user(t, "bob"))
	aliceID := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(aliceID.registration(aliceID.user))
	bobID := newTestIdentity("dev:bob", "bob-laptop")
	bob.mustAck(bobID.registration(bobID.user))
	rc := newAdminRedis(t, rs)
	ctx := context.Background()
	const keydir = "mc:{g}:keydir"
	bobFirst, err := rc.Do(ctx, rc.B().Hget().Key(keydir).Field("dev:bob").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	bobPhone := newTestIdentity("dev:bob", "bob-phone")
	bobPhone.urk = bobID.urk
	bob.mustAck(bobPhone.registration(bobID.user))
	genuine, err := rc.Do(ctx, rc.B().Hget().Key(keydir).Field("dev:alice").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := cluster.NewSealer([][]byte{bytes.Repeat([]byte{1}, cluster.ClusterKeySize)}, "abcd", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	forged := rogue.Seal("mc:{g}:ctl", []byte(`{"op":"devices","user":"dev:mallory","rev":1,"value":{"user":"dev:mallory","urk":"AAAA","devices":[]}}`))
	for field, v := range map[string]string{"dev:mallory": string(forged), "dev:zed": genuine, "dev:bob": bobFirst} {
		if err := rc.Do(ctx, rc.B().Hset().Key(keydir).FieldValue().FieldValue(field, v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	for _, field := range []string{"devices:dev:mallory", "devices:dev:zed"} {
		if err := rc.Do(ctx, rc.B().Hset().Key("mc:{g}:revs").FieldValue().FieldValue(field, "1").Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	nd := nodes[1]
	nd.Process.Kill()
	nd.Wait()
	metrics := "127.0.0.1:" + freePort(t)
	nd.env = append(nd.env, "CHAT_METRICS_ADDR="+metrics)
	nd.restart(t)
	if got := scrapeCounter(t, metrics, `chat_cluster_ctl_dropped_total{reason="forged"}`); got != 3 {
		t.Fatalf("forged records counted %v, want 3", got)
	}
	carol := ready(nd.ts.user(t, "carol"))
	for user, want := range map[string][]string{"dev:alice": {aliceID.device}, "dev:mallory": nil, "dev:zed": nil, "dev:bob": nil} {
		if got := liveDeviceIDs(carol, user); !slices.Equal(got, want) {
			t.Fatalf("node 2 after restart: %s has %v, want %v", user, got, want)
		}
	}
}

// scrapeCounter reads one sample from a node's /metrics.
func scrapeCounter(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewScanner(resp.Body)
	for lines.Scan() {
		if v, ok := strings.CutPrefix(lines.Text(), sample+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	t.Fatalf("no %s in /metrics", sample)
	return 0
}

// dmPrefsAnswer sends a dm_prefs command and returns its answer: dm_prefs, or an error.
func dmPrefsAnswer(c *wsClient, v map[string]any) map[string]any {
	c.t.Helper()
	v["type"] = "dm_prefs"
	return c.sendAwait(v, uniqueRef(), func(ev map[string]any) bool { return ev["type"] == "dm_prefs" || ev["type"] == "error" })
}

// blockedOf reads the blocked list of a dm_prefs event, sorted.
func blockedOf(ev map[string]any) []string {
	var out []string
	list, _ := ev["blocked"].([]any)
	for _, id := range list {
		out = append(out, id.(string))
	}
	slices.Sort(out)
	return out
}

// TestClusterDMPrefsAcrossNodes: alice blocks bob on node 1; within 1 s her socket on
// node 2 gets dm_prefs with the block, and bob's open_dm with her on node 2 is
// dm_refused (carol's, unblocked, opens). Two blocks set at once on two nodes are each
// acknowledged or refused busy, and both nodes then hold exactly the acknowledged
// ones; node 2 restarted reads them from Redis (an unblock it only had from the log
// included).
func TestClusterDMPrefsAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	a1, a2 := ready(nodes[0].ts.dial(t, cookie)), ready(nodes[1].ts.dial(t, cookie))
	bob, carol := ready(nodes[1].ts.user(t, "bob")), ready(nodes[1].ts.user(t, "carol"))
	if ev := dmPrefsAnswer(a1, map[string]any{"block": "dev:bob"}); ev["type"] != "dm_prefs" || !slices.Equal(blockedOf(ev), []string{"dev:bob"}) {
		t.Fatalf("block answered %v", ev)
	}
	acked := time.Now()
	ev := a2.expectWithin(ctlBound, "dm_prefs")
	took := time.Since(acked)
	if !slices.Equal(blockedOf(ev), []string{"dev:bob"}) {
		t.Fatalf("node 2 told alice %v", ev)
	}
	t.Logf("node 2 had the block %v after the answer", took)
	bob.mustRefuse(map[string]any{"type": "open_dm", "user": "dev:alice"}, codeDMRefused)
	carol.openDM("dev:alice")

	want := []string{"dev:bob"}
	refs := []string{uniqueRef() + "a", uniqueRef() + "b"}
	targets := []string{"dev:xavier", "dev:yvonne"}
	for i, c := range []*wsClient{a1, a2} {
		c.send(map[string]any{"type": "dm_prefs", "block": targets[i], "ref": refs[i]})
	}
	busy := 0
	for i, c := range []*wsClient{a1, a2} {
		for {
			ev := c.expectWithin(5*time.Second, "dm_prefs", "error")
			if ev["ref"] != refs[i] {
				continue
			}
			switch {
			case ev["type"] == "dm_prefs":
				want = append(want, targets[i])
			case ev["code"] == codeBusy:
				busy++
			default:
				t.Fatalf("block on node %d answered %v", i+1, ev)
			}
			break
		}
	}
	slices.Sort(want)
	time.Sleep(ctlBound + 200*time.Millisecond)
	for i, c := range []*wsClient{a1, a2} {
		if got := blockedOf(dmPrefsAnswer(c, map[string]any{})); !slices.Equal(got, want) {
			t.Fatalf("node %d holds %v, want the acknowledged %v", i+1, got, want)
		}
	}
	t.Logf("%d of 2 concurrent blocks refused busy", busy)

	// A change node 2 only applied from the log (its own store's copy is older): after
	// a restart it holds what Redis holds.
	want = slices.DeleteFunc(want, func(id string) bool { return id == "dev:bob" })
	if ev := dmPrefsAnswer(a1, map[string]any{"unblock": "dev:bob"}); !slices.Equal(blockedOf(ev), want) {
		t.Fatalf("unblock answered %v", ev)
	}
	a2.expectWithin(ctlBound, "dm_prefs")
	nd := nodes[1]
	nd.Process.Kill()
	nd.Wait()
	nd.restart(t)
	a2 = ready(nd.ts.dial(t, cookie))
	if got := blockedOf(dmPrefsAnswer(a2, map[string]any{})); !slices.Equal(got, want) {
		t.Fatalf("node 2 after restart holds %v, want %v", got, want)
	}
}

// TestMigrateRedisKeys: migrate-redis moves the key directory, the DM preferences and
// the device counters: on a cluster node afterwards alice's device is live, a signed
// say from before the move sent again is replayed while her next one is accepted,
// and her block holds.
func TestMigrateRedisKeys(t *testing.T) {
	files := newClusterFiles(t)
	dir, port := t.TempDir(), freePort(t)
	single := startChild(t, dir, port, "CHAT_SESSION_KEY_FILE="+files.sessionKey)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	cookie := devLogin(t, ts.URL, "alice")
	alice := ready(ts.dial(t, cookie))
	laptop := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(laptop.registration(laptop.user))
	old := laptop.signedSay(lobby, "before the move")
	alice.mustAck(old)
	if ev := dmPrefsAnswer(alice, map[string]any{"block": "dev:bob"}); ev["type"] != "dm_prefs" {
		t.Fatalf("block answered %v", ev)
	}
	single.Process.Kill()
	single.Wait()

	rs := redistest.Start(t)
	env := map[string]string{"CHAT_DATA_DIR": dir, "CHAT_REDIS_URL": rs.URL(), "CHAT_CLUSTER_KEY_FILE": files.clusterKey,
		"CHAT_SESSION_KEY_FILE": files.sessionKey, "CHAT_REDIS_WAIT": "5s"}
	if err := migrateRedisCommand(nil, func(k string) string { return env[k] }); err != nil {
		t.Fatalf("migrate-redis: %v", err)
	}
	nodes := startNodes(t, 2, rs, files)
	a2 := ready(nodes[1].ts.dial(t, cookie))
	if got := liveDeviceIDs(a2, "dev:alice"); !slices.Equal(got, []string{laptop.device}) {
		t.Fatalf("alice's devices on the cluster: %v", got)
	}
	a2.mustRefuse(old, "replayed")
	a2.mustAck(laptop.signedSay(lobby, "after the move"))
	if got := blockedOf(dmPrefsAnswer(a2, map[string]any{})); !slices.Equal(got, []string{"dev:bob"}) {
		t.Fatalf("alice's blocks on the cluster: %v", got)
	}
}

// TestClusterLinkAcrossNodes: a new device's link_request on node 1 reaches alice's
// socket on node 2 within 1 s and is listed in node 2's devices answer; her laptop
// certifies it there, and node 1 then holds the device and no longer lists the
// request. Bob on node 2 hears nothing of the request.
func TestClusterLinkAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	a1, a2 := ready(nodes[0].ts.dial(t, cookie)), ready(nodes[1].ts.dial(t, cookie))
	bob := ready(nodes[1].ts.user(t, "bob"))
	laptop := newTestIdentity("dev:alice", "alice-laptop")
	a2.mustAck(laptop.registration(laptop.user))
	waitFor(t, "node 1 to know the laptop", func() bool { return len(liveDeviceIDs(a1, "dev:alice")) == 1 })
	fresh := newTestIdentity("dev:alice", "alice-fresh")
	a1.mustAck(fresh.linkRequest())
	acked := time.Now()
	ev := a2.expectWithin(ctlBound, "link_request")
	took := time.Since(acked)
	if ev["user"] != "dev:alice" || ev["device"] != fresh.device || ev["dik"] != b64(fresh.dik.Public().(ed25519.PublicKey)) {
		t.Fatalf("node 2 told alice %v", ev)
	}
	t.Logf("node 2 showed the link request %v after the ack", took)
	links := func(c *wsClient) int {
		ev := c.sendAwait(map[string]any{"type": "devices"}, uniqueRef(), func(ev map[string]any) bool { return ev["type"] == "devices" })
		l, _ := ev["links"].([]any)
		return len(l)
	}
	if n := links(a2); n != 1 {
		t.Fatalf("node 2 lists %d link requests, want 1", n)
	}
	a2.mustAck(certification(laptop, fresh))
	waitFor(t, "node 1 to know the linked device", func() bool { return len(liveDeviceIDs(a1, "dev:alice")) == 2 })
	if n := links(a1); n != 0 {
		t.Fatalf("node 1 still lists %d link requests after the certification", n)
	}
	noneOfType(t, bob.barrier(), "link_request")
}

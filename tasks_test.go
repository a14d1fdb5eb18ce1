package main

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"modified-chat/internal/cluster/redistest"
)

// armTask makes the next run of task panic, once (testHookTask); the hook is taken
// away after the server has stopped. Call it before the server starts.
func armTask(t *testing.T) func(task string) {
	t.Helper()
	var armed atomic.Value // the task name that panics next; "" none
	armed.Store("")
	testHookTask = func(task string) {
		if task != "" && armed.CompareAndSwap(task, "") {
			panic("injected panic in task " + task)
		}
	}
	t.Cleanup(func() { testHookTask = nil })
	return func(task string) { armed.Store(task) }
}

// taskPanics reads chat_task_panics_total for task.
func taskPanics(ts *testServer, task string) float64 {
	return testutil.ToFloat64(ts.App.metrics.taskPanics.WithLabelValues(task))
}

// answerWith sends v with ref and returns the first event naming ref whose type is
// one of types (an error always answers).
func (c *wsClient) answerWith(v map[string]any, ref string, types ...string) map[string]any {
	c.t.Helper()
	return c.sendAwait(v, ref, func(ev map[string]any) bool {
		if ev["type"] == "error" {
			return true
		}
		for _, typ := range types {
			if ev["type"] == typ {
				return true
			}
		}
		return false
	})
}

// expectInternal fails unless ev is the `internal` error for ref in room.
func expectInternal(t *testing.T, ev map[string]any, ref, room string) {
	t.Helper()
	field := func(v string) any {
		if v == "" {
			return nil // an answer without a ref or room has no such field
		}
		return v
	}
	if ev["type"] != "error" || ev["code"] != codeInternal || ev["ref"] != field(ref) || ev["room"] != field(room) {
		t.Fatalf("answer %v, want error %s with ref %q and room %q", ev, codeInternal, ref, room)
	}
}

// TestTaskPanicHistory: a history read that panics answers its requester `internal`
// with the request's ref and room, counts one history task panic, and the server goes
// on: the same connection's next history request is answered with its page (histBusy
// was given back), another user's history and messages are served. A join's page,
// shared by the joiners of a room, that panics answers the joiner `internal` (no ref)
// and is forgotten: the next joiner reads it afresh instead of waiting for ever.
func TestTaskPanicHistory(t *testing.T) {
	arm := armTask(t)
	ts := startServer(t, generousLimits)
	bob, carol := ts.user(t, "bob"), ts.user(t, "carol")
	bob.expectHistory(lobby)
	carol.expectHistory(lobby)
	bob.mustAck(map[string]any{"type": "say", "room": lobby, "text": "kept"})

	arm(taskHistory)
	expectInternal(t, bob.answerWith(map[string]any{"type": "history", "room": lobby}, "h1", "history"), "h1", lobby)
	if n := taskPanics(ts, taskHistory); n != 1 {
		t.Fatalf("history task panics %v, want 1", n)
	}
	if ev := bob.answerWith(map[string]any{"type": "history", "room": lobby}, "h2", "history"); ev["type"] != "history" {
		t.Fatalf("the next history request: %v", ev)
	} else if _, texts := historyIDs(ev); len(texts) != 1 || texts[0] != "kept" {
		t.Fatalf("the next history page holds %q", texts)
	}
	if ev := carol.answerWith(map[string]any{"type": "history", "room": lobby}, "c1", "history"); ev["type"] != "history" {
		t.Fatalf("another user's history: %v", ev)
	}
	carol.mustAck(map[string]any{"type": "say", "room": lobby, "text": "still served"})

	arm(taskHistory)
	bob.mustAck(map[string]any{"type": "join", "room": "quiet"})
	ev := bob.expect("error")
	expectInternal(t, ev, "", "quiet")
	carol.mustAck(map[string]any{"type": "join", "room": "quiet"})
	if ev := carol.expectHistory("quiet"); ev["ref"] != nil {
		t.Fatalf("the next joiner's page: %v", ev)
	}
	if n := taskPanics(ts, taskHistory); n != 2 {
		t.Fatalf("history task panics %v, want 2", n)
	}
	if n := testutil.ToFloat64(ts.App.metrics.panics); n != 0 {
		t.Errorf("command panics %v, want 0", n)
	}
}

// TestTaskPanicFetchFile: a fetch_file whose read panics answers `internal` with its
// ref and room and counts one; the connection's next fetch_file is answered with the
// file (not fetch_pending: c.fetching was given back), and another user fetches it.
func TestTaskPanicFetchFile(t *testing.T) {
	arm := armTask(t)
	ts := fileServer(t, nil)
	mod := ts.user(t, "mod")
	mod.sendFile(lobby, "a.png", "image/png", testPNG(t), "f1")
	mod.expect("ack")
	bob, carol := ts.user(t, "bob"), ts.user(t, "carol")
	id := historyFile(t, bob.expectHistory(lobby))["id"]
	carol.expectHistory(lobby)

	arm(taskFetchFile)
	fetch := map[string]any{"type": "fetch_file", "room": lobby, "id": id}
	expectInternal(t, bob.answerWith(fetch, "g1", "file"), "g1", lobby)
	if n := taskPanics(ts, taskFetchFile); n != 1 {
		t.Fatalf("fetch_file task panics %v, want 1", n)
	}
	if f := bob.answerWith(fetch, "g2", "file"); f["type"] != "file" || f["data"] == nil || f["id"] != id {
		t.Fatalf("the next fetch_file: %v", f)
	}
	if f := carol.answerWith(fetch, "c1", "file"); f["type"] != "file" || f["data"] == nil {
		t.Fatalf("another user's fetch_file: %v", f)
	}
	if n := taskPanics(ts, taskFetchFile); n != 1 {
		t.Fatalf("fetch_file task panics %v after, want 1", n)
	}
}

// TestTaskPanicDelete: a delete whose read of the message's sender panics answers
// `internal` with its ref and room, deletes nothing (the message is still in history),
// and the same delete sent again deletes it.
func TestTaskPanicDelete(t *testing.T) {
	arm := armTask(t)
	ts := startServer(t, generousLimits)
	bob := ts.user(t, "bob")
	bob.expectHistory(lobby)
	said := bob.answerWith(map[string]any{"type": "say", "room": lobby, "text": "oops"}, "s1", "ack")
	id := said["id"]

	arm(taskDeleteRead)
	del := map[string]any{"type": "delete", "room": lobby, "id": id}
	expectInternal(t, bob.answerWith(del, "d1", "ack"), "d1", lobby)
	if n := taskPanics(ts, taskDeleteRead); n != 1 {
		t.Fatalf("delete task panics %v, want 1", n)
	}
	if _, texts := historyIDs(bob.answerWith(map[string]any{"type": "history", "room": lobby}, "h1", "history")); len(texts) != 1 {
		t.Fatalf("history after the failed delete holds %q, want the message", texts)
	}
	if ev := bob.answerWith(del, "d2", "ack"); ev["type"] != "ack" {
		t.Fatalf("the delete sent again: %v", ev)
	}
}

// TestTaskPanicClusterRecordRead: on a cluster node (in this process, a real Redis),
// a join of a room this node does not follow waits for the room's record read from
// Redis; when that read panics the joiner is answered `internal` with its ref and room
// and one room_read panic is counted, and the same join sent again reads the record
// afresh and joins. A create whose place in the rooms index is reserved by a task that
// panics is answered `internal`, leaves no flight behind: the same create again makes
// the room. So for a history page read from a Stream, the cluster audit log read, and
// an open_dm's read of whether its unknown peer is on another node: each answers
// `internal` once, then as usual.
func TestTaskPanicClusterRecordRead(t *testing.T) {
	arm := armTask(t)
	rs := redistest.Start(t)
	files := newClusterFiles(t)
	ts := startServer(t, func(c *Config) {
		generousLimits(c)
		c.Admins = []string{"dev:root"}
		c.RedisURL, c.ClusterKeyFile, c.SessionKeyFile, c.RedisWait = rs.URL(), files.clusterKey, files.sessionKey, 5*time.Second
	})
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	alice.mustAck(map[string]any{"type": "create", "room": "far", "private": false})
	alice.mustAck(map[string]any{"type": "leave", "room": "far"})

	arm(taskRoomRead)
	join := map[string]any{"type": "join", "room": "far"}
	expectInternal(t, bob.answerWith(join, "j1", "joined"), "j1", "far")
	if n := taskPanics(ts, taskRoomRead); n != 1 {
		t.Fatalf("room_read task panics %v, want 1", n)
	}
	if ev := bob.answerWith(join, "j2", "joined"); ev["type"] != "joined" {
		t.Fatalf("the join sent again: %v", ev)
	}

	arm(taskReserveRoom)
	create := map[string]any{"type": "create", "room": "made", "private": false}
	expectInternal(t, alice.answerWith(create, "c1", "joined", "ack"), "c1", "made")
	if n := taskPanics(ts, taskReserveRoom); n != 1 {
		t.Fatalf("reserve_room task panics %v, want 1", n)
	}
	if ev := alice.answerWith(create, "c2", "joined", "ack"); ev["type"] == "error" {
		t.Fatalf("the create sent again: %v", ev)
	}
	bob.mustAck(map[string]any{"type": "say", "room": "far", "text": "still served"})

	// The other cluster reads: a history page from the room's Stream, the cluster's
	// audit log, and whether an open_dm's unknown peer is on another node.
	arm(taskClusterHistory)
	hist := map[string]any{"type": "history", "room": "far"}
	expectInternal(t, bob.answerWith(hist, "h1", "history"), "h1", "far")
	if _, texts := historyIDs(bob.answerWith(hist, "h2", "history")); len(texts) != 1 || texts[0] != "still served" {
		t.Fatalf("the next cluster history page holds %q", texts)
	}
	root := ts.user(t, "root")
	arm(taskAuditRead)
	expectInternal(t, root.answerWith(map[string]any{"type": "audit"}, "a1", "audit"), "a1", "")
	if ev := root.answerWith(map[string]any{"type": "audit"}, "a2", "audit"); ev["type"] != "audit" {
		t.Fatalf("the next audit: %v", ev)
	}
	arm(taskPeerRead)
	dm := map[string]any{"type": "open_dm", "user": "dev:nobody"}
	expectInternal(t, alice.answerWith(dm, "o1", "joined"), "o1", "")
	if ev := alice.answerWith(dm, "o2", "joined"); ev["code"] != codeDMRefused {
		t.Fatalf("the next open_dm of an unknown user: %v, want %s", ev, codeDMRefused)
	}
	for _, task := range []string{taskRoomRead, taskReserveRoom, taskClusterHistory, taskAuditRead, taskPeerRead} {
		if n := taskPanics(ts, task); n != 1 {
			t.Errorf("%s task panics %v, want 1", task, n)
		}
	}
}

// TestTaskPanicJanitorAndReload: a janitor round that panics is counted once under
// janitor and the next round runs; a policy reload that panics returns
// errReloadFailed, keeps the old policy (the same one) and counts once under
// policy_reload, and the next reload succeeds. The server serves throughout.
func TestTaskPanicJanitorAndReload(t *testing.T) {
	arm := armTask(t)
	ts := startServer(t, generousLimits)
	bob := ts.user(t, "bob")

	arm(taskJanitor)
	ts.App.janitorRound()
	ts.App.janitorRound()
	if n := taskPanics(ts, taskJanitor); n != 1 {
		t.Fatalf("janitor task panics %v, want 1", n)
	}

	old := ts.App.policy()
	arm(taskPolicyReload)
	if err := ts.App.reloadPolicy(); err != errReloadFailed {
		t.Fatalf("reload that panicked: %v, want errReloadFailed", err)
	}
	if ts.App.policy() != old {
		t.Fatal("a reload that panicked replaced the policy")
	}
	if n := taskPanics(ts, taskPolicyReload); n != 1 {
		t.Fatalf("policy_reload task panics %v, want 1", n)
	}
	if err := ts.App.reloadPolicy(); err != nil {
		t.Fatalf("the next reload: %v", err)
	}
	bob.mustAck(map[string]any{"type": "say", "room": lobby, "text": "still served"})
}

// TestRoomReadFailedReleasesWaiters: when the record read that commands wait for
// panics (refreshFailed), every waiting command is answered `internal`: a file
// announcement on its readPump's reply channel (which blocks until it gets one), a
// join with an error event carrying its ref and room; the server's own need of the
// record is dropped, and the room has no pending read left, so the next command reads
// it afresh.
func TestRoomReadFailedReleasesWaiters(t *testing.T) {
	h := newTestHub(t, nil)
	c := fakeClient("bob", 16)
	h.register <- c
	reply := make(chan *protoError, 1)
	ran := false
	h.do(func() {
		h.refreshes["far"] = []command{
			{client: c, env: &envelope{Type: "file", Room: "far", Ref: "f1"}, reply: reply},
			{client: c, env: &envelope{Type: "join", Room: "far", Ref: "j1"}},
			{fn: func() { ran = true }},
		}
		h.refreshFailed("far")
	})
	select {
	case perr := <-reply:
		if perr.Code != codeInternal {
			t.Fatalf("the file announcement got %v, want %s", perr, codeInternal)
		}
	default:
		t.Fatal("the file announcement's readPump got no answer")
	}
	var errs []map[string]any
	for _, ev := range drain(t, h, c) {
		if ev["type"] == "error" {
			errs = append(errs, ev)
		}
	}
	if len(errs) != 1 || errs[0]["code"] != codeInternal || errs[0]["ref"] != "j1" || errs[0]["room"] != "far" {
		t.Fatalf("errors queued %v, want one internal for j1 in far", errs)
	}
	h.do(func() {
		if _, pending := h.refreshes["far"]; pending || ran {
			t.Errorf("after the failed read: pending %v, the server's own need ran %v", pending, ran)
		}
	})
}

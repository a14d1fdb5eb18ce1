package main

import (
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
)

// TestClusterJobPanic: on a cluster node (in this process, a real Redis), a job of the
// control writer's queue that panics (an admin's global_ban, through commitCtl) is
// answered `internal` with its ref, counted once under ctl_job, and leaves no flight
// behind: the same ban sent again is acknowledged and bob's connection is closed by it.
// A KeyPackage directory call that panics (a kp_upload) is answered `internal` and
// counted once under kp_job, and the next upload is acknowledged with its count. Both
// queues go on, and so does the process: neither exits 70.
func TestClusterJobPanic(t *testing.T) {
	arm := armTask(t)
	rs := redistest.Start(t)
	files := newClusterFiles(t)
	ts := startServer(t, func(c *Config) {
		generousLimits(c)
		c.Admins = []string{"dev:root"}
		c.RedisURL, c.ClusterKeyFile, c.SessionKeyFile, c.RedisWait = rs.URL(), files.clusterKey, files.sessionKey, 5*time.Second
	})
	root, bob, alice := ts.user(t, "root"), ts.user(t, "bob"), ts.user(t, "alice")
	id := newTestIdentity("dev:alice", "alice-device")
	alice.mustAck(id.registration(id.user))
	upload := map[string]any{"type": "kp_upload", "device": id.device, "kps": []string{}}
	if ev := alice.answerWith(upload, "k0", "ack"); ev["type"] != "ack" || ev["count"] != float64(0) {
		t.Fatalf("an upload before: %v", ev)
	}

	arm(taskCtlJob)
	ban := map[string]any{"type": "global_ban", "user": "dev:bob"}
	expectInternal(t, root.answerWith(ban, "b1", "ack"), "b1", "")
	if n := taskPanics(ts, taskCtlJob); n != 1 {
		t.Fatalf("ctl_job task panics %v, want 1", n)
	}
	bob.mustAck(map[string]any{"type": "say", "room": lobby, "text": "not banned yet"})
	if ev := root.answerWith(ban, "b2", "ack"); ev["type"] != "ack" {
		t.Fatalf("the ban sent again: %v", ev)
	}
	bob.expectClose(closeBanned.code)

	arm(taskKPJob)
	expectInternal(t, alice.answerWith(upload, "k1", "ack"), "k1", "")
	if n := taskPanics(ts, taskKPJob); n != 1 {
		t.Fatalf("kp_job task panics %v, want 1", n)
	}
	if ev := alice.answerWith(upload, "k2", "ack"); ev["type"] != "ack" || ev["count"] != float64(0) {
		t.Fatalf("the upload sent again: %v", ev)
	}
	alice.mustAck(map[string]any{"type": "say", "room": lobby, "text": "still served"})
	for task, want := range map[string]float64{taskCtlJob: 1, taskKPJob: 1} {
		if n := taskPanics(ts, task); n != want {
			t.Errorf("%s task panics %v, want %v", task, n, want)
		}
	}
}

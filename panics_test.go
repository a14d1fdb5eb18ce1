package main

import (
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"modified-chat/internal/cluster/redistest"
	"modified-chat/internal/crash"
)

// panicEnv names, in a re-executed server child, the guarded goroutine whose start
// must panic (crash.TestHook): the exit tests set it, production never does.
const panicEnv = "CHAT_TEST_PANIC_IN"

// init arms crash.TestHook in a child that panicEnv asks to panic; in the test process
// itself the hook stays nil.
func init() {
	if g := os.Getenv(panicEnv); g != "" && os.Getenv(childEnv) == "1" {
		crash.TestHook = func(goroutine string) {
			if goroutine == g {
				panic("injected panic in " + goroutine)
			}
		}
	}
}

// TestReadPumpPanic: a panic in one connection's readPump closes that connection with
// 1011 and counts it under pump="read"; another user's connection goes on and the
// victim can connect again.
func TestReadPumpPanic(t *testing.T) { testPumpPanic(t, "read") }

// TestWritePumpPanic: the same for writePump, which writes the 1011 itself.
func TestWritePumpPanic(t *testing.T) { testPumpPanic(t, "write") }

// testPumpPanic makes pump panic once, in carol's first connection only.
func testPumpPanic(t *testing.T, pump string) {
	var armed atomic.Bool
	armed.Store(true)
	testHookPump = func(c *Client, p string) {
		if p == pump && c.user.Name == "carol" && armed.CompareAndSwap(true, false) {
			panic("injected panic in the " + p + " pump")
		}
	}
	t.Cleanup(func() { testHookPump = nil }) // after the server has stopped
	ts := startServer(t, nil)
	bob := ts.user(t, "bob")
	conn, _, err := ts.tryDial(devLogin(t, ts.URL, "carol"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	carol := &wsClient{t: t, conn: conn}
	carol.expectClose(closeInternal.code)
	bob.mustAck(map[string]any{"type": "say", "room": lobby, "text": "still here"})
	for _, p := range []string{"read", "write"} {
		want := 0.0
		if p == pump {
			want = 1
		}
		if n := testutil.ToFloat64(ts.App.metrics.pumpPanics.WithLabelValues(p)); n != want {
			t.Errorf("pump %s panics counted %v, want %v", p, n, want)
		}
	}
	if n := testutil.ToFloat64(ts.App.metrics.closes.WithLabelValues(strconv.Itoa(closeInternal.code))); n != 1 {
		t.Errorf("1011 closes counted %v, want 1", n)
	}
	if n := testutil.ToFloat64(ts.App.metrics.panics); n != 0 {
		t.Errorf("command panics %v, want 0", n)
	}
	again := ts.user(t, "carol")
	again.mustAck(map[string]any{"type": "say", "room": lobby, "text": "back"})
	// The hub let go of the broken connection: bob and carol's new one remain.
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(ts.App.metrics.connections) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("connections %v, want 2", testutil.ToFloat64(ts.App.metrics.connections))
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStoreWriterPanicExits: a panic in the store writer ends the server with
// crash.ExitCode and a log line naming the goroutine, instead of a server that runs on
// and acknowledges nothing.
func TestStoreWriterPanicExits(t *testing.T) {
	expectPanicExit(t, "store writer", nil)
}

// TestHubPanicExits: the same for the hub's loop, which owns every room and
// connection's state: a panic outside a command's handler ends the server with
// crash.ExitCode and the log line, not Go's exit 2 without one.
func TestHubPanicExits(t *testing.T) {
	expectPanicExit(t, "hub loop", nil)
}

// TestClusterFeedPanicExits: the same for each cluster goroutine (room feed, control
// log feed, control writer, connection slot renewals), on a node with a real Redis.
func TestClusterFeedPanicExits(t *testing.T) {
	rs := redistest.Start(t)
	f := newClusterFiles(t)
	env := []string{"CHAT_REDIS_URL=" + rs.URL(), "CHAT_REDIS_WAIT=5s",
		"CHAT_SESSION_KEY_FILE=" + f.sessionKey, "CHAT_CLUSTER_KEY_FILE=" + f.clusterKey}
	for _, g := range []string{"cluster feed writer", "cluster feed subscriber", "cluster feed orderer", "control log feed", "control writer", "connection slot renewals"} {
		t.Run(strings.ReplaceAll(g, " ", "_"), func(t *testing.T) { expectPanicExit(t, g, env) })
	}
}

// expectPanicExit runs a server child whose goroutine panics as it starts and checks
// how the child ends.
func expectPanicExit(t *testing.T, goroutine string, env []string) {
	t.Helper()
	limit := 30 * time.Second
	code, out, took := runToExit(t, limit, append(env, panicEnv+"="+goroutine)...)
	if code != crash.ExitCode {
		t.Fatalf("exit code %d after %v, want %d; log:\n%s", code, took, crash.ExitCode, out)
	}
	if took >= limit {
		t.Fatalf("killed at the limit")
	}
	for _, want := range []string{"goroutine panicked", "goroutine=\"" + goroutine + "\"", "injected panic in " + goroutine, "crash.OnPanic"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

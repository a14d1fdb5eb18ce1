package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestMetricsMove: each counter moves when its event happens, and the exposition
// carries reasons and codes only, never a user, an address or message text.
func TestMetricsMove(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MsgBurst, c.AbuseDrops = 2, 3 })
	m := ts.App.metrics
	a, b := ts.user(t, "alice-secret-name"), ts.user(t, "bob")
	if got := testutil.ToFloat64(m.accepted); got != 2 {
		t.Fatalf("accepted %v", got)
	}
	waitFor(t, "connections gauge", func() bool { return testutil.ToFloat64(m.connections) == 2 })
	a.send(map[string]any{"type": "say", "room": "lobby", "text": "top secret text"})
	b.expect("message")
	waitFor(t, "message counters", func() bool {
		return testutil.ToFloat64(m.messages) == 1 && testutil.ToFloat64(m.deliveries) == 2
	})
	a.sendRaw(websocket.TextMessage, []byte("nonsense"))
	a.expectError(codeBadJSON)
	if got := testutil.ToFloat64(m.rejected.WithLabelValues(codeBadJSON)); got != 1 {
		t.Fatalf("bad_json rejections %v", got)
	}
	for i := 0; i < 6; i++ {
		a.send(map[string]any{"type": "say", "room": "lobby", "text": "flood"})
	}
	a.expectClose(websocket.ClosePolicyViolation)
	if testutil.ToFloat64(m.rateLimited) < 3 || testutil.ToFloat64(m.abuseCloses) != 1 || testutil.ToFloat64(m.closes.WithLabelValues("1008")) != 1 {
		t.Fatalf("rate-limit counters: drops %v closes %v", testutil.ToFloat64(m.rateLimited), testutil.ToFloat64(m.abuseCloses))
	}
	if _, resp, _ := ts.tryDial(nil, nil); resp == nil || resp.StatusCode != 401 {
		t.Fatal("expected 401")
	}
	if got := testutil.ToFloat64(m.refused.WithLabelValues("session")); got != 1 {
		t.Fatalf("refused{session} %v", got)
	}
	if got := testutil.ToFloat64(m.auth.WithLabelValues("success", "dev")); got != 2 {
		t.Fatalf("auth successes %v", got)
	}
	waitFor(t, "store commits", func() bool { return testutil.ToFloat64(m.storeCommits) > 0 })

	srv := httptest.NewServer(m.handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{"chat_connections ", "chat_rate_limited_total", "chat_handshake_seconds_bucket", "chat_slow_consumer_evictions_total", `chat_rejected_total{reason="bad_json"}`, "go_goroutines"} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for _, leak := range []string{"alice-secret-name", "top secret text", "127.0.0.1", "dev:"} {
		if strings.Contains(text, leak) {
			t.Errorf("/metrics contains %q", leak)
		}
	}
	resp, err = http.Get(srv.URL + "/debug/pprof/")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("pprof index: %v %v", err, resp)
	}
	resp.Body.Close()
}

// TestMetricsNotOnMainListener: metrics and profiles are not served to the internet.
func TestMetricsNotOnMainListener(t *testing.T) {
	ts := startServer(t, nil)
	for _, p := range []string{"/metrics", "/debug/pprof/"} {
		resp, err := http.Get(ts.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Fatalf("%s on the main listener: %d", p, resp.StatusCode)
		}
	}
}

// TestChatloadSmoke runs the load generator against this server for a few seconds and
// checks that everything sent is delivered exactly once. No timing is asserted.
func TestChatloadSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the load generator")
	}
	ts := startServer(t, nil)
	bin := filepath.Join(t.TempDir(), "chatload")
	build := exec.Command("go", "build", "-o", bin, "./cmd/chatload")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building chatload: %v\n%s", err, out)
	}
	run := exec.Command(bin, "-target", ts.URL, "-proto", "modified", "-clients", "12", "-senders", "3",
		"-rate", "2", "-size", "64", "-duration", "2s", "-settle", "20s", "-json")
	run.Stderr = os.Stderr
	timer := time.AfterFunc(90*time.Second, func() { run.Process.Kill() })
	defer timer.Stop()
	out, err := run.Output()
	if err != nil {
		t.Fatalf("chatload: %v\n%s", err, out)
	}
	var rep struct {
		Connected  int     `json:"connected"`
		Sent       int64   `json:"sent"`
		Delivered  int64   `json:"delivered"`
		Expected   int64   `json:"expected"`
		Ratio      float64 `json:"delivery_ratio"`
		Duplicates int64   `json:"duplicates"`
	}
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("report: %v\n%s", err, out)
	}
	if rep.Connected != 12 || rep.Sent == 0 || rep.Delivered != rep.Expected || rep.Duplicates != 0 {
		t.Fatalf("smoke run: %s", out)
	}
}

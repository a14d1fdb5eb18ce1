package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testServer is a real App behind an httptest server on loopback.
type testServer struct {
	URL      string
	App      *App
	srv      *httptest.Server
	stopOnce sync.Once
}

// stop shuts a test server down, once: before the test ends (restart tests), and
// again harmlessly when it ends.
func (ts *testServer) stop() {
	ts.stopOnce.Do(func() {
		ts.App.shutdown(2 * time.Second)
		ts.srv.Close()
	})
}

// testConfig is the default configuration with a private data directory and no
// metrics listener.
func testConfig(t *testing.T) *Config {
	cfg := defaultConfig()
	cfg.DataDir = t.TempDir()
	cfg.MetricsAddr = ""
	cfg.Store = "memory"
	return cfg
}

// startServer starts a server, after letting mutate adjust its configuration, and
// stops it when the test ends.
func startServer(t *testing.T, mutate func(*Config)) *testServer {
	t.Helper()
	return startServerAt(t, time.Now, mutate)
}

// startServerAt is startServer with the App's clock injected.
func startServerAt(t *testing.T, now func() time.Time, mutate func(*Config)) *testServer {
	t.Helper()
	return serveTestApp(t, testApp(t, testConfig(t), mutate, func(cfg *Config, log *slog.Logger) (*App, error) {
		return newAppWithClock(cfg, log, now)
	}))
}

// testApp builds the App of a test: cfg after mutate, validated, logging to testLog;
// build picks the clock and the store.
func testApp(t *testing.T, cfg *Config, mutate func(*Config), build func(*Config, *slog.Logger) (*App, error)) *App {
	t.Helper()
	if mutate != nil {
		mutate(cfg)
	}
	if err := cfg.validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	app, err := build(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	return app
}

// testLog is a test server's log: discarded, or in verbose runs the test's own log.
func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// serveTestApp serves app on a loopback httptest server until the test ends (or
// stop, for restart tests).
func serveTestApp(t *testing.T, app *App) *testServer {
	srv := httptest.NewServer(app.routes())
	ts := &testServer{URL: srv.URL, App: app, srv: srv}
	t.Cleanup(ts.stop)
	return ts
}

// testWriter sends server logs to the test log in verbose runs.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// noRedirect is an HTTP client that shows redirects instead of following them.
var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

// devLogin signs in through the development login and returns the session cookie.
func devLogin(t *testing.T, baseURL, name string) *http.Cookie {
	t.Helper()
	resp, err := noRedirect.PostForm(baseURL+"/login/dev", url.Values{"name": {name}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		t.Fatalf("dev login: status %d, location %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	for _, c := range resp.Cookies() {
		if strings.HasSuffix(c.Name, sessionCookie) {
			return c
		}
	}
	t.Fatal("dev login set no session cookie")
	return nil
}

// wsURL turns the server's http:// URL into its ws:// endpoint.
func (ts *testServer) wsURL() string {
	return "ws" + strings.TrimPrefix(ts.URL, "http") + "/ws"
}

// wsClient is a test WebSocket client that understands coalesced frames.
type wsClient struct {
	t       *testing.T
	conn    *websocket.Conn
	pending []map[string]any
	// pendingLen holds the length of each pending event's line; lastLen is that of
	// the event next returned last, and read counts every byte read (tests of byte
	// bounds look at them).
	pendingLen []int
	lastLen    int
	read       int
	// hello is the welcome event the server greeted the connection with.
	hello map[string]any
}

// tryDial opens a WebSocket with the given cookie (nil for none) and extra headers;
// it returns the HTTP response for refused handshakes.
func (ts *testServer) tryDial(cookie *http.Cookie, hdr http.Header) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	h.Set("Origin", ts.URL)
	for k, v := range hdr {
		h[k] = v
	}
	if cookie != nil {
		h.Add("Cookie", cookie.Name+"="+cookie.Value)
	}
	d := websocket.Dialer{HandshakeTimeout: 5 * time.Second}
	return d.Dial(ts.wsURL(), h)
}

// dial opens a WebSocket for a user and reads the welcome and the lobby join.
func (ts *testServer) dial(t *testing.T, cookie *http.Cookie) *wsClient {
	t.Helper()
	conn, resp, err := ts.tryDial(cookie, nil)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (status %d)", err, status)
	}
	c := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	c.hello = c.expect("welcome")
	if j := c.expect("joined"); j["room"] != lobby {
		t.Fatalf("first join was %v, want lobby", j["room"])
	}
	return c
}

// login and dial in one step.
func (ts *testServer) user(t *testing.T, name string) *wsClient {
	t.Helper()
	return ts.dial(t, devLogin(t, ts.URL, name))
}

// send writes one JSON object as a text frame.
func (c *wsClient) send(v any) {
	c.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		c.t.Fatal(err)
	}
	c.sendRaw(websocket.TextMessage, b)
}

// sendRaw writes a frame as given.
func (c *wsClient) sendRaw(mt int, b []byte) {
	c.t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if err := c.conn.WriteMessage(mt, b); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// next returns the next event, waiting at most d.
func (c *wsClient) next(d time.Duration) (map[string]any, error) {
	for len(c.pending) == 0 {
		c.conn.SetReadDeadline(time.Now().Add(d))
		_, data, err := c.conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		c.read += len(data)
		for _, line := range strings.Split(string(data), "\n") {
			var ev map[string]any
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				return nil, errors.New("server sent a line that is not JSON: " + line)
			}
			c.pending = append(c.pending, ev)
			c.pendingLen = append(c.pendingLen, len(line))
		}
	}
	ev := c.pending[0]
	c.pending = c.pending[1:]
	c.lastLen, c.pendingLen = c.pendingLen[0], c.pendingLen[1:]
	return ev, nil
}

// sendAwait sends v with the given ref and returns the first event carrying that ref
// that answers accepts, failing the test after five seconds without one. The command
// helpers of the tests (cmd, answer, command) are this with their own answers.
func (c *wsClient) sendAwait(v map[string]any, ref string, answers func(ev map[string]any) bool) map[string]any {
	c.t.Helper()
	v["ref"] = ref
	c.send(v)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for the answer to %v: %v", v, err)
		}
		if ev["ref"] == ref && answers(ev) {
			return ev
		}
	}
}

// uniqueRef is a ref no earlier command of the test has used.
func uniqueRef() string { return "ref-" + time.Now().Format("150405.000000000") }

// expect skips events until one of type typ arrives, failing after 5 s.
func (c *wsClient) expect(typ string) map[string]any {
	c.t.Helper()
	return c.expectWithin(5*time.Second, typ)
}

// expectWithin skips events until one of the given types arrives, failing after d.
// Waits that follow heavy work (hundreds of stored messages on a loaded machine) give
// a longer d than expect's; they still end as soon as the event comes.
func (c *wsClient) expectWithin(d time.Duration, types ...string) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for %q: %v", types, err)
		}
		if typ, _ := ev["type"].(string); slices.Contains(types, typ) {
			return ev
		}
	}
}

// expectError waits for an error event and checks its code.
func (c *wsClient) expectError(code string) map[string]any {
	c.t.Helper()
	ev := c.expect("error")
	if ev["code"] != code {
		c.t.Fatalf("error code %v (%v), want %s", ev["code"], ev["message"], code)
	}
	return ev
}

// expectClose reads until the server closes and checks the close code.
func (c *wsClient) expectClose(code int) {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, err := c.next(time.Until(deadline))
		if err == nil {
			continue
		}
		var ce *websocket.CloseError
		if !errors.As(err, &ce) {
			c.t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != code {
			c.t.Fatalf("close code %d (%q), want %d", ce.Code, ce.Text, code)
		}
		return
	}
}

// barrier returns every event that arrives before the answer to a `rooms` command.
// The hub handles commands in order, so anything it queued for this connection before
// the barrier shows up here: a test can assert that something was NOT delivered
// without sleeping.
func (c *wsClient) barrier() []map[string]any {
	c.t.Helper()
	c.send(map[string]any{"type": "rooms"})
	var seen []map[string]any
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("waiting for the barrier: %v", err)
		}
		if ev["type"] == "rooms" {
			return seen
		}
		seen = append(seen, ev)
	}
}

// noneOfType fails if any event in evs has type typ.
func noneOfType(t *testing.T, evs []map[string]any, typ string) {
	t.Helper()
	for _, ev := range evs {
		if ev["type"] == typ {
			t.Fatalf("unexpected %s event: %v", typ, ev)
		}
	}
}

// waitFor polls cond until it holds or the deadline passes. It is for state that no
// channel announces (a counter another goroutine bumps, the hub's view of a socket
// closed elsewhere); anything that can be waited on is waited on instead.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	poll := time.NewTicker(5 * time.Millisecond)
	defer poll.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		case <-poll.C:
		}
	}
}

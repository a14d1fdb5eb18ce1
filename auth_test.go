package main

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDevLoginFlow: GET /login shows the marked development form; POST /login/dev sets
// an HttpOnly, SameSite=Lax cookie and redirects to the page, which then loads.
func TestDevLoginFlow(t *testing.T) {
	ts := startServer(t, nil)
	resp, err := http.Get(ts.URL + "/login")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "Development login") || !strings.Contains(string(body), `action="/login/dev"`) {
		t.Fatalf("login page: %d %s", resp.StatusCode, body)
	}
	resp, err = noRedirect.PostForm(ts.URL+"/login/dev", url.Values{"name": {"Zoë"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" || len(cookies) != 1 {
		t.Fatalf("dev login: %d %q %v", resp.StatusCode, resp.Header.Get("Location"), cookies)
	}
	c := cookies[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteLaxMode || c.Path != "/" || c.Secure {
		t.Fatalf("cookie attributes: %+v", c)
	}
	req, _ := http.NewRequest("GET", ts.URL+"/", nil)
	req.AddCookie(c)
	resp, err = noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("page with session: %d", resp.StatusCode)
	}
}

// TestDevLoginRefusesBadNames: empty, overlong and control-character names get 400 and
// no cookie.
func TestDevLoginRefusesBadNames(t *testing.T) {
	ts := startServer(t, nil)
	for _, name := range []string{"", "   ", strings.Repeat("n", 33), "evil\u202ename", "a\x00b"} {
		resp, err := noRedirect.PostForm(ts.URL+"/login/dev", url.Values{"name": {name}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0 {
			t.Fatalf("name %q: %d, cookies %v", name, resp.StatusCode, resp.Cookies())
		}
	}
}

// TestDevLoginCrossSiteRefused: a login form posted from another site (login CSRF) is
// refused.
func TestDevLoginCrossSiteRefused(t *testing.T) {
	ts := startServer(t, nil)
	req, _ := http.NewRequest("POST", ts.URL+"/login/dev", strings.NewReader("name=victim"))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || len(resp.Cookies()) != 0 {
		t.Fatalf("cross-site login: %d %v", resp.StatusCode, resp.Cookies())
	}
}

// TestDevLoginRefusesPublicAddress: with no OpenID Connect client, the server will not
// listen beyond loopback unless forced.
func TestDevLoginRefusesPublicAddress(t *testing.T) {
	cfg := testConfig(t)
	cfg.Addr = "0.0.0.0:0"
	err := run(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "-dev-login-anywhere") {
		t.Fatalf("run on 0.0.0.0 with dev login: %v", err)
	}
	for addr, want := range map[string]bool{"127.0.0.1:8080": true, "[::1]:80": true, "localhost:1": true, ":8080": false, "0.0.0.0:1": false, "192.0.2.1:80": false} {
		if isLoopbackAddr(addr) != want {
			t.Errorf("isLoopbackAddr(%q) != %v", addr, want)
		}
	}
}

// TestCookieTamperedOnPage: a tampered cookie gets the login redirect, not the page.
func TestCookieTamperedOnPage(t *testing.T) {
	ts := startServer(t, nil)
	c := devLogin(t, ts.URL, "alice")
	c.Value = strings.ToUpper(c.Value[:10]) + c.Value[10:]
	if resp := probe(t, ts, "GET", "/", nil, c); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("tampered cookie: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestCookieExpired: a cookie past its absolute lifetime is refused at / (a redirect to
// the login) and at /ws (401); the same cookie just inside it opens both.
func TestCookieExpired(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, nil)
	c := devLogin(t, ts.URL, "alice")
	home := func() *http.Response {
		t.Helper()
		return probe(t, ts, "GET", "/", nil, c)
	}
	clock.Advance(ts.App.settings().SessionTTL - time.Minute)
	if resp := home(); resp.StatusCode != http.StatusOK {
		t.Fatalf("live cookie on /: %d", resp.StatusCode)
	}
	ts.dial(t, c).conn.Close()
	clock.Advance(2 * time.Minute)
	if resp := home(); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("expired cookie on /: %d to %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	if _, resp, err := ts.tryDial(c, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("expired cookie on /ws: %v %v", err, resp)
	}
}

// TestDevLogoutRevokes: logout closes the session's open WebSockets with 1008, and the
// old cookie, replayed, no longer opens the page or the WebSocket.
func TestDevLogoutRevokes(t *testing.T) {
	ts := startServer(t, nil)
	c := devLogin(t, ts.URL, "alice")
	ws := ts.dial(t, c)
	other := ts.user(t, "bob")

	resp := postLogout(t, ts, c)
	cleared := false
	for _, rc := range resp.Cookies() {
		cleared = cleared || (rc.Name == c.Name && rc.MaxAge < 0)
	}
	if !cleared {
		t.Fatal("logout did not clear the cookie")
	}
	ws.expectClose(websocket.ClosePolicyViolation)
	if _, resp, err := ts.tryDial(c, nil); err == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("replayed cookie on /ws: %v %v", err, resp)
	}
	if resp := probe(t, ts, "GET", "/", nil, c); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("replayed cookie on /: %d %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	// Other sessions are untouched.
	other.send(map[string]any{"type": "say", "room": "lobby", "text": "still here", "ref": "1"})
	other.expect("ack")
}

// TestDevLogoutCrossSiteRefused: another site cannot log a user out.
func TestDevLogoutCrossSiteRefused(t *testing.T) {
	ts := startServer(t, nil)
	c := devLogin(t, ts.URL, "alice")
	req, _ := http.NewRequest("POST", ts.URL+"/logout", nil)
	req.Header.Set("Origin", "https://evil.example")
	req.AddCookie(c)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site logout: %d", resp.StatusCode)
	}
	ts.dial(t, c) // the session still works
}

// TestSessionExpiryClosesSocket: a WebSocket does not outlive its session. Its timer
// is set for the session's end when that comes before the next ping; a tick before the
// end pings and keeps the connection, a tick at the end closes it with 1008. The clock
// is injected and the tick fired by hand, so no test waits for the session to run out.
func TestSessionExpiryClosesSocket(t *testing.T) {
	clock := newFakeClock()
	const ttl = 30 * time.Second // before the first ping (pingPeriod)
	ts := startServerAt(t, clock.Now, func(c *Config) { c.SessionTTL = ttl })
	ws := ts.user(t, "alice")
	h := ts.App.hub
	var c *Client
	h.do(func() {
		for o := range h.clients {
			c = o
		}
	})
	left := c.user.Expires.Sub(clock.Now())
	if d := c.nextTimer(); d != left || d > ttl || d >= pingPeriod {
		t.Fatalf("the connection's timer is due in %v, want the session's end in %v", d, left)
	}
	clock.Advance(left - time.Second)
	c.tick()
	ws.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "still here"})
	clock.Advance(time.Second)
	c.tick()
	var ce *websocket.CloseError
	for {
		_, err := ws.next(5 * time.Second)
		if err != nil {
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "session expired" {
				t.Fatalf("want 1008 session expired, got %v", err)
			}
			break
		}
	}
}

// TestDevLoginOriginNull: under Referrer-Policy: no-referrer, Chromium sends
// "Origin: null" on same-origin form posts; Sec-Fetch-Site tells them apart from a
// sandboxed cross-site frame, which is refused.
func TestDevLoginOriginNull(t *testing.T) {
	ts := startServer(t, nil)
	post := func(site string) *http.Response {
		req, _ := http.NewRequest("POST", ts.URL+"/login/dev", strings.NewReader("name=nully"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", "null")
		req.Header.Set("Sec-Fetch-Site", site)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}
	if r := post("same-origin"); r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Fatalf("same-origin post with Origin null: %d", r.StatusCode)
	}
	if r := post("cross-site"); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
		t.Fatalf("cross-site post with Origin null: %d", r.StatusCode)
	}
}

// postLogout logs the cookie's session out (same-origin), checks the redirect to
// /login and returns the answer.
func postLogout(t *testing.T, ts *testServer, c *http.Cookie) *http.Response {
	t.Helper()
	resp := probe(t, ts, http.MethodPost, "/logout", map[string]string{"Origin": ts.URL}, c)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	return resp
}

// storeCount counts the keys of a bucket of the server's store.
func storeCount(t *testing.T, ts *testServer, bucket string) int {
	t.Helper()
	n, err := ts.App.store.Count(bucket)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestLoginRateLimited: the login routes share one per-IP bucket; beyond it every one
// of them answers 429 with Retry-After and sets no cookie, other addresses are not
// affected, the WebSocket handshake has its own bucket, and the bucket refills.
func TestLoginRateLimited(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) {
		c.LoginRate, c.LoginBurst = 1, 3
		c.TrustedProxies = mustPrefixes(t, "127.0.0.1")
	})
	cookie := devLogin(t, ts.URL, "alice") // from 127.0.0.1 itself: its own bucket
	from := func(ip, method, path string) *http.Response {
		t.Helper()
		return probe(t, ts, method, path, map[string]string{"X-Forwarded-For": ip}, nil)
	}
	const attacker, bystander = "203.0.113.1", "203.0.113.2"
	for i, rt := range []struct {
		method, path string
		status       int
	}{{"GET", "/login", 200}, {"POST", "/login/dev", 303}, {"POST", "/logout", 303}} {
		if r := from(attacker, rt.method, rt.path); r.StatusCode != rt.status {
			t.Fatalf("request %d within the burst, %s %s: %d, want %d", i, rt.method, rt.path, r.StatusCode, rt.status)
		}
	}
	for _, rt := range []struct{ method, path string }{{"GET", "/login"}, {"POST", "/login/dev"}, {"POST", "/logout"}} {
		r := from(attacker, rt.method, rt.path)
		if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "1" || len(r.Cookies()) != 0 {
			t.Errorf("%s %s beyond the burst: %d, Retry-After %q, cookies %v; want 429, 1, none",
				rt.method, rt.path, r.StatusCode, r.Header.Get("Retry-After"), r.Cookies())
		}
	}
	if got := testutil.ToFloat64(ts.App.metrics.httpRefused.WithLabelValues(refuseLoginRate)); got != 3 {
		t.Errorf("chat_http_refused_total{reason=login_rate} = %v, want 3", got)
	}
	if r := from(bystander, "POST", "/login/dev"); r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
		t.Errorf("another address: %d, want 303 with a cookie", r.StatusCode)
	}
	conn, resp, err := ts.tryDial(cookie, http.Header{"X-Forwarded-For": {attacker}})
	if err != nil {
		t.Fatalf("WebSocket from the throttled address: %v %v", err, resp)
	}
	conn.Close()
	clock.Advance(time.Second)
	if r := from(attacker, "GET", "/login"); r.StatusCode != http.StatusOK {
		t.Errorf("after the bucket refilled: %d, want 200", r.StatusCode)
	}
}

// TestOIDCCallbackRateLimited: /auth/callback draws from the same bucket as /login.
func TestOIDCCallbackRateLimited(t *testing.T) {
	ts := startOIDCServer(t, newTestProvider(t), func(c *Config) { c.LoginRate, c.LoginBurst = 0.001, 2 })
	for i, want := range []int{http.StatusBadRequest, http.StatusBadRequest, http.StatusTooManyRequests} {
		resp, err := noRedirect.Get(ts.URL + callbackPath + "?state=x&code=y")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("callback %d: %d, want %d", i, resp.StatusCode, want)
		}
		if want == http.StatusTooManyRequests && resp.Header.Get("Retry-After") == "" {
			t.Fatal("429 without Retry-After")
		}
	}
}

// TestRevocationsInStore: a logout is one key in the store, written before the
// logout answers; expired revocations and cutoffs are pruned from memory and store,
// and nothing is pruned early.
func TestRevocationsInStore(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.Admins = []string{"dev:root"} })
	root := ts.user(t, "root")
	alice := devLogin(t, ts.URL, "alice")
	postLogout(t, ts, alice)
	if n := storeCount(t, ts, bucketRevoked); n != 1 {
		t.Fatalf("revocations stored after logout: %d, want 1", n)
	}
	root.mustAck(map[string]any{"type": "global_ban", "user": "dev:bob"})
	if n := storeCount(t, ts, bucketSessionCutoffs); n != 1 {
		t.Fatalf("cutoffs stored after a ban: %d, want 1", n)
	}
	clock.Advance(11 * time.Hour)
	ts.App.sessions.sweep(clock.Now())
	assertSessionRefused(t, ts, alice)
	if storeCount(t, ts, bucketRevoked) != 1 || storeCount(t, ts, bucketSessionCutoffs) != 1 {
		t.Fatal("a sweep before the session lifetime pruned something")
	}
	clock.Advance(time.Hour + 2*time.Second)
	ts.App.sessions.sweep(clock.Now())
	waitFor(t, "the pruned keys to leave the store", func() bool {
		return storeCount(t, ts, bucketRevoked) == 0 && storeCount(t, ts, bucketSessionCutoffs) == 0
	})
	ts.App.sessions.mu.Lock()
	left := len(ts.App.sessions.revoked) + len(ts.App.sessions.cutoffs)
	ts.App.sessions.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d entries left in memory after the sweep", left)
	}
}

// TestRevokedFileMigratedOnce: a revoked.json left by an older version is moved into
// the store at start-up (expired entries dropped) and removed; its revocations hold
// then and after the next restart. A corrupt file stops start-up; under the memory
// store the file is left where it is, being the only durable copy.
func TestRevokedFileMigratedOnce(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, revokedFileName)
	onDir := func(c *Config) { c.DataDir, c.Store = dir, "bolt" }
	ts := startServer(t, onDir)
	cookie, kept := devLogin(t, ts.URL, "alice"), devLogin(t, ts.URL, "bob")
	p, err := ts.App.sessions.open(cookie.Value)
	if err != nil {
		t.Fatal(err)
	}
	ts.stop()
	b, _ := json.Marshal(map[string]int64{p.SID: p.Expires, "expired": time.Now().Add(-time.Minute).Unix()})
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	ts = startServer(t, onDir)
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s still there after the migration: %v", revokedFileName, err)
	}
	if n := storeCount(t, ts, bucketRevoked); n != 1 {
		t.Fatalf("revocations migrated: %d, want 1 (the expired one dropped)", n)
	}
	assertSessionRefused(t, ts, cookie)
	ts.dial(t, kept)
	ts.stop()

	ts = startServer(t, onDir) // no file any more: the store alone remembers
	assertSessionRefused(t, ts, cookie)
	ts.dial(t, kept)
	ts.stop()

	if err := os.WriteFile(path, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	onDir(cfg)
	if _, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "revoked sessions") {
		t.Fatalf("newApp with a corrupt revocation file: %v, want an error", err)
	}

	os.WriteFile(path, b, 0o600)
	ts = startServer(t, func(c *Config) { c.DataDir, c.Store = dir, "memory" })
	assertSessionRefused(t, ts, cookie)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the memory store removed %s: %v", revokedFileName, err)
	}
}

// TestRevocationCap: with the list full, a logout does not grow it; it ends every
// session of that user instead (fails closed), and a fresh login works.
func TestRevocationCap(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, nil)
	phone, laptop := devLogin(t, ts.URL, "alice"), devLogin(t, ts.URL, "alice")
	s := ts.App.sessions
	s.mu.Lock()
	for i := len(s.revoked); i < maxRevoked; i++ {
		s.revoked["filler-"+strconv.Itoa(i)] = clock.Now().Add(time.Hour).Unix()
	}
	s.mu.Unlock()
	postLogout(t, ts, phone)
	assertSessionRefused(t, ts, phone)
	assertSessionRefused(t, ts, laptop)
	s.mu.Lock()
	n := len(s.revoked)
	s.mu.Unlock()
	if n != maxRevoked {
		t.Fatalf("revocation list at %d, want it held at %d", n, maxRevoked)
	}
	if c := storeCount(t, ts, bucketSessionCutoffs); c != 1 {
		t.Fatalf("cutoffs stored: %d, want 1", c)
	}
	clock.Advance(time.Millisecond)
	ts.dial(t, devLogin(t, ts.URL, "alice"))
}

// TestGlobalBanEndsSessionsForGood: a cookie issued before a global ban stays dead
// after global_unban, also across a restart; the unbanned user logs in afresh.
func TestGlobalBanEndsSessionsForGood(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	mutate := func(c *Config) {
		c.Admins = []string{"dev:root"}
		c.DataDir, c.Store = dir, "bolt"
		generousLimits(c)
	}
	ts := startServerAt(t, clock.Now, mutate)
	root := ts.user(t, "root")
	old := devLogin(t, ts.URL, "bob")
	root.mustAck(map[string]any{"type": "global_ban", "user": "dev:bob"})
	clock.Advance(time.Second)
	root.mustAck(map[string]any{"type": "global_unban", "user": "dev:bob"})
	assertSessionRefused(t, ts, old)
	fresh := devLogin(t, ts.URL, "bob")
	ts.dial(t, fresh)
	ts.stop()

	ts = startServerAt(t, clock.Now, mutate)
	assertSessionRefused(t, ts, old)
	ts.dial(t, fresh)
}

// TestLogoutAfterShutdownAnswers: a logout that arrives after the hub's loop has
// stopped (a request racing the server's shutdown) still answers instead of waiting
// for ever on a loop that no longer reads, which would also hang the server's Close.
func TestLogoutAfterShutdownAnswers(t *testing.T) {
	ts := startServer(t, nil)
	c := devLogin(t, ts.URL, "alice")
	ts.App.shutdown(time.Second)
	postLogout(t, ts, c)
}

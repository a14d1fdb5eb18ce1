package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
	req, _ := http.NewRequest("GET", ts.URL+"/", nil)
	req.AddCookie(c)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("tampered cookie: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
}

// TestCookieExpired: a cookie past its absolute lifetime is refused at / and /ws.
func TestCookieExpired(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, nil)
	c := devLogin(t, ts.URL, "alice")
	clock.Advance(13 * time.Hour)
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

	req, _ := http.NewRequest("POST", ts.URL+"/logout", nil)
	req.Header.Set("Origin", ts.URL)
	req.AddCookie(c)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %d", resp.StatusCode)
	}
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
	req, _ = http.NewRequest("GET", ts.URL+"/", nil)
	req.AddCookie(c)
	if resp, err = noRedirect.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("replayed cookie on /: %v %v", err, resp)
	}
	resp.Body.Close()
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

// TestSessionExpiryClosesSocket: a WebSocket does not outlive its session.
func TestSessionExpiryClosesSocket(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.SessionTTL = 2 * time.Second })
	ws := ts.user(t, "alice")
	ws.expectClose(websocket.ClosePolicyViolation)
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

package main

import (
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestPageSecurityHeaders: every response carries the CSP and friends; the CSP has no
// unsafe sources and names the WebSocket origin.
func TestPageSecurityHeaders(t *testing.T) {
	ts := startServer(t, nil)
	host := strings.TrimPrefix(ts.URL, "http://")
	for _, path := range []string{"/login", "/", "/static/app.js", "/nope", "/healthz"} {
		resp, err := noRedirect.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		csp := resp.Header.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self' ws://" + host, "require-trusted-types-for 'script'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		for _, bad := range []string{"unsafe-inline", "unsafe-eval", "*"} {
			if strings.Contains(csp, bad) {
				t.Errorf("%s: CSP %q contains %q", path, csp, bad)
			}
		}
		if resp.Header.Get("X-Content-Type-Options") != "nosniff" || resp.Header.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: missing nosniff or referrer policy: %v", path, resp.Header)
		}
		if resp.Header.Get("Strict-Transport-Security") != "" {
			t.Errorf("%s: HSTS over plain HTTP", path)
		}
	}
}

// TestPageReferrerAgrees: the pages' own <meta name="referrer"> says what the
// Referrer-Policy header says (a meta tag overrides the header for the document, so a
// weaker one would quietly undo it).
func TestPageReferrerAgrees(t *testing.T) {
	ts := startServer(t, nil)
	cookie := devLogin(t, ts.URL, "ref")
	meta := regexp.MustCompile(`<meta name="referrer" content="([^"]*)">`)
	for _, path := range []string{"/", "/login"} {
		req, _ := http.NewRequest(http.MethodGet, ts.URL+path, nil)
		if path == "/" {
			req.AddCookie(cookie)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s: status %d", path, resp.StatusCode)
		}
		m := meta.FindSubmatch(body)
		if m == nil || string(m[1]) != resp.Header.Get("Referrer-Policy") {
			t.Errorf("%s: meta referrer %q, header %q", path, m, resp.Header.Get("Referrer-Policy"))
		}
	}
}

// TestPageRoutes: unknown paths 404, wrong methods 405, HEAD works, no directory
// listing of the embedded assets.
func TestPageRoutes(t *testing.T) {
	ts := startServer(t, nil)
	cases := []struct {
		method, path string
		status       int
	}{
		{"GET", "/nope", 404},
		{"GET", "/home.html", 404},
		{"GET", "/static/", 404},
		{"GET", "/static/app.js", 200},
		{"HEAD", "/login", 200},
		{"POST", "/", 405},
		{"PUT", "/login", 405},
		{"GET", "/logout", 405},
		{"GET", "/healthz", 200},
		{"GET", "/readyz", 200},
		{"DELETE", "/ws", 405},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, ts.URL+tc.path, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.status {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, resp.StatusCode, tc.status)
		}
	}
	// A traversal is cleaned by the mux (redirect) and ends at a 404, never a file.
	resp, err := http.Get(ts.URL + "/static/../main.go")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("traversal: %d", resp.StatusCode)
	}
}

// TestPageNoInlineScript: the page itself would run under the CSP: no inline script,
// no inline handlers, no inline styles.
func TestPageNoInlineScript(t *testing.T) {
	for _, name := range []string{"home.html", "login.html"} {
		b, err := assets.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		page := strings.ToLower(string(b))
		for _, bad := range []string{"<script>", " onclick=", " onload=", " onerror=", " style=", "javascript:", "<style"} {
			if strings.Contains(page, bad) {
				t.Errorf("%s contains %q", name, bad)
			}
		}
	}
	// Every module of the page, not only its entry point.
	modules, _ := fs.Glob(assets, "static/*.js")
	if len(modules) < 2 {
		t.Fatalf("the page's modules are missing: %v", modules)
	}
	for _, name := range modules {
		js, _ := assets.ReadFile(name)
		for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "import("} {
			if strings.Contains(string(js), bad) {
				t.Errorf("%s uses %s", name, bad)
			}
		}
	}
}

// TestPageTLS: under TLS the cookie is __Host- prefixed and Secure, HSTS is sent, and
// the CSP allows only wss://.
func TestPageTLS(t *testing.T) {
	cfg := testConfig(t)
	cfg.TLSCert, cfg.TLSKey = "cert.pem", "key.pem" // files unused: httptest serves TLS
	app, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewTLSServer(app.routes())
	defer srv.Close()
	defer app.shutdown(0)
	client := srv.Client()
	client.CheckRedirect = noRedirect.CheckRedirect
	resp, err := client.PostForm(srv.URL+"/login/dev", url.Values{"name": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if hsts := resp.Header.Get("Strict-Transport-Security"); !strings.Contains(hsts, "max-age=") {
		t.Fatalf("no HSTS under TLS: %q", hsts)
	}
	cs := resp.Cookies()
	if len(cs) != 1 || cs[0].Name != "__Host-chat_session" || !cs[0].Secure || cs[0].Path != "/" {
		t.Fatalf("TLS cookie: %+v", cs)
	}
	csp := resp.Header.Get("Content-Security-Policy")
	if strings.Contains(csp, "ws://") || !strings.Contains(csp, "wss://") {
		t.Fatalf("TLS CSP: %q", csp)
	}
}

// TestPageHostHeaderNotEchoed: a hostile Host header does not end up in the CSP.
func TestPageHostHeaderNotEchoed(t *testing.T) {
	ts := startServer(t, nil)
	req, _ := http.NewRequest("GET", ts.URL+"/login", nil)
	req.Host = "evil.example; script-src *"
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); strings.Contains(csp, "evil") || strings.Contains(csp, "*") {
		t.Fatalf("Host echoed into CSP: %q", csp)
	}
}

// probe sends one request to ts (POSTs carry a small form), with the headers of hdr
// ("Host" sets the request's Host) and cookie (may be nil), and returns the answer
// with its body read.
func probe(t *testing.T, ts *testServer, method, path string, hdr map[string]string, cookie *http.Cookie) *http.Response {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("name=mallory")
	}
	req, _ := http.NewRequest(method, ts.URL+path, body)
	if body != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for k, v := range hdr {
		if k == "Host" {
			req.Host = v
		} else {
			req.Header.Set(k, v)
		}
	}
	if cookie != nil {
		req.AddCookie(cookie)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// hostProbe is probe with Host, and Origin when not empty.
func hostProbe(t *testing.T, ts *testServer, method, path, host, origin string, cookie *http.Cookie) *http.Response {
	t.Helper()
	hdr := map[string]string{"Host": host}
	if origin != "" {
		hdr["Origin"] = origin
	}
	return probe(t, ts, method, path, hdr, cookie)
}

// wsWithHost tries a WebSocket handshake with the given Host and Origin.
func wsWithHost(ts *testServer, cookie *http.Cookie, host, origin string) (*websocket.Conn, *http.Response, error) {
	h := http.Header{}
	h.Set("Host", host) // gorilla's dialer sends this as the request's Host
	h.Set("Origin", origin)
	return ts.tryDial(cookie, h)
}

// guardedRoutes are the routes the Host check covers, with the method each is called by.
var guardedRoutes = []struct{ method, path string }{
	{"GET", "/"}, {"GET", "/login"}, {"POST", "/login/dev"}, {"POST", "/logout"},
	{"GET", "/ws"}, {"GET", "/auth/callback"}, {"GET", "/static/app.js"}, {"GET", "/nope"},
}

// TestHostGuardNoPublicURL: without -public-url, every Host that is not loopback or
// the listen address gets 421 on every route but the health probes, before any
// handler runs; loopback names and addresses are served.
func TestHostGuardNoPublicURL(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Addr = "192.0.2.7:8080" })
	_, port, _ := strings.Cut(strings.TrimPrefix(ts.URL, "http://"), ":")
	cookie := devLogin(t, ts.URL, "alice")
	refused := []string{
		"evil.test:" + port, "evil.test", "127.0.0.1.evil.test:" + port, "localhost.:" + port,
		"localhost.evil.test", "192.0.2.8:" + port, "0.0.0.0:" + port, "[::]:" + port, "10.0.0.1",
	}
	for _, host := range refused {
		for _, rt := range guardedRoutes {
			if resp := hostProbe(t, ts, rt.method, rt.path, host, "", cookie); resp.StatusCode != http.StatusMisdirectedRequest || len(resp.Cookies()) != 0 {
				t.Errorf("Host %q %s %s: %d (cookies %v), want 421 and no cookie", host, rt.method, rt.path, resp.StatusCode, resp.Cookies())
			}
		}
		for _, probe := range []string{"/healthz", "/readyz"} {
			if resp := hostProbe(t, ts, "GET", probe, host, "", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("Host %q %s: %d, want 200 (probes are open to any Host)", host, probe, resp.StatusCode)
			}
		}
	}
	if got := testutil.ToFloat64(ts.App.metrics.httpRefused.WithLabelValues(refuseHost)); got != float64(len(refused)*len(guardedRoutes)) {
		t.Errorf("chat_http_refused_total{reason=host} = %v, want %d", got, len(refused)*len(guardedRoutes))
	}
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "LOCALHOST:" + port, "[::1]:" + port, "127.0.0.2:" + port, "192.0.2.7:" + port, "127.0.0.1"} {
		if resp := hostProbe(t, ts, "GET", "/", host, "", cookie); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %q GET /: %d, want 200", host, resp.StatusCode)
		}
		if resp := hostProbe(t, ts, "POST", "/login/dev", host, "", nil); resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
			t.Errorf("Host %q POST /login/dev: %d, want 303 with a cookie", host, resp.StatusCode)
		}
		conn, resp, err := wsWithHost(ts, cookie, host, "http://"+host)
		if err != nil {
			t.Errorf("Host %q /ws: %v %v", host, err, resp)
			continue
		}
		conn.Close()
	}
	// Listening on every address names none of them.
	for _, addr := range []string{"0.0.0.0:8080", "[::]:8080"} {
		all := startServer(t, func(c *Config) { c.Addr = addr })
		for _, host := range []string{"0.0.0.0:" + port, "[::]:" + port} {
			if resp := hostProbe(t, all, "GET", "/login", host, "", nil); resp.StatusCode != http.StatusMisdirectedRequest {
				t.Errorf("listening on %s, Host %q: %d, want 421", addr, host, resp.StatusCode)
			}
		}
	}
}

// TestHostGuardPublicURL: with -public-url, only its host is served; even loopback
// is misdirected, and the health probes stay open.
func TestHostGuardPublicURL(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.PublicURL = "https://chat.example.test" })
	_, port, _ := strings.Cut(strings.TrimPrefix(ts.URL, "http://"), ":")
	for _, host := range []string{"127.0.0.1:" + port, "localhost:" + port, "evil.test", "chat.example.test:8443", "chat.example.test.evil.test", "www.chat.example.test"} {
		for _, rt := range guardedRoutes {
			if resp := hostProbe(t, ts, rt.method, rt.path, host, "", nil); resp.StatusCode != http.StatusMisdirectedRequest {
				t.Errorf("Host %q %s %s: %d, want 421", host, rt.method, rt.path, resp.StatusCode)
			}
		}
		if resp := hostProbe(t, ts, "GET", "/healthz", host, "", nil); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %q /healthz: %d, want 200", host, resp.StatusCode)
		}
	}
	resp := hostProbe(t, ts, "POST", "/login/dev", "chat.example.test", "https://chat.example.test", nil)
	if resp.StatusCode != http.StatusSeeOther || len(resp.Cookies()) != 1 {
		t.Fatalf("POST /login/dev at the public host: %d, want 303 with a cookie", resp.StatusCode)
	}
	cookie := resp.Cookies()[0]
	for _, host := range []string{"chat.example.test", "chat.example.test:443", "Chat.Example.Test"} {
		if resp := hostProbe(t, ts, "GET", "/", host, "", cookie); resp.StatusCode != http.StatusOK {
			t.Errorf("Host %q GET /: %d, want 200", host, resp.StatusCode)
		}
		conn, wsResp, err := wsWithHost(ts, cookie, host, "https://chat.example.test")
		if err != nil {
			t.Fatalf("Host %q /ws: %v %v", host, err, wsResp)
		}
		conn.Close()
	}
}

// TestDNSRebinding is the whole attack: a page at http://evil.test:PORT, whose name
// the attacker has pointed at 127.0.0.1, posts the development login and opens the
// WebSocket. Host and Origin agree with each other, so only the Host check stands in
// the way: no cookie is set and no upgrade happens, with a victim's cookie or without.
func TestDNSRebinding(t *testing.T) {
	ts := startServer(t, nil)
	_, port, _ := strings.Cut(strings.TrimPrefix(ts.URL, "http://"), ":")
	host := "evil.test:" + port
	origin := "http://" + host
	resp := hostProbe(t, ts, "POST", "/login/dev", host, origin, nil)
	if resp.StatusCode != http.StatusMisdirectedRequest || len(resp.Cookies()) != 0 {
		t.Fatalf("rebound dev login: %d, cookies %v; want 421 and none", resp.StatusCode, resp.Cookies())
	}
	victim := devLogin(t, ts.URL, "victim")
	for _, cookie := range []*http.Cookie{nil, victim} {
		conn, resp, err := wsWithHost(ts, cookie, host, origin)
		if err == nil {
			conn.Close()
			t.Fatal("a rebound page opened a WebSocket")
		}
		if resp == nil || resp.StatusCode != http.StatusMisdirectedRequest {
			t.Fatalf("rebound /ws: %v %v, want 421", err, resp)
		}
	}
	if resp := hostProbe(t, ts, "GET", "/", host, "", victim); resp.StatusCode != http.StatusMisdirectedRequest {
		t.Fatalf("rebound page load: %d, want 421", resp.StatusCode)
	}
}

// TestCrossOriginPosts: the login and logout forms refuse cross-site posts with 403
// (http.CrossOriginProtection: Sec-Fetch-Site, else Origin against Host) and nothing
// happens: no cookie, the session survives. Same-origin posts and posts from non-browser
// clients (neither header) work.
func TestCrossOriginPosts(t *testing.T) {
	ts := startServer(t, nil)
	cookie := devLogin(t, ts.URL, "alice")
	post := func(path string, hdr map[string]string, c *http.Cookie) *http.Response {
		t.Helper()
		return probe(t, ts, http.MethodPost, path, hdr, c)
	}
	crossSite := []map[string]string{
		{"Origin": "https://evil.example"},
		{"Origin": "http://localhost.evil.example"},
		{"Sec-Fetch-Site": "cross-site"},
		{"Sec-Fetch-Site": "same-site", "Origin": ts.URL},
		{"Sec-Fetch-Site": "cross-site", "Origin": "null"},
	}
	for _, hdr := range crossSite {
		for _, path := range []string{"/login/dev", "/logout"} {
			if r := post(path, hdr, cookie); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
				t.Errorf("POST %s with %v: %d, cookies %v; want 403 and none", path, hdr, r.StatusCode, r.Cookies())
			}
		}
	}
	if got := testutil.ToFloat64(ts.App.metrics.httpRefused.WithLabelValues(refuseCrossOrigin)); got != float64(2*len(crossSite)) {
		t.Errorf("chat_http_refused_total{reason=cross_origin} = %v, want %d", got, 2*len(crossSite))
	}
	ts.dial(t, cookie) // none of the forced logouts took effect
	for _, hdr := range []map[string]string{{"Origin": ts.URL}, {"Sec-Fetch-Site": "same-origin"}, {"Sec-Fetch-Site": "same-origin", "Origin": "null"}, {}} {
		if r := post("/login/dev", hdr, nil); r.StatusCode != http.StatusSeeOther || len(r.Cookies()) != 1 {
			t.Errorf("same-origin POST /login/dev with %v: %d, want 303 with a cookie", hdr, r.StatusCode)
		}
	}
	if r := post("/logout", map[string]string{"Origin": ts.URL}, cookie); r.StatusCode != http.StatusSeeOther {
		t.Errorf("same-origin POST /logout: %d, want 303", r.StatusCode)
	}
	assertSessionRefused(t, ts, cookie)
}

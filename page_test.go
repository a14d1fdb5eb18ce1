package main

import (
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
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
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self' ws://" + host} {
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
	js, _ := assets.ReadFile("static/app.js")
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
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

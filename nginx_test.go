package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// nginxProxyAddr is the loopback address nginx connects to the server from. The test
// clients use other loopback addresses, so the server can tell nginx from a client
// that talks to it directly.
const nginxProxyAddr = "127.0.0.2"

// startNginx runs Debian's nginx with deploy/nginx.conf, changed only where a test
// must: loopback ports, the test certificate, the upstream's address, and the address
// it connects from. It returns nginx's https base URL.
func startNginx(t *testing.T, upstream string, pki *testPKI, httpsPort string) string {
	t.Helper()
	nginx := needProgram(t, "nginx")
	site, err := os.ReadFile("deploy/nginx.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	httpPort := freePort(t)
	conf := string(site)
	for old, repl := range map[string]string{
		"server 127.0.0.1:8080;": "server " + upstream + ";",
		"listen 443 ssl;":        "listen 127.0.0.1:" + httpsPort + " ssl;",
		"listen [::]:443 ssl;":   "",
		"listen 80;":             "listen 127.0.0.1:" + httpPort + ";",
		"listen [::]:80;":        "",
		"/etc/letsencrypt/live/chat.example.org/fullchain.pem": pki.CertFile,
		"/etc/letsencrypt/live/chat.example.org/privkey.pem":   pki.KeyFile,
	} {
		if !strings.Contains(conf, old) {
			t.Fatalf("deploy/nginx.conf no longer has %q", old)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	siteFile := filepath.Join(dir, "modified-chat.conf")
	os.WriteFile(siteFile, []byte(conf), 0o600)
	main := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log stderr warn;
events { worker_connections 128; }
http {
    access_log off;
    client_body_temp_path %[1]s/body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;
    proxy_bind %[2]s;
    include %[3]s;
}
`, dir, nginxProxyAddr, siteFile)
	mainFile := filepath.Join(dir, "nginx.conf")
	os.WriteFile(mainFile, []byte(main), 0o600)
	if out, err := runOutput(nginx, "-t", "-p", dir, "-c", mainFile); err != nil {
		t.Fatalf("nginx -t: %v\n%s", err, out)
	}
	startProgram(t, nil, nginx, "-p", dir, "-c", mainFile)
	waitFor(t, "nginx listening", func() bool {
		c, err := net.Dial("tcp", "127.0.0.1:"+httpsPort)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return "https://127.0.0.1:" + httpsPort
}

// runOutput runs a program to completion and returns its combined output.
func runOutput(name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), externalLifetime)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out), err
}

// fromAddr is a dialer whose connections leave from a given loopback address, so one
// test can play several clients.
func fromAddr(ip string) *net.Dialer {
	return &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 5 * time.Second}
}

// TestBehindNginx: login, page and WebSocket work through a real nginx; the per-IP cap
// counts the client addresses nginx reports in X-Forwarded-For because nginx is a
// trusted proxy, whatever a client adds to that header; sent directly to the server,
// the same header is ignored.
func TestBehindNginx(t *testing.T) {
	pki := newTestPKI(t, t.TempDir())
	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.MetricsAddr = ""
	cfg.Store = "memory"
	cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix(nginxProxyAddr + "/32")}
	cfg.MaxConnsPerIP = 2
	// The public URL is nginx's, as in production.
	httpsPort := freePort(t)
	cfg.PublicURL = "https://127.0.0.1:" + httpsPort
	srv := startServe(t, cfg)
	public := startNginx(t, srv.addrs.Main, pki, httpsPort)

	client := func(ip string) *http.Client {
		return &http.Client{
			Timeout:       10 * time.Second,
			Transport:     &http.Transport{DialContext: fromAddr(ip).DialContext, TLSClientConfig: &tls.Config{RootCAs: pki.Pool}},
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}

	// Login and page through nginx.
	alice := client("127.0.0.3")
	req, _ := http.NewRequest("POST", public+"/login/dev", strings.NewReader(url.Values{"name": {"alice"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", public)
	resp, err := alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-"+sessionCookie && c.Secure {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || cookie == nil {
		t.Fatalf("login through nginx: %d, cookies %v (want a Secure __Host- cookie: -public-url is https)", resp.StatusCode, resp.Cookies())
	}
	req, _ = http.NewRequest("GET", public+"/", nil)
	req.AddCookie(cookie)
	resp, err = alice.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<html") || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("page through nginx: %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}

	dialVia := func(ip, xff string) (*websocket.Conn, int, error) {
		d := websocket.Dialer{NetDialContext: fromAddr(ip).DialContext, TLSClientConfig: &tls.Config{RootCAs: pki.Pool}, HandshakeTimeout: 5 * time.Second}
		h := http.Header{"Origin": {public}, "Cookie": {cookie.Name + "=" + cookie.Value}}
		if xff != "" {
			h.Set("X-Forwarded-For", xff)
		}
		conn, resp, err := d.Dial("wss"+strings.TrimPrefix(public, "https")+"/ws", h)
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		if err == nil {
			t.Cleanup(func() { conn.Close() })
		}
		return conn, status, err
	}

	// The WebSocket through nginx: a message goes out and comes back.
	conn, _, err := dialVia("127.0.0.3", "")
	if err != nil {
		t.Fatalf("WebSocket through nginx: %v", err)
	}
	c := &wsClient{t: t, conn: conn}
	c.expect("welcome")
	c.send(map[string]any{"type": "say", "room": lobby, "text": "through nginx"})
	if m := c.expect("message"); m["text"] != "through nginx" {
		t.Fatalf("message through nginx: %v", m)
	}

	// The cap is 2 per client address. 127.0.0.3 has one; a second fits; a third is
	// refused even though it claims another address: nginx appends the real one.
	if _, status, err := dialVia("127.0.0.3", ""); err != nil {
		t.Fatalf("second connection from 127.0.0.3: %v (%d)", err, status)
	}
	if _, status, err := dialVia("127.0.0.3", "203.0.113.9"); err == nil || status != http.StatusTooManyRequests {
		t.Fatalf("third connection from 127.0.0.3 with a forged X-Forwarded-For: %v (%d), want 429", err, status)
	}
	// Another client behind the same nginx has its own budget: the server does not
	// count nginx's address.
	if _, status, err := dialVia("127.0.0.4", ""); err != nil {
		t.Fatalf("first connection from 127.0.0.4 through nginx: %v (%d)", err, status)
	}

	// Straight to the server, from an address that is not a trusted proxy, the header
	// is ignored: three different claimed addresses all count as 127.0.0.5.
	direct := &testServer{URL: srv.URL}
	for i, xff := range []string{"198.51.100.1", "198.51.100.2", "198.51.100.3"} {
		d := websocket.Dialer{NetDialContext: fromAddr("127.0.0.5").DialContext, HandshakeTimeout: 5 * time.Second}
		// It names the public host, as a client that knows the server's address would.
		h := http.Header{"Origin": {public}, "Cookie": {cookie.Name + "=" + cookie.Value}, "X-Forwarded-For": {xff},
			"Host": {strings.TrimPrefix(public, "https://")}}
		conn, resp, err := d.Dial(direct.wsURL(), h)
		if i < 2 {
			if err != nil {
				t.Fatalf("direct connection %d: %v", i+1, err)
			}
			t.Cleanup(func() { conn.Close() })
			continue
		}
		if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("third direct connection claiming %s: %v, want 429 (the header must be ignored from an untrusted peer)", xff, err)
		}
	}
}

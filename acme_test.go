package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// acmeHost is the name the test server gets a certificate for. pebble's validation
// resolves it through pebble-challtestsrv's DNS, which answers 127.0.0.1 for any name.
const acmeHost = "chat.test"

// pebbleCA runs Let's Encrypt's test CA, pebble, and its DNS helper on loopback, and
// returns its directory URL, the CA file that trusts pebble's own listener, and the
// pool of pebble's issuing root (the one a client needs to trust issued certificates).
//
// http-01 validation connects to the name at httpPort, which pebble's configuration
// sets to the port the server's challenge listener will use: nothing is faked
// (PEBBLE_VA_ALWAYS_VALID stays off). tls-alpn-01, which autocert tries first, is sent
// to a closed port, so the certificate can only come through the http-01 listener.
func pebbleCA(t *testing.T, httpPort string) (dirURL, caFile string, roots *x509.CertPool) {
	t.Helper()
	pebble := needProgram(t, "pebble")
	chall := needProgram(t, "pebble-challtestsrv")
	dir := t.TempDir()
	pki := newTestPKI(t, dir)

	dnsPort, challMgmt := freePort(t), freePort(t)
	startProgram(t, nil, chall, "-dns01", "127.0.0.1:"+dnsPort, "-http01", "", "-https01", "",
		"-tlsalpn01", "", "-management", "127.0.0.1:"+challMgmt, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")

	listen, mgmt, closedTLS := freePort(t), freePort(t), freePort(t)
	conf := fmt.Sprintf(`{"pebble": {"listenAddress": "127.0.0.1:%s", "managementListenAddress": "127.0.0.1:%s",
		"certificate": %q, "privateKey": %q, "httpPort": %s, "tlsPort": %s,
		"ocspResponderURL": "", "externalAccountBindingRequired": false}}`,
		listen, mgmt, pki.CertFile, pki.KeyFile, httpPort, closedTLS)
	confFile := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(confFile, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// No random sleep before validation and no random nonce rejection: the test is
	// about the server, not about pebble's robustness drills.
	startProgram(t, []string{"PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0"},
		pebble, "-config", confFile, "-dnsserver", "127.0.0.1:"+dnsPort)

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pki.Pool}}}
	var rootPEM []byte
	waitFor(t, "pebble's issuing root", func() bool {
		resp, err := client.Get("https://127.0.0.1:" + mgmt + "/roots/0")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		rootPEM, _ = io.ReadAll(resp.Body)
		return resp.StatusCode == 200
	})
	roots = x509.NewCertPool()
	if !roots.AppendCertsFromPEM(rootPEM) {
		t.Fatalf("pebble's root is not PEM: %q", rootPEM)
	}
	return "https://127.0.0.1:" + listen + "/dir", pki.CAFile, roots
}

// TestAutocertWithPebble: the server gets a certificate for its configured name from a
// real ACME server over http-01, serves the page and the WebSocket over it with HSTS
// and __Host- cookies, refuses a name it was not configured for (and never asks the
// CA for one), and its port-80 listener redirects everything else to https.
func TestAutocertWithPebble(t *testing.T) {
	httpPort := freePort(t)
	dirURL, caFile, roots := pebbleCA(t, httpPort)

	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.DataDir = t.TempDir()
	cfg.MetricsAddr = ""
	cfg.Store = "memory"
	cfg.TLSAutocert = []string{acmeHost}
	cfg.ACMEDirectory = dirURL
	cfg.ACMECAFile = caFile
	cfg.ACMEHTTPAddr = "127.0.0.1:" + httpPort
	srv := startServe(t, cfg)
	_, mainPort, _ := net.SplitHostPort(srv.addrs.Main)

	// The test client trusts pebble's root and nothing else, and reaches every name
	// at the server's loopback port.
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, network, srv.addrs.Main)
	}
	tlsConf := &tls.Config{RootCAs: roots, ServerName: acmeHost}
	client := &http.Client{
		Timeout:       60 * time.Second, // the first request waits for the issuance
		Transport:     &http.Transport{DialContext: dial, TLSClientConfig: tlsConf},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	base := "https://" + acmeHost

	resp, err := client.Get(base + "/healthz")
	if err != nil {
		t.Fatalf("https with the issued certificate: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.TLS == nil || resp.TLS.PeerCertificates[0].Subject.CommonName != acmeHost && !hasName(resp.TLS.PeerCertificates[0], acmeHost) {
		t.Fatalf("healthz: %d, certificate %v", resp.StatusCode, resp.TLS.PeerCertificates[0].DNSNames)
	}
	if hsts := resp.Header.Get("Strict-Transport-Security"); !strings.Contains(hsts, "max-age=") {
		t.Fatalf("no HSTS over autocert TLS: %q", hsts)
	}

	// The development login over it: a __Host- cookie, Secure.
	resp, err = client.PostForm(base+"/login/dev", url.Values{"name": {"alice"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var cookie *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "__Host-"+sessionCookie {
			cookie = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || cookie == nil || !cookie.Secure {
		t.Fatalf("login over autocert TLS: %d, cookies %v", resp.StatusCode, resp.Cookies())
	}
	req, _ := http.NewRequest("GET", base+"/", nil)
	req.AddCookie(cookie)
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<html") {
		t.Fatalf("page over autocert TLS: %d", resp.StatusCode)
	}

	// The WebSocket over the same certificate.
	d := websocket.Dialer{NetDialContext: dial, TLSClientConfig: tlsConf, HandshakeTimeout: 10 * time.Second}
	h := http.Header{"Origin": {base}, "Cookie": {cookie.Name + "=" + cookie.Value}}
	conn, _, err := d.Dial("wss://"+acmeHost+"/ws", h)
	if err != nil {
		t.Fatalf("wss: %v", err)
	}
	c := &wsClient{t: t, conn: conn}
	defer conn.Close()
	c.expect("welcome")
	c.send(map[string]any{"type": "say", "room": lobby, "text": "over ACME TLS"})
	if m := c.expect("message"); m["text"] != "over ACME TLS" {
		t.Fatalf("message over wss: %v", m)
	}

	// An unlisted name gets no certificate, and none is asked for.
	for _, sni := range []string{"evil.test", "www." + acmeHost, ""} {
		raw, err := net.Dial("tcp", srv.addrs.Main)
		if err != nil {
			t.Fatal(err)
		}
		tc := tls.Client(raw, &tls.Config{ServerName: sni, InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(10 * time.Second))
		err = tc.Handshake()
		tc.Close()
		if err == nil {
			t.Fatalf("SNI %q got a certificate", sni)
		}
	}
	files, _ := os.ReadDir(filepath.Join(cfg.DataDir, acmeCacheDir))
	var names []string
	for _, f := range files {
		names = append(names, f.Name())
	}
	if got := strings.Join(names, " "); strings.Contains(got, "evil") || strings.Contains(got, "www.") || !strings.Contains(got, acmeHost) {
		t.Fatalf("certificate cache holds %q, want %s only (and the account key)", got, acmeHost)
	}

	// Port 80: everything but the challenge goes to https, to a configured name only.
	plain := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for host, want := range map[string]string{
		acmeHost:    "https://" + acmeHost + ":" + mainPort + "/room?x=1",
		"evil.test": "https://" + acmeHost + ":" + mainPort + "/room?x=1",
	} {
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+httpPort+"/room?x=1", nil)
		req.Host = host
		resp, err := plain.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMovedPermanently || resp.Header.Get("Location") != want {
			t.Fatalf("plain HTTP for %s: %d to %q, want 301 to %q", host, resp.StatusCode, resp.Header.Get("Location"), want)
		}
	}
	resp, err = plain.PostForm("http://127.0.0.1:"+httpPort+"/login/dev", url.Values{"name": {"bob"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || len(resp.Cookies()) != 0 {
		t.Fatalf("a login posted in clear text: %d, cookies %v; want 400 and none", resp.StatusCode, resp.Cookies())
	}
}

// hasName reports whether a certificate is for name.
func hasName(c *x509.Certificate, name string) bool {
	return c.VerifyHostname(name) == nil
}

// TestAutocertConfigRefused: names a CA would refuse or that would widen what the
// server asks certificates for are refused at start-up, as are two certificate sources.
func TestAutocertConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-tls-autocert", "*.example.org"}, "not a lower-case DNS name"},
		{[]string{"-tls-autocert", "localhost"}, "not a lower-case DNS name"},
		{[]string{"-tls-autocert", "192.0.2.1"}, "not a lower-case DNS name"},
		{[]string{"-tls-autocert", "Chat.Example.org"}, "not a lower-case DNS name"},
		{[]string{"-tls-autocert", "chat.example.org:443"}, "not a lower-case DNS name"},
		{[]string{"-tls-autocert", "chat.example.org", "-tls-cert", "c.pem", "-tls-key", "k.pem"}, "exclude each other"},
		{[]string{"-tls-autocert", "chat.example.org", "-acme-directory", "http://ca.example.org/dir"}, "https URL"},
		{[]string{"-tls-autocert", "chat.example.org", "-acme-http-addr", ""}, "-acme-http-addr is needed"},
	} {
		_, err := parseConfig(tc.args, func(string) string { return "" })
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want an error with %q", tc.args, err, tc.want)
		}
	}
	if _, err := parseConfig([]string{"-tls-autocert", "chat.example.org,www.example.org"}, func(string) string { return "" }); err != nil {
		t.Fatalf("two good names refused: %v", err)
	}
}

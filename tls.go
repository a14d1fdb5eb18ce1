package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// ACME tunables.
const (
	// acmeCacheDir is where certificates and the ACME account key live, inside the
	// data directory: they survive restarts, so a restart does not ask the CA again
	// (Let's Encrypt rate-limits issuance per name and week).
	acmeCacheDir = "acme"
	// maxHostName is the longest DNS name (RFC 1035).
	maxHostName = 253
)

// servesHTTPS reports whether browsers reach this server over https: it terminates TLS
// itself (-tls-cert, -tls-autocert), or a proxy does in front of it and -public-url
// says so. Then cookies are Secure with the __Host- prefix and HSTS is sent, whoever
// holds the certificate.
func servesHTTPS(c *Config) bool {
	return c.TLSCert != "" || len(c.TLSAutocert) > 0 || strings.HasPrefix(strings.ToLower(c.PublicURL), "https:")
}

// validateAutocert checks the ACME settings: the names must be plain DNS names (the CA
// would refuse anything else, and a typo should fail at start-up, not at the first
// visitor), and the certificate source must be one, not two.
func (c *Config) validateAutocert() []error {
	if len(c.TLSAutocert) == 0 {
		return nil
	}
	var errs []error
	if c.TLSCert != "" {
		errs = append(errs, errors.New("-tls-autocert and -tls-cert exclude each other"))
	}
	for _, h := range c.TLSAutocert {
		if !validHostName(h) {
			errs = append(errs, fmt.Errorf("-tls-autocert: %q is not a lower-case DNS name with a dot", h))
		}
	}
	if u, err := url.Parse(c.ACMEDirectory); err != nil || u.Host == "" || u.Scheme != "https" {
		errs = append(errs, errors.New("-acme-directory must be an https URL"))
	}
	if c.ACMEHTTPAddr == "" {
		errs = append(errs, errors.New("-acme-http-addr is needed with -tls-autocert (the http-01 challenge and the redirect to https)"))
	}
	return errs
}

// validHostName accepts lower-case LDH names of at least two labels that are not an IP
// address: what a public CA issues for over http-01, and nothing that could smuggle a
// wildcard or an address in.
func validHostName(h string) bool {
	if len(h) == 0 || len(h) > maxHostName || !strings.Contains(h, ".") {
		return false
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// newCertManager builds the ACME certificate manager. HostPolicy admits the configured
// names only: without it, any name an attacker points at the server (or sends as SNI)
// would make the server ask the CA for a certificate, burning its rate limit.
func newCertManager(cfg *Config, log *slog.Logger) (*autocert.Manager, error) {
	dir := filepath.Join(cfg.DataDir, acmeCacheDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	client := &acme.Client{DirectoryURL: cfg.ACMEDirectory, UserAgent: "modified-chat"}
	if cfg.ACMECAFile != "" {
		pem, err := os.ReadFile(cfg.ACMECAFile)
		if err != nil {
			return nil, fmt.Errorf("-acme-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("-acme-ca-file %s: no PEM certificates", cfg.ACMECAFile)
		}
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		client.HTTPClient = &http.Client{Transport: tr}
	}
	log.Info("certificates by ACME", "hosts", strings.Join(cfg.TLSAutocert, ","), "directory", cfg.ACMEDirectory)
	return &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		Cache:      autocert.DirCache(dir),
		HostPolicy: autocert.HostWhitelist(cfg.TLSAutocert...),
		Email:      cfg.ACMEEmail,
		Client:     client,
	}, nil
}

// httpsRedirect sends plain-HTTP visitors to the https address. The target host is one
// of the configured names (the first when the request names another), so the redirect
// never points wherever a forged Host header says. Only GET and HEAD are redirected:
// anything else sent in clear text is refused rather than replayed over https.
func httpsRedirect(hosts []string, httpsAddr string) http.Handler {
	port := ""
	if _, p, err := net.SplitHostPort(httpsAddr); err == nil && p != "443" && p != "" {
		port = ":" + p
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			http.Error(w, "use https", http.StatusBadRequest)
			return
		}
		host := hosts[0]
		want := strings.ToLower(r.Host)
		if h, _, err := net.SplitHostPort(want); err == nil {
			want = h
		}
		for _, h := range hosts {
			if h == want {
				host = h
			}
		}
		w.Header().Set("Connection", "close")
		http.Redirect(w, r, "https://"+host+port+r.URL.RequestURI(), http.StatusMovedPermanently)
	})
}

// challengeHandler answers http-01 challenges and sends everything else to fallback.
// autocert checks the Host header against its host policy as is, port included; a CA
// always asks on port 80, where browsers and CAs leave the port out, but behind a port
// mapping (a container publishing 80 as 8080, this suite's loopback ports) the port is
// there. It is cut off first, so the policy sees the bare name either way.
func challengeHandler(m *autocert.Manager, fallback http.Handler) http.Handler {
	h := m.HTTPHandler(fallback)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if host, _, err := net.SplitHostPort(r.Host); err == nil {
			r.Host = host
		}
		h.ServeHTTP(w, r)
	})
}

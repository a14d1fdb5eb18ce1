package main

import (
	"bytes"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// The page and its assets are compiled into the binary, so the server is one file.
//
//go:embed home.html login.html static
var assets embed.FS

// loginTemplate renders the login screen. html/template escapes every value.
var loginTemplate = template.Must(template.ParseFS(assets, "login.html"))

// loginPage is the data behind login.html.
type loginPage struct {
	Dev          bool
	ProviderName string
	Error        string
}

// securityHeaders sets the headers every response carries. The CSP allows scripts,
// styles and connections from this server only, and no inline code at all, so a string
// that slipped into the DOM as markup still could not run.
func (app *App) securityHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", app.csp(r))
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), payment=()")
		if app.tls {
			h.Set("Strict-Transport-Security", "max-age=63072000; includeSubDomains")
		}
		next.ServeHTTP(w, r)
	})
}

// csp builds the Content-Security-Policy. connect-src names the WebSocket origin
// explicitly: older browsers do not count ws:// as 'self'. require-trusted-types-for
// makes the browser refuse a plain string at every DOM sink that parses HTML or loads
// script (innerHTML, outerHTML, document.write, a script's src, ...): the page renders
// with textContent and creates no policy, so a markup sink that ever crept into it
// would throw a TypeError instead of running what a user sent.
func (app *App) csp(r *http.Request) string {
	connect := "'self'"
	if host := app.ownHost(r); host != "" {
		connect += " ws://" + host + " wss://" + host
		if app.tls || strings.HasPrefix(app.settings().PublicURL, "https:") {
			connect = "'self' wss://" + host
		}
	}
	return "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; " +
		"connect-src " + connect + "; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; " +
		"require-trusted-types-for 'script'"
}

// ownHost is the host[:port] this server is reached at: from -public-url when set,
// else from the request, and only when it looks like a host name (it ends up in a
// header, so anything odd is left out rather than echoed). hostGuard has already
// refused every Host this server does not answer to.
func (app *App) ownHost(r *http.Request) string {
	if pub := app.settings().PublicURL; pub != "" {
		if u, err := url.Parse(pub); err == nil {
			return u.Host
		}
	}
	if !plainHost(r.Host) {
		return ""
	}
	return r.Host
}

// plainHost reports whether a Host value holds only the characters of a host name,
// an IP address and a port, so it can be compared and echoed safely.
func plainHost(host string) bool {
	if host == "" || len(host) > 255 {
		return false
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:[]", c)) {
			return false
		}
	}
	return true
}

// hostAllowed is the defence against DNS rebinding. A page on any site whose name
// resolves to this machine sends that name in Host, and without -public-url the
// server takes its own origin from Host, so such a page would count as same-origin
// for the Origin and cross-origin checks. With -public-url set, only its host is
// this server's name. Without it, only names that cannot be rebound are: localhost,
// loopback addresses, the names of -tls-autocert (the only ones with a certificate),
// and the host of the listen address. The port is not compared:
// a rebinding attacker controls the name, never the port the request arrived at.
func (app *App) hostAllowed(r *http.Request) bool {
	cfg := app.settings()
	if !plainHost(r.Host) {
		return false
	}
	if cfg.PublicURL != "" {
		want, err := normaliseOrigin(cfg.PublicURL)
		if err != nil {
			return false
		}
		scheme, _, _ := strings.Cut(want, "://")
		got, err := normaliseOrigin(scheme + "://" + r.Host)
		return err == nil && got == want
	}
	name := hostName(r.Host)
	if name == "localhost" || slices.Contains(cfg.TLSAutocert, name) {
		return true
	}
	if a, err := netip.ParseAddr(name); err == nil && a.IsLoopback() {
		return true
	}
	if listen, _, err := net.SplitHostPort(cfg.Addr); err == nil && listen != "" {
		if a, err := netip.ParseAddr(listen); err == nil && a.IsUnspecified() {
			return false // 0.0.0.0 or [::] is every address, not a name for this server
		}
		return name == strings.ToLower(listen)
	}
	return false
}

// hostName is the lower-cased name or address of a Host value, without port or brackets.
func hostName(host string) string {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	return strings.ToLower(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
}

// Reasons an HTTP request is refused before its handler runs (metrics labels).
const (
	refuseHost        = "host"
	refuseCrossOrigin = "cross_origin"
)

// Probes exempt from hostGuard: load balancers and orchestrators probe by address or
// by an internal name, and these two answer nothing but "ok" and "ready".
var hostGuardExempt = map[string]bool{"/healthz": true, "/readyz": true}

// hostGuard answers 421 Misdirected Request to any request whose Host this server does
// not answer to (see hostAllowed), before any route runs: no page, no login, no cookie,
// no WebSocket. Only the health probes are exempt.
func (app *App) hostGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostGuardExempt[r.URL.Path] && !app.hostAllowed(r) {
			app.metrics.httpRefused.WithLabelValues(refuseHost).Inc()
			http.Error(w, "misdirected request: this server does not answer to that host name", http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// crossOriginGuard refuses cross-site form posts (login CSRF, forced logout) with 403,
// using the standard library's check: Sec-Fetch-Site where the browser sends it, else
// Origin against Host (which hostGuard has already vouched for). Safe methods pass, so
// the WebSocket handshake, a GET, is covered by originAllowed instead.
func (app *App) crossOriginGuard(next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app.metrics.httpRefused.WithLabelValues(refuseCrossOrigin).Inc()
		http.Error(w, "cross-site request refused", http.StatusForbidden)
	}))
	return cop.Handler(next)
}

// ownOrigin is this server's origin (scheme://host[:port]) as a browser would send it.
func (app *App) ownOrigin(r *http.Request) string {
	if pub := app.settings().PublicURL; pub != "" {
		o, _ := normaliseOrigin(pub)
		return o
	}
	scheme := "http"
	if app.tls || r.TLS != nil {
		scheme = "https"
	}
	o, err := normaliseOrigin(scheme + "://" + r.Host)
	if err != nil {
		return ""
	}
	return o
}

// normaliseOrigin reduces a URL to scheme://host[:port], lower-cased, default port
// dropped, so that origins compare as strings.
func normaliseOrigin(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", err
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return "", errors.New("origin scheme must be http or https")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if host == "" || u.User != nil {
		return "", errors.New("origin needs a host and no user info")
	}
	if (scheme == "http" && port == "80") || (scheme == "https" && port == "443") {
		port = ""
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" {
		host += ":" + port
	}
	return scheme + "://" + host, nil
}

// originAllowed is the defence against cross-site WebSocket hijacking: a browser always
// sends Origin on a WebSocket handshake, and it must be this server's own origin or one
// the operator listed. A request without Origin is not from a browser page, so no
// cookie can be riding on it against its owner's will; it still needs a session.
func (app *App) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	o, err := normaliseOrigin(origin)
	if err != nil {
		return false
	}
	if o == app.ownOrigin(r) {
		return true
	}
	for _, allowed := range app.settings().AllowedOrigins {
		if a, err := normaliseOrigin(allowed); err == nil && a == o {
			return true
		}
	}
	return false
}

// handleHome serves the chat page to a signed-in user and sends anyone else to log in.
func (app *App) handleHome(w http.ResponseWriter, r *http.Request) {
	if _, err := app.sessions.fromRequest(r); err != nil {
		http.Redirect(w, r, "/login", http.StatusSeeOther)
		return
	}
	page, _ := assets.ReadFile("home.html")
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(page)
}

// handleLoginPage is GET /login: the development login form when no OpenID Connect
// provider is configured.
func (app *App) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	if _, err := app.sessions.fromRequest(r); err == nil {
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	app.renderLogin(w, http.StatusOK, "")
}

// renderLogin writes the login page with an optional error: the development form, or
// the OpenID Connect sign-in button.
func (app *App) renderLogin(w http.ResponseWriter, status int, msg string) {
	page := loginPage{Dev: app.dev, Error: msg}
	if app.oidc != nil {
		page.ProviderName = app.oidc.name
	}
	var buf bytes.Buffer
	if err := loginTemplate.Execute(&buf, page); err != nil {
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

// staticHandler serves the embedded script and style. Directory listings are refused:
// only named files exist.
func (app *App) staticHandler() http.Handler {
	files := http.FileServerFS(assets)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/") {
			http.NotFound(w, r)
			return
		}
		if _, err := fs.Stat(assets, strings.TrimPrefix(r.URL.Path, "/")); err != nil {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

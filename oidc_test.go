package main

// OpenID Connect login tests against a real provider running in the test: discovery,
// keys, an authorization endpoint and a token endpoint that checks client credentials,
// single-use codes and PKCE. The provider is built here on go-jose, so a test can
// make it forge exactly the bad token it needs. Every refusal is asserted end to end:
// the status, the counted reason, and above all that no session cookie was issued.

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/oauth2"
)

// Test provider settings.
const (
	testClientID     = "chat-test-client"
	testClientSecret = "chat-test-secret"
	testKeyID        = "test-key-1"
	// testCodeTTL is how long an authorization code stays redeemable, as at real
	// providers: minutes at most.
	testCodeTTL = time.Minute
)

// testUser is the account the provider signs in, as its ID token will describe it.
type testUser struct {
	Sub      string
	Email    string
	Name     string
	HD       string
	Verified bool
}

// alice is the default, well-behaved user.
var alice = testUser{Sub: "alice-0001", Email: "alice@example.org", Name: "Alice Example", Verified: true}

// authRequest is one authorization request the provider accepted.
type authRequest struct {
	redirectURI string
	state       string
	nonce       string
	challenge   string
	user        testUser
}

// issuedCode is an authorization code and what it was issued for.
type issuedCode struct {
	authRequest
	expires time.Time
	used    bool
}

// testProvider is a small but real OpenID Connect provider on loopback. Its issuer is
// http://localhost:PORT while the chat server is at 127.0.0.1, so the two are
// different sites, as a real provider and a chat server are.
type testProvider struct {
	t           *testing.T
	srv         *httptest.Server
	issuer      string
	key, rogue  *rsa.PrivateKey
	redirectURI string // the one redirect URI registered for the client

	mu sync.Mutex
	// user is who the next authorization signs in.
	user testUser
	// interactive makes /authorize show a consent page with a button, as a real
	// provider's page, instead of redirecting back at once.
	interactive bool
	// deny answers the next authorizations with error=access_denied.
	deny bool
	// tamper edits the next ID tokens' claims before signing.
	tamper func(claims map[string]any)
	// signWith is "" (the published key), "rogue" (another key under the same kid)
	// or "none" (alg none, unsigned).
	signWith string
	pending  map[string]authRequest
	codes    map[string]*issuedCode
	// refusals records why token requests were refused, in order.
	refusals []string
	// exchanges counts successful token requests.
	exchanges int
}

// newTestProvider starts the provider; the chat server's redirect URI is registered
// later with register, once its address is known.
func newTestProvider(t *testing.T) *testProvider {
	t.Helper()
	p := &testProvider{
		t:       t,
		key:     newRSAKey(t),
		rogue:   newRSAKey(t),
		user:    alice,
		pending: make(map[string]authRequest),
		codes:   make(map[string]*issuedCode),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /jwks", p.jwks)
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /approve", p.approve)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	_, port, _ := net.SplitHostPort(p.srv.Listener.Addr().String())
	p.issuer = "http://localhost:" + port
	return p
}

// newRSAKey makes a 2048-bit signing key.
func newRSAKey(t *testing.T) *rsa.PrivateKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// register sets the one redirect URI the provider accepts for the client.
func (p *testProvider) register(redirectURI string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirectURI = redirectURI
}

// set changes the provider's behaviour under its lock.
func (p *testProvider) set(f func(p *testProvider)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p)
}

// refused returns the token-request refusals so far.
func (p *testProvider) refused() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.refusals)
}

// exchangeCount returns how many codes were redeemed.
func (p *testProvider) exchangeCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exchanges
}

// discovery serves the OpenID Provider Metadata.
func (p *testProvider) discovery(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.issuer,
		"authorization_endpoint":                p.issuer + "/authorize",
		"token_endpoint":                        p.issuer + "/token",
		"jwks_uri":                              p.issuer + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "email", "profile"},
		"code_challenge_methods_supported":      []string{"S256"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
	})
}

// jwks publishes the provider's one public key. The rogue key is never published.
func (p *testProvider) jwks(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{
		Key: &p.key.PublicKey, KeyID: testKeyID, Algorithm: string(jose.RS256), Use: "sig",
	}}})
}

// authorize checks an authorization request as a strict provider does: known client,
// exactly the registered redirect URI, the code flow, the openid scope, a state, a
// nonce and a PKCE S256 challenge. Errors are shown on the provider's own page and
// never redirected, since the redirect URI itself may be what is wrong.
func (p *testProvider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case q.Get("client_id") != testClientID:
		http.Error(w, "unknown client", http.StatusBadRequest)
		return
	case q.Get("redirect_uri") != p.redirectURI:
		http.Error(w, "redirect_uri is not registered", http.StatusBadRequest)
		return
	case q.Get("response_type") != "code":
		http.Error(w, "only the code flow", http.StatusBadRequest)
		return
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		http.Error(w, "scope must include openid", http.StatusBadRequest)
		return
	case q.Get("state") == "" || q.Get("nonce") == "":
		http.Error(w, "state and nonce are required", http.StatusBadRequest)
		return
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		http.Error(w, "PKCE with S256 is required", http.StatusBadRequest)
		return
	}
	req := authRequest{
		redirectURI: q.Get("redirect_uri"), state: q.Get("state"), nonce: q.Get("nonce"),
		challenge: q.Get("code_challenge"), user: p.user,
	}
	if p.interactive {
		id := randomToken()
		p.pending[id] = req
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		consentPage.Execute(w, map[string]string{"ID": id, "Name": req.user.Name, "Email": req.user.Email})
		return
	}
	http.Redirect(w, r, p.respond(req), http.StatusFound)
}

// consentPage is the provider's page: who is signing in, and a button to continue.
var consentPage = template.Must(template.New("consent").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Test provider: sign in</title></head>
<body><h1>Test provider</h1>
<p>Sign in to the chat as {{.Name}} ({{.Email}})?</p>
<form method="post" action="/approve"><input type="hidden" name="req" value="{{.ID}}">
<button type="submit" id="approve">Continue</button></form>
</body></html>`))

// approve is the consent page's button: it sends the browser back with a code.
func (p *testProvider) approve(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	req, ok := p.pending[r.PostFormValue("req")]
	if !ok {
		http.Error(w, "no such request", http.StatusBadRequest)
		return
	}
	delete(p.pending, r.PostFormValue("req"))
	http.Redirect(w, r, p.respond(req), http.StatusSeeOther)
}

// respond builds the redirect back to the client: a fresh code and the state, or an
// error when the provider is told to deny. Called with p.mu held.
func (p *testProvider) respond(req authRequest) string {
	v := url.Values{"state": {req.state}}
	if p.deny {
		v.Set("error", "access_denied")
	} else {
		code := randomToken()
		p.codes[code] = &issuedCode{authRequest: req, expires: time.Now().Add(testCodeTTL)}
		v.Set("code", code)
	}
	return req.redirectURI + "?" + v.Encode()
}

// token redeems a code as RFC 6749 and RFC 7636 require: the client authenticates
// (HTTP Basic or form), the code is known, unexpired and not yet used, the redirect URI
// matches, and the code_verifier hashes to the challenge. A code is spent only by a
// successful exchange, so a request without the verifier cannot burn the legitimate
// user's code.
func (p *testProvider) token(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	refuse := func(status int, code, why string) {
		p.refusals = append(p.refusals, why)
		writeJSON(w, status, map[string]string{"error": code, "error_description": why})
	}
	if err := r.ParseForm(); err != nil {
		refuse(http.StatusBadRequest, "invalid_request", "bad form")
		return
	}
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != testClientID || secret != testClientSecret {
		refuse(http.StatusUnauthorized, "invalid_client", "client authentication failed")
		return
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		refuse(http.StatusBadRequest, "unsupported_grant_type", "only authorization_code")
		return
	}
	c, ok := p.codes[r.PostForm.Get("code")]
	switch {
	case !ok:
		refuse(http.StatusBadRequest, "invalid_grant", "unknown code")
		return
	case c.used:
		refuse(http.StatusBadRequest, "invalid_grant", "code already used")
		return
	case time.Now().After(c.expires):
		refuse(http.StatusBadRequest, "invalid_grant", "code expired")
		return
	case r.PostForm.Get("redirect_uri") != c.redirectURI:
		refuse(http.StatusBadRequest, "invalid_grant", "redirect_uri mismatch")
		return
	}
	verifier := r.PostForm.Get("code_verifier")
	if verifier == "" {
		refuse(http.StatusBadRequest, "invalid_grant", "missing code_verifier")
		return
	}
	sum := sha256.Sum256([]byte(verifier))
	if base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge {
		refuse(http.StatusBadRequest, "invalid_grant", "code_verifier does not match the challenge")
		return
	}
	c.used = true
	p.exchanges++
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": randomToken(), "token_type": "Bearer", "expires_in": 3600,
		"id_token": p.idToken(c),
	})
}

// idToken builds and signs the ID token for a redeemed code, after the test's
// tampering. Called with p.mu held.
func (p *testProvider) idToken(c *issuedCode) string {
	now := time.Now()
	claims := map[string]any{
		"iss": p.issuer, "sub": c.user.Sub, "aud": testClientID, "azp": testClientID,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(), "nonce": c.nonce,
		"email": c.user.Email, "email_verified": c.user.Verified, "name": c.user.Name,
	}
	if c.user.HD != "" {
		claims["hd"] = c.user.HD
	}
	if p.tamper != nil {
		p.tamper(claims)
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		p.t.Error(err)
	}
	if p.signWith == "none" {
		enc := base64.RawURLEncoding.EncodeToString
		return enc([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + enc(payload) + "."
	}
	key := p.key
	if p.signWith == "rogue" {
		key = p.rogue
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: testKeyID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		p.t.Error(err)
		return ""
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		p.t.Error(err)
		return ""
	}
	s, err := jws.CompactSerialize()
	if err != nil {
		p.t.Error(err)
	}
	return s
}

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// startOIDCServer starts a chat server whose login is the test provider. Its address
// must be known before the App is built (the redirect URL is part of the
// configuration), so the listener is opened first and served once the App exists.
func startOIDCServer(t *testing.T, p *testProvider, mutate func(*Config)) *testServer {
	t.Helper()
	return startOIDCServerAt(t, time.Now, p, mutate)
}

// startOIDCServerAt is startOIDCServer with the App's clock injected.
func startOIDCServerAt(t *testing.T, now func() time.Time, p *testProvider, mutate func(*Config)) *testServer {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	base := "http://" + srv.Listener.Addr().String()
	cfg := testConfig(t)
	cfg.PublicURL = base
	cfg.OIDCIssuer = p.issuer
	cfg.OIDCClientID = testClientID
	cfg.OIDCClientSecret = testClientSecret
	t.Cleanup(func() { srv.Listener.Close() }) // unserved if the App cannot be built
	app := testApp(t, cfg, mutate, func(cfg *Config, log *slog.Logger) (*App, error) {
		return newAppWithClock(cfg, log, now)
	})
	p.register(base + callbackPath)
	srv.Config.Handler = app.routes()
	srv.Start()
	ts := &testServer{URL: srv.URL, App: app, srv: srv}
	t.Cleanup(ts.stop)
	return ts
}

// newJarClient is a browser stand-in: it keeps cookies and shows each redirect
// instead of following it, so a test can walk the login one hop at a time.
func newJarClient(t *testing.T) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// result is a finished response with its body read.
type result struct {
	*http.Response
	body string
}

// get fetches a URL and reads the body.
func get(t *testing.T, c *http.Client, u string) result {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return result{resp, string(b)}
}

// beginLogin walks a login up to the provider's redirect back: GET /login (which must
// send the browser to the provider and set the login cookie), then the provider's
// authorization endpoint. It returns the callback URL the provider redirected to.
func beginLogin(t *testing.T, ts *testServer, p *testProvider, c *http.Client, ret string) *url.URL {
	t.Helper()
	login := ts.URL + "/login"
	if ret != "" {
		login += "?return=" + url.QueryEscape(ret)
	}
	res := get(t, c, login)
	loc := res.Header.Get("Location")
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, p.issuer+"/authorize?") {
		t.Fatalf("GET /login: status %d, location %q; want 303 to the provider", res.StatusCode, loc)
	}
	if findCookie(res.Cookies(), loginCookie) == nil {
		t.Fatal("GET /login set no login cookie")
	}
	res = get(t, c, loc)
	cb, err := url.Parse(res.Header.Get("Location"))
	if res.StatusCode != http.StatusFound || err != nil || !strings.HasPrefix(cb.String(), ts.URL+callbackPath+"?") {
		t.Fatalf("provider /authorize: status %d, location %q, body %q", res.StatusCode, res.Header.Get("Location"), res.body)
	}
	return cb
}

// findCookie returns the cookie whose name ends in name (so __Host- and __Secure-
// forms are found too), or nil.
func findCookie(cookies []*http.Cookie, name string) *http.Cookie {
	for _, c := range cookies {
		if strings.HasSuffix(c.Name, name) {
			return c
		}
	}
	return nil
}

// sessionSet returns the session cookie a response set, or nil if it set none (a
// clearing cookie does not count).
func sessionSet(res result) *http.Cookie {
	if c := findCookie(res.Cookies(), sessionCookie); c != nil && c.Value != "" && c.MaxAge >= 0 {
		return c
	}
	return nil
}

// oidcLogin runs a whole login with a fresh client and returns the client, the final
// response and the session cookie, failing unless a session was issued.
func oidcLoginAs(t *testing.T, ts *testServer, p *testProvider, user testUser) (*http.Client, *http.Cookie) {
	t.Helper()
	p.set(func(p *testProvider) { p.user = user })
	c := newJarClient(t)
	res := get(t, c, beginLogin(t, ts, p, c, "").String())
	cookie := sessionSet(res)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" || cookie == nil {
		t.Fatalf("callback: status %d, location %q, session %v, body %q", res.StatusCode, res.Header.Get("Location"), cookie != nil, res.body)
	}
	return c, cookie
}

// authCount reads the auth counter for a result and reason.
func authCount(ts *testServer, result, reason string) float64 {
	return testutil.ToFloat64(ts.App.metrics.auth.WithLabelValues(result, reason))
}

// assertRefused checks a refused callback: the status, the error page, the login
// cookie cleared, the reason counted once, and no session cookie, neither in the
// response nor in the client's jar.
func assertRefused(t *testing.T, ts *testServer, c *http.Client, res result, status int, reason string) {
	t.Helper()
	if res.StatusCode != status {
		t.Errorf("status %d, want %d; body %q", res.StatusCode, status, res.body)
	}
	if sessionSet(res) != nil {
		t.Error("a refused login set a session cookie")
	}
	if c != nil {
		u, _ := url.Parse(ts.URL + "/")
		if findCookie(c.Jar.Cookies(u), sessionCookie) != nil {
			t.Error("the client holds a session cookie after a refused login")
		}
	}
	if lc := findCookie(res.Cookies(), loginCookie); lc == nil || lc.MaxAge >= 0 {
		t.Error("the callback did not clear the login cookie")
	}
	if !strings.Contains(res.body, `id="login-error"`) || !strings.Contains(res.body, `href="/login"`) {
		t.Errorf("the refusal page lacks the error or the way back to /login: %q", res.body)
	}
	if n := authCount(ts, "failure", reason); n != 1 {
		t.Errorf("auth failure %q counted %v times, want 1", reason, n)
	}
}

// TestOIDCLoginEndToEnd is the happy path: /login, the provider, the callback, a
// session, and a WebSocket with that session that joins a room and chats with a second
// user who signed in the same way.
func TestOIDCLoginEndToEnd(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	c := newJarClient(t)

	// GET /login goes straight to the provider with every parameter the flow needs.
	res := get(t, c, ts.URL+"/login")
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("GET /login: %d", res.StatusCode)
	}
	auth, _ := url.Parse(res.Header.Get("Location"))
	q := auth.Query()
	for k, want := range map[string]string{
		"client_id": testClientID, "redirect_uri": ts.URL + callbackPath, "response_type": "code",
		"scope": "openid email profile", "code_challenge_method": "S256",
	} {
		if q.Get(k) != want {
			t.Errorf("authorization request %s = %q, want %q", k, q.Get(k), want)
		}
	}
	for _, k := range []string{"state", "nonce", "code_challenge"} {
		if len(q.Get(k)) < 43 {
			t.Errorf("authorization request %s = %q: too short to be a 256-bit secret", k, q.Get(k))
		}
	}
	lc := findCookie(res.Cookies(), loginCookie)
	if lc == nil || !lc.HttpOnly || lc.SameSite != http.SameSiteLaxMode || lc.Path != callbackPath || lc.MaxAge != int(loginTTL/time.Second) {
		t.Fatalf("login cookie %+v: want HttpOnly, SameSite=Lax, Path=%s, Max-Age=%d", lc, callbackPath, int(loginTTL/time.Second))
	}
	if strings.Contains(lc.Value, q.Get("state")) || strings.Contains(lc.Value, q.Get("nonce")) {
		t.Fatal("the login cookie shows its secrets in clear")
	}

	// The provider sends the browser back; the callback issues the session.
	res = get(t, c, auth.String())
	res = get(t, c, res.Header.Get("Location"))
	cookie := sessionSet(res)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" || cookie == nil {
		t.Fatalf("callback: status %d, location %q, session %v, body %q", res.StatusCode, res.Header.Get("Location"), cookie != nil, res.body)
	}
	if !cookie.HttpOnly || cookie.SameSite != http.SameSiteLaxMode || cookie.Path != "/" {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/", cookie)
	}
	if lc := findCookie(res.Cookies(), loginCookie); lc == nil || lc.MaxAge >= 0 {
		t.Error("the callback did not clear the login cookie")
	}
	if n := authCount(ts, "success", "oidc"); n != 1 {
		t.Errorf("auth success counted %v times", n)
	}

	// The session opens the page, and /login now just goes home.
	if res := get(t, c, ts.URL+"/"); res.StatusCode != http.StatusOK {
		t.Fatalf("GET / with the session: %d", res.StatusCode)
	}
	if res := get(t, c, ts.URL+"/login"); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("GET /login with a session: %d %q", res.StatusCode, res.Header.Get("Location"))
	}

	// The WebSocket knows the user as issuer|subject, with the provider's name.
	conn, resp, err := ts.tryDial(cookie, nil)
	if err != nil {
		t.Fatalf("dial with the OIDC session: %v (%v)", err, resp)
	}
	a := &wsClient{t: t, conn: conn}
	t.Cleanup(func() { conn.Close() })
	welcome := a.expect("welcome")
	you, _ := welcome["you"].(map[string]any)
	if you["id"] != p.issuer+"|"+alice.Sub || you["name"] != alice.Name || welcome["dev"] == true {
		t.Fatalf("welcome %v: want id %q, name %q, not dev", welcome, p.issuer+"|"+alice.Sub, alice.Name)
	}
	a.expect("joined")

	bob := testUser{Sub: "bob-0002", Email: "bob@example.org", Name: "Bob", Verified: true}
	_, bobCookie := oidcLoginAs(t, ts, p, bob)
	b := ts.dial(t, bobCookie)
	a.send(map[string]any{"type": "join", "room": "oidc"})
	a.expect("joined")
	b.send(map[string]any{"type": "join", "room": "oidc"})
	b.expect("joined")
	a.send(map[string]any{"type": "say", "room": "oidc", "text": "hello from alice"})
	msg := b.expect("message")
	from, _ := msg["from"].(map[string]any)
	if msg["text"] != "hello from alice" || msg["room"] != "oidc" || from["id"] != p.issuer+"|"+alice.Sub {
		t.Fatalf("bob got %v", msg)
	}
}

// TestOIDCDevLoginGone proves the development login does not exist beside a real one.
func TestOIDCDevLoginGone(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	resp, err := noRedirect.PostForm(ts.URL+"/login/dev", url.Values{"name": {"mallory"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound || findCookie(resp.Cookies(), sessionCookie) != nil {
		t.Fatalf("POST /login/dev with OIDC configured: %d, cookies %v; want 404 and no cookie", resp.StatusCode, resp.Cookies())
	}
	if ts.App.dev {
		t.Fatal("the app still believes it runs the development login")
	}
}

// TestOIDCRefusals forges each bad answer a provider (or an attacker in its place)
// could give, and each account the operator's policy must keep out. Every one must
// end without a session, with the right status and the reason counted.
func TestOIDCRefusals(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		setup  func(*testProvider)
		status int
		reason string
	}{
		{"wrong audience", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) { c["aud"] = "another-client"; c["azp"] = "another-client" }
		}, http.StatusBadRequest, refuseIDToken},
		{"expired id token", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) {
				c["iat"] = time.Now().Add(-2 * time.Hour).Unix()
				c["exp"] = time.Now().Add(-time.Hour).Unix()
			}
		}, http.StatusBadRequest, refuseIDToken},
		{"wrong issuer", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) { c["iss"] = "https://evil.example" }
		}, http.StatusBadRequest, refuseIDToken},
		{"bad signature", nil, func(p *testProvider) { p.signWith = "rogue" }, http.StatusBadRequest, refuseIDToken},
		{"alg none", nil, func(p *testProvider) { p.signWith = "none" }, http.StatusBadRequest, refuseIDToken},
		{"nonce mismatch", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) { c["nonce"] = randomToken() }
		}, http.StatusBadRequest, refuseNonce},
		{"nonce missing", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) { delete(c, "nonce") }
		}, http.StatusBadRequest, refuseNonce},
		{"provider denies", nil, func(p *testProvider) { p.deny = true }, http.StatusBadRequest, refuseProviderError},
		{"email not verified", nil, func(p *testProvider) {
			p.user.Verified = false
		}, http.StatusForbidden, refuseUnverified},
		{"email_verified as the string false", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) { c["email_verified"] = "false" }
		}, http.StatusForbidden, refuseUnverified},
		{"no email", nil, func(p *testProvider) {
			p.tamper = func(c map[string]any) { delete(c, "email"); delete(c, "email_verified") }
		}, http.StatusForbidden, refuseNoEmail},
		{"wrong hd domain", func(c *Config) { c.AllowedDomains = []string{"corp.example"} }, func(p *testProvider) {
			// The email claims the allowed domain; the hd claim says the account
			// belongs to another organisation. hd wins.
			p.user = testUser{Sub: "eve", Email: "eve@corp.example", Name: "Eve", HD: "other.example", Verified: true}
		}, http.StatusForbidden, refuseHD},
		{"email domain outside the allow-list", func(c *Config) { c.AllowedDomains = []string{"corp.example"} }, nil,
			http.StatusForbidden, refuseDomain},
		{"email outside the allow-list", func(c *Config) { c.AllowedEmails = []string{"bob@example.org"} }, nil,
			http.StatusForbidden, refuseEmail},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProvider(t)
			if tc.setup != nil {
				p.set(tc.setup)
			}
			ts := startOIDCServer(t, p, tc.mutate)
			c := newJarClient(t)
			res := get(t, c, beginLogin(t, ts, p, c, "").String())
			assertRefused(t, ts, c, res, tc.status, tc.reason)
			if n := authCount(ts, "success", "oidc"); n != 0 {
				t.Errorf("auth success counted %v times", n)
			}
			if res := get(t, c, ts.URL+"/"); res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/login" {
				t.Errorf("GET / after a refused login: %d %q, want 303 to /login", res.StatusCode, res.Header.Get("Location"))
			}
		})
	}
}

// TestOIDCAllowListsAdmit is the other side of the allow-lists: the accounts they name
// get in.
func TestOIDCAllowListsAdmit(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*Config)
		user   testUser
	}{
		{"listed domain, no hd", func(c *Config) { c.AllowedDomains = []string{"Example.ORG"} }, alice},
		{"listed hd", func(c *Config) { c.AllowedDomains = []string{"corp.example"} },
			testUser{Sub: "carol", Email: "carol@corp.example", Name: "Carol", HD: "corp.example", Verified: true}},
		{"listed email", func(c *Config) { c.AllowedEmails = []string{"Alice@Example.org"} }, alice},
		{"listed email beside a domain list", func(c *Config) {
			c.AllowedDomains = []string{"corp.example"}
			c.AllowedEmails = []string{"alice@example.org"}
		}, alice},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := newTestProvider(t)
			ts := startOIDCServer(t, p, tc.mutate)
			oidcLoginAs(t, ts, p, tc.user)
		})
	}
}

// TestOIDCPolicyGoogleNeedsHD checks the rule that only a unit test can reach (the
// issuer would have to be Google): with domains restricted, a Google account without
// hd is refused even when its email ends in an allowed domain, because anyone can
// register a Google account for any email address.
func TestOIDCPolicyGoogleNeedsHD(t *testing.T) {
	o := &oidcLogin{name: "Google", google: true}
	restricted := &Config{AllowedDomains: []string{"corp.example"}}
	if reason, _ := o.policy(idClaims{Email: "mallory@corp.example", EmailVerified: true}, restricted); reason != refuseHD {
		t.Fatalf("Google account without hd: reason %q, want %q", reason, refuseHD)
	}
	if reason, _ := o.policy(idClaims{Email: "carol@corp.example", EmailVerified: true, HD: "corp.example"}, restricted); reason != "" {
		t.Fatalf("Google Workspace account of the allowed domain refused: %q", reason)
	}
	if reason, _ := o.policy(idClaims{Email: "anyone@gmail.com", EmailVerified: true}, &Config{}); reason != "" {
		t.Fatalf("no allow-list should admit any verified account, got %q", reason)
	}
}

// TestOIDCStateChecks attacks the link between a callback and the browser that
// started the login: no state, a wrong state, no login cookie, a tampered one, and a
// session cookie passed off as a login cookie.
func TestOIDCStateChecks(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	check := func(name string, c *http.Client, u string, reason string) {
		t.Helper()
		res := get(t, c, u)
		if res.StatusCode != http.StatusBadRequest || sessionSet(res) != nil {
			t.Errorf("%s: status %d, session %v; want 400 and no session", name, res.StatusCode, sessionSet(res) != nil)
		}
		if n := authCount(ts, "failure", reason); n < 1 {
			t.Errorf("%s: reason %q not counted", name, reason)
		}
	}

	c := newJarClient(t)
	cb := beginLogin(t, ts, p, c, "")
	q := cb.Query()
	q.Del("state")
	check("missing state", c, ts.URL+callbackPath+"?"+q.Encode(), refuseState)

	c = newJarClient(t)
	cb = beginLogin(t, ts, p, c, "")
	q = cb.Query()
	q.Set("state", randomToken())
	check("wrong state", c, ts.URL+callbackPath+"?"+q.Encode(), refuseState)

	// A callback in a browser that never started this login (login CSRF, or a link
	// sent to a victim) has no login cookie.
	cb = beginLogin(t, ts, p, newJarClient(t), "")
	check("no login cookie", newJarClient(t), cb.String(), refuseLoginCookie)

	// A tampered login cookie fails to open.
	c = newJarClient(t)
	cb = beginLogin(t, ts, p, c, "")
	u, _ := url.Parse(ts.URL + callbackPath)
	lc := findCookie(c.Jar.Cookies(u), loginCookie)
	b, _ := base64.RawURLEncoding.DecodeString(lc.Value)
	b[len(b)-1] ^= 1
	c.Jar.SetCookies(u, []*http.Cookie{{Name: lc.Name, Value: base64.RawURLEncoding.EncodeToString(b), Path: callbackPath}})
	check("tampered login cookie", c, cb.String(), refuseLoginCookie)

	// The two kinds of cookie share a key but not a label: a session cookie does not
	// open as a login cookie, and a login cookie does not open as a session.
	_, session := oidcLoginAs(t, ts, p, alice)
	c = newJarClient(t)
	cb = beginLogin(t, ts, p, c, "")
	lc = findCookie(c.Jar.Cookies(u), loginCookie)
	c.Jar.SetCookies(u, []*http.Cookie{{Name: lc.Name, Value: session.Value, Path: callbackPath}})
	check("session cookie as login cookie", c, cb.String(), refuseLoginCookie)
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	req.AddCookie(&http.Cookie{Name: session.Name, Value: lc.Value})
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Errorf("a login cookie passed off as a session opened the page: %d", resp.StatusCode)
	}
	if n := p.exchangeCount(); n != 1 {
		t.Errorf("%d code exchanges; only the one real login should have reached the token endpoint", n)
	}
}

// TestOIDCReplayedCodeRefused replays an authorization code that already signed
// someone in: the exact callback again (the login cookie is gone), and the code
// grafted onto a fresh login of the attacker's (the provider refuses a second
// exchange). Neither makes a session.
func TestOIDCReplayedCodeRefused(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	c := newJarClient(t)
	cb := beginLogin(t, ts, p, c, "")
	if res := get(t, c, cb.String()); sessionSet(res) == nil {
		t.Fatalf("first use of the code: %d, no session", res.StatusCode)
	}

	// The same callback, same browser: the single-use login cookie is spent.
	res := get(t, c, cb.String())
	if res.StatusCode != http.StatusBadRequest || sessionSet(res) != nil {
		t.Fatalf("replayed callback: %d, session %v", res.StatusCode, sessionSet(res) != nil)
	}
	if n := authCount(ts, "failure", refuseLoginCookie); n != 1 {
		t.Fatalf("replayed callback counted %v login_cookie failures", n)
	}

	// The code on a fresh attempt with a valid cookie and state: the server does
	// exchange it, and the provider refuses, because the code is spent.
	attacker := newJarClient(t)
	own := beginLogin(t, ts, p, attacker, "")
	q := own.Query()
	q.Set("code", cb.Query().Get("code"))
	res = get(t, attacker, ts.URL+callbackPath+"?"+q.Encode())
	assertRefused(t, ts, attacker, res, http.StatusBadRequest, refuseExchange)
	if r := p.refused(); !slices.Contains(r, "code already used") {
		t.Fatalf("the provider's refusals %q do not show the replay", r)
	}
}

// TestOIDCPKCE proves that a code is worth nothing without the verifier that only the
// browser's login cookie holds: the token endpoint refuses the code without a
// verifier and with a wrong one, the legitimate callback still succeeds, and a code
// injected into another login (with that login's verifier) is refused.
func TestOIDCPKCE(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	c := newJarClient(t)
	cb := beginLogin(t, ts, p, c, "")
	code := cb.Query().Get("code")

	// An attacker who intercepted the code redeems it directly, with the client's
	// credentials even, but without the verifier.
	redeem := func(verifier string) int {
		form := url.Values{"grant_type": {"authorization_code"}, "code": {code}, "redirect_uri": {ts.URL + callbackPath}}
		if verifier != "" {
			form.Set("code_verifier", verifier)
		}
		req, _ := http.NewRequest(http.MethodPost, p.issuer+"/token", strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.SetBasicAuth(testClientID, testClientSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := redeem(""); s != http.StatusBadRequest {
		t.Fatalf("token request without code_verifier: %d, want 400", s)
	}
	if s := redeem(oauth2.GenerateVerifier()); s != http.StatusBadRequest {
		t.Fatalf("token request with a wrong code_verifier: %d, want 400", s)
	}
	if r := p.refused(); !slices.Equal(r, []string{"missing code_verifier", "code_verifier does not match the challenge"}) {
		t.Fatalf("provider refusals %q", r)
	}
	if res := get(t, c, cb.String()); sessionSet(res) == nil {
		t.Fatalf("the legitimate callback after the failed attempts: %d, no session; body %q", res.StatusCode, res.body)
	}

	// Code injection: the attacker's own code in the victim's callback. The state
	// and cookie are the victim's, so the server sends the victim's verifier, which
	// does not match the challenge the attacker's code was issued for.
	victim, attacker := newJarClient(t), newJarClient(t)
	vcb := beginLogin(t, ts, p, victim, "")
	acb := beginLogin(t, ts, p, attacker, "")
	q := vcb.Query()
	q.Set("code", acb.Query().Get("code"))
	res := get(t, victim, ts.URL+callbackPath+"?"+q.Encode())
	assertRefused(t, ts, victim, res, http.StatusBadRequest, refuseExchange)
	if r := p.refused(); r[len(r)-1] != "code_verifier does not match the challenge" {
		t.Fatalf("provider refusals %q", r)
	}
}

// TestOIDCReturnPath: a return path survives the login only if it stays on this
// server. Everything that could send the browser elsewhere ends at "/".
func TestOIDCReturnPath(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	for ret, want := range map[string]string{
		"//evil.com":                             "/",
		"https://evil.com":                       "/",
		"/\\evil.com":                            "/",
		"\\\\evil.com":                           "/",
		"/\t/evil.com":                           "/",
		"javascript:alert(1)":                    "/",
		"evil.com":                               "/",
		"/login":                                 "/",
		"/auth/callback?code=x":                  "/",
		"/?room=general":                         "/?room=general",
		"/static/app.css":                        "/static/app.css",
		"/%2F%2Fevil.com":                        "/%2F%2Fevil.com",
		"/" + strings.Repeat("a", maxReturnPath): "/",
	} {
		c := newJarClient(t)
		res := get(t, c, beginLogin(t, ts, p, c, ret).String())
		if sessionSet(res) == nil {
			t.Fatalf("return %q: no session (%d)", ret, res.StatusCode)
		}
		if got := res.Header.Get("Location"); got != want {
			t.Errorf("return %q: redirected to %q, want %q", ret, got, want)
		}
		if u, err := url.Parse(res.Header.Get("Location")); err != nil || u.Host != "" || u.Scheme != "" {
			t.Errorf("return %q: Location %q leaves the server", ret, res.Header.Get("Location"))
		}
	}
}

// TestSafeReturnPath covers the return-path rule on its own, including forms a
// browser would read as another host.
func TestSafeReturnPath(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/": "/", "/a/b?c=d": "/a/b?c=d", "//evil.com": "/", "///evil.com": "/",
		"/\\evil.com": "/", "/x\\y": "/", "https://evil.com": "/", "http:/evil.com": "/",
		"/\x00": "/", "/\u202e": "/", "/a b": "/", "/logout": "/", "/login?x": "/",
		"/\xff": "/", "/ok#frag": "/ok#frag",
	} {
		if got := safeReturnPath(in); got != want {
			t.Errorf("safeReturnPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOIDCDisplayName cleans what the provider says about a user before others see it.
func TestOIDCDisplayName(t *testing.T) {
	for _, tc := range []struct{ name, email, want string }{
		{"Alice Example", "alice@example.org", "Alice Example"},
		{"  \u202eevil\u202c\x07 ", "x@example.org", "evil"},
		{"", "carol.smith@example.org", "carol.smith"},
		{"\x00\x01", "dave@example.org", "dave"},
		{strings.Repeat("é", 40), "e@example.org", strings.Repeat("é", maxNameChars)},
		{"", "", "user"},
	} {
		if got := oidcDisplayName(tc.name, tc.email); got != tc.want {
			t.Errorf("oidcDisplayName(%q, %q) = %q, want %q", tc.name, tc.email, got, tc.want)
		}
	}
}

// TestOIDCLogoutRevokesAcrossRestart signs in through the provider, logs out, and
// replays the copied cookie against the page and the WebSocket: refused, and still
// refused after the server restarts on the same data directory. A session that was not
// logged out keeps working across the restart, which shows the refusal comes from
// the revocation and not from a new key.
func TestOIDCLogoutRevokesAcrossRestart(t *testing.T) {
	p := newTestProvider(t)
	dir := t.TempDir()
	onDir := func(c *Config) { c.DataDir, c.Store = dir, "bolt" }
	ts := startOIDCServer(t, p, onDir)
	_, cookie := oidcLoginAs(t, ts, p, alice)
	_, kept := oidcLoginAs(t, ts, p, testUser{Sub: "bob", Email: "bob@example.org", Name: "Bob", Verified: true})

	open := ts.dial(t, cookie)
	postLogout(t, ts, cookie)
	open.expectClose(websocket.ClosePolicyViolation)
	assertSessionRefused(t, ts, cookie)

	if n, err := ts.App.store.Count(bucketRevoked); err != nil || n != 1 {
		t.Fatalf("revocations in the store: %d %v, want 1", n, err)
	}

	ts.stop()
	ts = startOIDCServer(t, p, onDir)
	assertSessionRefused(t, ts, cookie)
	ts.dial(t, kept) // the other session survived the restart
}

// TestSessionRevocationSurvivesRestart is the same guarantee under the development
// login, which shares the session code.
func TestSessionRevocationSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	onDir := func(c *Config) { c.DataDir, c.Store = dir, "bolt" }
	ts := startServer(t, onDir)
	cookie := devLogin(t, ts.URL, "alice")
	postLogout(t, ts, cookie)
	assertSessionRefused(t, ts, cookie)
	ts.App.shutdown(2 * time.Second)
	ts.srv.Close()

	ts = startServer(t, onDir)
	assertSessionRefused(t, ts, cookie)
}

// TestOIDCSessionExpires replays a session cookie after its absolute lifetime.
func TestOIDCSessionExpires(t *testing.T) {
	p := newTestProvider(t)
	clock := newFakeClock()
	ts := startOIDCServerAt(t, clock.Now, p, nil)
	_, cookie := oidcLoginAs(t, ts, p, alice)
	clock.Advance(ts.App.settings().SessionTTL + time.Second)
	assertSessionRefused(t, ts, cookie)
}

// assertSessionRefused replays a session cookie against the page (303 to /login) and
// the WebSocket (401 before any upgrade).
func assertSessionRefused(t *testing.T, ts *testServer, cookie *http.Cookie) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	req.AddCookie(cookie)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Errorf("GET / with a dead session: %d %q, want 303 to /login", resp.StatusCode, resp.Header.Get("Location"))
	}
	conn, wsResp, err := ts.tryDial(cookie, nil)
	if err == nil {
		conn.Close()
		t.Fatal("a dead session opened a WebSocket")
	}
	if wsResp == nil || wsResp.StatusCode != http.StatusUnauthorized {
		t.Errorf("/ws with a dead session: %v, want 401", wsResp)
	}
}

// TestOIDCConfig checks the start-up rules: a client id needs a public URL, secrets
// come from one place, allow-lists need a client id, the issuer must be https (or
// loopback), and discovery failing stops start-up with an error that says why.
func TestOIDCConfig(t *testing.T) {
	base := func(c *Config) {
		c.OIDCClientID = "id"
		c.OIDCClientSecret = "secret"
		c.PublicURL = "https://chat.example.org"
	}
	for _, tc := range []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"no public url", func(c *Config) { base(c); c.PublicURL = "" }, "needs -public-url"},
		{"public url with a path", func(c *Config) { base(c); c.PublicURL = "https://example.org/chat" }, "no path"},
		{"two secrets", func(c *Config) { base(c); c.OIDCClientSecretFile = "/x" }, "exclusive"},
		{"http issuer", func(c *Config) { base(c); c.OIDCIssuer = "http://idp.example.org" }, "https"},
		{"bad domain", func(c *Config) { base(c); c.AllowedDomains = []string{"user@corp.example"} }, "not a domain"},
		{"bad email", func(c *Config) { base(c); c.AllowedEmails = []string{"corp.example"} }, "not an email"},
		{"allow-list without client id", func(c *Config) { c.AllowedDomains = []string{"corp.example"} }, "need -oidc-client-id"},
	} {
		cfg := testConfig(t)
		tc.mutate(cfg)
		if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
	cfg := testConfig(t)
	base(cfg)
	cfg.OIDCIssuer = "http://127.0.0.1:1"
	cfg.AllowedDomains = []string{"@Corp.Example"}
	if err := cfg.validate(); err != nil {
		t.Fatalf("a valid configuration was refused: %v", err)
	}

	// Flags and their environment twins.
	cfg, err := parseConfig([]string{"-oidc-client-id", "flag-id", "-public-url", "https://chat.example.org"},
		func(k string) string {
			return map[string]string{
				"CHAT_OIDC_CLIENT_ID": "env-id", "CHAT_OIDC_ISSUER": "https://idp.example.org",
				"CHAT_ALLOWED_DOMAINS": "a.example, b.example", "CHAT_ALLOWED_EMAILS": "x@c.example",
				"CHAT_OIDC_PROVIDER_NAME": "Corp SSO",
			}[k]
		})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.OIDCClientID != "flag-id" || cfg.OIDCIssuer != "https://idp.example.org" || cfg.OIDCProviderName != "Corp SSO" ||
		!slices.Equal(cfg.AllowedDomains, []string{"a.example", "b.example"}) || !slices.Equal(cfg.AllowedEmails, []string{"x@c.example"}) {
		t.Fatalf("parsed %+v", cfg)
	}
	if defaultConfig().OIDCIssuer != googleIssuer {
		t.Fatal("the default issuer is not Google")
	}

	// Discovery that fails stops start-up and names the issuer.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	cfg = testConfig(t)
	base(cfg)
	cfg.OIDCIssuer = dead.URL
	if _, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "discovery of "+dead.URL) {
		t.Fatalf("newApp with an unreachable issuer: %v", err)
	}
}

// TestOIDCClientSecretFile reads the secret from a file, and the provider accepts it.
func TestOIDCClientSecretFile(t *testing.T) {
	p := newTestProvider(t)
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(testClientSecret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ts := startOIDCServer(t, p, func(c *Config) { c.OIDCClientSecret = ""; c.OIDCClientSecretFile = path })
	oidcLoginAs(t, ts, p, alice)

	cfg := testConfig(t)
	cfg.OIDCClientID, cfg.PublicURL, cfg.OIDCIssuer = testClientID, "http://127.0.0.1:1", p.issuer
	cfg.OIDCClientSecretFile = filepath.Join(t.TempDir(), "missing")
	if _, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "-oidc-client-secret-file") {
		t.Fatalf("newApp with a missing secret file: %v", err)
	}
}

// TestOIDCLogsNoSecrets runs a login and a refused login with the log captured, and
// checks that no code, token, state or secret appears in it.
func TestOIDCLogsNoSecrets(t *testing.T) {
	p := newTestProvider(t)
	var logBuf lockedBuffer
	var captured []string
	srv := httptest.NewUnstartedServer(http.NotFoundHandler())
	cfg := testConfig(t)
	cfg.PublicURL = "http://" + srv.Listener.Addr().String()
	cfg.OIDCIssuer, cfg.OIDCClientID, cfg.OIDCClientSecret = p.issuer, testClientID, testClientSecret
	app, err := newApp(cfg, slog.New(slog.NewTextHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	p.register(cfg.PublicURL + callbackPath)
	srv.Config.Handler = app.routes()
	srv.Start()
	t.Cleanup(func() { app.shutdown(time.Second); srv.Close() })
	ts := &testServer{URL: srv.URL, App: app, srv: srv}

	c := newJarClient(t)
	cb := beginLogin(t, ts, p, c, "")
	captured = append(captured, cb.Query().Get("code"), cb.Query().Get("state"))
	if res := get(t, c, cb.String()); sessionSet(res) == nil {
		t.Fatal("login failed")
	}
	p.set(func(p *testProvider) { p.signWith = "rogue" })
	c = newJarClient(t)
	cb = beginLogin(t, ts, p, c, "")
	captured = append(captured, cb.Query().Get("code"), cb.Query().Get("state"))
	get(t, c, cb.String())

	logs := logBuf.String()
	if !strings.Contains(logs, "login refused") || !strings.Contains(logs, "reason="+refuseIDToken) {
		t.Fatalf("the refusal was not logged with its reason:\n%s", logs)
	}
	for _, secret := range append(captured, testClientSecret) {
		if secret != "" && strings.Contains(logs, secret) {
			t.Fatalf("the log contains a secret (%.8s...):\n%s", secret, logs)
		}
	}
	if strings.Contains(logs, "eyJ") {
		t.Fatalf("the log contains something like a JWT:\n%s", logs)
	}
}

// lockedBuffer is a log sink safe for the server's concurrent handlers.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestOIDCLoginPage checks the refusal page itself: the provider's name, the message,
// the way back to /login, all escaped.
func TestOIDCLoginPage(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, func(c *Config) {
		c.OIDCProviderName = `Corp <SSO>`
		c.AllowedEmails = []string{"bob@example.org"}
	})
	c := newJarClient(t)
	res := get(t, c, beginLogin(t, ts, p, c, "").String())
	for _, want := range []string{`id="login-oidc"`, `href="/login"`, "Corp &lt;SSO&gt;", "alice@example.org is not allowed"} {
		if !strings.Contains(res.body, want) {
			t.Errorf("refusal page lacks %q:\n%s", want, res.body)
		}
	}
	if res.Header.Get("Cache-Control") != "no-store" || !strings.HasPrefix(res.Header.Get("Content-Type"), "text/html") {
		t.Errorf("refusal page headers: %v", res.Header)
	}
}

// TestOIDCLogoutShowsSignInPage: after logout, /login shows the sign-in button once
// instead of going straight to the provider, which remembers its own session and
// would sign the user back in at once; the button then starts a login as usual.
func TestOIDCLogoutShowsSignInPage(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	c, _ := oidcLoginAs(t, ts, p, alice)
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/logout", nil)
	req.Header.Set("Origin", ts.URL)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %d %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	res := get(t, c, ts.URL+"/login")
	if res.StatusCode != http.StatusOK || !strings.Contains(res.body, `id="login-oidc"`) || strings.Contains(res.body, `id="login-error"`) {
		t.Fatalf("first /login after logout: %d %q, want the sign-in page", res.StatusCode, res.body)
	}
	res = get(t, c, ts.URL+"/login")
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), p.issuer+"/authorize?") {
		t.Fatalf("second /login: %d %q, want 303 to the provider", res.StatusCode, res.Header.Get("Location"))
	}
}

// TestOIDCAllowListLive: the allow-lists are read at each login, so a change to the
// live configuration (an admin's run-time setting) applies to the next login.
func TestOIDCAllowListLive(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	oidcLoginAs(t, ts, p, alice)
	cfg := *ts.App.settings()
	cfg.AllowedDomains = []string{"corp.example"}
	ts.App.cfg.Store(&cfg)
	c := newJarClient(t)
	res := get(t, c, beginLogin(t, ts, p, c, "").String())
	assertRefused(t, ts, c, res, http.StatusForbidden, refuseDomain)
}

// TestOIDCBannedRefused: a globally banned account gets no session, however valid its
// token.
func TestOIDCBannedRefused(t *testing.T) {
	p := newTestProvider(t)
	ts := startOIDCServer(t, p, nil)
	ts.App.bans.add(p.issuer + "|" + alice.Sub)
	c := newJarClient(t)
	res := get(t, c, beginLogin(t, ts, p, c, "").String())
	assertRefused(t, ts, c, res, http.StatusForbidden, refuseBanned)
}

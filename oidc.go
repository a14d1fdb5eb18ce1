package main

// OpenID Connect login (threat v of DESIGN.md): the authorization-code flow with
// state, nonce and PKCE against Google or any other issuer, an ID token verified by
// go-oidc, and the operator's allow-lists, ending in the same sealed session cookie
// the development login issues. Nothing the provider hands over (code, access token,
// ID token) is kept or logged: the server keeps only who signed in.

import (
	"context"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// The login attempt and its cookie.
const (
	// loginCookie is the per-attempt cookie's name over plain HTTP. Under TLS it gets
	// the __Secure- prefix; not __Host-, which would force Path=/, while this cookie is
	// scoped to the callback so that no other request ever carries it.
	loginCookie = "chat_login"
	// callbackPath is the redirect URL's path, and the login cookie's.
	callbackPath = "/auth/callback"
	// loginTTL bounds one attempt: long enough to pick an account and consent, short
	// enough that a stolen cookie is soon worthless.
	loginTTL = 10 * time.Minute
	// loginAD is the additional data the login cookie is sealed with. Session cookies
	// are sealed with the same key under their cookie name, so neither kind of cookie
	// can ever be opened as the other.
	loginAD = "modified-chat login attempt v1"
	// secretBytes is the entropy of state and nonce: 256 bits.
	secretBytes = 32
	// maxReturnPath bounds the return path carried through a login.
	maxReturnPath = 512
	// maxCallbackParam bounds the code and state a callback may carry.
	maxCallbackParam = 4096
	// signedOutCookie marks a browser that has just logged out, for its next visit to
	// /login: that visit shows the sign-in button instead of going to the provider,
	// which remembers its own session and would sign the user straight back in.
	signedOutCookie = "chat_signed_out"
	// signedOutTTL is how long that mark lasts.
	signedOutTTL = 5 * time.Minute
)

// Talking to the provider.
const (
	// discoveryTimeout bounds issuer discovery at start-up: a provider that does not
	// answer fails start-up with a clear error instead of hanging it.
	discoveryTimeout = 15 * time.Second
	// providerTimeout bounds each later request to the provider (token, keys).
	providerTimeout = 10 * time.Second
	// maxExchanges caps token exchanges in flight. Every callback costs an outbound
	// request, so a flood of callbacks must not pile up goroutines and sockets.
	maxExchanges = 64
	// googleIssuer is Google's issuer. Its `hd` claim is the only proof of a Google
	// Workspace domain: anyone can make a Google account with any email address.
	googleIssuer = "https://accounts.google.com"
)

// Reasons a login is refused: the metric label and the log's reason. Protocol
// errors answer 400; policy refusals 403.
const (
	refuseLoginCookie   = "login_cookie"
	refuseState         = "state"
	refuseProviderError = "provider_error"
	refuseNoCode        = "no_code"
	refuseBusy          = "busy"
	refuseExchange      = "exchange"
	refuseIDToken       = "id_token"
	refuseNonce         = "nonce"
	refuseNoEmail       = "no_email"
	refuseUnverified    = "email_unverified"
	refuseHD            = "hd"
	refuseDomain        = "domain"
	refuseEmail         = "email"
	refuseBanned        = "banned"
)

// oidcLogin is the OpenID Connect side of the server, set up once at start-up from a
// discovered provider. It holds no per-user state: everything an attempt needs rides
// in its sealed cookie, so a flood of /login requests costs the server no memory.
type oidcLogin struct {
	issuer   string
	name     string // shown on the login button
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	client   *http.Client
	aead     cipher.AEAD
	secure   bool
	google   bool
	slots    chan struct{}
	now      func() time.Time
	// settings is the live configuration: the allow-lists are read from it at each
	// login, so a change an admin makes at run time applies to the next one.
	settings func() *Config
}

// loginAttempt is what the login cookie holds, sealed: the secrets that tie a callback
// to the browser that started the login.
type loginAttempt struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Return   string `json:"r"`
	Expires  int64  `json:"e"`
}

// idClaims are the ID token claims the policy reads.
type idClaims struct {
	Email         string    `json:"email"`
	EmailVerified claimBool `json:"email_verified"`
	Name          string    `json:"name"`
	HD            string    `json:"hd"`
}

// claimBool reads a boolean claim. Some providers send "true" as a string; anything
// that is neither form fails, rather than counting as false or true by accident.
type claimBool bool

// UnmarshalJSON accepts true, false, "true", "false" and null (false).
func (b *claimBool) UnmarshalJSON(data []byte) error {
	switch string(data) {
	case "true", `"true"`:
		*b = true
	case "false", `"false"`, "null":
		*b = false
	default:
		return fmt.Errorf("not a boolean: %.20s", data)
	}
	return nil
}

// validateOIDC checks the login settings together, so a half-configured login fails
// at start-up rather than at the first user. It is called by Config.validate.
func (c *Config) validateOIDC() []error {
	var errs []error
	if c.OIDCClientID == "" {
		if c.OIDCClientSecret != "" || c.OIDCClientSecretFile != "" || len(c.AllowedDomains) > 0 || len(c.AllowedEmails) > 0 {
			// Without a client id these would be ignored, and the server would come up
			// with the development login while the operator believes it is locked down.
			errs = append(errs, errors.New("-oidc-client-secret, -oidc-client-secret-file, -allowed-domains and -allowed-emails need -oidc-client-id"))
		}
		return errs
	}
	if c.PublicURL == "" {
		errs = append(errs, errors.New("-oidc-client-id needs -public-url: the redirect URL is <public-url>/auth/callback and must match the provider's registration exactly"))
	} else if u, err := url.Parse(c.PublicURL); err == nil && (strings.Trim(u.Path, "/") != "" || u.RawQuery != "" || u.Fragment != "") {
		errs = append(errs, errors.New("-public-url must be scheme://host[:port] with no path: the server's routes are at the root"))
	}
	if c.OIDCClientSecret != "" && c.OIDCClientSecretFile != "" {
		errs = append(errs, errors.New("-oidc-client-secret and -oidc-client-secret-file are exclusive"))
	}
	if err := checkIssuer(c.OIDCIssuer); err != nil {
		errs = append(errs, fmt.Errorf("-oidc-issuer: %w", err))
	}
	for _, d := range c.AllowedDomains {
		if !validDomain(normaliseDomain(d)) {
			errs = append(errs, fmt.Errorf("-allowed-domains %q is not a domain name", d))
		}
	}
	for _, e := range c.AllowedEmails {
		if !validEmail(strings.ToLower(strings.TrimSpace(e))) {
			errs = append(errs, fmt.Errorf("-allowed-emails %q is not an email address", e))
		}
	}
	return errs
}

// checkIssuer accepts an https issuer, or plain http on loopback (a provider on the
// same machine, as in the tests): tokens and keys must not cross a network in clear.
func checkIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil {
		return err
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return errors.New("must be an https URL with a host and no user, query or fragment")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
	}
	return errors.New("must use https (plain http only on loopback)")
}

// isLoopbackHost reports whether a host name or address stays on this machine.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// normaliseDomain lower-cases an allow-listed domain and drops a leading "@".
func normaliseDomain(d string) string {
	return strings.TrimPrefix(strings.ToLower(strings.TrimSpace(d)), "@")
}

// validDomain reports whether d looks like a DNS name: labels of letters, digits and
// dashes, at least two of them. It keeps typos such as "example.org/" or a full email
// address out of the allow-list, where they would silently match nobody.
func validDomain(d string) bool {
	if len(d) == 0 || len(d) > 253 {
		return false
	}
	labels := strings.Split(d, ".")
	if len(labels) < 2 {
		return false
	}
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// validEmail reports whether e is local@domain with a plausible domain.
func validEmail(e string) bool {
	local, domain, ok := strings.Cut(e, "@")
	return ok && local != "" && !strings.ContainsAny(local, " \t") && validDomain(domain)
}

// newOIDCLogin discovers the issuer and prepares the flow. Discovery happens once,
// here, with a timeout: a wrong issuer or an unreachable provider stops start-up with
// an error that says so, instead of failing every user later.
func newOIDCLogin(cfg *Config, aead cipher.AEAD, now func() time.Time, settings func() *Config, log *slog.Logger) (*oidcLogin, error) {
	secret := cfg.OIDCClientSecret
	if cfg.OIDCClientSecretFile != "" {
		s, err := readSecretFile(cfg.OIDCClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("-oidc-client-secret-file: %w", err)
		}
		if s == "" {
			return nil, fmt.Errorf("-oidc-client-secret-file %s is empty", cfg.OIDCClientSecretFile)
		}
		secret = s
	}
	origin, err := normaliseOrigin(cfg.PublicURL)
	if err != nil {
		return nil, fmt.Errorf("-public-url: %w", err)
	}
	client := &http.Client{Timeout: providerTimeout}
	ctx, cancel := context.WithTimeout(context.Background(), discoveryTimeout)
	defer cancel()
	provider, err := oidc.NewProvider(oidc.ClientContext(ctx, client), cfg.OIDCIssuer)
	if err != nil {
		return nil, fmt.Errorf("OpenID Connect discovery of %s failed (check -oidc-issuer and that the provider is reachable): %w", cfg.OIDCIssuer, err)
	}
	var meta struct {
		AuthMethods      []string `json:"token_endpoint_auth_methods_supported"`
		ChallengeMethods []string `json:"code_challenge_methods_supported"`
	}
	if err := provider.Claims(&meta); err != nil {
		return nil, fmt.Errorf("OpenID Connect discovery of %s: %w", cfg.OIDCIssuer, err)
	}
	if !slices.Contains(meta.ChallengeMethods, "S256") {
		log.Warn("the provider does not advertise PKCE S256; sending it anyway", "issuer", cfg.OIDCIssuer)
	}
	endpoint := provider.Endpoint()
	endpoint.AuthStyle = tokenAuthStyle(secret, meta.AuthMethods)

	o := &oidcLogin{
		issuer: cfg.OIDCIssuer,
		name:   providerName(cfg),
		oauth: oauth2.Config{
			ClientID:     cfg.OIDCClientID,
			ClientSecret: secret,
			Endpoint:     endpoint,
			RedirectURL:  origin + callbackPath,
			Scopes:       []string{oidc.ScopeOpenID, "email", "profile"},
		},
		// The verifier checks signature (with the provider's published keys, refusing
		// alg "none"), issuer, audience = our client id, and expiry.
		verifier: provider.Verifier(&oidc.Config{ClientID: cfg.OIDCClientID, Now: now}),
		client:   client,
		aead:     aead,
		secure:   servesHTTPS(cfg),
		google:   strings.TrimSuffix(cfg.OIDCIssuer, "/") == googleIssuer,
		slots:    make(chan struct{}, maxExchanges),
		now:      now,
		settings: settings,
	}
	log.Info("OpenID Connect login", "issuer", o.issuer, "redirect_url", o.oauth.RedirectURL,
		"allowed_domains", len(cfg.AllowedDomains), "allowed_emails", len(cfg.AllowedEmails))
	if len(cfg.AllowedDomains) == 0 && len(cfg.AllowedEmails) == 0 {
		log.Warn("no -allowed-domains or -allowed-emails: ANY account with a verified email at the issuer can sign in", "issuer", o.issuer)
	}
	return o, nil
}

// tokenAuthStyle picks how the client authenticates at the token endpoint from what
// the provider advertises, rather than letting oauth2 guess by trial (which would send
// every failing request twice). A public client (no secret) sends only its id.
func tokenAuthStyle(secret string, methods []string) oauth2.AuthStyle {
	switch {
	case secret == "":
		return oauth2.AuthStyleInParams
	case len(methods) == 0 || slices.Contains(methods, "client_secret_basic"):
		// client_secret_basic is the default when the provider says nothing.
		return oauth2.AuthStyleInHeader
	case slices.Contains(methods, "client_secret_post"):
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleAutoDetect
}

// providerName is the name on the login button: the operator's, else Google's, else
// the issuer's host.
func providerName(cfg *Config) string {
	if cfg.OIDCProviderName != "" {
		return cfg.OIDCProviderName
	}
	if strings.TrimSuffix(cfg.OIDCIssuer, "/") == googleIssuer {
		return "Google"
	}
	if u, err := url.Parse(cfg.OIDCIssuer); err == nil && u.Host != "" {
		return u.Host
	}
	return "your identity provider"
}

// handleLogin is GET /login. Under the development login it shows the form; with
// OpenID Connect it starts a login at once, sending the browser to the provider.
// Someone already signed in goes straight back to where they wanted to be.
func (app *App) handleLogin(w http.ResponseWriter, r *http.Request) {
	if app.oidc == nil {
		app.handleLoginPage(w, r)
		return
	}
	ret := safeReturnPath(r.URL.Query().Get("return"))
	if _, err := app.sessions.fromRequest(r); err == nil {
		http.Redirect(w, r, ret, http.StatusSeeOther)
		return
	}
	if c, err := r.Cookie(signedOutCookie); err == nil && c.Value != "" {
		app.oidc.setSignedOut(w, "", -1)
		app.renderOIDCLogin(w, http.StatusOK, "")
		return
	}
	att := loginAttempt{
		State:    randomToken(),
		Nonce:    randomToken(),
		Verifier: oauth2.GenerateVerifier(),
		Return:   ret,
		Expires:  app.oidc.now().Add(loginTTL).Unix(),
	}
	app.oidc.setAttempt(w, att)
	target := app.oidc.oauth.AuthCodeURL(att.State, oidc.Nonce(att.Nonce), oauth2.S256ChallengeOption(att.Verifier))
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, target, http.StatusSeeOther)
}

// handleCallback is GET /auth/callback, where the provider sends the browser back.
// Every check must pass, in this order, before a session exists: the attempt's cookie,
// state (so the callback belongs to this browser's login), the provider's answer, the
// code exchange with the PKCE verifier (so a stolen code is useless without it), the
// ID token's signature, issuer, audience and expiry, the nonce (so a token cannot be
// replayed into another login), a verified email, and the allow-lists.
func (app *App) handleCallback(w http.ResponseWriter, r *http.Request) {
	o := app.oidc
	// The attempt's cookie is cleared whatever happens: it is good for one callback.
	att, ok := o.takeAttempt(w, r)
	if !ok {
		app.refuseLogin(w, http.StatusBadRequest, refuseLoginCookie,
			"This sign-in expired or was already used. Please sign in again.", nil)
		return
	}
	q := r.URL.Query()
	state := q.Get("state")
	if state == "" || len(state) > maxCallbackParam || subtle.ConstantTimeCompare([]byte(state), []byte(att.State)) != 1 {
		app.refuseLogin(w, http.StatusBadRequest, refuseState,
			"This sign-in did not start in this browser, or it was tampered with. Please sign in again.", nil)
		return
	}
	if e := q.Get("error"); e != "" {
		app.refuseLogin(w, http.StatusBadRequest, refuseProviderError,
			o.name+" did not sign you in. Please try again.", errors.New("provider answered "+logSafe(e)))
		return
	}
	code := q.Get("code")
	if code == "" || len(code) > maxCallbackParam {
		app.refuseLogin(w, http.StatusBadRequest, refuseNoCode, "The sign-in response was incomplete. Please sign in again.", nil)
		return
	}
	select {
	case o.slots <- struct{}{}:
		defer func() { <-o.slots }()
	default:
		app.refuseLogin(w, http.StatusServiceUnavailable, refuseBusy, "The server is busy. Please try again in a moment.", nil)
		return
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(r.Context(), o.client), providerTimeout)
	defer cancel()
	tok, err := o.oauth.Exchange(ctx, code, oauth2.VerifierOption(att.Verifier))
	if err != nil {
		app.refuseLogin(w, http.StatusBadRequest, refuseExchange,
			o.name+" refused to complete this sign-in. Please sign in again.", exchangeError(err))
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		app.refuseLogin(w, http.StatusBadRequest, refuseIDToken, o.name+" sent no identity token.", errors.New("no id_token in the token response"))
		return
	}
	idt, err := o.verifier.Verify(ctx, raw)
	if err != nil {
		app.refuseLogin(w, http.StatusBadRequest, refuseIDToken, "The identity token from "+o.name+" is not valid.", err)
		return
	}
	if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(att.Nonce)) != 1 {
		app.refuseLogin(w, http.StatusBadRequest, refuseNonce, "The identity token does not belong to this sign-in.", nil)
		return
	}
	var claims idClaims
	if err := idt.Claims(&claims); err != nil || idt.Subject == "" {
		if err == nil {
			err = errors.New("empty subject")
		}
		app.refuseLogin(w, http.StatusBadRequest, refuseIDToken, "The identity token from "+o.name+" is not valid.", err)
		return
	}
	if reason, msg := o.policy(claims, o.settings()); reason != "" {
		// Who was kept out helps an operator fix an allow-list; the account's id and
		// domain say it without the full address.
		_, domain, _ := strings.Cut(claims.Email, "@")
		app.refuseLogin(w, http.StatusForbidden, reason, msg, nil,
			"user", o.issuer+"|"+idt.Subject, "email_domain", logSafe(domain), "hd", logSafe(claims.HD))
		return
	}
	// The identity is issuer and subject: an email can change owner, a subject cannot.
	uid := o.issuer + "|" + idt.Subject
	now := app.now() // before the ban check: see sessions.issue
	if app.bans.has(uid) {
		app.refuseLogin(w, http.StatusForbidden, refuseBanned, "This account is banned from this server.", nil, "user", uid)
		return
	}
	id := app.sessions.issue(w, identity{
		ID:    uid,
		Name:  oidcDisplayName(claims.Name, claims.Email),
		Email: strings.ToLower(strings.TrimSpace(claims.Email)),
	}, now)
	app.metrics.auth.WithLabelValues("success", "oidc").Inc()
	app.log.Info("login", "user", id.ID)
	http.Redirect(w, r, att.Return, http.StatusSeeOther)
}

// policy applies email verification and the allow-lists of cfg. It returns the
// refusal's reason and the message for the user, or "" to let the user in. An email
// listed in -allowed-emails is enough; otherwise the domain decides. When the token
// carries `hd`, or the issuer is Google and domains are restricted, the domain is
// `hd` itself: at Google an email suffix alone proves nothing.
func (o *oidcLogin) policy(c idClaims, cfg *Config) (reason, msg string) {
	domains := make(map[string]bool, len(cfg.AllowedDomains))
	for _, d := range cfg.AllowedDomains {
		domains[normaliseDomain(d)] = true
	}
	emails := make(map[string]bool, len(cfg.AllowedEmails))
	for _, e := range cfg.AllowedEmails {
		emails[strings.ToLower(strings.TrimSpace(e))] = true
	}
	email := strings.ToLower(strings.TrimSpace(c.Email))
	at := strings.LastIndexByte(email, '@')
	if at <= 0 || at == len(email)-1 {
		return refuseNoEmail, "Your " + o.name + " account did not share an email address, which this server needs."
	}
	if !c.EmailVerified {
		return refuseUnverified, "Your email address is not verified at " + o.name + ". Verify it there, then sign in again."
	}
	if len(domains) == 0 && len(emails) == 0 {
		return "", ""
	}
	if emails[email] {
		return "", ""
	}
	if len(domains) == 0 {
		return refuseEmail, "The account " + email + " is not allowed on this server."
	}
	if hd := strings.ToLower(strings.TrimSpace(c.HD)); hd != "" || o.google {
		if domains[hd] {
			return "", ""
		}
		return refuseHD, "The account " + email + " does not belong to an organisation allowed on this server."
	}
	if domains[email[at+1:]] {
		return "", ""
	}
	return refuseDomain, "Accounts at " + email[at+1:] + " are not allowed on this server."
}

// refuseLogin ends a failed login: no session, the failure counted and logged with
// its reason and any extra attributes (never a code or a token), and the login page
// with the message.
func (app *App) refuseLogin(w http.ResponseWriter, status int, reason, msg string, cause error, extra ...any) {
	app.metrics.auth.WithLabelValues("failure", reason).Inc()
	attrs := append([]any{"reason", reason, "status", status}, extra...)
	if cause != nil {
		attrs = append(attrs, "err", cause.Error())
	}
	app.log.Warn("login refused", attrs...)
	app.renderOIDCLogin(w, status, msg)
}

// renderOIDCLogin writes the login page of the OpenID Connect login: the sign-in
// button, and the error when there is one.
func (app *App) renderOIDCLogin(w http.ResponseWriter, status int, msg string) {
	app.renderLogin(w, status, msg)
}

// exchangeError describes a failed code exchange for the log: the provider's error
// code and status only. The response body is left out, so nothing it might echo ends
// up in a log.
func exchangeError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		return fmt.Errorf("token endpoint answered %d %s", status, logSafe(re.ErrorCode))
	}
	return err
}

// logSafe shortens a value the provider or the client chose and keeps only harmless
// characters, so it cannot forge log lines or flood them.
func logSafe(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 64 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.' {
			b.WriteRune(c)
		}
	}
	return b.String()
}

// cookieName is the login cookie's name for this server.
func (o *oidcLogin) cookieName() string {
	if o.secure {
		return "__Secure-" + loginCookie
	}
	return loginCookie
}

// setAttempt seals an attempt into the login cookie: encrypted (the verifier and nonce
// are secrets) and authenticated (a changed byte fails to open), HttpOnly, Lax (the
// provider's redirect back is a top-level GET, which carries it), and sent only to the
// callback.
func (o *oidcLogin) setAttempt(w http.ResponseWriter, att loginAttempt) {
	plain, _ := json.Marshal(att)
	nonce := make([]byte, o.aead.NonceSize())
	rand.Read(nonce)
	sealed := o.aead.Seal(nonce, nonce, plain, []byte(loginAD))
	http.SetCookie(w, &http.Cookie{
		Name: o.cookieName(), Value: base64.RawURLEncoding.EncodeToString(sealed),
		Path: callbackPath, HttpOnly: true, Secure: o.secure, SameSite: http.SameSiteLaxMode,
		MaxAge: int(loginTTL / time.Second),
	})
}

// takeAttempt opens the login cookie and clears it in the same response, so one
// attempt serves one callback. It refuses a missing, tampered or expired cookie.
func (o *oidcLogin) takeAttempt(w http.ResponseWriter, r *http.Request) (loginAttempt, bool) {
	http.SetCookie(w, &http.Cookie{
		Name: o.cookieName(), Value: "", Path: callbackPath, HttpOnly: true, Secure: o.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: -1,
	})
	var att loginAttempt
	c, err := r.Cookie(o.cookieName())
	if err != nil {
		return att, false
	}
	sealed, err := base64.RawURLEncoding.DecodeString(c.Value)
	ns := o.aead.NonceSize()
	if err != nil || len(sealed) < ns+o.aead.Overhead() {
		return att, false
	}
	plain, err := o.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(loginAD))
	if err != nil || json.Unmarshal(plain, &att) != nil {
		return att, false
	}
	if att.State == "" || att.Nonce == "" || att.Verifier == "" || o.now().Unix() >= att.Expires {
		return att, false
	}
	att.Return = safeReturnPath(att.Return)
	return att, true
}

// markSignedOut is called by logout, so that the next /login shows the sign-in
// button rather than a silent round trip to the provider that logs the user back in.
func (o *oidcLogin) markSignedOut(w http.ResponseWriter) {
	o.setSignedOut(w, "1", int(signedOutTTL/time.Second))
}

// setSignedOut sets (maxAge > 0) or clears (maxAge < 0) the signed-out mark. It holds
// no secret: forging it only shows someone the sign-in button.
func (o *oidcLogin) setSignedOut(w http.ResponseWriter, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{
		Name: signedOutCookie, Value: value, Path: "/login", HttpOnly: true, Secure: o.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: maxAge,
	})
}

// randomToken is a fresh 256-bit secret, URL-safe.
func randomToken() string {
	b := make([]byte, secretBytes)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// safeReturnPath keeps a return path only if it can only lead back to this server:
// a path starting with exactly one "/" (so not "//host", which a browser reads as
// another server), with no backslash (browsers read "/\host" as "//host"), no control
// characters, no scheme or host, and not a login route (which would loop). Anything
// else becomes "/": there is no open redirect to abuse.
func safeReturnPath(p string) string {
	if p == "" || len(p) > maxReturnPath || p[0] != '/' || strings.HasPrefix(p, "//") ||
		strings.ContainsRune(p, '\\') || !utf8.ValidString(p) {
		return "/"
	}
	for _, c := range p {
		if isControl(c) || isBidiControl(c) || c == ' ' {
			return "/"
		}
	}
	u, err := url.Parse(p)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" {
		return "/"
	}
	for _, loop := range []string{"/login", "/logout", "/auth/"} {
		if strings.HasPrefix(u.Path, loop) {
			return "/"
		}
	}
	return p
}

// oidcDisplayName is the name others see: the `name` claim, else the email's local
// part, cleaned like a chosen name (no control or bidi characters, trimmed, at most
// maxNameChars characters). The provider's data is not trusted to be tidy.
func oidcDisplayName(name, email string) string {
	local, _, _ := strings.Cut(strings.TrimSpace(email), "@")
	for _, candidate := range []string{name, local} {
		var b strings.Builder
		for _, c := range strings.ToValidUTF8(candidate, "") {
			if !isControl(c) && !isBidiControl(c) {
				b.WriteRune(c)
			}
		}
		n := strings.TrimSpace(b.String())
		if r := []rune(n); len(r) > maxNameChars {
			n = strings.TrimSpace(string(r[:maxNameChars]))
		}
		if clean, err := cleanDisplayName(n); err == nil {
			return clean
		}
	}
	return "user"
}

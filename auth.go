package main

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Session constants.
const (
	// sessionCookie is the cookie's name over plain HTTP; under TLS it gets the
	// __Host- prefix, which makes browsers insist on Secure, Path=/ and no Domain.
	sessionCookie = "chat_session"
	// sessionKeySize is the AES-256 key size; the same key seals and authenticates.
	sessionKeySize = 32
	// maxNameChars bounds a display name.
	maxNameChars = 32
	// maxLoginForm bounds the body of the development login form.
	maxLoginForm = 4 << 10
)

// errNoSession is returned when a request carries no usable session.
var errNoSession = errors.New("no valid session")

// sessionPayload is what a session cookie holds, sealed with AES-GCM: the key both
// encrypts it (the email is not readable by whoever sees the cookie) and authenticates
// it (a changed byte fails to open).
type sessionPayload struct {
	SID     string `json:"sid"`
	UID     string `json:"uid"`
	Name    string `json:"name"`
	Email   string `json:"email,omitempty"`
	Dev     bool   `json:"dev,omitempty"`
	Issued  int64  `json:"iat"`
	Expires int64  `json:"exp"`
}

// sessions issues and checks session cookies and remembers revoked ones until they
// would have expired anyway, so a copied cookie stops working at logout.
type sessions struct {
	aead   cipher.AEAD
	secure bool
	ttl    func() time.Duration
	now    func() time.Time

	mu      sync.Mutex
	revoked map[string]time.Time // session id -> its expiry
}

// newSessions builds the session manager from a 32-byte key.
func newSessions(key []byte, secure bool, ttl func() time.Duration, now func() time.Time) (*sessions, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &sessions{aead: aead, secure: secure, ttl: ttl, now: now, revoked: make(map[string]time.Time)}, nil
}

// loadOrCreateKey reads the session key from path (64 hex digits or 32 raw bytes), or,
// when the file does not exist, generates one and writes it with mode 0600 so restarts
// do not log everyone out.
func loadOrCreateKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		key := make([]byte, sessionKeySize)
		rand.Read(key)
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, err
		}
		return key, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) == sessionKeySize {
		return b, nil
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != sessionKeySize {
		return nil, fmt.Errorf("session key file %s must hold %d bytes as hex", path, sessionKeySize)
	}
	return key, nil
}

// cookieName is the session cookie's name for this server.
func (s *sessions) cookieName() string {
	if s.secure {
		return "__Host-" + sessionCookie
	}
	return sessionCookie
}

// issue starts a session for id and sets its cookie.
func (s *sessions) issue(w http.ResponseWriter, id identity) identity {
	now := s.now()
	sid := make([]byte, 16)
	rand.Read(sid)
	p := sessionPayload{
		SID: base64.RawURLEncoding.EncodeToString(sid), UID: id.ID, Name: id.Name,
		Email: id.Email, Dev: id.Dev, Issued: now.Unix(), Expires: now.Add(s.ttl()).Unix(),
	}
	plain, _ := json.Marshal(p)
	nonce := make([]byte, s.aead.NonceSize())
	rand.Read(nonce)
	sealed := s.aead.Seal(nonce, nonce, plain, []byte(s.cookieName()))
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: base64.RawURLEncoding.EncodeToString(sealed),
		Path: "/", HttpOnly: true, Secure: s.secure, SameSite: http.SameSiteLaxMode,
		Expires: time.Unix(p.Expires, 0), MaxAge: int(s.ttl() / time.Second),
	})
	return p.identity()
}

// clear removes the session cookie from the browser.
func (s *sessions) clear(w http.ResponseWriter) {
	http.SetCookie(w, &http.Cookie{
		Name: s.cookieName(), Value: "", Path: "/", HttpOnly: true, Secure: s.secure,
		SameSite: http.SameSiteLaxMode, MaxAge: -1,
	})
}

// identity turns a checked payload into the identity the rest of the server uses.
func (p *sessionPayload) identity() identity {
	return identity{ID: p.UID, Name: p.Name, Email: p.Email, SessionID: p.SID, Dev: p.Dev, Expires: time.Unix(p.Expires, 0)}
}

// fromRequest opens and checks the session cookie: authentic, not expired, not revoked.
func (s *sessions) fromRequest(r *http.Request) (identity, error) {
	c, err := r.Cookie(s.cookieName())
	if err != nil {
		return identity{}, errNoSession
	}
	p, err := s.open(c.Value)
	if err != nil {
		return identity{}, err
	}
	return p.identity(), nil
}

// open authenticates and decrypts a cookie value and checks its lifetime and revocation.
func (s *sessions) open(value string) (*sessionPayload, error) {
	sealed, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(sealed) < s.aead.NonceSize()+s.aead.Overhead() {
		return nil, errNoSession
	}
	ns := s.aead.NonceSize()
	plain, err := s.aead.Open(nil, sealed[:ns], sealed[ns:], []byte(s.cookieName()))
	if err != nil {
		return nil, errNoSession
	}
	var p sessionPayload
	if err := json.Unmarshal(plain, &p); err != nil || p.SID == "" || p.UID == "" {
		return nil, errNoSession
	}
	now := s.now()
	if now.Unix() >= p.Expires || now.Add(time.Minute).Unix() < p.Issued {
		return nil, errNoSession
	}
	if s.isRevoked(p.SID) {
		return nil, errNoSession
	}
	return &p, nil
}

// revoke makes a session id unusable until expires, when the cookie would die anyway.
// DoS hardening: entries past their expiry are swept here, so the map is bounded by
// the number of sessions revoked within one session lifetime.
func (s *sessions) revoke(sid string, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	for k, exp := range s.revoked {
		if now.After(exp) {
			delete(s.revoked, k)
		}
	}
	s.revoked[sid] = expires
}

// isRevoked reports whether sid was logged out.
func (s *sessions) isRevoked(sid string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.revoked[sid]
	return ok
}

// cleanDisplayName validates a name chosen at the development login: 1 to maxNameChars
// printable characters, surrounding space trimmed.
func cleanDisplayName(name string) (string, error) {
	name = strings.TrimSpace(name)
	if name == "" || !utf8.ValidString(name) || utf8.RuneCountInString(name) > maxNameChars {
		return "", fmt.Errorf("choose a name of 1 to %d characters", maxNameChars)
	}
	if !isPrintable(name) {
		return "", errors.New("the name contains control characters")
	}
	return name, nil
}

// handleDevLogin is POST /login/dev: the development login. It trusts the name it is
// given, which is why it exists only when no OpenID Connect client is configured and
// only on loopback unless forced.
func (app *App) handleDevLogin(w http.ResponseWriter, r *http.Request) {
	if !app.sameOrigin(r) {
		app.metrics.auth.WithLabelValues("failure", "origin").Inc()
		http.Error(w, "cross-site login refused", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	name, err := cleanDisplayName(r.PostFormValue("name"))
	if err != nil {
		app.metrics.auth.WithLabelValues("failure", "bad_name").Inc()
		app.renderLogin(w, http.StatusBadRequest, err.Error())
		return
	}
	id := app.sessions.issue(w, identity{ID: "dev:" + strings.ToLower(name), Name: name, Dev: true})
	app.metrics.auth.WithLabelValues("success", "dev").Inc()
	app.log.Info("development login", "user", id.ID)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleLogout is POST /logout: it revokes the session on the server, clears the
// cookie and closes the session's open WebSockets with 1008.
func (app *App) handleLogout(w http.ResponseWriter, r *http.Request) {
	if !app.sameOrigin(r) {
		http.Error(w, "cross-site logout refused", http.StatusForbidden)
		return
	}
	if id, err := app.sessions.fromRequest(r); err == nil {
		app.sessions.revoke(id.SessionID, id.Expires)
		sid := id.SessionID
		app.hub.kicks <- kick{
			match:  func(c *Client) bool { return c.user.SessionID == sid },
			code:   1008,
			reason: "logged out",
		}
		app.log.Info("logout", "user", id.ID)
	}
	app.sessions.clear(w)
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

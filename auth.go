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

	"modified-chat/internal/store"
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
	// IssuedMs is the issue time in milliseconds, precise enough to tell a cookie
	// issued just before a ban from one issued after it. Cookies from before it
	// existed lack it; Issued stands in for them (see issuedMs).
	IssuedMs int64 `json:"iat_ms,omitempty"`
}

// issuedMs is when the session was issued, in Unix milliseconds.
func (p *sessionPayload) issuedMs() int64 {
	if p.IssuedMs != 0 {
		return p.IssuedMs
	}
	return p.Issued * 1000
}

// sessions issues and checks session cookies and remembers revoked ones until they
// would have expired anyway, so a copied cookie stops working at logout. The maps are
// the memory copy of the store's buckets (revocations.go), read on every request
// without touching the disk; writer keeps the store in step.
type sessions struct {
	aead   cipher.AEAD
	secure bool
	ttl    func() time.Duration
	now    func() time.Time

	mu      sync.Mutex
	revoked map[string]int64 // session id -> its cookie's expiry, Unix seconds
	cutoffs map[string]int64 // user id -> Unix ms: sessions issued at or before are dead
	// writer commits revocations and cutoffs (nil: memory only); set once at start-up.
	writer *store.Writer

	// banned reports globally banned users (nil: none); set once at start-up.
	banned func(userID string) bool
	// remote, in cluster mode, keeps a revocation in Redis's control log instead of
	// the store (true: the revoked set was full and the user's cutoff moved instead);
	// set once at start-up.
	remote func(id identity) (cutoff bool, err error)
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
	return &sessions{aead: aead, secure: secure, ttl: ttl, now: now, revoked: map[string]int64{}, cutoffs: map[string]int64{}}, nil
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

// issue starts a session for id, issued at now, and sets its cookie. The caller takes
// now before it checks for a ban, so a ban that lands between the check and this
// call has a cutoff at or after now, and the new session is dead with the others.
func (s *sessions) issue(w http.ResponseWriter, id identity, now time.Time) identity {
	sid := make([]byte, 16)
	rand.Read(sid)
	p := sessionPayload{
		SID: base64.RawURLEncoding.EncodeToString(sid), UID: id.ID, Name: id.Name,
		Email: id.Email, Dev: id.Dev, Issued: now.Unix(), Expires: now.Add(s.ttl()).Unix(),
		IssuedMs: now.UnixMilli(),
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

// open authenticates and decrypts a cookie value and checks its lifetime, its
// revocation and its user's cutoff. The lifetime is the cookie's own, shortened to
// the current session TTL when that has been lowered since the cookie was issued.
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
	p.Expires = min(p.Expires, p.Issued+int64(s.ttl()/time.Second))
	if now.Unix() >= p.Expires || now.Add(time.Minute).Unix() < p.Issued {
		return nil, errNoSession
	}
	if s.dead(p.SID, p.UID, p.issuedMs()) {
		return nil, errNoSession
	}
	if s.banned != nil && s.banned(p.UID) {
		// A global ban revokes every session of the user at once.
		return nil, errNoSession
	}
	return &p, nil
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
// only on loopback unless forced. Cross-site posts (login CSRF) never reach it:
// crossOriginGuard refuses them.
func (app *App) handleDevLogin(w http.ResponseWriter, r *http.Request) {
	now := app.now() // before the ban check: see sessions.issue
	r.Body = http.MaxBytesReader(w, r.Body, maxLoginForm)
	name, err := cleanDisplayName(r.PostFormValue("name"))
	if err != nil {
		app.metrics.auth.WithLabelValues("failure", "bad_name").Inc()
		app.renderLogin(w, http.StatusBadRequest, err.Error())
		return
	}
	uid := "dev:" + strings.ToLower(name)
	if app.bans.has(uid) {
		app.metrics.auth.WithLabelValues("failure", "banned").Inc()
		app.renderLogin(w, http.StatusForbidden, "This account is banned from this server.")
		return
	}
	id := app.sessions.issue(w, identity{ID: uid, Name: name, Dev: true}, now)
	app.metrics.auth.WithLabelValues("success", "dev").Inc()
	app.log.Info("development login", "user", id.ID)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// handleLogout is POST /logout: it revokes the session on the server, clears the
// cookie and closes the session's open WebSockets with 1008. Cross-site posts (a
// forced logout) never reach it: crossOriginGuard refuses them.
func (app *App) handleLogout(w http.ResponseWriter, r *http.Request) {
	if id, err := app.sessions.fromRequest(r); err == nil {
		if err := app.sessions.revoke(id); err != nil {
			app.log.Error("revocation not saved; it holds until restart", "err", err)
		}
		sid := id.SessionID
		app.hub.endConnections(kick{
			match: func(c *Client) bool { return c.user.SessionID == sid },
			close: closeLoggedOut,
		})
		app.log.Info("logout", "user", id.ID)
	}
	app.sessions.clear(w)
	if app.oidc != nil {
		app.oidc.markSignedOut(w)
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

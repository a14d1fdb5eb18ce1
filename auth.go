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
	// revokedFileName is the file in the data directory that keeps revoked session ids
	// across restarts, so a copied cookie stays dead when the server comes back.
	revokedFileName = "revoked.json"
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

	// revokedPath is where revocations are kept across restarts (empty: memory only).
	// persistMu orders the writes, so an older list never replaces a newer one.
	revokedPath string
	persistMu   sync.Mutex

	// banned reports globally banned users (nil: none); set once at start-up.
	banned func(userID string) bool
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
	if s.banned != nil && s.banned(p.UID) {
		// A global ban revokes every session of the user at once.
		return nil, errNoSession
	}
	return &p, nil
}

// revoke makes a session id unusable until expires, when the cookie would die anyway,
// and writes the list to disk so the revocation survives a restart. DoS hardening:
// entries past their expiry are swept here, so the list is bounded by the number of
// sessions revoked within one session lifetime. An error means the revocation holds
// in memory but would not survive a restart.
func (s *sessions) revoke(sid string, expires time.Time) error {
	s.mu.Lock()
	now := s.now()
	for k, exp := range s.revoked {
		if now.After(exp) {
			delete(s.revoked, k)
		}
	}
	s.revoked[sid] = expires
	s.mu.Unlock()
	return s.persistRevoked()
}

// loadRevoked reads the revocations kept at path, dropping those already expired, and
// keeps future ones there. A missing file is an empty list; an unreadable one is an
// error, because forgetting revocations would bring logged-out cookies back to life.
func (s *sessions) loadRevoked(path string) error {
	s.revokedPath = path
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	var kept map[string]int64 // session id -> expiry, Unix seconds
	if err := json.Unmarshal(b, &kept); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	for sid, exp := range kept {
		if t := time.Unix(exp, 0); t.After(now) {
			s.revoked[sid] = t
		}
	}
	return nil
}

// persistRevoked writes the whole revocation list. The snapshot is taken under
// persistMu, so every write holds at least what the previous one did.
func (s *sessions) persistRevoked() error {
	if s.revokedPath == "" {
		return nil
	}
	s.persistMu.Lock()
	defer s.persistMu.Unlock()
	s.mu.Lock()
	kept := make(map[string]int64, len(s.revoked))
	for sid, exp := range s.revoked {
		kept[sid] = exp.Unix()
	}
	s.mu.Unlock()
	b, err := json.Marshal(kept)
	if err != nil {
		return err
	}
	return writeFileAtomic(s.revokedPath, b)
}

// writeFileAtomic replaces path with data through a synced temporary file in the same
// directory and a rename, so a crash leaves the old file or the new one, never half of
// one. Mode 0600: what the server keeps is nobody else's business.
func writeFileAtomic(path string, data []byte) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once the rename has happened
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	// Sync the directory too, so the rename itself survives a power cut.
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
	return nil
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
	uid := "dev:" + strings.ToLower(name)
	if app.bans.has(uid) {
		app.metrics.auth.WithLabelValues("failure", "banned").Inc()
		app.renderLogin(w, http.StatusForbidden, "This account is banned from this server.")
		return
	}
	id := app.sessions.issue(w, identity{ID: uid, Name: name, Dev: true})
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
		if err := app.sessions.revoke(id.SessionID, id.Expires); err != nil {
			app.log.Error("revocation not saved; it holds until restart", "err", err)
		}
		sid := id.SessionID
		app.hub.kicks <- kick{
			match:  func(c *Client) bool { return c.user.SessionID == sid },
			code:   1008,
			reason: "logged out",
		}
		app.log.Info("logout", "user", id.ID)
	}
	app.sessions.clear(w)
	if app.oidc != nil {
		app.oidc.markSignedOut(w)
	}
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}

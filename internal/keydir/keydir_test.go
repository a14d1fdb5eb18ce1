package keydir

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"modified-chat/internal/sigmsg"
	"modified-chat/internal/store"
)

// identity is a test user's root key.
type identity struct {
	user string
	urk  ed25519.PrivateKey
}

// newIdentity makes a root key for user.
func newIdentity(user string) identity {
	_, k, _ := ed25519.GenerateKey(nil)
	return identity{user, k}
}

// device makes a fresh device certified by id's root key.
func (id identity) device(name string) *Upload {
	dik, _, _ := ed25519.GenerateKey(nil)
	up := &Upload{URK: id.urk.Public().(ed25519.PublicKey), Device: name, DIK: dik, Created: 1}
	c := sigmsg.DeviceCert{User: id.user, Device: name, Created: up.Created}
	copy(c.DIK[:], dik)
	up.Cert = ed25519.Sign(id.urk, c.Encode())
	return up
}

// apply commits writes to s, as the hub's writer would.
func apply(t *testing.T, s store.Store, writes []store.Write) {
	t.Helper()
	if err := s.Apply(writes); err != nil {
		t.Fatal(err)
	}
}

// code returns an Error's code ("" for nil).
func code(e *Error) string {
	if e == nil {
		return ""
	}
	return e.Code
}

// TestRegisterRefusals: each invalid upload gets its code and changes nothing.
func TestRegisterRefusals(t *testing.T) {
	d := New(Limits{MaxDevices: 2}, time.Now)
	alice, mallory := newIdentity("alice"), newIdentity("mallory")
	if _, _, _, e := d.Register("alice", alice.device("device-01")); e != nil {
		t.Fatal(e)
	}
	before := d.User("alice")
	forBob := newIdentity("bob").device("device-02")
	certless := alice.device("device-03")
	certless.URK = nil
	cases := []struct {
		name string
		up   *Upload
		want string
	}{
		{"certificate made for another user", func() *Upload { u := forBob; u.URK = alice.urk.Public().(ed25519.PublicKey); return u }(), CodeBadCertificate},
		{"certificate by the wrong root key", func() *Upload {
			u := mallory.device("device-04")
			u.URK = alice.urk.Public().(ed25519.PublicKey)
			return u
		}(), CodeBadCertificate},
		{"another root key", mallory.device("device-05"), CodeURKMismatch},
		{"short device id", alice.device("short"), CodeBadDevice},
		{"bad device id", alice.device("device 06!"), CodeBadDevice},
		{"device id taken with another key", alice.device("device-01"), CodeBadDevice},
		{"short key", func() *Upload { u := alice.device("device-07"); u.DIK = u.DIK[:31]; return u }(), CodeBadDevice},
	}
	for _, tc := range cases {
		if _, w, _, e := d.Register("alice", tc.up); code(e) != tc.want || w != nil {
			t.Errorf("%s: got %v with %d writes, want %s", tc.name, e, len(w), tc.want)
		}
	}
	if d.User("alice") != before {
		t.Fatal("a refused upload changed the record")
	}
	if _, _, _, e := d.Register("carol", certless); code(e) != CodeBadCertificate {
		t.Fatalf("certify without a root key: %v", e)
	}
	if d.User("carol") != nil {
		t.Fatal("a refused upload made a record")
	}
	// The limit on live devices.
	if _, _, _, e := d.Register("alice", alice.device("device-08")); e != nil {
		t.Fatal(e)
	}
	if _, _, _, e := d.Register("alice", alice.device("device-09")); code(e) != CodeTooManyDevices {
		t.Fatalf("third device: %v", e)
	}
}

// TestRegisterAgainIsANoOp: a page re-registers at every load.
func TestRegisterAgainIsANoOp(t *testing.T) {
	d := New(Limits{}, time.Now)
	alice := newIdentity("alice")
	up := alice.device("device-01")
	if _, _, added, e := d.Register("alice", up); e != nil || !added {
		t.Fatal(e)
	}
	for range registerBurst * 2 {
		if _, w, added, e := d.Register("alice", up); e != nil || added || w != nil {
			t.Fatalf("again: %v, added %v, %d writes", e, added, len(w))
		}
	}
}

// TestRateLimit: changes beyond the burst wait for the clock.
func TestRateLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	d := New(Limits{MaxDevices: 100}, func() time.Time { return now })
	alice := newIdentity("alice")
	for i := range registerBurst {
		if _, _, _, e := d.Register("alice", alice.device("device-0"+string(rune('a'+i)))); e != nil {
			t.Fatal(e)
		}
	}
	if _, w, _, e := d.Register("alice", alice.device("device-zz")); code(e) != CodeRateLimited || w != nil {
		t.Fatalf("over the burst: %v", e)
	}
	now = now.Add(registerEvery)
	if _, _, _, e := d.Register("alice", alice.device("device-zz")); e != nil {
		t.Fatalf("after a minute: %v", e)
	}
}

// TestRevokeAndUse: a revoked device is gone from lookups, cannot come back, and
// counters only grow.
func TestRevokeAndUse(t *testing.T) {
	d := New(Limits{}, time.Now)
	alice := newIdentity("alice")
	up := alice.device("device-01")
	d.Register("alice", up)
	if _, e := d.Use("alice", "device-01", 5); e != nil {
		t.Fatal(e)
	}
	for _, n := range []uint64{5, 4, 0} {
		if _, e := d.Use("alice", "device-01", n); code(e) != CodeReplayed {
			t.Fatalf("counter %d after 5: %v", n, e)
		}
	}
	if _, _, e := d.Revoke("alice", "device-02", "alice"); code(e) != CodeBadDevice {
		t.Fatalf("revoke unknown: %v", e)
	}
	if _, _, e := d.Revoke("alice", "device-01", "alice"); e != nil {
		t.Fatal(e)
	}
	if d.Lookup("alice", "device-01") != nil {
		t.Fatal("revoked device still found")
	}
	if _, _, _, e := d.Register("alice", up); code(e) != CodeBadDevice {
		t.Fatalf("revoked device registered again: %v", e)
	}
}

// TestResetAndLoad: a reset revokes every old device under a new root key, and a
// directory loaded from the store is the one that was written, counters included.
func TestResetAndLoad(t *testing.T) {
	s := store.NewMem()
	d := New(Limits{}, time.Now)
	alice := newIdentity("alice")
	_, w, _, _ := d.Register("alice", alice.device("device-01"))
	apply(t, s, w)
	cw, _ := d.Use("alice", "device-01", 9)
	apply(t, s, []store.Write{cw})

	again := newIdentity("alice")
	if _, _, e := d.Reset("alice", alice.device("device-02")); code(e) != CodeURKMismatch {
		t.Fatalf("reset to the same key: %v", e)
	}
	u, w, e := d.Reset("alice", again.device("device-02"))
	if e != nil {
		t.Fatal(e)
	}
	apply(t, s, w)
	if u.Live("device-01") != nil || u.Live("device-02") == nil || string(u.URK) != string(again.urk.Public().(ed25519.PublicKey)) {
		t.Fatalf("after reset: %+v", u)
	}
	l, err := Load(s, Limits{}, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	if got := l.User("alice"); got == nil || len(got.Devices) != 2 || got.Live("device-02") == nil {
		t.Fatalf("loaded %+v", got)
	}
	if _, e := l.Use("alice", "device-01", 9); code(e) != CodeReplayed {
		t.Fatalf("counter lost across a restart: %v", e)
	}
}

// TestRevokedAreBounded: revoking in a loop does not grow a record without bound.
func TestRevokedAreBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	d := New(Limits{}, func() time.Time { return now })
	alice := newIdentity("alice")
	for i := range keepRevoked + 10 {
		name := fmt.Sprintf("device-%02d", i)
		if _, _, _, e := d.Register("alice", alice.device(name)); e != nil {
			t.Fatal(e)
		}
		if _, _, e := d.Revoke("alice", name, "alice"); e != nil {
			t.Fatal(e)
		}
		now = now.Add(2 * registerEvery)
	}
	if n := len(d.User("alice").Devices); n != keepRevoked {
		t.Fatalf("%d devices kept, want %d", n, keepRevoked)
	}
}

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

// applied applies a planned change at once, as the hub does once its writes are
// durable, and passes it on.
func applied(ch *Change, e *Error) (*Change, *Error) {
	if ch != nil {
		ch.Apply()
		ch.Release()
	}
	return ch, e
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
	if _, e := applied(d.Register("alice", alice.device("device-01"))); e != nil {
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
		if ch, e := applied(d.Register("alice", tc.up)); code(e) != tc.want || ch != nil {
			t.Errorf("%s: got %v, change %v, want %s", tc.name, e, ch, tc.want)
		}
	}
	if d.User("alice") != before {
		t.Fatal("a refused upload changed the record")
	}
	if _, e := applied(d.Register("carol", certless)); code(e) != CodeBadCertificate {
		t.Fatalf("certify without a root key: %v", e)
	}
	if d.User("carol") != nil {
		t.Fatal("a refused upload made a record")
	}
	// The limit on live devices.
	if _, e := applied(d.Register("alice", alice.device("device-08"))); e != nil {
		t.Fatal(e)
	}
	if _, e := applied(d.Register("alice", alice.device("device-09"))); code(e) != CodeTooManyDevices {
		t.Fatalf("third device: %v", e)
	}
}

// TestRegisterAgainIsANoOp: a page re-registers at every load.
func TestRegisterAgainIsANoOp(t *testing.T) {
	d := New(Limits{}, time.Now)
	alice := newIdentity("alice")
	up := alice.device("device-01")
	if ch, e := applied(d.Register("alice", up)); e != nil || !ch.Added {
		t.Fatal(e)
	}
	for range registerBurst * 2 {
		if ch, e := applied(d.Register("alice", up)); e != nil || ch.Added || ch.Writes != nil {
			t.Fatalf("again: %v, %+v", e, ch)
		}
	}
}

// TestRateLimit: changes beyond the burst wait for the clock.
func TestRateLimit(t *testing.T) {
	now := time.Unix(1000, 0)
	d := New(Limits{MaxDevices: 100}, func() time.Time { return now })
	alice := newIdentity("alice")
	for i := range registerBurst {
		if _, e := applied(d.Register("alice", alice.device("device-0"+string(rune('a'+i))))); e != nil {
			t.Fatal(e)
		}
	}
	if ch, e := applied(d.Register("alice", alice.device("device-zz"))); code(e) != CodeRateLimited || ch != nil {
		t.Fatalf("over the burst: %v", e)
	}
	now = now.Add(registerEvery)
	if _, e := applied(d.Register("alice", alice.device("device-zz"))); e != nil {
		t.Fatalf("after a minute: %v", e)
	}
}

// TestRevokeAndUse: a revoked device is gone from lookups, cannot come back, and
// counters only grow.
func TestRevokeAndUse(t *testing.T) {
	d := New(Limits{}, time.Now)
	alice := newIdentity("alice")
	up := alice.device("device-01")
	applied(d.Register("alice", up))
	if _, e := d.Use("alice", "device-01", 5); e != nil {
		t.Fatal(e)
	}
	for _, n := range []uint64{5, 4, 0} {
		if _, e := d.Use("alice", "device-01", n); code(e) != CodeReplayed {
			t.Fatalf("counter %d after 5: %v", n, e)
		}
	}
	if _, e := applied(d.Revoke("alice", "device-02", "alice")); code(e) != CodeBadDevice {
		t.Fatalf("revoke unknown: %v", e)
	}
	if _, e := applied(d.Revoke("alice", "device-01", "alice")); e != nil {
		t.Fatal(e)
	}
	if d.Lookup("alice", "device-01") != nil {
		t.Fatal("revoked device still found")
	}
	if _, e := applied(d.Register("alice", up)); code(e) != CodeBadDevice {
		t.Fatalf("revoked device registered again: %v", e)
	}
}

// TestResetAndLoad: a reset revokes every old device under a new root key, and a
// directory loaded from the store is the one that was written, counters included.
func TestResetAndLoad(t *testing.T) {
	s := store.NewMem()
	d := New(Limits{}, time.Now)
	alice := newIdentity("alice")
	ch, _ := applied(d.Register("alice", alice.device("device-01")))
	apply(t, s, ch.Writes)
	cw, _ := d.Use("alice", "device-01", 9)
	apply(t, s, []store.Write{cw})

	again := newIdentity("alice")
	if _, e := applied(d.Reset("alice", alice.device("device-02"))); code(e) != CodeURKMismatch {
		t.Fatalf("reset to the same key: %v", e)
	}
	ch, e := applied(d.Reset("alice", again.device("device-02")))
	if e != nil {
		t.Fatal(e)
	}
	apply(t, s, ch.Writes)
	u := ch.User
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
		if _, e := applied(d.Register("alice", alice.device(name))); e != nil {
			t.Fatal(e)
		}
		if _, e := applied(d.Revoke("alice", name, "alice")); e != nil {
			t.Fatal(e)
		}
		now = now.Add(2 * registerEvery)
	}
	if n := len(d.User("alice").Devices); n != keepRevoked {
		t.Fatalf("%d devices kept, want %d", n, keepRevoked)
	}
}

// TestChangeAppliesOnlyWhenAsked: a planned change is invisible to readers until
// applied, and changes in flight count against MaxUsers, so two first devices in
// flight cannot both pass the limit.
func TestChangeAppliesOnlyWhenAsked(t *testing.T) {
	d := New(Limits{MaxUsers: 1}, time.Now)
	ch, e := d.Register("alice", newIdentity("alice").device("device-01"))
	if e != nil || len(ch.Writes) == 0 {
		t.Fatalf("plan: %v %+v", e, ch)
	}
	if d.User("alice") != nil || d.Lookup("alice", "device-01") != nil {
		t.Fatal("a planned change is visible before it was applied")
	}
	if _, e := d.Register("bob", newIdentity("bob").device("device-01")); code(e) != CodeDirectoryFull {
		t.Fatalf("second user while the first is in flight: %v", e)
	}
	ch.Release() // the store refused it: never applied
	if d.User("alice") != nil {
		t.Fatal("a released change was applied")
	}
	if _, e := applied(d.Register("bob", newIdentity("bob").device("device-01"))); e != nil {
		t.Fatalf("after the refused change left: %v", e)
	}
	if d.Lookup("bob", "device-01") == nil {
		t.Fatal("an applied change is not visible")
	}
}

// TestLinkRequests: requests lapse after linkTTL, a device asking again replaces its
// request, and at most maxLinksPerUser wait.
func TestLinkRequests(t *testing.T) {
	now := time.Unix(1000, 0)
	d := New(Limits{}, func() time.Time { return now })
	alice := newIdentity("alice")
	applied(d.Register("alice", alice.device("device-01")))
	for i := range maxLinksPerUser {
		now = now.Add(registerEvery) // stay within the rate limit
		if _, e := d.RequestLink("alice", alice.device(fmt.Sprintf("new-dev-%02d", i))); e != nil {
			t.Fatal(e)
		}
	}
	if _, e := d.RequestLink("alice", alice.device("new-dev-99")); code(e) != CodeTooManyLinks {
		t.Fatalf("one too many: %v", e)
	}
	if _, e := d.RequestLink("alice", alice.device("new-dev-00")); e != nil || len(d.Links("alice")) != maxLinksPerUser {
		t.Fatalf("asking again: %v, %d waiting", e, len(d.Links("alice")))
	}
	now = now.Add(linkTTL + time.Second)
	if n := len(d.Links("alice")); n != 0 {
		t.Fatalf("%d requests outlived their time", n)
	}
	if _, e := d.RequestLink("bob", alice.device("new-dev-01")); code(e) != CodeBadCertificate {
		t.Fatalf("a user without a root key: %v", e)
	}
}

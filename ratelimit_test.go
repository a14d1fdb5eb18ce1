package main

import (
	"net/http"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand, so limits are tested without sleeping.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

// Now returns the fake time.
func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the fake time forward.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// mustPrefixes parses a trusted-proxy list as the flag would.
func mustPrefixes(t *testing.T, s string) []netip.Prefix {
	t.Helper()
	var p []netip.Prefix
	if err := (prefixListValue{&p}).Set(s); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConnLimiterRefillsAndAbuse checks the buckets refill with time, refusals return a
// retry hint, and only sustained refusals count as abuse.
func TestConnLimiterRefillsAndAbuse(t *testing.T) {
	clock := newFakeClock()
	cfg := defaultConfig()
	cfg.MsgRate, cfg.MsgBurst, cfg.AbuseDrops, cfg.AbuseWindow = 2, 2, 3, 10*time.Second
	l := newConnLimiter(cfg, nil, clock.Now)
	for i := 0; i < 2; i++ {
		if ok, _, _ := l.allow(10); !ok {
			t.Fatalf("message %d refused within burst", i)
		}
	}
	ok, retry, abusive := l.allow(10)
	if ok || retry <= 0 || retry > time.Second || abusive {
		t.Fatalf("over burst: ok %v retry %v abusive %v", ok, retry, abusive)
	}
	clock.Advance(500 * time.Millisecond)
	if ok, _, _ := l.allow(10); !ok {
		t.Fatal("bucket did not refill")
	}
	// Drain again: one drop now (the clock stands still, so no refill).
	if ok, _, _ := l.allow(10); ok {
		t.Fatal("allowed past the burst")
	}
	// Two more drops after more than the window: three drops, but not within 10 s.
	clock.Advance(11 * time.Second)
	l.allow(10)
	l.allow(10) // the refilled burst
	_, _, a1 := l.allow(10)
	_, _, a2 := l.allow(10)
	if a1 || a2 {
		t.Fatal("drops spread over more than the window counted as abuse")
	}
	// A third drop within the window is abuse.
	if _, _, a3 := l.allow(10); !a3 {
		t.Fatal("three drops inside the window not counted as abuse")
	}
}

// TestConnLimiterBytes: the byte bucket refuses a large message even when the message
// bucket has room, and a refusal takes no tokens from the other buckets.
func TestConnLimiterBytes(t *testing.T) {
	clock := newFakeClock()
	cfg := defaultConfig()
	cfg.MsgBurst, cfg.ByteRate, cfg.ByteBurst = 10, 100, 1000
	l := newConnLimiter(cfg, nil, clock.Now)
	if ok, _, _ := l.allow(900); !ok {
		t.Fatal("first 900 bytes refused")
	}
	if ok, retry, _ := l.allow(900); ok || retry < 7*time.Second {
		t.Fatalf("second 900 bytes: ok %v retry %v", ok, retry)
	}
	if tokens := l.msgs.TokensAt(clock.Now()); tokens < 8.99 {
		t.Fatalf("refused message still took a message token: %v left", tokens)
	}
}

// TestAdmissionBoundedTable: rotating addresses cannot grow the per-IP table beyond its
// bound; idle entries are swept and the space reused.
func TestAdmissionBoundedTable(t *testing.T) {
	clock := newFakeClock()
	cfg := defaultConfig()
	cfg.MaxTrackedIPs = 100
	a := newAdmission(func() *Config { return cfg }, clock.Now)
	base := netip.MustParseAddr("10.0.0.0").As4()
	refused := 0
	for i := 0; i < 1000; i++ {
		b := base
		b[2], b[3] = byte(i>>8), byte(i)
		if a.checkHandshake(netip.AddrFrom4(b)) != nil {
			refused++
		}
	}
	if n := a.trackedIPs(); n > cfg.MaxTrackedIPs {
		t.Fatalf("table grew to %d entries", n)
	}
	if refused != 900 {
		t.Fatalf("refused %d new addresses while full, want 900", refused)
	}
	// Once the entries are idle (their bucket refilled), new addresses get in again.
	clock.Advance(time.Hour)
	if r := a.checkHandshake(netip.MustParseAddr("192.0.2.1")); r != nil {
		t.Fatalf("refused after idle entries expired: %+v", r)
	}
	if n := a.trackedIPs(); n != 1 {
		t.Fatalf("sweep left %d entries", n)
	}
}

// TestIPv6CountsPerSlash64: addresses inside one /64 share a handshake bucket.
func TestIPv6CountsPerSlash64(t *testing.T) {
	clock := newFakeClock()
	cfg := defaultConfig()
	cfg.IPHandshakeRate, cfg.IPHandshakeBurst = 0.001, 2
	a := newAdmission(func() *Config { return cfg }, clock.Now)
	if a.checkHandshake(netip.MustParseAddr("2001:db8:1:2::1")) != nil || a.checkHandshake(netip.MustParseAddr("2001:db8:1:2:ffff::9")) != nil {
		t.Fatal("first two refused")
	}
	if r := a.checkHandshake(netip.MustParseAddr("2001:db8:1:2:dead:beef::1")); r == nil || r.status != http.StatusTooManyRequests {
		t.Fatalf("third address in the same /64 not limited: %+v", r)
	}
	if a.checkHandshake(netip.MustParseAddr("2001:db8:1:3::1")) != nil {
		t.Fatal("a different /64 was limited")
	}
	if ipKey(netip.MustParseAddr("::ffff:192.0.2.7")) != netip.MustParsePrefix("192.0.2.7/32") {
		t.Fatal("IPv4-mapped address not counted as IPv4")
	}
}

// TestClientIPTrust: X-Forwarded-For is ignored from untrusted peers and read from
// the right through trusted ones.
func TestClientIPTrust(t *testing.T) {
	req := func(remote string, xff ...string) *http.Request {
		r, _ := http.NewRequest("GET", "/", nil)
		r.RemoteAddr = remote
		for _, x := range xff {
			r.Header.Add("X-Forwarded-For", x)
		}
		return r
	}
	trusted := mustPrefixes(t, "10.0.0.0/8,192.0.2.1")
	cases := []struct {
		r    *http.Request
		tr   bool
		want string
	}{
		{req("203.0.113.5:1234", "1.2.3.4"), true, "203.0.113.5"},
		{req("10.1.1.1:80", "1.2.3.4"), false, "10.1.1.1"},
		{req("10.1.1.1:80", "6.6.6.6, 1.2.3.4"), true, "1.2.3.4"},
		{req("10.1.1.1:80", "6.6.6.6", "1.2.3.4, 192.0.2.1"), true, "1.2.3.4"},
		{req("10.1.1.1:80", "garbage"), true, "10.1.1.1"},
		{req("[::ffff:10.1.1.1]:80", "2001:db8::1"), true, "2001:db8::1"},
	}
	for i, tc := range cases {
		var tr []netip.Prefix
		if tc.tr {
			tr = trusted
		}
		if got := clientIP(tc.r, tr); got.String() != tc.want {
			t.Errorf("case %d: got %s want %s", i, got, tc.want)
		}
	}
}

// TestAdmissionLoginBucketSurvivesSweep: the sweep keeps an address whose login bucket
// has not refilled, even when its handshake bucket has: dropping it would hand a
// throttled client a fresh burst.
func TestAdmissionLoginBucketSurvivesSweep(t *testing.T) {
	clock := newFakeClock()
	cfg := defaultConfig()
	cfg.LoginRate, cfg.LoginBurst = 0.01, 2 // a token every 100 s
	cfg.IPHandshakeRate, cfg.IPHandshakeBurst = 10, 1
	a := newAdmission(func() *Config { return cfg }, clock.Now)
	ip, other := netip.MustParseAddr("203.0.113.1"), netip.MustParseAddr("203.0.113.2")
	for i := 0; i < 2; i++ {
		if ref := a.checkLogin(ip); ref != nil {
			t.Fatalf("login %d within the burst refused: %+v", i, ref)
		}
	}
	ref := a.checkLogin(ip)
	if ref == nil || ref.reason != refuseLoginRate || ref.status != http.StatusTooManyRequests || ref.retryAfter <= 0 {
		t.Fatalf("login beyond the burst: %+v, want login_rate 429 with a wait", ref)
	}
	clock.Advance(sweepEvery + time.Second) // less than one token back
	a.checkHandshake(other)                 // a new address: the table is swept
	if ref := a.checkLogin(ip); ref == nil {
		t.Fatal("the sweep forgot a throttled address: a fresh login burst")
	}
	clock.Advance(200 * time.Second)
	if ref := a.checkLogin(ip); ref != nil {
		t.Fatalf("after the refill: %+v", ref)
	}
}

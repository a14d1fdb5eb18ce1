package cluster

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"modified-chat/internal/cluster/redistest"
)

// kpNode is one node's view of the KeyPackage directory: its own client and sealer.
func kpNode(t *testing.T, rs *redistest.Server, id string) *Ctl {
	t.Helper()
	keys, _ := NewKeys("mc")
	s, err := NewSealer([][]byte{ctlTestKey}, id, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	return NewCtl(newRealClient(t, rs.Addr(), "", ""), keys, s)
}

// newKP is a KeyPackage stand-in (the directory never parses Msg) living until notAfter.
func newKP(notAfter time.Time) KP {
	ref := make([]byte, 32)
	rand.Read(ref)
	return KP{Ref: ref, Msg: []byte(fmt.Sprintf("kp %x", ref[:4])), NotAfter: notAfter.Unix()}
}

// mustUpload uploads kps and fails unless the device then holds want.
func mustUpload(t *testing.T, c *Ctl, user, device string, kps []KP, now time.Time, want int) {
	t.Helper()
	if n, err := c.UploadKPs(context.Background(), user, device, kps, 20, now); err != nil || n != want {
		t.Fatalf("upload of %d: count %d err %v, want %d", len(kps), n, err, want)
	}
}

// takeOne takes from one device and fails on an error.
func takeOne(t *testing.T, c *Ctl, user, device string, now time.Time) Taken {
	t.Helper()
	got, err := c.TakeKPs(context.Background(), []DeviceRef{{user, device}}, now)
	if err != nil || len(got) != 1 {
		t.Fatalf("take: %v (%d answers)", err, len(got))
	}
	return got[0]
}

// wantKnown fails unless err refuses entry i as known.
func wantKnown(t *testing.T, what string, err error, i int) {
	t.Helper()
	var known *KPKnownError
	if !errors.As(err, &known) || known.Index != i {
		t.Errorf("%s: %v, want KPKnownError{Index: %d}", what, err, i)
	}
}

// TestKPTakenOnce: 20 KeyPackages uploaded on node a are taken by 8 goroutines on two
// nodes (two clients) at once: each is handed out exactly once, the counts left are
// 19 down to 0 each once, and then every take finds none. A taken one uploaded again
// is refused, anywhere in its batch, and the batch's new one is not stored either.
// One call also takes for several devices of several users, in order.
func TestKPTakenOnce(t *testing.T) {
	rs := redistest.Start(t)
	a, b := kpNode(t, rs, "a1"), kpNode(t, rs, "b2")
	now := time.Now()
	var kps []KP
	for i := range 20 {
		kps = append(kps, newKP(now.Add(time.Hour+time.Duration(i)*time.Second)))
	}
	mustUpload(t, a, "u{1}", "d1", kps[:10], now, 10)
	mustUpload(t, b, "u{1}", "d1", kps[10:], now, 20)
	if n, err := b.CountKPs(context.Background(), "u{1}", "d1"); err != nil || n != 20 {
		t.Fatalf("count on node b: %d %v, want 20", n, err)
	}

	var mu sync.Mutex
	gotRef, gotLeft := map[string]int{}, map[int]int{}
	var wg sync.WaitGroup
	for g := range 8 {
		c := a
		if g%2 == 1 {
			c = b
		}
		wg.Go(func() {
			for range 21 { // bounded: more than there are
				got, err := c.TakeKPs(context.Background(), []DeviceRef{{"u{1}", "d1"}}, now)
				if err != nil {
					t.Error(err)
					return
				}
				if got[0].Msg == nil {
					return
				}
				mu.Lock()
				gotRef[string(got[0].Ref)]++
				gotLeft[got[0].Left]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(gotRef) != 20 || len(gotLeft) != 20 {
		t.Fatalf("%d distinct KeyPackages and %d distinct counts taken, want 20 and 20", len(gotRef), len(gotLeft))
	}
	for _, kp := range kps {
		if gotRef[string(kp.Ref)] != 1 {
			t.Errorf("KeyPackage %x taken %d times, want once", kp.Ref[:4], gotRef[string(kp.Ref)])
		}
	}
	for left := range 20 {
		if gotLeft[left] != 1 {
			t.Errorf("count left %d seen %d times, want once", left, gotLeft[left])
		}
	}
	fresh := newKP(now.Add(time.Hour))
	_, err := b.UploadKPs(context.Background(), "u{1}", "d1", []KP{fresh, kps[3]}, 20, now)
	wantKnown(t, "a taken KeyPackage uploaded again", err, 1)
	if n, _ := a.CountKPs(context.Background(), "u{1}", "d1"); n != 0 {
		t.Errorf("the refused batch left %d stored, want 0", n)
	}

	// Several devices of several users in one call; the last has none.
	k1, k2, k3 := newKP(now.Add(time.Hour)), newKP(now.Add(time.Hour)), newKP(now.Add(time.Hour))
	mustUpload(t, a, "u{1}", "d2", []KP{k1}, now, 1)
	mustUpload(t, a, "u2", "d1", []KP{k2, k3}, now, 2)
	got, err := b.TakeKPs(context.Background(), []DeviceRef{{"u2", "d1"}, {"u{1}", "d2"}, {"u2", "d9"}}, now)
	if err != nil || len(got) != 3 {
		t.Fatalf("take for three devices: %v %d", err, len(got))
	}
	if first := string(got[0].Ref); (first != string(k2.Ref) && first != string(k3.Ref)) || got[0].Left != 1 ||
		string(got[1].Ref) != string(k1.Ref) || string(got[1].Msg) != string(k1.Msg) || got[1].NotAfter != k1.NotAfter || got[1].Left != 0 ||
		got[2].Msg != nil || got[2].Left != 0 {
		t.Errorf("take for three devices: %+v", got)
	}
}

// TestKPUploadRefused: a batch holding a stored KeyPackage, the same one twice, or
// one used before is refused whole with the index of the first such entry; a batch
// that would take the device past the cap is refused with ErrKPFull; neither stores
// anything. The same ref on another device is that device's own.
func TestKPUploadRefused(t *testing.T) {
	rs := redistest.Start(t)
	c := kpNode(t, rs, "a1")
	ctx, now := context.Background(), time.Now()
	x, y, z := newKP(now.Add(time.Hour)), newKP(now.Add(2*time.Hour)), newKP(now.Add(time.Hour))
	mustUpload(t, c, "u", "d", []KP{x, y}, now, 2)
	_, err := c.UploadKPs(ctx, "u", "d", []KP{z, y}, 20, now)
	wantKnown(t, "a stored KeyPackage again", err, 1)
	_, err = c.UploadKPs(ctx, "u", "d", []KP{z, z}, 20, now)
	wantKnown(t, "the same KeyPackage twice", err, 1)
	if got := takeOne(t, c, "u", "d", now); string(got.Ref) != string(x.Ref) || got.Left != 1 {
		t.Fatalf("take: %+v, want x (the first to expire) with 1 left", got)
	}
	_, err = c.UploadKPs(ctx, "u", "d", []KP{x}, 20, now)
	wantKnown(t, "a used KeyPackage again", err, 0)
	var four []KP
	for range 4 {
		four = append(four, newKP(now.Add(time.Hour)))
	}
	if _, err := c.UploadKPs(ctx, "u", "d", four, 4, now); !errors.Is(err, ErrKPFull) {
		t.Errorf("1 + 4 over a cap of 4: %v, want ErrKPFull", err)
	}
	if n, _ := c.CountKPs(ctx, "u", "d"); n != 1 {
		t.Errorf("after the refusals the device holds %d, want 1", n)
	}
	if n, err := c.UploadKPs(ctx, "u", "d", four[:3], 4, now); err != nil || n != 4 {
		t.Errorf("1 + 3 under a cap of 4: %d %v", n, err)
	}
	mustUpload(t, c, "u", "e", []KP{x}, now, 1)
	if _, err := c.UploadKPs(ctx, "u", "", []KP{z}, 20, now); !errors.Is(err, ErrBadDevice) {
		t.Errorf("an empty device: %v", err)
	}
}

// TestKPExpired: an expired KeyPackage is never handed out (nor counted as forged);
// a used ref is forgotten once long expired, so the keys stay bounded, and each key
// expires by itself after its last NotAfter.
func TestKPExpired(t *testing.T) {
	rs := redistest.Start(t)
	c := kpNode(t, rs, "a1")
	ctx, now := context.Background(), time.Now()
	soon, later, last := newKP(now.Add(10*time.Second)), newKP(now.Add(100*time.Second)), newKP(now.Add(1000*time.Second))
	mustUpload(t, c, "u", "d", []KP{soon, later, last}, now, 3)
	bad, _ := c.Dropped()
	if got := takeOne(t, c, "u", "d", now.Add(50*time.Second)); string(got.Ref) != string(later.Ref) || got.Left != 1 {
		t.Fatalf("take after the first expired: %+v, want the second with 1 left", got)
	}
	if got := takeOne(t, c, "u", "d", now.Add(2000*time.Second)); got.Msg != nil || got.Left != 0 {
		t.Fatalf("take after all expired: %+v, want none", got)
	}
	if now2, _ := c.Dropped(); now2 != bad {
		t.Errorf("expired entries counted as forged: %d", now2-bad)
	}
	stored, _ := c.keys.DeviceKPs("u", "d")
	used, _ := c.keys.DeviceKPUsed("u", "d")
	raw := c.client
	if n, _ := raw.Do(ctx, raw.B().Zcard().Key(used).Build()).AsInt64(); n != 1 {
		t.Fatalf("used refs: %d, want 1", n)
	}
	ttl, err := raw.Do(ctx, raw.B().Ttl().Key(used).Build()).AsInt64()
	if want := int64(100 + kpGrace/time.Second); err != nil || ttl < want-5 || ttl > want+2 {
		t.Errorf("the used refs expire in %d s (%v), want about %d", ttl, err, want)
	}
	// Long past its NotAfter, the used ref is dropped on the next call.
	mustUpload(t, c, "u", "d", []KP{newKP(now.Add(kpGrace + time.Hour))}, now.Add(100*time.Second+kpGrace+time.Second), 1)
	if n, _ := raw.Do(ctx, raw.B().Exists().Key(used).Build()).AsInt64(); n != 0 {
		t.Errorf("the used refs long expired are still kept")
	}
	if n, _ := raw.Do(ctx, raw.B().Zcard().Key(stored).Build()).AsInt64(); n != 1 {
		t.Errorf("stored: %d, want 1", n)
	}
}

// TestKPForgedNeverReturned: entries a rogue client with raw access writes into a
// device's key are never handed out, each counted as forged exactly once: one with a
// bad seal, another device's genuine entry copied in, one without a ref, a taken
// entry put back (a replay), and an expired one rescored to look live. The device's
// genuine entry is still handed out behind them, and the other device keeps its own.
func TestKPForgedNeverReturned(t *testing.T) {
	rs := redistest.Start(t)
	c := kpNode(t, rs, "a1")
	ctx, now := context.Background(), time.Now()
	raw := newRealClient(t, rs.Addr(), "", "")
	d1, _ := c.keys.DeviceKPs("u", "d1")
	d2, _ := c.keys.DeviceKPs("u", "d2")
	members := func(key string) []string {
		m, err := raw.Do(ctx, raw.B().Zrange().Key(key).Min("0").Max("-1").Build()).AsStrSlice()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	zadd := func(key string, at time.Time, member string) {
		if err := raw.Do(ctx, raw.B().Zadd().Key(key).ScoreMember().ScoreMember(float64(at.Unix()), member).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	forged := func(what string, want uint64, f func()) {
		t.Helper()
		bad, _ := c.Dropped()
		f()
		if now, _ := c.Dropped(); now-bad != want {
			t.Errorf("%s: %d counted as forged, want %d", what, now-bad, want)
		}
	}

	other := newKP(now.Add(500 * time.Second))
	mustUpload(t, c, "u", "d2", []KP{other}, now, 1)
	genuine := newKP(now.Add(1000 * time.Second))
	mustUpload(t, c, "u", "d1", []KP{genuine}, now, 1)
	zadd(d1, now.Add(5*time.Second), "zzzz")
	fake := newKP(now.Add(10 * time.Second))
	zadd(d1, now.Add(10*time.Second), fmt.Sprintf("%x mc1 %s a1 99 1 AAAAAAAAAAAAAAAAAAAAAA %x %d forged", fake.Ref, keyID(ctlTestKey), fake.Ref, fake.NotAfter))
	zadd(d1, now.Add(20*time.Second), members(d2)[0])
	forged("a bad seal, another device's entry, no ref", 3, func() {
		if got := takeOne(t, c, "u", "d1", now); string(got.Ref) != string(genuine.Ref) || string(got.Msg) != string(genuine.Msg) || got.Left != 0 {
			t.Errorf("take behind the forged entries: %+v, want the genuine one", got)
		}
	})
	if got := takeOne(t, c, "u", "d2", now); string(got.Ref) != string(other.Ref) {
		t.Errorf("the other device's own entry: %+v", got)
	}

	replayed := newKP(now.Add(600 * time.Second))
	mustUpload(t, c, "u", "d1", []KP{replayed}, now, 1)
	copyOf := members(d1)[0]
	if got := takeOne(t, c, "u", "d1", now); string(got.Ref) != string(replayed.Ref) {
		t.Fatalf("take: %+v", got)
	}
	zadd(d1, now.Add(600*time.Second), copyOf)
	forged("a taken entry put back", 1, func() {
		if got := takeOne(t, c, "u", "d1", now); got.Msg != nil {
			t.Errorf("a taken entry put back was handed out again: %+v", got)
		}
	})

	stale := newKP(now.Add(40 * time.Second))
	mustUpload(t, c, "u", "d1", []KP{stale}, now, 1)
	zadd(d1, now.Add(700*time.Second), members(d1)[0])
	forged("an expired entry rescored", 1, func() {
		if got := takeOne(t, c, "u", "d1", now.Add(60*time.Second)); got.Msg != nil {
			t.Errorf("an expired entry rescored was handed out: %+v", got)
		}
	})
}

// kpACLCheck runs the directory as the restricted app user (acl_test.go) and returns
// the device keys it must have written.
func kpACLCheck(t *testing.T, ctx context.Context, app rueidis.Client, ctl *Ctl, keys Keys, users []string) []string {
	t.Helper()
	const device = "d{1}*"
	now := time.Now()
	var want []string
	for _, u := range users {
		mustUpload(t, ctl, u, device, []KP{newKP(now.Add(time.Hour)), newKP(now.Add(time.Hour))}, now, 2)
		if got, err := ctl.TakeKPs(ctx, []DeviceRef{{u, device}}, now); err != nil || got[0].Msg == nil {
			t.Fatalf("take as the app user: %+v %v", got, err)
		}
		if n, err := ctl.CountKPs(ctx, u, device); err != nil || n != 1 {
			t.Fatalf("count as the app user: %d %v", n, err)
		}
		if _, err := ctl.KPLow(ctx, u, device, 1); err != nil {
			t.Fatalf("kp_low as the app user: %v", err)
		}
		stored, _ := keys.DeviceKPs(u, device)
		used, _ := keys.DeviceKPUsed(u, device)
		if strings.Contains(stored+used, "{1}") {
			t.Errorf("device key %q holds the raw device id", stored)
		}
		want = append(want, stored, used)
	}
	return want
}

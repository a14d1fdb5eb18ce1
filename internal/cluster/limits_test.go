package cluster

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
)

// testKeys names limit keys plainly; the real key builder is tested on its own.
type testKeys struct{}

func (testKeys) UserRate(uid string) (string, error)  { return "t:{u:" + uid + "}:rate", nil }
func (testKeys) UserConns(uid string) (string, error) { return "t:{u:" + uid + "}:conns", nil }

// newMini starts a miniredis with its clock fixed at start and a rueidis client on it.
func newMini(t *testing.T, start time.Time) (*miniredis.Miniredis, rueidis.Client) {
	t.Helper()
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mr.Close)
	mr.SetTime(start)
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{mr.Addr()}, DisableCache: true, DisableRetry: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); waitRedialsDone(t) })
	return mr, c
}

// waitRedialsDone waits (bounded) until rueidis's delayed redials have ended: a client
// that lost its server sleeps up to a second before its next dial, even once closed,
// and goleak would take that sleeper for a leak.
func waitRedialsDone(t *testing.T) {
	buf := make([]byte, 1<<20)
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !strings.Contains(string(buf[:runtime.Stack(buf, true)]), "rueidis.(*call).DelayDo") {
			return
		}
	}
	t.Error("rueidis redial still sleeping 3s after Close")
}

// TestGCRABudget spends a user's budget from two "nodes" (two Limits over the same
// Redis): the burst passes, the next message is refused with the exact wait, and one
// interval later exactly one more passes. The budget is the user's, not the node's.
func TestGCRABudget(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	mr, c := newMini(t, start)
	a, _ := NewLimits(c, testKeys{}, "n1")
	b, _ := NewLimits(c, testKeys{}, "n2")
	ctx := context.Background()
	const rate, burst = 2.0, 4 // one message every 500 ms
	for i := range burst {
		l := a
		if i%2 == 1 {
			l = b
		}
		ok, _, err := l.AllowMessage(ctx, "u1", rate, burst)
		if err != nil || !ok {
			t.Fatalf("message %d: ok=%v err=%v, want allowed", i, ok, err)
		}
	}
	ok, wait, err := b.AllowMessage(ctx, "u1", rate, burst)
	if err != nil || ok || wait != 500*time.Millisecond {
		t.Fatalf("over budget: ok=%v wait=%v err=%v, want refused with 500ms", ok, wait, err)
	}
	// A refusal spends nothing: after 499 ms still refused, at 500 ms one passes.
	mr.SetTime(start.Add(499 * time.Millisecond))
	if ok, wait, _ := a.AllowMessage(ctx, "u1", rate, burst); ok || wait != time.Millisecond {
		t.Fatalf("at 499ms: ok=%v wait=%v, want refused with 1ms", ok, wait)
	}
	mr.SetTime(start.Add(500 * time.Millisecond))
	if ok, _, _ := a.AllowMessage(ctx, "u1", rate, burst); !ok {
		t.Fatal("at 500ms: refused, want one more message")
	}
	if ok, _, _ := b.AllowMessage(ctx, "u1", rate, burst); ok {
		t.Fatal("at 500ms: a second message passed")
	}
	// Another user has a budget of their own.
	if ok, _, _ := b.AllowMessage(ctx, "u2", rate, burst); !ok {
		t.Fatal("another user was refused")
	}
	// Idle for long: the budget refills to the burst, not beyond.
	mr.SetTime(start.Add(time.Hour))
	n := 0
	for range 2 * burst {
		if ok, _, _ := a.AllowMessage(ctx, "u1", rate, burst); ok {
			n++
		}
	}
	if n != burst {
		t.Fatalf("after an hour idle %d passed, want the burst %d", n, burst)
	}
}

// TestGCRARedisDown: with Redis gone the check returns an error (the caller falls back
// to its local bucket) quickly, not after a long hang.
func TestGCRARedisDown(t *testing.T) {
	mr, c := newMini(t, time.Unix(1_800_000_000, 0))
	l, _ := NewLimits(c, testKeys{}, "n1")
	mr.Close()
	t0 := time.Now()
	if _, _, err := l.AllowMessage(context.Background(), "u1", 1, 1); err == nil {
		t.Fatal("no error with Redis down")
	}
	if d := time.Since(t0); d > 2*limitTimeout {
		t.Fatalf("took %v, want at most %v", d, 2*limitTimeout)
	}
}

// TestConnSlots takes a user's cap of slots on two nodes, is refused the next with the
// wait until the earliest lease ends, frees one by Release, and checks that a node that
// stops renewing (killed) loses its slots after the lease while a renewing one keeps
// them.
func TestConnSlots(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	mr, c := newMini(t, start)
	n1, _ := NewLimits(c, testKeys{}, "n1")
	n2, _ := NewLimits(c, testKeys{}, "n2")
	ctx := context.Background()
	const cap = 4
	var slots1 []*Slot
	for i := range cap {
		l := n1
		if i >= 2 {
			l = n2
		}
		s, _, err := l.TakeSlot(ctx, "u1", cap)
		if err != nil || s == nil {
			t.Fatalf("slot %d: %v %v, want taken", i, s, err)
		}
		if l == n1 {
			slots1 = append(slots1, s)
		}
	}
	s, wait, err := n2.TakeSlot(ctx, "u1", cap)
	if err != nil || s != nil || wait != SlotLease {
		t.Fatalf("slot over the cap: %v wait=%v err=%v, want refused with %v", s, wait, err, SlotLease)
	}
	// Release frees a slot at once, for any node.
	slots1[0].Release()
	slots1[0].Release()
	if s, _, _ := n2.TakeSlot(ctx, "u1", cap); s == nil {
		t.Fatal("refused after a release")
	}
	if got := n1.Held() + n2.Held(); got != cap {
		t.Fatalf("held %d, want %d", got, cap)
	}
	// n1 is killed (stops renewing), n2 renews; just before the lease ends nothing is
	// free, just after n1's one remaining slot is, and n2's three are still held.
	mr.SetTime(start.Add(SlotRenewEvery))
	if err := n2.Renew(ctx); err != nil {
		t.Fatal(err)
	}
	mr.SetTime(start.Add(SlotLease - time.Millisecond))
	if s, _, _ := n2.TakeSlot(ctx, "u1", cap); s != nil {
		t.Fatal("a slot was free before the killed node's lease ended")
	}
	mr.SetTime(start.Add(SlotLease))
	if s, _, _ := n2.TakeSlot(ctx, "u1", cap); s == nil {
		t.Fatal("the killed node's slot did not free itself after the lease")
	}
	if s, _, _ := n2.TakeSlot(ctx, "u1", cap); s != nil {
		t.Fatal("more than the cap after the killed node's slot expired")
	}
}

package cluster

import (
	"context"
	"errors"
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
)

// TestStalledRedisReadsBounded: with Redis stopped (SIGSTOP: the connection open,
// nothing answered), the reads the hub's tasks make with context.Background() (an
// open_dm's Limits.Connected, `audit`'s ReadAudit) still end with a deadline error
// within their own bound (limitTimeout, ctlTimeout), not when the client gives up on
// the connection, so a stuck Redis cannot hold their goroutines; resumed, they answer
// again.
func TestStalledRedisReadsBounded(t *testing.T) {
	rs := redistest.Start(t)
	keys, _ := NewKeys("mc")
	s, err := NewSealer([][]byte{ctlTestKey}, "a1", time.Now)
	if err != nil {
		t.Fatal(err)
	}
	c := newRealClient(t, rs.Addr(), "", "")
	ctl := NewCtl(c, keys, s)
	limits, err := NewLimits(c, keys, "a1")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := ctl.AppendAudit(ctx, []byte(`{"action":"ban"}`)); err != nil {
		t.Fatal(err)
	}
	if seen, err := limits.Connected(ctx, "u1", time.Now()); err != nil || seen {
		t.Fatalf("Connected before the stall: %v %v", seen, err)
	}

	rs.Pause()
	t.Cleanup(rs.Resume) // before the client closes
	bounded := func(what string, bound time.Duration, call func() error) {
		t.Helper()
		t0 := time.Now()
		err := call()
		took := time.Since(t0)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s on a stalled Redis: %v after %v, want a deadline error", what, err, took)
		}
		if took < bound || took > bound+time.Second {
			t.Errorf("%s on a stalled Redis took %v, want %v to %v", what, took, bound, bound+time.Second)
		}
	}
	bounded("Connected", limitTimeout, func() error { _, err := limits.Connected(ctx, "u1", time.Now()); return err })
	bounded("ReadAudit", ctlTimeout, func() error { _, err := ctl.ReadAudit(ctx, 10); return err })

	rs.Resume()
	if got, err := ctl.ReadAudit(ctx, 10); err != nil || len(got) != 1 {
		t.Fatalf("ReadAudit once resumed: %d entries, %v", len(got), err)
	}
}

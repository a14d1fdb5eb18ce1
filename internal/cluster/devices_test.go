package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"testing"
	"time"
)

// TestRecordRevisions: two nodes change one user's record from the same revision; the
// second is refused with ErrRecordStale and wrote nothing (neither the record nor a
// log entry), and a change from the new revision goes through. Both nodes' feeds apply
// exactly the written entries, revisions 1 and 2.
func TestRecordRevisions(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", true)
	b := newCtlNode(t, c, "b2", true)
	ctx := context.Background()
	if _, err := a.ctl.PutRecord(ctx, OpDevices, "u{1}", json.RawMessage(`{"user":"u{1}","n":1}`), 0); err != nil {
		t.Fatal(err)
	}
	top, _ := b.ctl.top(ctx)
	if _, err := b.ctl.PutRecord(ctx, OpDevices, "u{1}", json.RawMessage(`{"user":"u{1}","n":2}`), 0); !errors.Is(err, ErrRecordStale) {
		t.Fatalf("a change from revision 0 after revision 1: %v, want ErrRecordStale", err)
	}
	if now, _ := b.ctl.top(ctx); now != top {
		t.Fatalf("the refused change appended %s to the log", now)
	}
	if _, err := b.ctl.PutRecord(ctx, OpDevices, "u{1}", json.RawMessage(`{"user":"u{1}","n":3}`), 1); err != nil {
		t.Fatal(err)
	}
	for _, n := range []*ctlNode{a, b} {
		for _, rev := range []uint64{1, 2} {
			if e := n.next(t, 2*time.Second); e.Op != OpDevices || e.Rev != rev {
				t.Fatalf("applied %+v, want devices revision %d", e, rev)
			}
		}
	}
	es, err := a.ctl.LoadRecords(ctx, OpDevices, slog.New(slog.DiscardHandler), func(CtlEntry) bool { return true })
	if err != nil || len(es) != 1 || es["u{1}"].Rev != 2 || string(es["u{1}"].Value) != `{"user":"u{1}","n":3}` {
		t.Fatalf("stored records %+v (%v), want revision 2 with n 3", es, err)
	}
}

// TestUseCounter: a device's counter is accepted once and only upwards, for any node
// (the check is in Redis): equal and lower counters are replays, another device or
// user has its own.
func TestUseCounter(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", false)
	b := newCtlNode(t, c, "b2", false)
	ctx := context.Background()
	for i, step := range []struct {
		n     *ctlNode
		user  string
		dev   string
		count uint64
		fresh bool
	}{
		{a, "u", "d1", 5, true}, {b, "u", "d1", 5, false}, {b, "u", "d1", 4, false},
		{b, "u", "d1", 6, true}, {a, "u", "d1", 6, false}, {a, "u", "d2", 1, true},
		{b, "v", "d1", 1, true}, {a, "u", "d1", 1<<53 - 1, true}, {b, "u", "d1", 1<<53 - 1, false},
	} {
		fresh, err := step.n.ctl.UseCounter(ctx, step.user, step.dev, step.count)
		if err != nil || fresh != step.fresh {
			t.Fatalf("step %d: fresh=%v err=%v, want %v", i, fresh, err, step.fresh)
		}
	}
}

// TestReadRecord: the current record is read back checked; a missing one is not
// found; a genuine record copied under another user is not found and is counted.
func TestReadRecord(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", false)
	ctx := context.Background()
	if _, err := a.ctl.PutRecord(ctx, OpDMPrefs, "u1", json.RawMessage(`{"blocked":["x"]}`), 0); err != nil {
		t.Fatal(err)
	}
	if e, ok, err := a.ctl.ReadRecord(ctx, OpDMPrefs, "u1"); err != nil || !ok || e.Rev != 1 || e.User != "u1" {
		t.Fatalf("read %+v ok=%v err=%v", e, ok, err)
	}
	if _, ok, err := a.ctl.ReadRecord(ctx, OpDevices, "u1"); err != nil || ok {
		t.Fatalf("a devices record that was never written: ok=%v err=%v", ok, err)
	}
	raw, _ := c.Do(ctx, c.B().Hget().Key(a.ctl.keys.DMPrefs()).Field("u1").Build()).ToString()
	if err := c.Do(ctx, c.B().Hset().Key(a.ctl.keys.DMPrefs()).FieldValue().FieldValue("u2", raw).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	bad, _ := a.ctl.Dropped()
	if _, ok, err := a.ctl.ReadRecord(ctx, OpDMPrefs, "u2"); err != nil || ok {
		t.Fatalf("u1's record filed under u2: ok=%v err=%v", ok, err)
	}
	if now, _ := a.ctl.Dropped(); now != bad+1 {
		t.Fatalf("misfiled record counted %d, want 1", now-bad)
	}
}

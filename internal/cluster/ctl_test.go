package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/rueidis"
)

// ctlNode is one node's side of the control log in a test: its writer, its feed and
// the entries the feed applied.
type ctlNode struct {
	ctl     *Ctl
	feed    *CtlFeed
	applied chan CtlEntry
	stop    chan struct{}
	done    chan struct{}
}

// ctlTestKey is the cluster key every test node shares.
var ctlTestKey = bytes.Repeat([]byte{7}, ClusterKeySize)

// newCtlNode makes node id's control log over c and starts its feed from the log's
// current top; subscribe false leaves only the position check.
func newCtlNode(t *testing.T, c rueidis.Client, id string, subscribe bool) *ctlNode {
	t.Helper()
	keys, _ := NewKeys("mc")
	s, err := NewSealer([][]byte{ctlTestKey}, id, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	n := &ctlNode{ctl: NewCtl(c, keys, s), applied: make(chan CtlEntry, 64), stop: make(chan struct{}), done: make(chan struct{})}
	st, err := n.ctl.Load(context.Background(), time.Now(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	n.feed = n.ctl.NewCtlFeed(st.Top, time.Now, slog.New(slog.DiscardHandler), func(_, _ string, e CtlEntry) { n.applied <- e })
	n.feed.subscribe = subscribe
	go func() { defer close(n.done); n.feed.Run(n.stop) }()
	t.Cleanup(func() { close(n.stop); <-n.done })
	return n
}

// next waits for the next applied entry, at most within.
func (n *ctlNode) next(t *testing.T, within time.Duration) CtlEntry {
	t.Helper()
	select {
	case e := <-n.applied:
		return e
	case <-time.After(within):
		t.Fatalf("no control entry applied within %v", within)
		return CtlEntry{}
	}
}

// none checks that nothing more is applied for a while (two position checks).
func (n *ctlNode) none(t *testing.T) {
	t.Helper()
	select {
	case e := <-n.applied:
		t.Fatalf("applied %+v, want nothing", e)
	case <-time.After(2*CtlPollEvery + 200*time.Millisecond):
	}
}

// TestCtlReachesEveryNode: a ban, a role, settings and a logout written by node a are
// applied by a's and b's feeds in log order, and the state a new node loads holds them.
func TestCtlReachesEveryNode(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", true)
	b := newCtlNode(t, c, "b2", true)
	ctx := context.Background()
	now := time.Now()
	if _, err := a.ctl.Ban(ctx, "x{y}*z", json.RawMessage(`{"by":"admin"}`), now); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ctl.SetRole(ctx, "u2", "moderator"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ctl.SetSettings(ctx, json.RawMessage(`{"motd":"hi"}`)); err != nil {
		t.Fatal(err)
	}
	if _, cut, err := a.ctl.Revoke(ctx, "u3", "sid3", now.Add(time.Hour), now); err != nil || cut {
		t.Fatalf("revoke: cutoff=%v err=%v", cut, err)
	}
	want := []string{OpBan, OpRole, OpSettings, OpRevoke}
	for _, n := range []*ctlNode{a, b} {
		for _, op := range want {
			// Generous bound: the wake-up normally makes this milliseconds.
			if e := n.next(t, 3*time.Second); e.Op != op {
				t.Fatalf("applied %q, want %q (log order)", e.Op, op)
			}
		}
	}
	st, err := a.ctl.Load(ctx, time.Now(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Bans["x{y}*z"]; !ok || st.Cutoffs["x{y}*z"] != now.UnixMilli() || st.Grants["u2"] != "moderator" ||
		string(st.Settings) != `{"motd":"hi"}` || st.Revoked["sid3"] != now.Add(time.Hour).Unix() {
		t.Fatalf("loaded state %+v", st)
	}
	if _, err := a.ctl.Unban(ctx, "x{y}*z"); err != nil {
		t.Fatal(err)
	}
	if e := b.next(t, 3*time.Second); e.Op != OpUnban || e.User != "x{y}*z" {
		t.Fatalf("applied %+v, want the unban", e)
	}
	if st, _ := a.ctl.Load(ctx, time.Now(), slog.New(slog.DiscardHandler)); len(st.Bans) != 0 || st.Cutoffs["x{y}*z"] == 0 {
		t.Fatalf("after unban: bans %v cutoffs %v, want no ban and the cutoff kept", st.Bans, st.Cutoffs)
	}
}

// TestCtlPositionCheck: with no subscription at all (PUB/SUB silently dead), an entry
// is still applied within about CtlPollEvery.
func TestCtlPositionCheck(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", true)
	b := newCtlNode(t, c, "b2", false)
	// A first entry, applied by the feed's first read or its first position check,
	// makes sure the feed is past its start-up read before the one that is timed.
	if _, err := a.ctl.SetRole(context.Background(), "u1", "user"); err != nil {
		t.Fatal(err)
	}
	b.next(t, 3*CtlPollEvery)
	t0 := time.Now()
	if _, err := a.ctl.SetRole(context.Background(), "u2", "admin"); err != nil {
		t.Fatal(err)
	}
	if e := b.next(t, CtlPollEvery+500*time.Millisecond); e.Op != OpRole {
		t.Fatalf("applied %+v", e)
	}
	t.Logf("applied without PUB/SUB after %v", time.Since(t0))
}

// TestCtlForgedAndReplayed attacks the log as a rogue Redis client would: an entry
// sealed with another key, a garbled one, a copy of a genuine entry, and a genuine ban
// value copied under another user's field. None is applied or loaded; each is counted.
func TestCtlForgedAndReplayed(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", true)
	b := newCtlNode(t, c, "b2", true)
	ctx := context.Background()
	keys, _ := NewKeys("mc")
	if _, err := a.ctl.Ban(ctx, "victim", json.RawMessage(`{}`), time.Now()); err != nil {
		t.Fatal(err)
	}
	if e := b.next(t, 3*time.Second); e.Op != OpBan {
		t.Fatalf("applied %+v", e)
	}
	a.next(t, 3*time.Second)
	genuine, err := c.Do(ctx, c.B().Hget().Key(keys.Bans()).Field("victim").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	rogue, _ := NewSealer([][]byte{bytes.Repeat([]byte{8}, ClusterKeySize)}, "a1", time.Now)
	forged := rogue.Seal(keys.Ctl(), []byte(`{"op":"role","user":"mallory","role":"admin"}`))
	// Same key id as the real one, body changed after sealing.
	tampered := bytes.Replace([]byte(genuine), []byte(`"op":"ban"`), []byte(`"op":"role"`), 1)
	for _, v := range []string{string(forged), string(tampered), "garbage", genuine} {
		if err := c.Do(ctx, c.B().Xadd().Key(keys.Ctl()).Id("*").FieldValue().FieldValue("e", v).Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	c.Do(ctx, c.B().Hset().Key(keys.Bans()).FieldValue().FieldValue("admin", genuine).Build())
	b.none(t)
	bad, replayed := b.ctl.Dropped()
	if bad != 3 || replayed != 1 {
		t.Fatalf("dropped bad=%d replayed=%d, want 3 and 1", bad, replayed)
	}
	st, err := b.ctl.Load(ctx, time.Now(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := st.Bans["admin"]; ok || len(st.Bans) != 1 {
		t.Fatalf("loaded bans %v, want only the genuine victim", st.Bans)
	}
}

// TestRevokedBounded: the revoked set is swept of expired sessions on every logout and
// never grows past its cap; at the cap a logout becomes a cutoff for its user.
func TestRevokedBounded(t *testing.T) {
	start := time.Unix(1_800_000_000, 0)
	mr, c := newMini(t, start)
	keys, _ := NewKeys("mc")
	s, _ := NewSealer([][]byte{ctlTestKey}, "a1", time.Now)
	ctl := NewCtl(c, keys, s)
	ctl.maxRevoked = 3
	ctx := context.Background()
	for i, exp := range []time.Duration{time.Minute, time.Hour, time.Hour} {
		if _, cut, err := ctl.Revoke(ctx, "u", "s"+string(rune('0'+i)), start.Add(exp), start); err != nil || cut {
			t.Fatalf("revoke %d: cut=%v err=%v", i, cut, err)
		}
	}
	if _, cut, err := ctl.Revoke(ctx, "u", "s3", start.Add(time.Hour), start); err != nil || !cut {
		t.Fatalf("revoke at the cap: cut=%v err=%v, want a cutoff", cut, err)
	}
	// Once the first has expired, the sweep makes room for one more.
	mr.SetTime(start.Add(time.Minute))
	if _, cut, err := ctl.Revoke(ctx, "u", "s4", start.Add(time.Hour), start); err != nil || cut {
		t.Fatalf("revoke after expiry: cut=%v err=%v, want a revocation", cut, err)
	}
	if n, _ := c.Do(ctx, c.B().Zcard().Key(keys.Revoked()).Build()).AsInt64(); n != 3 {
		t.Fatalf("revoked set holds %d, want 3", n)
	}
	st, err := ctl.Load(ctx, start.Add(time.Minute), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Revoked) != 3 || st.Revoked["s0"] != 0 || st.Cutoffs["u"] != start.UnixMilli() {
		t.Fatalf("loaded revoked %v cutoffs %v", st.Revoked, st.Cutoffs)
	}
}

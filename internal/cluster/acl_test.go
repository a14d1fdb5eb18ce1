package cluster

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"modified-chat/internal/cluster/redistest"
)

// TestACLConfinesTheApp runs the app's control log, feed and limits on a real
// redis-server as a user restricted by ACLRules, and attacks the restriction: a key
// outside the prefix, a channel outside it, a script touching a foreign key, FLUSHALL,
// KEYS and CONFIG are all refused with NOPERM. The KeyPackage directory works under it
// too (kpACLCheck). It also checks acceptance 16 on what the app really wrote: the keys
// of the users "a{b}*c" and "a{b}*d" are distinct, all under "mc:", and none holds a
// raw user id (nor a raw device id).
func TestACLConfinesTheApp(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	admin := newRealClient(t, rs.Addr(), "", "")
	rules := strings.Fields("on >app-secret " + ACLRules("mc"))
	if err := admin.Do(ctx, admin.B().Arbitrary("ACL", "SETUSER", "mcapp").Args(rules...).Build()).Error(); err != nil {
		t.Fatalf("ACL SETUSER: %v", err)
	}
	app := newRealClient(t, rs.Addr(), "mcapp", "app-secret")
	keys, _ := NewKeys("mc")

	// The app works under the restricted user: epoch, control log, feed, limits.
	if _, err := CheckEpoch(ctx, app, keys, t.TempDir()); err != nil {
		t.Fatalf("epoch as the app user: %v", err)
	}
	if _, err := ExternalSenderSeed(ctx, app, keys, [][]byte{ctlTestKey}, make([]byte, 32)); err != nil {
		t.Fatalf("MLS external-sender seed as the app user: %v", err)
	}
	s, _ := NewSealer([][]byte{ctlTestKey}, "a1", time.Now)
	ctl := NewCtl(app, keys, s)
	st, err := ctl.Load(ctx, time.Now(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("load as the app user: %v", err)
	}
	applied := make(chan CtlEntry, 8)
	feed := ctl.NewCtlFeed(st.Top, time.Now, slog.New(slog.DiscardHandler), func(_, _ string, e CtlEntry) { applied <- e })
	stop, done := make(chan struct{}), make(chan struct{})
	go func() { defer close(done); feed.Run(stop) }()
	defer func() { close(stop); <-done }()
	users := []string{"https://issuer|a{b}*c", "https://issuer|a{b}*d"}
	lim, _ := NewLimits(app, keys, "a1")
	for _, u := range users {
		if _, err := ctl.Ban(ctx, u, json.RawMessage(`{}`), time.Now()); err != nil {
			t.Fatalf("ban as the app user: %v", err)
		}
		if _, _, err := ctl.Revoke(ctx, u, "sid-"+u[len(u)-1:], time.Now().Add(time.Hour), time.Now()); err != nil {
			t.Fatalf("revoke as the app user: %v", err)
		}
		if ok, _, err := lim.AllowMessage(ctx, u, 1, 1); err != nil || !ok {
			t.Fatalf("budget as the app user: %v %v", ok, err)
		}
		slot, _, err := lim.TakeSlot(ctx, u, 2)
		if err != nil || slot == nil {
			t.Fatalf("slot as the app user: %v", err)
		}
		if err := lim.Renew(ctx); err != nil {
			t.Fatalf("renew as the app user: %v", err)
		}
	}
	kpKeys := kpACLCheck(t, ctx, app, ctl, keys, users)
	for range 3 * len(users) {
		select {
		case <-applied:
		case <-time.After(3 * time.Second):
			t.Fatal("the feed did not apply the log as the app user")
		}
	}

	// What the restricted user may not do.
	for name, cmd := range map[string]rueidis.Completed{
		"SET outside the prefix":     app.B().Set().Key("other:x").Value("1").Build(),
		"GET outside the prefix":     app.B().Get().Key("other:x").Build(),
		"PUBLISH outside the prefix": app.B().Publish().Channel("evil").Message("x").Build(),
		"FLUSHALL":                   app.B().Flushall().Build(),
		"KEYS":                       app.B().Keys().Pattern("*").Build(),
		"CONFIG GET":                 app.B().ConfigGet().Parameter("*").Build(),
		"SCRIPT FLUSH":               app.B().ScriptFlush().Build(),
		"EVAL on a foreign key":      app.B().Eval().Script("return redis.call('SET', KEYS[1], 1)").Numkeys(1).Key("other:y").Build(),
		"EVAL publishing outside":    app.B().Eval().Script("return redis.call('PUBLISH', 'evil', 1)").Numkeys(0).Build(),
	} {
		err := app.Do(ctx, cmd).Error()
		// Redis 7.0 says NOPERM, except for a PUBLISH from Lua ("can't publish").
		if err == nil || !strings.Contains(err.Error(), "NOPERM") && !strings.Contains(err.Error(), "can't publish") {
			t.Errorf("%s as the app user: %v, want NOPERM", name, err)
		}
	}
	if n, _ := admin.Do(ctx, admin.B().Exists().Key("other:x", "other:y").Build()).AsInt64(); n != 0 {
		t.Errorf("%d foreign keys were written", n)
	}

	// Acceptance 16 on the keys the app wrote.
	all, err := admin.Do(ctx, admin.B().Keys().Pattern("*").Build()).AsStrSlice()
	if err != nil {
		t.Fatal(err)
	}
	userKeys := map[string]bool{}
	for _, k := range all {
		if !strings.HasPrefix(k, "mc:") {
			t.Errorf("key %q outside mc:", k)
		}
		if strings.Contains(k, "a{b}") || strings.Contains(k, "issuer") {
			t.Errorf("key %q holds a raw user id", k)
		}
		if strings.HasPrefix(k, "mc:{u:") {
			userKeys[k] = true
		}
	}
	for _, u := range users {
		for _, f := range []func(string) (string, error){keys.UserRate, keys.UserConns} {
			k, _ := f(u)
			if !userKeys[k] {
				t.Errorf("user key %q not in Redis (keys: %v)", k, all)
			}
			delete(userKeys, k)
		}
	}
	for _, k := range kpKeys {
		if !userKeys[k] {
			t.Errorf("KeyPackage key %q not in Redis (keys: %v)", k, all)
		}
		delete(userKeys, k)
	}
	if len(userKeys) != 0 {
		t.Errorf("unexpected user keys %v: the two users' keys are not distinct", userKeys)
	}
}

// newRealClient connects to a real redis-server as user (default when empty), as the
// app does (no cache, no retries, single client).
func newRealClient(t *testing.T, addr, user, pass string) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, Username: user, Password: pass,
		DisableCache: true, DisableRetry: true, ForceSingleClient: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); waitRedialsDone(t) })
	return c
}

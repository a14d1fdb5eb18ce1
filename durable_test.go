package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"modified-chat/internal/store"
)

// faultStore wraps a Store for attacks on durability: while failing is set every
// Apply fails; while held, Apply blocks, so the writer's queue fills behind it. Close
// leaves the wrapped store open, so a second server can restart on the same state.
type faultStore struct {
	store.Store
	failing atomic.Bool
	mu      sync.Mutex
	hold    chan struct{}
	// entered gets a token whenever an Apply starts waiting on hold.
	entered chan struct{}
}

// newFaultStore wraps a fresh Mem.
func newFaultStore() *faultStore {
	return &faultStore{Store: store.NewMem(), entered: make(chan struct{}, 1)}
}

// errDiskOnFire is what a failing faultStore answers.
var errDiskOnFire = errors.New("test: the disk is on fire")

// Apply fails, blocks or passes the batch on, as the test set it.
func (s *faultStore) Apply(batch []store.Write) error {
	s.mu.Lock()
	hold := s.hold
	s.mu.Unlock()
	if hold != nil {
		select {
		case s.entered <- struct{}{}:
		default:
		}
		<-hold
	}
	if s.failing.Load() {
		return errDiskOnFire
	}
	return s.Store.Apply(batch)
}

// Close keeps the wrapped store open for the next server.
func (s *faultStore) Close() error { return nil }

// stall makes Apply block until the returned function is called.
func (s *faultStore) stall() (release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hold = make(chan struct{})
	hold := s.hold
	return func() {
		s.mu.Lock()
		s.hold = nil
		s.mu.Unlock()
		close(hold)
	}
}

// startServerOn starts a server on st (see startServerAt); it stops when the test
// ends or when stop is called.
func startServerOn(t *testing.T, st store.Store, mutate func(*Config)) *testServer {
	t.Helper()
	return serveTestApp(t, testApp(t, testConfig(t), mutate, func(cfg *Config, log *slog.Logger) (*App, error) {
		return newAppWithStore(cfg, log, time.Now, st)
	}))
}

// securitySnapshot is the hub's security state in memory, encoded: every room record,
// the run-time grants, the global bans and the settings (and the HTTP side's ban set).
func securitySnapshot(t *testing.T, app *App) string {
	t.Helper()
	settleHub(t, app.hub)
	var out []byte
	app.hub.do(func() {
		h := app.hub
		banned := map[string]bool{}
		for id := range h.bans {
			banned[id] = app.bans.has(id)
		}
		var err error
		out, err = json.Marshal(map[string]any{
			"rooms": h.meta, "grants": h.grants, "bans": h.bans, "http_bans": banned,
			"settings": settingsOf(h.settings()), "dm_prefs": h.dmPrefs,
		})
		if err != nil {
			t.Error(err)
		}
	})
	return string(out)
}

// faultMode is one way the store can refuse a change, and the error code it must give.
type faultMode struct {
	name string
	code string
	// arm makes the store refuse; the function it returns undoes that.
	arm func(t *testing.T, fs *faultStore, app *App) (disarm func())
}

// faultModes are a full store queue (busy) and a failing write (store_failed).
var faultModes = []faultMode{
	{"queue_full", codeBusy, func(t *testing.T, fs *faultStore, app *App) func() {
		release := fs.stall()
		// Once the writer is stuck in an Apply it takes nothing more from its queue,
		// so the queue, once filled, stays full.
		if !app.writer.Submit(nil, nil) {
			t.Fatal("store queue already full")
		}
		<-fs.entered
		for app.writer.Submit(nil, nil) {
		}
		return func() {
			release()
			// Wait for the queue to drain: a barrier behind the filler is done once
			// all of it is committed.
			done := make(chan struct{})
			waitFor(t, "room in the store queue", func() bool { return app.writer.Submit(nil, func(error) { close(done) }) })
			<-done
		}
	}},
	{"write_fails", codeStoreFailed, func(t *testing.T, fs *faultStore, app *App) func() {
		fs.failing.Store(true)
		return func() { fs.failing.Store(false) }
	}},
}

// securityCase is one security-state command refused by the store.
type securityCase struct {
	name string
	// setup runs on a healthy store and returns the connection that sends cmd.
	setup func(t *testing.T, ts *testServer) *wsClient
	cmd   map[string]any
}

// securityCases cover every command that changes security state. Users: root is an
// admin; olga owns the public room pub and the private room vault; bob is in both;
// eve is banned from pub; mod holds a run-time moderator grant; carol is invited to
// vault; gone is globally banned.
func securityCases() []securityCase {
	owner := func(t *testing.T, ts *testServer) *wsClient { return securityWorld(t, ts)["olga"] }
	root := func(t *testing.T, ts *testServer) *wsClient { return securityWorld(t, ts)["root"] }
	return []securityCase{
		{"global_ban", root, map[string]any{"type": "global_ban", "user": "dev:bob"}},
		{"global_unban", root, map[string]any{"type": "global_unban", "user": "dev:gone"}},
		{"set_role_demote", root, map[string]any{"type": "set_role", "user": "dev:mod", "role": "member"}},
		{"set_role_promote", root, map[string]any{"type": "set_role", "user": "dev:bob", "role": "admin"}},
		{"set_settings", root, map[string]any{"type": "set_settings", "settings": map[string]any{"msg_burst": 1, "motd": "x"}}},
		{"kick", owner, map[string]any{"type": "kick", "room": "vault", "user": "dev:bob"}},
		{"ban", owner, map[string]any{"type": "ban", "room": "pub", "user": "dev:bob"}},
		{"unban", owner, map[string]any{"type": "unban", "room": "pub", "user": "dev:eve"}},
		{"set_room_role", owner, map[string]any{"type": "set_room_role", "room": "pub", "user": "dev:bob", "role": "moderator"}},
		{"lock", owner, map[string]any{"type": "lock", "room": "pub", "locked": true}},
		{"topic", owner, map[string]any{"type": "topic", "room": "pub", "topic": "new"}},
		{"delete_room", owner, map[string]any{"type": "delete_room", "room": "pub"}},
		{"create", owner, map[string]any{"type": "create", "room": "fresh", "private": true}},
		{"join_creates", owner, map[string]any{"type": "join", "room": "fresh"}},
		{"invite", owner, map[string]any{"type": "invite", "room": "vault", "user": "dev:dan"}},
		{"open_dm", owner, map[string]any{"type": "open_dm", "user": "dev:bob"}},
		{"dm_prefs", owner, map[string]any{"type": "dm_prefs", "block": "dev:bob", "refuse_strangers": true}},
		{"accept_invitation", func(t *testing.T, ts *testServer) *wsClient { return securityWorld(t, ts)["carol"] },
			map[string]any{"type": "join", "room": "vault"}},
	}
}

// securityWorld builds the users and rooms securityCases rely on, on a healthy store.
func securityWorld(t *testing.T, ts *testServer) map[string]*wsClient {
	t.Helper()
	u := map[string]*wsClient{}
	for _, name := range []string{"root", "olga", "bob", "eve", "mod", "carol"} {
		u[name] = ts.user(t, name)
	}
	root, olga := u["root"], u["olga"]
	root.mustAck(map[string]any{"type": "global_ban", "user": "dev:gone"})
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:mod", "role": "moderator"})
	olga.mustAck(map[string]any{"type": "create", "room": "pub"})
	olga.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})
	olga.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:bob"})
	u["bob"].mustAck(map[string]any{"type": "join", "room": "vault"})
	u["bob"].mustAck(map[string]any{"type": "join", "room": "pub"})
	olga.mustAck(map[string]any{"type": "ban", "room": "pub", "user": "dev:eve"})
	olga.mustAck(map[string]any{"type": "invite", "room": "vault", "user": "dev:carol"})
	return u
}

// TestSecurityChangesFailClosed: every security-state change refused by the store
// (its queue full, or its write failing) is answered with busy or store_failed and
// changes nothing: the hub's memory is what it was, and a restart on the same store
// shows that same state.
func TestSecurityChangesFailClosed(t *testing.T) {
	for _, mode := range faultModes {
		for _, tc := range securityCases() {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				fs := newFaultStore()
				boot := func() *testServer {
					return startServerOn(t, fs, func(c *Config) { c.Admins = []string{"dev:root"}; generousLimits(c) })
				}
				ts := boot()
				sender := tc.setup(t, ts)
				before := securitySnapshot(t, ts.App)

				disarm := mode.arm(t, fs, ts.App)
				ev := sender.cmd(tc.cmd)
				disarm()
				if ev["type"] != "error" || ev["code"] != mode.code {
					t.Fatalf("%v answered %v, want error %s", tc.cmd, ev, mode.code)
				}
				if after := securitySnapshot(t, ts.App); after != before {
					t.Fatalf("memory changed by a refused %s:\nbefore %s\nafter  %s", tc.name, before, after)
				}
				ts.stop()
				ts = boot()
				if restarted := securitySnapshot(t, ts.App); restarted != before {
					t.Fatalf("restart shows another state:\nbefore  %s\nrestart %s", before, restarted)
				}
			})
		}
	}
}

// TestFailedBanLeavesUserIn: a global ban the store refuses is not in effect at all:
// the target's connection stays open, they can connect again, and they still can after
// a restart, with the very cookie they had (a refused ban ends no session). A failed
// demotion leaves the role as it was, live and after a restart.
func TestFailedBanLeavesUserIn(t *testing.T) {
	for _, mode := range faultModes {
		t.Run(mode.name, func(t *testing.T) {
			fs, dir := newFaultStore(), t.TempDir() // one session key for both boots
			boot := func() *testServer {
				return startServerOn(t, fs, func(c *Config) { c.DataDir = dir; c.Admins = []string{"dev:root"}; generousLimits(c) })
			}
			ts := boot()
			bobCookie := devLogin(t, ts.URL, "bob")
			root, bob, mod := ts.user(t, "root"), ts.dial(t, bobCookie), ts.user(t, "mod")
			root.mustAck(map[string]any{"type": "set_role", "user": "dev:mod", "role": "moderator"})
			mod.expect("you")

			disarm := mode.arm(t, fs, ts.App)
			root.mustRefuse(map[string]any{"type": "global_ban", "user": "dev:bob"}, mode.code)
			root.mustRefuse(map[string]any{"type": "set_role", "user": "dev:mod", "role": "member"}, mode.code)
			disarm()
			settleHub(t, ts.App.hub)

			noneOfType(t, mod.barrier(), "you") // never told of a demotion that did not happen
			bob.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "still here"})
			ts.dial(t, bobCookie) // and may connect again with the same session
			mod.mustAck(map[string]any{"type": "kick", "room": "lobby", "user": "dev:bob"})
			bob.expect("kicked")

			ts.stop()
			ts = boot()
			ts.dial(t, bobCookie)
			ts.user(t, "mod").mustAck(map[string]any{"type": "kick", "room": "lobby", "user": "dev:bob"})
		})
	}
}

// TestChangesToOneRecordTakeTurns: changes to the same room sent back to back, each
// before the previous one is stored, are all applied and all durable: none is computed
// from a state another is about to replace (no lost update).
func TestChangesToOneRecordTakeTurns(t *testing.T) {
	fs := newFaultStore()
	boot := func() *testServer { return startServerOn(t, fs, generousLimits) }
	ts := boot()
	olga := ts.user(t, "olga")
	olga.mustAck(map[string]any{"type": "create", "room": "vault", "private": true})

	release := fs.stall() // nothing settles until every command is in
	const invites = 10
	for i := 0; i < invites; i++ {
		olga.send(map[string]any{"type": "invite", "room": "vault", "user": fmt.Sprint("dev:guest", i), "ref": fmt.Sprint("i", i)})
	}
	olga.send(map[string]any{"type": "topic", "room": "vault", "topic": "secret plans", "ref": "topic"})
	olga.send(map[string]any{"type": "lock", "room": "vault", "locked": true, "ref": "lock"})
	olga.barrier() // the hub has taken them all
	release()
	acks := map[string]bool{}
	for len(acks) < invites+2 {
		ev := olga.expect("ack")
		acks[ev["ref"].(string)] = true
	}

	ts.stop()
	ts = boot()
	var ri *roomInfo
	ts.App.hub.do(func() { ri = ts.App.hub.meta["vault"].clone() })
	if len(ri.Invites) != invites || ri.Topic != "secret plans" || !ri.Locked {
		t.Fatalf("after restart: %d invitations, topic %q, locked %v", len(ri.Invites), ri.Topic, ri.Locked)
	}
}

// TestWaitingLineBounded: commands waiting for a record with a change in flight are
// bounded; beyond the line's length they are refused with busy.
func TestWaitingLineBounded(t *testing.T) {
	fs := newFaultStore()
	ts := startServerOn(t, fs, generousLimits)
	olga := ts.user(t, "olga")
	olga.mustAck(map[string]any{"type": "create", "room": "pub"})
	release := fs.stall()
	defer release()
	for i := 0; i <= maxWaitingPerRecord+1; i++ {
		olga.send(map[string]any{"type": "topic", "room": "pub", "topic": fmt.Sprint(i), "ref": fmt.Sprint(i)})
	}
	// One in flight, maxWaitingPerRecord waiting: the last one is refused at once.
	if ev := olga.expectError(codeBusy); ev["ref"] != fmt.Sprint(maxWaitingPerRecord+1) {
		t.Fatalf("refused %v, want the last one", ev["ref"])
	}
}

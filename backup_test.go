package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"modified-chat/internal/store"
)

// runningServer is the whole server as main runs it (serve), on loopback listeners.
type runningServer struct {
	*testServer
	addrs boundAddrs
	stop  func()
}

// startServe runs serve with cfg until the test ends or stop is called, and waits
// until every listener is open.
func startServe(t *testing.T, cfg *Config) *runningServer {
	t.Helper()
	if err := cfg.validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	ctx, cancel := context.WithCancel(context.Background())
	startedc := make(chan boundAddrs, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, log, func(b boundAddrs) { startedc <- b }) }()
	var addrs boundAddrs
	select {
	case addrs = <-startedc:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(10 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("serve: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Error("server did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return &runningServer{testServer: &testServer{URL: "http://" + addrs.Main}, addrs: addrs, stop: stop}
}

// backupConfig is a server on a bolt store with its admin listener on, and limits
// raised so that the load is not refused.
func backupConfig(t *testing.T, dir string) *Config {
	cfg := defaultConfig()
	cfg.Addr = "127.0.0.1:0"
	cfg.MetricsAddr = "127.0.0.1:0"
	cfg.DataDir = dir
	cfg.Admins = []string{"dev:root"}
	cfg.MsgRate, cfg.MsgBurst = 1000, 1000
	cfg.UserMsgRate, cfg.UserMsgBurst = 1000, 1000
	cfg.ShutdownGrace = 2 * time.Second
	return cfg
}

// command sends a state-changing command with a ref and waits for its ack, which the
// server sends only once the change is durable.
func (c *wsClient) command(v map[string]any) {
	c.t.Helper()
	ev := c.sendAwait(v, fmt.Sprintf("cmd-%v", v["type"]), func(ev map[string]any) bool { return ev["type"] == "ack" || ev["type"] == "error" })
	if ev["type"] == "error" {
		c.t.Fatalf("%v refused: %v", v["type"], ev)
	}
}

// acked is the set of message ids the server acknowledged, shared by the senders.
type acked struct {
	mu  sync.Mutex
	ids map[float64]bool
}

// snapshot copies the ids acknowledged so far.
func (a *acked) snapshot() map[float64]bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make(map[float64]bool, len(a.ids))
	for id := range a.ids {
		out[id] = true
	}
	return out
}

// sendLoad makes c send n messages to the lobby, paced so that they spread over the
// backup, and records every ack. It reports on errc rather than failing the test from
// a goroutine.
func sendLoad(c *wsClient, n int, a *acked, errc chan<- error) {
	go func() {
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < n; i++ {
			<-tick.C
			b, _ := json.Marshal(map[string]any{"type": "say", "room": lobby, "text": fmt.Sprintf("load %d", i), "ref": fmt.Sprint(i)})
			c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if err := c.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		got := 0
		deadline := time.Now().Add(20 * time.Second)
		for got < n {
			ev, err := c.next(time.Until(deadline))
			if err != nil {
				errc <- fmt.Errorf("after %d acks: %w", got, err)
				return
			}
			switch ev["type"] {
			case "ack":
				a.mu.Lock()
				a.ids[ev["id"].(float64)] = true
				a.mu.Unlock()
				got++
			case "error":
				errc <- fmt.Errorf("refused: %v", ev)
				return
			}
		}
		errc <- nil
	}()
}

// TestBackupDuringLoadRestoresEverythingAcknowledged backs a server up with the real
// subcommand while four clients chat, restores the copy into a new data directory,
// starts a server on it and finds every message acknowledged before the backup began,
// and the same rooms, roles, bans and settings.
func TestBackupDuringLoadRestoresEverythingAcknowledged(t *testing.T) {
	dir := t.TempDir()
	srv := startServe(t, backupConfig(t, dir))

	root := srv.user(t, "root")
	root.command(map[string]any{"type": "create", "room": "ops", "private": true, "topic": "on call"})
	root.command(map[string]any{"type": "set_role", "user": "dev:bob", "role": "moderator"})
	root.command(map[string]any{"type": "ban", "room": "ops", "user": "dev:eve"})
	root.command(map[string]any{"type": "global_ban", "user": "dev:mallory", "reason": "spam"})
	root.command(map[string]any{"type": "set_settings", "settings": map[string]any{"motd": "restored from a backup"}})

	const senders, perSender = 4, 100
	a := &acked{ids: map[float64]bool{}}
	errc := make(chan error, 2*senders)
	for i := 0; i < senders; i++ {
		sendLoad(srv.user(t, fmt.Sprintf("sender%d", i)), perSender, a, errc)
	}
	waitFor(t, "some acks", func() bool { return len(a.snapshot()) >= 50 })
	before := a.snapshot()
	out := filepath.Join(t.TempDir(), "chat-backup.db")
	if err := backupCommand([]string{"-admin-addr", srv.addrs.Admin, out}, func(string) string { return "" }); err != nil {
		t.Fatalf("backup: %v", err)
	}
	during := len(a.snapshot())
	for i := 0; i < senders; i++ {
		if err := <-errc; err != nil {
			t.Fatalf("sender: %v", err)
		}
	}
	t.Logf("acked before the backup: %d, when it ended: %d, in all: %d", len(before), during, senders*perSender)
	if during == senders*perSender {
		t.Log("the load ended before the backup did; the copy was still taken under load")
	}
	srv.stop()

	// A restore never overwrites: the live data directory is refused and left as it was.
	orig, _ := os.ReadFile(filepath.Join(dir, storeFileName))
	err := restoreCommand([]string{"-data-dir", dir, out}, func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("restore into a non-empty directory: %v, want refused", err)
	}
	if now, _ := os.ReadFile(filepath.Join(dir, storeFileName)); !bytes.Equal(orig, now) {
		t.Fatal("the refused restore changed the data file")
	}

	fresh := filepath.Join(t.TempDir(), "restored")
	if err := restoreCommand([]string{out}, func(k string) string {
		if k == "CHAT_DATA_DIR" {
			return fresh
		}
		return ""
	}); err != nil {
		t.Fatalf("restore: %v", err)
	}

	// Rooms, roles, bans and settings are the same as in the original.
	compareState(t, dir, fresh)

	// The joiner's history holds the whole room, so the lobby's join shows all of it.
	rcfg := backupConfig(t, fresh)
	rcfg.HistoryOnJoin = rcfg.HistoryMax
	again := startServe(t, rcfg)
	root = again.user(t, "root")
	hist := root.expect("history")
	have := map[float64]bool{}
	for _, m := range hist["messages"].([]any) {
		have[m.(map[string]any)["id"].(float64)] = true
	}
	for id := range before {
		if !have[id] {
			t.Fatalf("message %v was acknowledged before the backup began but is not in the restored history (%d of %d there)", id, len(have), len(before))
		}
	}
	root.send(map[string]any{"type": "rooms"})
	if rooms := fmt.Sprint(root.expect("rooms")["rooms"]); !strings.Contains(rooms, "ops") {
		t.Fatalf("restored rooms %s lack ops", rooms)
	}
	resp, err := noRedirect.PostForm(again.URL+"/login/dev", url.Values{"name": {"mallory"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("globally banned user's login on the restored server: %d, want 403", resp.StatusCode)
	}
}

// compareState loads the hub state from two data directories and compares the rooms,
// global roles, bans, settings and the audit log.
func compareState(t *testing.T, a, b string) {
	t.Helper()
	load := func(dir string) *hubState {
		s, err := store.OpenBolt(filepath.Join(dir, storeFileName))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		st, err := loadHubState(s)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	x, y := load(a), load(b)
	if len(x.rooms) < 2 || len(x.grants) == 0 || len(x.bans) == 0 || x.settings == nil {
		t.Fatalf("the original state is missing what the test set up: %d rooms, %d grants, %d bans, settings %v",
			len(x.rooms), len(x.grants), len(x.bans), x.settings)
	}
	if !reflect.DeepEqual(x.rooms, y.rooms) {
		t.Errorf("rooms differ:\n%+v\n%+v", x.rooms, y.rooms)
	}
	if !reflect.DeepEqual(x.grants, y.grants) {
		t.Errorf("global roles differ: %v / %v", x.grants, y.grants)
	}
	if !reflect.DeepEqual(x.bans, y.bans) {
		t.Errorf("bans differ: %v / %v", x.bans, y.bans)
	}
	if !reflect.DeepEqual(x.settings, y.settings) {
		t.Errorf("settings differ: %+v / %+v", x.settings, y.settings)
	}
	if !reflect.DeepEqual(x.audit, y.audit) || len(x.audit) == 0 {
		t.Errorf("audit logs differ: %d / %d entries", len(x.audit), len(y.audit))
	}
}

// TestBackupOnlyOnTheAdminListenerAndLoopback: the public listener has no backup route;
// the admin one refuses a peer that is not loopback, a second backup while one runs,
// and the memory store; a cut-off backup is never restored.
func TestBackupOnlyOnTheAdminListenerAndLoopback(t *testing.T) {
	srv := startServe(t, backupConfig(t, t.TempDir()))
	resp, err := http.Get(srv.URL + backupPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("backup on the public listener: %d, want 404", resp.StatusCode)
	}

	app, err := newApp(backupConfig(t, t.TempDir()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer app.shutdown(time.Second)
	h := app.adminRoutes()
	get := func(remote string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodGet, backupPath, nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := get("192.0.2.7:40000"); rec.Code != http.StatusForbidden || rec.Body.Len() > 100 {
		t.Fatalf("backup for a remote peer: %d with %d bytes, want 403 and no data", rec.Code, rec.Body.Len())
	}
	if rec := get("127.0.0.1:40000"); rec.Code != http.StatusOK || rec.Header().Get("Content-Length") != fmt.Sprint(rec.Body.Len()) {
		t.Fatalf("backup for loopback: %d, length %q for %d bytes", rec.Code, rec.Header().Get("Content-Length"), rec.Body.Len())
	}
	app.backupBusy.Store(true)
	if rec := get("127.0.0.1:40000"); rec.Code != http.StatusTooManyRequests {
		t.Fatalf("second backup at once: %d, want 429", rec.Code)
	}
	app.backupBusy.Store(false)

	mem, err := newApp(testConfig(t), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer mem.shutdown(time.Second)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, backupPath, nil)
	req.RemoteAddr = "127.0.0.1:1"
	mem.adminRoutes().ServeHTTP(rec, req)
	if rec.Code != http.StatusNotImplemented {
		t.Fatalf("backup of the memory store: %d, want 501", rec.Code)
	}

	// A cut-off copy (a full disk, a dropped connection) is refused by restore.
	whole := get("127.0.0.1:40000").Body.Bytes()
	cut := filepath.Join(t.TempDir(), "cut.db")
	os.WriteFile(cut, whole[:len(whole)-4096], 0o600)
	target := filepath.Join(t.TempDir(), "target")
	if err := restoreBackup(cut, target); err == nil || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("restore of a cut-off copy: %v, want refused as truncated", err)
	}
	if _, err := os.Stat(filepath.Join(target, storeFileName)); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left a data file: %v", err)
	}
}

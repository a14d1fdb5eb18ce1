package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"

	"modified-chat/internal/backplane"
	"modified-chat/internal/cluster"
	"modified-chat/internal/keydir"
	"modified-chat/internal/store"
)

// App is one running chat server: the hub, the defences in front of it, and the HTTP
// routes. main wires one; tests build as many as they like.
type App struct {
	// cfg is the live configuration. Readers load it without locking; a change swaps
	// in a whole new value, so no reader ever sees half of one.
	cfg atomic.Pointer[Config]

	hub       *Hub
	admission *admission
	filter    *filter
	sessions  *sessions
	upgrader  websocket.Upgrader
	metrics   *metrics
	log       *slog.Logger
	now       func() time.Time
	tls       bool
	dev       bool
	// oidc is the OpenID Connect login; nil under the development login.
	oidc *oidcLogin

	// store keeps rooms, roles, bans, settings and the audit log; writer batches the
	// hub's writes to it.
	store  store.Store
	writer *store.Writer
	// keys is the key directory: users' root keys and certified devices. The hub
	// changes it; readPumps read it to verify signed messages.
	keys *keydir.Directory
	// mlsKey is the hub's Ed25519 key as the E2EE groups' external sender.
	mlsKey ed25519.PrivateKey
	// policyPtr holds the start-up role policy; SIGHUP swaps in a reloaded one.
	policyPtr atomic.Pointer[policy]
	// bans mirrors the hub's global bans for the HTTP side (sessions, login), which
	// must not wait on the hub's loop.
	bans *userSet
	// janitorStop ends the history janitor at shutdown.
	janitorStop chan struct{}
	// cluster is the link to Redis in cluster mode (-redis-url); nil on a single
	// node, where nothing connects to Redis (cluster.go).
	cluster *clusterNode
	// feed is the cluster's room feed; clusterReady says Redis answers and the feed
	// has caught up, clusterLost that Redis lost its data (both false on one node).
	feed         *cluster.Feed
	clusterReady atomic.Bool
	clusterLost  atomic.Bool
	// ctl is cluster mode's control log and per-user limits (clusterctl.go); nil on a
	// single node.
	ctl *clusterControl

	// conns counts the pumps (two per connection) that have not finished, for
	// shutdown: the hub stops only after both pumps of every connection are done.
	// connMu orders conns.Add against shutdown's Wait: once stopping is set, no
	// connection is added (a WaitGroup must not grow from zero while waited on).
	conns    sync.WaitGroup
	connMu   sync.Mutex
	stopping bool
	ready    atomic.Bool
	// backupBusy admits one backup at a time (backup.go).
	backupBusy atomic.Bool
	connSeq    atomic.Uint64
	stopOnce   sync.Once
}

// newApp builds a server from a validated configuration and starts its hub.
func newApp(cfg *Config, log *slog.Logger) (*App, error) {
	return newAppWithClock(cfg, log, time.Now)
}

// newAppWithClock is newApp with an injected clock, so tests move time for rate limits
// and session expiry instead of sleeping.
func newAppWithClock(cfg *Config, log *slog.Logger, now func() time.Time) (*App, error) {
	st, err := openStore(cfg)
	if err != nil {
		return nil, err
	}
	return newAppWithStore(cfg, log, now, st)
}

// newAppWithStore is newAppWithClock over a store already open, which the App owns
// from here on (it closes it at shutdown, or now if it fails). Tests hand it stores that
// fail or stall, and the same store again to restart on it.
func newAppWithStore(cfg *Config, log *slog.Logger, now func() time.Time, st store.Store) (_ *App, err error) {
	app := &App{
		store:   st,
		metrics: newMetrics(),
		log:     log,
		now:     now,
		tls:     servesHTTPS(cfg),
		dev:     true, // until OpenID Connect is configured
	}
	app.cfg.Store(cfg)
	pol, err := loadPolicy(cfg)
	if err != nil {
		st.Close()
		return nil, err
	}
	if cfg.RedisURL != "" {
		if app.cluster, err = connectCluster(cfg, log, now); err != nil {
			st.Close()
			return nil, err
		}
		defer func() {
			if err != nil {
				app.cluster.close()
			}
		}()
	}
	app.policyPtr.Store(pol)
	state, err := loadHubState(app.store)
	if err != nil {
		return nil, fmt.Errorf("loading state: %w", err)
	}
	if len(state.welcomeUpgrade) > 0 {
		// Group records of an older version carried their Welcomes, or outlived their
		// room: move them out, or delete them, once, before the hub runs (it never
		// waits on the disk).
		if err := app.store.Apply(state.welcomeUpgrade); err != nil {
			return nil, fmt.Errorf("moving Welcomes out of group records: %w", err)
		}
		app.log.Info("group records upgraded", "writes", len(state.welcomeUpgrade))
	}
	var ctlState *cluster.CtlState
	if app.cluster != nil {
		if app.ctl, ctlState, err = newClusterControl(app, state); err != nil {
			st.Close()
			return nil, fmt.Errorf("loading the cluster's control state: %w", err)
		}
	}
	if app.keys, err = keydir.Load(app.store, keydir.Limits{MaxDevices: cfg.MaxDevicesPerUser}, app.now); err != nil {
		app.store.Close()
		return nil, fmt.Errorf("loading the key directory: %w", err)
	}
	if app.ctl != nil {
		if err := app.ctl.loadRecords(app.keys, state); err != nil { // the cluster's records win (clusterkeys.go)
			app.store.Close()
			return nil, fmt.Errorf("loading the cluster's key directory: %w", err)
		}
	}
	if state.settings != nil {
		// Settings changed by an admin at run time win over the flags.
		merged, err := state.settings.applyTo(cfg)
		if err != nil {
			log.Warn("stored settings refused; using flags", "err", err)
		} else {
			warnOverriddenFlags(log, cfg, merged)
			cfg = merged
			app.cfg.Store(cfg)
		}
	}
	app.bans = newUserSet()
	for id := range state.bans {
		app.bans.add(id)
	}
	keyFile := cfg.SessionKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(cfg.DataDir, "session.key")
	}
	key, err := loadOrCreateKey(keyFile)
	if err != nil {
		return nil, fmt.Errorf("session key: %w", err)
	}
	if app.mlsKey, err = loadExternalSender(cfg.DataDir); err != nil {
		return nil, fmt.Errorf("MLS external-sender key: %w", err)
	}
	if cn := app.cluster; cn != nil {
		// Every node signs the groups' proposals as one external sender.
		seed, err := cluster.ExternalSenderSeed(context.Background(), cn.client, cn.keys, cn.ring, app.mlsKey.Seed())
		if err != nil {
			return nil, fmt.Errorf("MLS external-sender key: %w", err)
		}
		app.mlsKey = ed25519.NewKeyFromSeed(seed)
	}
	app.sessions, err = newSessions(key, app.tls, func() time.Duration { return app.settings().SessionTTL }, app.now)
	if err != nil {
		return nil, err
	}
	_, durable := app.store.(*store.Bolt)
	if n, err := migrateRevokedFile(filepath.Join(cfg.DataDir, revokedFileName), app.store, durable, app.now()); err != nil {
		app.store.Close()
		return nil, fmt.Errorf("revoked sessions: %w", err)
	} else if n > 0 {
		log.Info("revoked sessions moved from "+revokedFileName+" into the store", "count", n, "file_removed", durable)
	}
	if err := app.sessions.loadRevocations(app.store); err != nil {
		app.store.Close()
		return nil, fmt.Errorf("revoked sessions: %w", err)
	}
	if app.ctl != nil {
		app.ctl.loadSessions(ctlState)
	}
	if cfg.OIDCClientID != "" {
		app.dev = false
		if app.oidc, err = newOIDCLogin(cfg, app.sessions.aead, app.now, app.settings, log); err != nil {
			return nil, err
		}
	}
	app.sessions.banned = app.bans.has
	app.filter = newFilter(cfg, app.settings)
	app.admission = newAdmission(app.settings, app.now)
	linger := time.Duration(0) // nothing to gain in memory
	if _, onDisk := app.store.(*store.Bolt); onDisk {
		linger = store.DiskLinger
	}
	app.writer = store.NewWriter(app.store, storeQueue, linger, app.metrics.observeCommit)
	app.hub = newHub(app, state, backplane.NewLocal(state.lastID, app.writer))
	if app.ctl != nil {
		app.hub.roomRev = app.ctl.roomRevs // the room records read from Redis
	}
	if app.cluster != nil {
		app.feed = app.startFeed(cfg)
		app.hub.feed = app.feed
	}
	app.sessions.writer = app.writer
	app.upgrader = websocket.Upgrader{
		HandshakeTimeout:  handshakeTimeout,
		ReadBufferSize:    readBufferSize,
		WriteBufferSize:   writeBufferSize,
		EnableCompression: cfg.Compression,
		// serveWs checks the origin before the session; this repeats it so the
		// upgrader can never fall back to a weaker default.
		CheckOrigin: app.originAllowed,
	}
	go app.hub.run()
	if app.ctl != nil {
		app.ctl.start(ctlState.Top)
	}
	if app.feed != nil && !app.waitClusterReady(cfg.RedisWait) {
		app.shutdown(0)
		return nil, fmt.Errorf("redis did not become ready within %v (-redis-wait)", cfg.RedisWait)
	}
	app.janitorStop = make(chan struct{})
	go app.runJanitor(app.janitorStop)
	app.ready.Store(true)
	return app, nil
}

// settings returns the live configuration.
func (app *App) settings() *Config { return app.cfg.Load() }

// policy returns the live role policy.
func (app *App) policy() *policy { return app.policyPtr.Load() }

// reloadPolicy re-reads the policy file (SIGHUP). A broken file keeps the old policy,
// and so does a reload that panics (a task: logged and counted, the server goes on).
func (app *App) reloadPolicy() error {
	err := errReloadFailed
	app.hub.runTask(taskPolicyReload, func() {
		var pol *policy
		if pol, err = loadPolicy(app.settings()); err == nil {
			app.policyPtr.Store(pol)
		}
	})
	return err
}

// errReloadFailed: the policy reload panicked (a bug, logged); the old policy stays.
var errReloadFailed = errors.New("policy reload failed on a bug; see the log")

// trackConn counts a new connection's two pumps for shutdown, unless shutdown has begun.
func (app *App) trackConn() bool {
	app.connMu.Lock()
	defer app.connMu.Unlock()
	if app.stopping {
		return false
	}
	app.conns.Add(2)
	return true
}

// nextConnID numbers connections for logs, so a connection can be followed without
// logging who it belongs to on every line.
func (app *App) nextConnID() string {
	return strconv.FormatUint(app.connSeq.Add(1), 10)
}

// routes is the server's whole HTTP surface. Methods are part of each pattern, so a
// wrong method gets 405 and an unknown path 404 from the mux itself. In front of the
// mux, in order: security headers on every answer, the Host check (421, DNS
// rebinding), the cross-origin check on every unsafe method (403); the login routes
// also draw from the per-IP login bucket (429). Around them all, recoverHTTP turns a
// handler's panic into a log line at Error, a count and a 500 (httppanic.go).
func (app *App) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", app.handleHome)
	mux.Handle("GET /static/", app.staticHandler())
	mux.HandleFunc("GET /ws", app.serveWs)
	mux.Handle("GET /login", app.loginLimited(app.handleLogin))
	if app.oidc != nil {
		// The development login does not exist at all beside a real one: 404.
		mux.Handle("GET /auth/callback", app.loginLimited(app.handleCallback))
	} else {
		mux.Handle("POST /login/dev", app.loginLimited(app.handleDevLogin))
	}
	mux.Handle("POST /logout", app.loginLimited(app.handleLogout))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !app.ready.Load() {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		if reason := app.clusterUnready(); reason != "" {
			http.Error(w, reason, http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	if testRoutes != nil {
		testRoutes(mux)
	}
	return app.recoverHTTP(mux, app.securityHeaders(app.hostGuard(app.crossOriginGuard(mux))))
}

// shutdown refuses new work, closes every connection with 1001 and waits for the
// writePumps to deliver the closes, at most grace.
func (app *App) shutdown(grace time.Duration) {
	app.stopOnce.Do(func() {
		app.ready.Store(false)
		app.connMu.Lock()
		app.stopping = true
		app.connMu.Unlock()
		app.hub.shutdown()
		done := make(chan struct{})
		go func() { app.conns.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(grace):
			app.log.Warn("shutdown grace ran out with connections still open")
		}
		// Every write the hub handed over is committed before the store closes.
		if app.janitorStop != nil {
			close(app.janitorStop)
		}
		if app.feed != nil {
			app.feed.Stop()
		}
		// The control log's last answers go to the hub, still running.
		app.ctl.close()
		app.writer.Close()
		// Last, the hub's loop: the writer's completions have been handed to it.
		app.hub.halt()
		if err := app.store.Close(); err != nil {
			app.log.Error("closing the store", "err", err)
		}
		app.cluster.close()
	})
}

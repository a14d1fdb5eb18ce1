package main

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"modified-chat/internal/cluster"
	"modified-chat/internal/crash"
)

// The control side of cluster mode (SCALE-OUT.md §3.4): global bans, roles, settings
// and logouts go through the global control log in Redis, so every node applies them
// within about a second; the per-user message budget and connection cap are kept in
// Redis, so they hold across nodes. The node that makes a change applies it when the
// script returns, as the single node applies a change once the store has it; every
// other node applies it from the log (clusterControl.apply). The HTTP side keeps
// answering from memory (bans, revoked sessions), so a handshake costs no Redis round
// trip.

// Control tunables.
const (
	// ctlQueue bounds the changes waiting for the control log (admins' commands and
	// logouts: few). A full queue answers busy, as a full store queue does.
	ctlQueue = 256
	// outboxMax bounds the logouts kept while Redis does not answer (DoS hardening:
	// each holds a session id). Beyond it a logout still ends its sockets and holds on
	// this node until restart, but the other nodes do not learn of it.
	outboxMax = 10_000
	// outboxRetryEvery is how often the kept logouts are tried again.
	outboxRetryEvery = time.Second
)

// clusterControl is a node's control log writer, its feed and its limits.
type clusterControl struct {
	app    *App
	ctl    *cluster.Ctl
	limits *cluster.Limits
	feed   *cluster.CtlFeed
	node   string
	// roomRevs are the revisions of the room records read at start-up, for the hub.
	roomRevs map[string]uint64

	jobs chan ctlJob
	stop chan struct{}
	wg   sync.WaitGroup

	// kpJobs are the KeyPackage directory's calls (clusterkps.go), apart from jobs so
	// that a flood of uploads cannot delay a ban or a logout.
	kpJobs chan ctlJob

	// outbox holds logouts Redis did not take, oldest first, for the writer to retry:
	// a logout during an outage reaches the other nodes once Redis is back.
	outboxMu sync.Mutex
	outbox   []identity
}

// ctlJob is one change on its way to the control log: run writes it, done gets the
// result (on the control writer's goroutine).
type ctlJob struct {
	run  func(context.Context, *cluster.Ctl) error
	done func(error)
}

// newClusterControl reads the control state from Redis and puts it in place of the
// local store's (Redis is the source of truth in cluster mode): global bans, grants
// and settings into the hub's start-up state. It returns the control with the state
// it read, for the sessions and the feed.
func newClusterControl(app *App, state *hubState) (*clusterControl, *cluster.CtlState, error) {
	cn := app.cluster
	cc := &clusterControl{
		app:    app,
		ctl:    cluster.NewCtl(cn.client, cn.keys, cn.sealer),
		node:   cn.sealer.Node(),
		jobs:   make(chan ctlJob, ctlQueue),
		kpJobs: make(chan ctlJob, kpQueue),
		stop:   make(chan struct{}),
	}
	var err error
	if cc.limits, err = cluster.NewLimits(cn.client, cn.keys, cc.node); err != nil {
		return nil, nil, err
	}
	cs, err := cc.ctl.Load(context.Background(), app.now(), app.log)
	if err != nil {
		return nil, nil, err
	}
	state.bans = map[string]banInfo{}
	for uid, e := range cs.Bans {
		var b banInfo
		if json.Unmarshal(e.Value, &b) == nil {
			state.bans[uid] = b
		}
	}
	state.grants = cs.Grants
	state.settings = nil
	if cc.roomRevs, err = loadClusterRooms(context.Background(), cn, cc, state, app.settings().MaxRooms); err != nil {
		return nil, nil, err
	}
	if cs.Settings != nil {
		var s Settings
		if err := json.Unmarshal(cs.Settings, &s); err != nil {
			app.log.Warn("cluster settings unreadable; using flags", "err", err)
		} else {
			state.settings = &s
		}
	}
	return cc, cs, nil
}

// loadSessions puts the revoked sessions and cutoffs read from Redis into the session
// mirror and sends every later logout through the control log.
func (cc *clusterControl) loadSessions(cs *cluster.CtlState) {
	s := cc.app.sessions
	s.mu.Lock()
	for sid, exp := range cs.Revoked {
		s.revoked[sid] = exp
	}
	for uid, ms := range cs.Cutoffs {
		s.cutoffs[uid] = max(s.cutoffs[uid], ms)
	}
	s.mu.Unlock()
	s.remote = cc.revoke
}

// start runs the control writer, the feed (from top, the log's position when the
// state was read) and the slot renewals.
func (cc *clusterControl) start(top string) {
	for _, reason := range []string{"forged", "replay"} {
		cc.app.metrics.reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "chat_cluster_ctl_dropped_total",
			Help:        "Control-log entries and stored control values dropped: forged or malformed (forged), or copies of earlier entries (replay).",
			ConstLabels: prometheus.Labels{"reason": reason},
		}, func() float64 {
			bad, replayed := cc.ctl.Dropped()
			if reason == "replay" {
				return float64(replayed)
			}
			return float64(bad)
		}))
	}
	cc.feed = cc.ctl.NewCtlFeed(top, cc.app.now, cc.app.log, cc.apply)
	cc.wg.Add(4)
	// A panic in the control writer's own loop (the outbox, the ticker) ends the
	// process, as one in the feeds does (crash.OnPanic): a node whose changes never
	// reach the log must not run on. A panic in one of its jobs costs that job only
	// (runJob).
	go func() {
		defer cc.wg.Done()
		defer crash.OnPanic(cc.app.log, "control writer")
		crash.Hook("control writer")
		cc.write()
	}()
	go func() {
		defer cc.wg.Done()
		defer crash.OnPanic(cc.app.log, "KeyPackage directory")
		cc.runKPJobs()
	}()
	go func() { defer cc.wg.Done(); cc.feed.Run(cc.stop) }()
	go func() {
		// This node's connection slots lapse in Redis unless renewed: a node whose
		// renewals stopped would go on with its users' connections uncounted.
		defer cc.wg.Done()
		defer crash.OnPanic(cc.app.log, "connection slot renewals")
		crash.Hook("connection slot renewals")
		cc.limits.RunRenewals(cc.stop, func(err error) { cc.app.log.Warn("renewing connection slots", "err", err) })
	}()
}

// close stops the goroutines and waits for them. Changes still queued are answered
// with an error.
func (cc *clusterControl) close() {
	if cc == nil {
		return
	}
	close(cc.stop)
	cc.wg.Wait()
	for {
		select {
		case j := <-cc.jobs:
			j.done(errors.New("shutting down"))
		case j := <-cc.kpJobs:
			j.done(errors.New("shutting down"))
		default:
			return
		}
	}
}

// write is the control writer: one change at a time, in the order they came, so one
// node's changes reach the log in the order its hub made them.
func (cc *clusterControl) write() {
	t := time.NewTicker(outboxRetryEvery)
	defer t.Stop()
	for {
		select {
		case <-cc.stop:
			return
		case j := <-cc.jobs:
			cc.runJob(taskCtlJob, j)
		case <-t.C:
			cc.flushOutbox()
		}
	}
}

// errJobFailed is the result a job's done gets when its run panicked (a bug, logged and
// counted): nothing is known to have reached Redis, and its requester is answered
// `internal`.
var errJobFailed = errors.New("cluster: the call failed on a bug; see the log")

// runJob runs one job of a queue (the control writer's, task ctl_job, or the KeyPackage
// directory's, kp_job) on the queue's goroutine and hands its result to done. A job is
// one request's call to Redis and holds nothing the next needs: the queue's goroutine
// holds no lock across it (the outbox lock is taken only inside keep and
// flushOutbox), Ctl keeps only atomic counters, and the sealer's sequence is atomic
// (a number skipped by a panic is as harmless as one skipped by a failed write). So a
// panic in run is a task's panic (runTask: logged, counted under
// chat_task_panics_total), done gets errJobFailed, and the queue goes on with the
// next job. A panic in done is recovered and counted the same way, without calling
// done again. A run that panics after its script returned leaves its change in the
// log for the other nodes and unapplied here (this node skips its own entries), as an
// answer lost to a timeout does: the requester's retry sets it right.
func (cc *clusterControl) runJob(task string, j ctlJob) {
	h := cc.app.hub
	err := errJobFailed
	h.runTask(task, func() { err = j.run(context.Background(), cc.ctl) })
	defer func() {
		if v := recover(); v != nil {
			h.taskPanicked(task, v)
		}
	}()
	j.done(err)
}

// keep puts a logout Redis did not take in the outbox; false when the outbox is full.
func (cc *clusterControl) keep(id identity) bool {
	cc.outboxMu.Lock()
	defer cc.outboxMu.Unlock()
	if len(cc.outbox) >= outboxMax {
		return false
	}
	cc.outbox = append(cc.outbox, id)
	return true
}

// flushOutbox writes the kept logouts, in order, until one fails (Redis still away).
func (cc *clusterControl) flushOutbox() {
	cc.outboxMu.Lock()
	kept := cc.outbox
	cc.outbox = nil
	cc.outboxMu.Unlock()
	for i, id := range kept {
		if _, _, err := cc.ctl.Revoke(context.Background(), id.ID, id.SessionID, id.Expires, cc.app.now()); err != nil {
			cc.outboxMu.Lock()
			cc.outbox = append(kept[i:], cc.outbox...)
			cc.outboxMu.Unlock()
			return
		}
		cc.app.log.Info("kept logout written to the control log")
	}
}

// submit queues a change for the control log; false when the queue is full.
func (cc *clusterControl) submit(j ctlJob) bool {
	select {
	case cc.jobs <- j:
		return true
	default:
		return false
	}
}

// revoke writes a logout to the control log and waits for it (sessions.revoke calls
// it from the logout handler). cutoff reports that the revoked set was full and the
// user's cutoff moved instead.
func (cc *clusterControl) revoke(id identity) (cutoff bool, err error) {
	type result struct {
		cutoff bool
		err    error
	}
	res := make(chan result, 1)
	ok := cc.submit(ctlJob{
		run: func(ctx context.Context, c *cluster.Ctl) error {
			_, cut, err := c.Revoke(ctx, id.ID, id.SessionID, id.Expires, cc.app.now())
			res <- result{cut, err}
			return err
		},
		done: func(err error) {
			select {
			case res <- result{err: err}:
			default:
			}
		},
	})
	if !ok {
		return false, errStoreBusy
	}
	r := <-res
	if errors.Is(r.err, errJobFailed) {
		// A bug, not an outage: kept, the outbox would call it again off any job.
		return false, r.err
	}
	if r.err != nil && !errors.Is(r.err, cluster.ErrRevokedFull) {
		if !cc.keep(id) {
			return false, errors.New("cluster: logout outbox full: " + r.err.Error())
		}
		cc.app.log.Warn("logout kept until Redis answers; it holds on this node meanwhile", "err", r.err)
		return false, nil
	}
	return r.cutoff, r.err
}

// apply applies one entry of the control log written by node. This node's own
// entries were applied when their script returned. Memory the HTTP side reads (bans,
// revoked sessions) changes at once, on the feed's goroutine; the hub's state changes
// on the hub's goroutine.
func (cc *clusterControl) apply(_, node string, e cluster.CtlEntry) {
	if node == cc.node {
		return
	}
	app, h := cc.app, cc.app.hub
	switch e.Op {
	case cluster.OpBan:
		var ban banInfo
		if err := json.Unmarshal(e.Value, &ban); err != nil {
			app.log.Warn("control entry: bad ban record", "err", err)
		}
		app.bans.add(e.User)
		app.sessions.endSessions(e.User, time.UnixMilli(e.At))
		h.post(command{fn: func() {
			h.bans[e.User] = ban
			for o := range h.clientsOf(e.User) {
				h.doom(o, closeBanned)
			}
		}})
	case cluster.OpUnban:
		app.bans.remove(e.User)
		h.post(command{fn: func() { delete(h.bans, e.User) }})
	case cluster.OpRole:
		h.post(command{fn: func() {
			h.grants[e.User] = e.Role
			h.deliverUser(e.User, h.youEvent(h.identityOf(e.User)))
			h.refreshUser(e.User)
		}})
	case cluster.OpSettings:
		var next Settings
		if err := json.Unmarshal(e.Value, &next); err != nil {
			app.log.Warn("control entry: bad settings", "err", err)
			return
		}
		h.post(command{fn: func() {
			cur := h.settings()
			cfg, err := next.applyTo(cur)
			if err != nil {
				app.log.Warn("control entry: settings refused", "err", err)
				return
			}
			h.applySettings(nil, cfg, settingsOf(cur), next)
		}})
	case cluster.OpInvite:
		h.post(command{fn: func() { h.invitedElsewhere(e.Room, e.Value) }})
	case cluster.OpDM:
		// A message in a conversation on another node: its members here come in (clusterdm.go).
		h.post(command{fn: func() { h.dmElsewhere(e.Room) }})
	case cluster.OpRoom:
		// A room made or deleted on another node: read its record (clusterrooms.go).
		h.post(command{fn: func() { h.refreshRoom(e.Room, command{}) }})
	case cluster.OpDevices:
		// A user's key-directory record changed on another node (clusterkeys.go).
		h.post(command{fn: func() { h.applyDevicesEntry(e) }})
	case cluster.OpDMPrefs:
		// A user's DM preferences changed on another node (clusterkeys.go).
		h.post(command{fn: func() { h.applyDMPrefsEntry(e) }})
	case cluster.OpLink:
		// A link request taken on another node (clusterkeys.go).
		h.post(command{fn: func() { h.applyLinkEntry(e) }})
	case cluster.OpKPLow:
		// A take on another node left a device of the user's low (clusterkps.go).
		h.post(command{fn: func() { h.applyKPLowEntry(e) }})
	case cluster.OpRevoke, cluster.OpCutoff:
		if e.Op == cluster.OpRevoke {
			app.sessions.remember(e.SID, e.User, e.Exp)
		} else {
			app.sessions.endSessions(e.User, time.UnixMilli(e.At))
		}
		sid := e.SID
		h.endConnections(kick{
			match: func(c *Client) bool { return c.user.SessionID == sid },
			close: closeLoggedOut,
		})
	}
}

// ctlChange is the control-log write of a hub change in cluster mode, nil on a single
// node (commit then uses the store alone).
func (h *Hub) ctlChange(run func(context.Context, *cluster.Ctl) error) func(context.Context, *cluster.Ctl) error {
	if h.app.ctl == nil {
		return nil
	}
	return run
}

// commitCtl is commit for a change that goes through the control log: the change is
// applied once Redis has it (the script returned), and only then kept in the local
// store too (its audit entry, and a copy of the record). Like commit it never waits on
// the hub's goroutine.
func (h *Hub) commitCtl(c *Client, env *envelope, ch change) {
	writes := ch.writes
	if ch.audit != nil {
		writes = append(writes, h.auditWrite(ch.audit))
	}
	h.inflight[ch.key] = &flight{}
	ok := h.app.ctl.submit(ctlJob{run: ch.ctl, done: func(err error) {
		h.completions <- func() {
			if errors.Is(err, errJobFailed) {
				h.taskFailed(c, env)
				h.leaveFlight(ch)
				return
			}
			if err != nil {
				// Redis did not take it: nothing changed anywhere; like a say, the
				// answer is unavailable with a retry hint.
				h.log.Error("control log write failed; change not applied", "err", err)
				if _, ok := h.clients[c]; ok && c != nil {
					h.metrics.rejected.WithLabelValues(codeUnavailable).Inc()
					h.deliver(c, unavailableEvent(env.Ref, ""))
				}
				h.leaveFlight(ch)
				return
			}
			h.bp.Submit(writes, func(error) {})
			h.settle(c, env, ch, nil)
		}
	}})
	if !ok {
		h.log.Warn("control log queue full; change refused")
		h.refuseLater(c, env, codeBusy, "the server is busy; nothing changed, try again")
		h.leaveFlight(ch)
	}
}

// clusterAdmit takes a cluster-wide connection slot for tk's user (cap: the per-user
// connection limit, counted over every node). Refused, it says so with 429; when
// Redis does not answer, the local per-user count (already checked) stands in.
func (app *App) clusterAdmit(tk *ticket, userID string) *refusal {
	if app.ctl == nil {
		return nil
	}
	slot, wait, err := app.ctl.limits.TakeSlot(context.Background(), userID, app.settings().MaxConnsPerUser)
	if err != nil {
		app.log.Warn("cluster connection cap unavailable; local cap only", "err", err)
		return nil
	}
	if slot == nil {
		return &refusal{reason: refuseUserConns, status: 429, retryAfter: max(wait, time.Second)}
	}
	tk.slot = slot
	return nil
}

// clusterBudget is the cluster-wide per-user message budget for one connection's
// limiter: nil on a single node.
func (app *App) clusterBudget(userID string) func() (bool, time.Duration, error) {
	if app.ctl == nil {
		return nil
	}
	return func() (bool, time.Duration, error) {
		cfg := app.settings()
		return app.ctl.limits.AllowMessage(context.Background(), userID, cfg.UserMsgRate, cfg.UserMsgBurst)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"modified-chat/internal/cluster"
	"modified-chat/internal/mls"
)

// The KeyPackage directory in cluster mode (issues 13 and 14). A node's own directory
// (keypackages.go) would let a device that uploaded on node 1 never be added by node
// 2, and two nodes could hand out one KeyPackage twice. In cluster mode the directory
// is the cluster's, in Redis (internal/cluster, kp.go): an upload is checked against
// every stored and used KeyPackage of the device there, and a take pops an entry for
// exactly one caller whichever node asks. The readPump checks each KeyPackage as on
// one node; the hub never waits on Redis: every call goes through the directory's own
// queue and goroutine (bounded, busy when full; apart from the control writer's, so a
// flood of uploads cannot delay a ban) and comes back through h.completions. A take
// that leaves a device low is told to its connections on every node: here at once,
// elsewhere through the control log (cluster.OpKPLow, no state).

// kpQueue bounds the directory calls waiting for Redis (uploads, takes, counts), one
// at a time on their own goroutine; beyond it an upload is busy.
const kpQueue = 1024

// errKPQueueFull says a directory call was not made: its queue was full.
var errKPQueueFull = errors.New("KeyPackage directory queue full")

// devRef names one device of one user for clusterTakeKPs.
type devRef struct{ user, device string }

// clusterKPUpload is cmdKPUpload in cluster mode, once the connection is bound to its
// device: the same checks and answers (a repeated KeyPackage is bad_mls with its
// index, over kpPerDevice is kp_full, the ack carries the count, kp_low below kpLow)
// against the directory in Redis, and unavailable when Redis does not answer; then, as
// on one node, the user's E2EE rooms may add the device and the Welcomes kept for it
// are delivered.
func (h *Hub) clusterKPUpload(c *Client, cmd command, first bool) {
	env := cmd.env
	entries := env.mls.entries
	kps := make([]cluster.KP, len(entries))
	for i, e := range entries {
		for _, o := range entries[:i] {
			if bytes.Equal(o.ref, e.ref) {
				h.refuse(c, env, codeBadMLS, "kps["+strconv.Itoa(i)+"]: the same KeyPackage twice")
				return
			}
		}
		kps[i] = cluster.KP{Ref: e.ref, Msg: e.msg, NotAfter: e.notAfter}
	}
	if !h.app.clusterReady.Load() {
		h.unavailableLater(c, env)
		return
	}
	user, device, now := c.user.ID, env.Device, h.now()
	var n int
	ok := h.app.ctl.submitKP(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) (err error) {
			n, err = ctl.UploadKPs(ctx, user, device, kps, kpPerDevice, now)
			return err
		},
		done: func(err error) { h.complete(func() { h.kpUploaded(c, env, n, err, first) }) },
	})
	if !ok {
		h.refuse(c, env, codeBusy, "the server is busy; nothing was stored, try again")
	}
}

// kpUploaded answers an upload once Redis did (or did not): refused, nothing was
// stored; stored, it goes on as cmdKPUpload does after storing (first: the
// connection's first upload for this device hands over its kept Welcomes).
func (h *Hub) kpUploaded(c *Client, env *envelope, n int, err error, first bool) {
	var known *cluster.KPKnownError
	switch {
	case errors.As(err, &known):
		h.refuseLater(c, env, codeBadMLS, "kps["+strconv.Itoa(known.Index)+"]: this KeyPackage was uploaded or used before")
		return
	case errors.Is(err, cluster.ErrKPFull):
		h.refuseLater(c, env, codeKPFull, "a device keeps at most "+strconv.Itoa(kpPerDevice)+" KeyPackages")
		return
	case errors.Is(err, errJobFailed):
		h.taskFailed(c, env)
		return
	case err != nil:
		h.log.Warn("KeyPackage upload failed in the cluster", "err", err)
		h.unavailableLater(c, env)
		return
	}
	user, device := c.user.ID, env.Device
	if _, live := h.clients[c]; live && env.Ref != "" {
		h.deliver(c, appendObject(nil, "ack", "", func(b []byte) []byte {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, env.Ref)
			b = append(b, `,"count":`...)
			return strconv.AppendInt(b, int64(n), 10)
		}))
	}
	if n < kpLow {
		h.tellKPLow(user, device, n)
	}
	if len(env.mls.entries) > 0 {
		h.reconcileUser(user) // may use some, telling kp_low again
	}
	if _, live := h.clients[c]; live && first {
		h.handOverWelcomes(c)
	}
}

// clusterTakeKPs takes one KeyPackage from the cluster's directory for each device of
// want, off the hub's loop, and calls done on the hub's goroutine (never before it
// returns) with one item per device in order: got[i] the entry taken (nil when the
// device had none, or its script failed), left[i] how many the device has left. err
// is the first failure; the entries in got were taken all the same (each is used
// now, on every node) and must be used or lost. A device left below kpLow is told
// kp_low here and on every other node, so the caller need not.
func (h *Hub) clusterTakeKPs(want []devRef, done func(got []*kpEntry, left []int, err error)) {
	refs := make([]cluster.DeviceRef, len(want))
	for i, d := range want {
		refs[i] = cluster.DeviceRef{User: d.user, Device: d.device}
	}
	now := h.now()
	var taken []cluster.Taken
	ok := h.app.ctl.submitKP(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) (err error) {
			taken, err = ctl.TakeKPs(ctx, refs, now)
			return err
		},
		done: func(err error) {
			h.complete(func() {
				got, left := h.kpsTaken(want, taken)
				done(got, left, err)
			})
		},
	})
	if !ok {
		h.later(func() { done(make([]*kpEntry, len(want)), make([]int, len(want)), errKPQueueFull) })
	}
}

// kpsTaken turns a take's answers into entries, as loadKPDirectory reads stored ones,
// and tells the devices it left low. A sealed entry that is not a KeyPackage was
// written by a node of another version: it is dropped, logged.
func (h *Hub) kpsTaken(want []devRef, taken []cluster.Taken) ([]*kpEntry, []int) {
	got, left := make([]*kpEntry, len(want)), make([]int, len(want))
	for i, t := range taken {
		if i >= len(want) {
			break
		}
		left[i] = t.Left
		if t.Msg == nil {
			continue
		}
		m, err := mls.ParseMessage(t.Msg)
		if err != nil || m.KeyPackage == nil {
			h.log.Warn("a KeyPackage from the cluster does not parse; dropped")
			continue
		}
		d := want[i]
		got[i] = &kpEntry{user: d.user, device: d.device, ref: t.Ref, msg: t.Msg, kp: m.KeyPackage, notAfter: t.NotAfter}
		if t.Left < kpLow {
			h.tellKPLow(d.user, d.device, t.Left)
			h.shareKPLow(d.user, d.device, t.Left)
		}
	}
	return got, left
}

// clusterKPCount reads how many KeyPackages a device has in the cluster's directory,
// off the hub's loop, and calls done on the hub's goroutine (never before it returns).
func (h *Hub) clusterKPCount(user, device string, done func(n int, err error)) {
	var n int
	ok := h.app.ctl.submitKP(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) (err error) {
			n, err = ctl.CountKPs(ctx, user, device)
			return err
		},
		done: func(err error) { h.complete(func() { done(n, err) }) },
	})
	if !ok {
		h.later(func() { done(0, errKPQueueFull) })
	}
}

// later runs f on the hub's goroutine after the current command (a callback the
// caller expects after its call returns), unless the hub stops first. Its goroutine
// only hands f over, so it is no task (tasks.go): f runs on the loop.
func (h *Hub) later(f func()) { go h.complete(f) }

// complete hands f to the hub's goroutine from another one, unless the hub stopped.
func (h *Hub) complete(f func()) {
	select {
	case h.completions <- f:
	case <-h.stopped:
	}
}

// runKPJobs runs the directory's calls, one at a time, until the control stops; a
// call that panics costs that call only (runJob).
func (cc *clusterControl) runKPJobs() {
	for {
		select {
		case <-cc.stop:
			return
		case j := <-cc.kpJobs:
			cc.runJob(taskKPJob, j)
		}
	}
}

// submitKP queues a directory call; false when the queue is full.
func (cc *clusterControl) submitKP(j ctlJob) bool {
	select {
	case cc.kpJobs <- j:
		return true
	default:
		return false
	}
}

// shareKPLow tells the other nodes that a device has n KeyPackages left, so its
// connections there hear kp_low. Nothing waits for it: lost, the device learns its
// count at its next upload.
func (h *Hub) shareKPLow(user, device string, n int) {
	if !h.app.ctl.submit(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) error {
			_, err := ctl.KPLow(ctx, user, device, n)
			return err
		},
		done: func(err error) {
			if err != nil {
				h.log.Warn("kp_low not told to the other nodes", "err", err)
			}
		},
	}) {
		h.log.Warn("control log queue full; kp_low told on this node only")
	}
}

// applyKPLowEntry tells a device's connections here that a take on another node left
// it low. Runs on the hub's goroutine.
func (h *Hub) applyKPLowEntry(e cluster.CtlEntry) {
	var note cluster.KPLowNote
	if err := json.Unmarshal(e.Value, &note); err != nil || note.Device == "" {
		h.log.Warn("control entry: bad kp_low", "err", err)
		return
	}
	h.tellKPLow(e.User, note.Device, note.Count)
}

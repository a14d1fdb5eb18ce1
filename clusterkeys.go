package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"

	"modified-chat/internal/cluster"
	"modified-chat/internal/keydir"
	"modified-chat/internal/store"
)

// The key directory in cluster mode (issue 14). A user's record (root key, devices)
// is the cluster's: it lives in Redis as a sealed entry of the control log
// (cluster.OpDevices) under a per-user revision, every change is appended to the log
// by the node that made it, and every node publishes the newest revision it has heard
// of (the log's feed, within about a second). Two nodes changing one user at once
// cannot both win: the script refuses the change computed from an older revision and
// its actor is told busy, nothing changed. A node starting up takes the records from
// Redis in place of its own store's copy. The devices' message counters are kept in
// Redis too, one script per signed message on the sender's readPump, so a counter
// used on one node is a replay on every other. A link request is told to every node
// through the log too (cluster.OpLink, no state: requests live in memory and lapse).

// loadRecords puts the key-directory records and the DM preferences read from Redis
// in place of the local store's (at start-up, before the hub runs). A record that
// fails its seal, is filed under another user or kind, is not the current revision or
// does not parse is dropped, logged and counted
// (chat_cluster_ctl_dropped_total{reason="forged"}).
func (cc *clusterControl) loadRecords(d *keydir.Directory, state *hubState) error {
	prefs, err := cc.ctl.LoadRecords(context.Background(), cluster.OpDMPrefs, cc.app.log, func(e cluster.CtlEntry) bool {
		var p dmPrefs
		return json.Unmarshal(e.Value, &p) == nil
	})
	if err != nil {
		return err
	}
	state.dmPrefs = make(map[string]*dmPrefs, len(prefs))
	for id, e := range prefs {
		var p dmPrefs
		_ = json.Unmarshal(e.Value, &p) // checked by LoadRecords' valid
		p.Rev = e.Rev
		state.dmPrefs[id] = &p
	}
	es, err := cc.ctl.LoadRecords(context.Background(), cluster.OpDevices, cc.app.log, func(e cluster.CtlEntry) bool {
		var u keydir.User
		return json.Unmarshal(e.Value, &u) == nil && u.ID == e.User
	})
	if err != nil {
		return err
	}
	users, revs := make(map[string]*keydir.User, len(es)), make(map[string]uint64, len(es))
	for id, e := range es {
		var u keydir.User
		_ = json.Unmarshal(e.Value, &u) // checked by LoadRecords' valid
		users[id], revs[id] = &u, e.Rev
	}
	d.Replace(users, revs)
	cc.app.log.Info("key directory and DM preferences read from the cluster", "users", len(users), "prefs", len(prefs))
	return nil
}

// commitKeysCluster is commitKeys in cluster mode: the next record goes to the control
// log (commitRecord) and is applied here once Redis took it, unless the log already
// brought a newer revision.
func (h *Hub) commitKeysCluster(c *Client, env *envelope, user string, kc *keydir.Change, ch change) {
	rev := h.app.keys.Rev(user)
	rec, err := json.Marshal(kc.User)
	if err != nil {
		h.refuse(c, env, codeStoreFailed, "the change could not be saved; nothing changed")
		kc.Release()
		return
	}
	apply := ch.apply
	ch.apply = func() {
		if h.app.keys.Advance(user, rev+1) {
			kc.Apply()
		}
		apply()
	}
	h.commitRecord(c, env, cluster.OpDevices, user, rec, rev, ch)
}

// commitRecord is commit for a change of one user's record in cluster mode (op is
// cluster.OpDevices or cluster.OpDMPrefs; value the next record, computed from
// revision rev): the record goes to the control log, and once Redis took it the change
// is settled like a single-node change (ch.apply, which must not apply a record older
// than the one held) and kept in the local store as a copy. Refused as stale, the
// actor gets busy and nothing changed anywhere; Redis away, unavailable. Like commit
// it never waits on the hub's goroutine.
func (h *Hub) commitRecord(c *Client, env *envelope, op, user string, value json.RawMessage, rev uint64, ch change) {
	writes := ch.writes
	if ch.audit != nil {
		writes = append(writes, h.auditWrite(ch.audit))
	}
	h.inflight[ch.key] = &flight{}
	// current is the record Redis holds when the change was stale: applied here at
	// once, so the retry is computed from it (and a change of this node's whose answer
	// was lost, which the log does not bring back to its own node, is not stale for ever).
	var current *cluster.CtlEntry
	ok := h.app.ctl.submit(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) error {
			_, err := ctl.PutRecord(ctx, op, user, value, rev)
			if errors.Is(err, cluster.ErrRecordStale) {
				if e, found, rerr := ctl.ReadRecord(ctx, op, user); rerr == nil && found {
					current = &e
				}
			}
			return err
		},
		done: func(err error) {
			h.completions <- func() {
				switch {
				case errors.Is(err, cluster.ErrRecordStale):
					if current != nil {
						h.applyRecord(*current)
					}
					h.refuseLater(c, env, codeBusy, "another node changed this first; nothing changed, try again")
					h.leaveFlight(ch)
				case errors.Is(err, errJobFailed):
					h.taskFailed(c, env)
					h.leaveFlight(ch)
				case err != nil:
					h.log.Error("control log write failed; change not applied", "op", op, "err", err)
					h.unavailableLater(c, env)
					h.leaveFlight(ch)
				default:
					h.bp.Submit(writes, func(error) {})
					h.settle(c, env, ch, nil)
				}
			}
		},
	})
	if !ok {
		h.log.Warn("control log queue full; change refused", "op", op)
		h.refuseLater(c, env, codeBusy, "the server is busy; nothing changed, try again")
		h.leaveFlight(ch)
	}
}

// applyRecord applies a per-user record of either kind read from Redis.
func (h *Hub) applyRecord(e cluster.CtlEntry) {
	if e.Op == cluster.OpDMPrefs {
		h.applyDMPrefsEntry(e)
	} else {
		h.applyDevicesEntry(e)
	}
}

// applyDevicesEntry publishes a user's record another node wrote to the log, if it is
// newer than the one held, and does here what the change did on its node: contacts
// connected here hear of added and revoked devices and of a replaced root key, and
// E2EE rooms reconcile the user's devices. Runs on the hub's goroutine.
func (h *Hub) applyDevicesEntry(e cluster.CtlEntry) {
	var u keydir.User
	if err := json.Unmarshal(e.Value, &u); err != nil || u.ID != e.User {
		h.log.Warn("control entry: bad key-directory record", "err", err)
		return
	}
	keys := h.app.keys
	old := keys.User(u.ID)
	if !keys.Advance(u.ID, e.Rev) {
		return
	}
	keys.Publish(&u)
	if old != nil && !bytes.Equal(old.URK, u.URK) {
		for _, d := range u.Devices {
			keys.ForgetLink(u.ID, d.ID)
		}
		h.tellContacts(u.ID, nil, devicesEvent("key_changed", u.ID, &u, ""))
		h.reconcileUser(u.ID)
		return
	}
	revoked := false
	for i := range u.Devices {
		d := &u.Devices[i]
		was := old.Live(d.ID)
		switch {
		case d.Revoked == 0 && was == nil:
			keys.ForgetLink(u.ID, d.ID)
			h.tellContacts(u.ID, nil, deviceAddedEvent(u.ID, u.URK, d))
		case d.Revoked != 0 && was != nil:
			h.tellContacts(u.ID, nil, deviceRevokedEvent(u.ID, d.ID, d.RevokedBy))
			revoked = true
		}
	}
	if revoked {
		h.reconcileUser(u.ID)
	}
}

// signedCounterInCluster spends a signed message's device counter in Redis, on the
// sender's readPump: refused as replayed when any node accepted this counter or a
// higher one. When Redis does not answer, the signature is marked so the hub answers
// unavailable (a counter no node could check is never accepted). Nil on one node.
func (c *Client) signedCounterInCluster(s *signature) *protoError {
	if c.app.ctl == nil {
		return nil
	}
	fresh, err := c.app.ctl.ctl.UseCounter(context.Background(), c.user.ID, s.device, s.counter)
	if err != nil {
		c.app.log.Warn("device counter unavailable in the cluster", "err", err)
		s.unchecked = true
		return nil
	}
	if !fresh {
		return newProtoError(keydir.CodeReplayed, "this device already sent message %d or later", s.counter)
	}
	return nil
}

// commitDMPrefs is commit for a change of user's DM preferences from cur to next. On
// one node it is commit. In cluster mode the preferences are an OpDMPrefs record of
// the control log (commitRecord): every node applies them, so a block set on one node
// holds for a conversation on any other.
func (h *Hub) commitDMPrefs(c *Client, env *envelope, user string, cur, next *dmPrefs, ch change) {
	if h.app.ctl == nil {
		h.commit(c, env, ch)
		return
	}
	if h.waitTurn(ch.key, c, env) {
		return
	}
	next.Rev = cur.Rev + 1
	value, err := json.Marshal(next)
	if err != nil {
		h.refuse(c, env, codeStoreFailed, "the change could not be saved; nothing changed")
		return
	}
	apply := ch.apply
	ch.apply = func() {
		if p := h.dmPrefs[user]; p == nil || p.Rev < next.Rev {
			apply()
		} else if _, ok := h.clients[c]; ok {
			// The log brought a newer record first: answer with what holds now.
			h.deliver(c, dmPrefsEvent(p, env.Ref))
		}
	}
	h.commitRecord(c, env, cluster.OpDMPrefs, user, value, cur.Rev, ch)
}

// applyDMPrefsEntry puts a user's DM preferences another node wrote to the log in
// place, if newer than those held, and tells the user's connections here, as the
// single node tells the user's other connections. Runs on the hub's goroutine.
func (h *Hub) applyDMPrefsEntry(e cluster.CtlEntry) {
	var p dmPrefs
	if err := json.Unmarshal(e.Value, &p); err != nil {
		h.log.Warn("control entry: bad DM preferences", "err", err)
		return
	}
	if cur := h.dmPrefs[e.User]; cur != nil && cur.Rev >= e.Rev {
		return
	}
	p.Rev = e.Rev
	h.dmPrefs[e.User] = &p
	for o := range h.clientsOf(e.User) {
		h.deliver(o, dmPrefsEvent(&p, ""))
	}
}

// migrateKeys moves a single node's key directory, DM preferences and device counters
// into Redis (migrate-redis): without them a node joining the cluster would read no
// devices, no blocks, and counters from zero (every signed message in its history
// could be sent again). A record Redis has already is a conflict: the move stops.
func migrateKeys(ctx context.Context, ctl *cluster.Ctl, st store.Store, state *hubState) (users, prefs, counters int, err error) {
	err = st.Scan(keydir.BucketUsers, func(k, v []byte) error {
		if _, err := ctl.PutRecord(ctx, cluster.OpDevices, string(k), v, 0); err != nil {
			return fmt.Errorf("key directory record of %q: %w", k, err)
		}
		users++
		return nil
	})
	if err != nil {
		return
	}
	for user, p := range state.dmPrefs {
		b, _ := json.Marshal(p)
		if _, err = ctl.PutRecord(ctx, cluster.OpDMPrefs, user, b, 0); err != nil {
			return users, prefs, counters, fmt.Errorf("DM preferences of %q: %w", user, err)
		}
		prefs++
	}
	err = st.Scan(keydir.BucketSeen, func(k, v []byte) error {
		user, device, ok := bytes.Cut(k, []byte{0})
		if !ok || len(v) != 16 {
			return nil // not a counter this version writes
		}
		if n := binary.BigEndian.Uint64(v); n > 0 {
			if _, err := ctl.UseCounter(ctx, string(user), string(device), n); err != nil {
				return fmt.Errorf("device counter of %q: %w", user, err)
			}
			counters++
		}
		return nil
	})
	return
}

// shareLink tells the other nodes of a link request this node took, so the user's
// devices connected anywhere see it. Nothing waits for it: a request Redis did not
// take is still shown here. Nothing on one node.
func (h *Hub) shareLink(user string, l *keydir.Link) {
	if h.app.ctl == nil {
		return
	}
	b, _ := json.Marshal(l)
	if !h.app.ctl.submit(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) error {
			_, err := ctl.Link(ctx, user, b)
			return err
		},
		done: func(err error) {
			if err != nil {
				h.log.Warn("link request not told to the other nodes", "err", err)
			}
		},
	}) {
		h.log.Warn("control log queue full; link request shown on this node only")
	}
}

// applyLinkEntry records a link request another node took and shows it to the user's
// connections here. Runs on the hub's goroutine.
func (h *Hub) applyLinkEntry(e cluster.CtlEntry) {
	var l keydir.Link
	if err := json.Unmarshal(e.Value, &l); err != nil {
		h.log.Warn("control entry: bad link request", "err", err)
		return
	}
	if h.app.keys.AddLink(e.User, l) {
		h.tellLink(e.User, &l)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"modified-chat/internal/cluster"
	"modified-chat/internal/keydir"
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
// used on one node is a replay on every other. Link requests stay on the node that
// took them (they change nothing durable; the certify_device that follows does).

// loadKeys puts the key-directory records read from Redis in place of the local
// store's (at start-up, before the hub runs). A record that fails its seal, is filed
// under another user or is not the current revision is dropped, logged and counted
// (chat_cluster_ctl_dropped_total{reason="forged"}).
func (cc *clusterControl) loadKeys(d *keydir.Directory) error {
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
	cc.app.log.Info("key directory read from the cluster", "users", len(users))
	return nil
}

// commitKeysCluster is commitKeys in cluster mode: the next record goes to the control
// log, computed from the revision this node holds; once Redis took it the change is
// applied here (unless the log already brought a newer one), kept in the local store
// as a copy, and settled like a single-node change. Refused as stale, the actor gets
// busy and nothing changed anywhere; Redis away, unavailable.
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
	writes := ch.writes
	if ch.audit != nil {
		writes = append(writes, h.auditWrite(ch.audit))
	}
	h.inflight[ch.key] = &flight{}
	ok := h.app.ctl.submit(ctlJob{
		run: func(ctx context.Context, ctl *cluster.Ctl) error {
			_, err := ctl.PutRecord(ctx, cluster.OpDevices, user, rec, rev)
			return err
		},
		done: func(err error) {
			h.completions <- func() {
				switch {
				case errors.Is(err, cluster.ErrRecordStale):
					h.refuseLater(c, env, codeBusy, "another node changed these devices first; nothing changed, try again")
					h.leaveFlight(ch)
				case err != nil:
					h.log.Error("control log write failed; device change not applied", "err", err)
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
		h.log.Warn("control log queue full; device change refused")
		h.refuseLater(c, env, codeBusy, "the server is busy; nothing changed, try again")
		h.leaveFlight(ch)
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

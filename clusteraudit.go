package main

import (
	"context"
	"encoding/json"

	"modified-chat/internal/cluster"
)

// The audit log in cluster mode: each node appends the audit entries of its changes to
// the cluster's audit Stream (internal/cluster/audit.go), and `audit` on any node reads
// it there, so an admin sees what moderators did on every node. The local store keeps
// this node's entries as on a single node; when Redis does not answer, `audit` answers
// from them.

// appendAudit appends an entry to the cluster's audit log through the control writer,
// without holding up the change it records; nil-safe (single node: nothing).
func (cc *clusterControl) appendAudit(a auditEntry) {
	if cc == nil {
		return
	}
	b, err := json.Marshal(a)
	if err != nil {
		return
	}
	log := cc.app.log
	ok := cc.submit(ctlJob{
		run: func(ctx context.Context, l *cluster.Ctl) error { return l.AppendAudit(ctx, b) },
		done: func(err error) {
			if err != nil {
				log.Warn("audit entry not in the cluster's audit log; kept on this node", "action", a.Action, "err", err)
			}
		},
	})
	if !ok {
		log.Warn("audit entry not in the cluster's audit log: control queue full", "action", a.Action)
	}
}

// clusterAudit answers `audit` from the cluster's audit log, off the hub's loop; false
// on a single node. ReadAudit bounds its own call (ctlTimeout, 2 s, in
// internal/cluster; TestStalledRedisReadsBounded): past it the answer is this node's
// entries, as whenever Redis does not answer.
func (h *Hub) clusterAudit(c *Client, env *envelope) bool {
	if h.app.ctl == nil {
		return false
	}
	ctl, limit, ref := h.app.ctl.ctl, max(env.Limit, 1), env.Ref
	h.goTask(taskAuditRead, func() {
		raw, err := ctl.ReadAudit(context.Background(), limit)
		h.completions <- func() {
			if _, ok := h.clients[c]; !ok {
				return
			}
			if err != nil {
				h.log.Warn("cluster audit log unreadable; answering from this node's", "err", err)
				h.deliverReply(c, auditEvent(h.newestAudit(limit), ref))
				return
			}
			entries := make([]auditEntry, 0, len(raw))
			for _, b := range raw {
				var a auditEntry
				if json.Unmarshal(b, &a) == nil {
					entries = append(entries, a)
				}
			}
			h.deliverReply(c, auditEvent(entries, ref))
		}
	}, func() { h.taskFailed(c, env) })
	return true
}

package main

import (
	"context"
	"time"

	"modified-chat/internal/cluster"
)

// Conversations across cluster nodes. A conversation's record and messages go through
// Redis like a room's (clusterrooms.go); what one node does besides is bring the
// members' connections into it before a message is delivered (pullIntoDM), so the peer
// sees it without having opened it. Across nodes that takes two steps: a node that
// follows the conversation's log does it at each message entry (pullOnEntry), and the
// sender's node tells the others through the control log (announceDM, OpDM), since
// the peer's node follows nothing of a conversation its user is not in. The entry is
// sealed like every control entry: a forged one is dropped and counted by the control
// feed before it reaches dmElsewhere.

// Conversation announcement tunables.
const (
	// dmAnnounceEvery is how often one node tells the others of messages in one
	// conversation: a message announces itself unless this node announced one there
	// less than this ago. The first message always goes; what follows at a chat's pace
	// costs one control entry a second at most, and a node following the conversation
	// pulls its members in at every entry anyway.
	dmAnnounceEvery = time.Second
	// dmAnnouncedMax bounds the conversations whose last announcement is remembered
	// (DoS hardening); beyond it the older ones are forgotten, and a conversation not
	// remembered is simply announced again.
	dmAnnouncedMax = 10000
)

// announceDM, on the node sequencing a message in conversation ri, tells every other
// node to bring the members' connections there into it (dmElsewhere). It does not hold
// up the message: a failure is logged, and the peer finds the message in history when
// they open the conversation.
func (h *Hub) announceDM(ri *roomInfo) {
	cc := h.app.ctl
	if cc == nil {
		return
	}
	now := h.now()
	if at, ok := h.dmAnnounced[ri.Name]; ok && now.Sub(at) < dmAnnounceEvery {
		return
	}
	if len(h.dmAnnounced) >= dmAnnouncedMax {
		for name, at := range h.dmAnnounced {
			if now.Sub(at) >= dmAnnounceEvery {
				delete(h.dmAnnounced, name)
			}
		}
	}
	if len(h.dmAnnounced) < dmAnnouncedMax {
		h.dmAnnounced[ri.Name] = now
	}
	name, log := ri.Name, h.log
	if !cc.submit(ctlJob{
		run: func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.Announce(ctx, cluster.OpDM, name, nil)
			return err
		},
		done: func(err error) {
			if err != nil {
				log.Warn("conversation message not announced to the other nodes", "room", name, "err", err)
			}
		},
	}) {
		log.Warn("conversation message not announced to the other nodes: control queue full", "room", name)
	}
}

// dmElsewhere is announceDM's other side: a node told of a message in a conversation
// brings its members' connections here into it, after reading its record (this node
// may never have heard of it). A conversation followed here needs nothing (its entry
// does it, pullOnEntry), nor one whose members have no connection here outside it.
func (h *Hub) dmElsewhere(room string) {
	if !isDMName(room) {
		return
	}
	if lf := h.feeds[room]; lf != nil && lf.ready {
		return
	}
	if ri := h.meta[room]; ri != nil && !h.outsideDM(ri) {
		return
	}
	h.refreshRoom(room, command{fn: func() {
		if ri := h.meta[room]; ri != nil && ri.DM {
			h.pullIntoDM(ri)
		}
	}})
}

// outsideDM reports whether a member of conversation ri has a connection here that is
// not in it.
func (h *Hub) outsideDM(ri *roomInfo) bool {
	for id := range ri.Roles {
		for o := range h.clientsOf(id) {
			if o.rooms[ri.Name] == nil {
				return true
			}
		}
	}
	return false
}

// pullOnEntry is called by the feed with each message entry of a room followed here,
// before it is delivered: in a conversation, the members' connections here that are not
// in it are brought in first, as one node does before it delivers a message.
func (h *Hub) pullOnEntry(room string) {
	if ri := h.meta[room]; ri != nil && ri.DM {
		h.pullIntoDM(ri)
	}
}

// peerElsewhere asks Redis whether peer, a user this node has never seen, is connected
// to another node, and then goes on opening the conversation with them (createDM): a
// conversation may be opened with a user of the cluster, not only of this node. It is
// reached only after the opener's open bucket paid (allowOpen), which bounds these
// reads. When Redis does not answer, the open is unavailable: Connected bounds its own
// call (limitTimeout, 500 ms, in internal/cluster), so a stuck Redis holds the task at
// most that long (TestStalledRedisReadsBounded), and context.Background() here adds
// no wait.
func (h *Hub) peerElsewhere(c *Client, env *envelope, peer, name string) {
	if h.app.keys.User(peer) != nil {
		h.createDM(c, env, peer, name, true) // in the cluster's key directory
		return
	}
	limits, now := h.app.ctl.limits, h.now()
	h.goTask(taskPeerRead, func() {
		seen, err := limits.Connected(context.Background(), peer, now)
		h.completions <- func() {
			if _, ok := h.clients[c]; !ok {
				return
			}
			if err != nil {
				h.log.Warn("peer's connections not read from redis; open_dm unavailable", "err", err)
				h.unavailableLater(c, env)
				return
			}
			if h.waitTurn(roomKey(name), c, env) {
				return
			}
			h.createDM(c, env, peer, name, seen)
		}
	}, func() { h.taskFailed(c, env) })
}

package main

import (
	"encoding/json"
)

// A change to a room record, said once for both modes: the next record and what every
// node holding members of the room must do when it takes effect. On a single node it
// is applied when the store has it (durable.go); in cluster mode it is an entry of the
// room's log, applied by every node at its position among the messages
// (clusterrooms.go), so a kick on one node and the messages around it are seen in the
// same order everywhere.

// roomEntry is one room change. Its JSON is the body of a room entry in Redis.
type roomEntry struct {
	// Name is the room's; Info its next record, nil when the room is deleted.
	Name string    `json:"name"`
	Info *roomInfo `json:"info"`
	// Created marks the room's first record: in cluster mode its id is where the
	// room's history begins (FirstID), so a room made again under an old name never
	// shows the old room's messages.
	Created bool `json:"created,omitempty"`
	// Expel is a user whose connections leave the room, each told Event (`kicked`,
	// or `left` for a member leaving an E2EE room).
	Expel string          `json:"expel,omitempty"`
	Event json.RawMessage `json:"event,omitempty"`
	// Refresh is a user whose room role changed: their connections get the room
	// again and the others a `role` event.
	Refresh string `json:"refresh,omitempty"`
	// Notify tells the members the room's description changed.
	Notify bool `json:"notify,omitempty"`
	// Invite tells the invitee's connections (by id, or by verified email) `invited`.
	Invite *invitation `json:"invite,omitempty"`

	// The fields of an end-to-end encrypted room in cluster mode (e2eecluster.go).
	// MLS is the group's Delivery Service state after this change: every change of
	// such a room carries it, so the room's record holds the state of its revision.
	MLS *mlsGroup `json:"mls,omitempty"`
	// MLSType and MLSEvent are the MLS event (mls_group_info, mls_proposals or
	// mls_commit) every node delivers to its members at this entry's position, and
	// history replays: its fields as a JSON object, without type, room, id and ts.
	MLSType  string          `json:"mls_type,omitempty"`
	MLSEvent json.RawMessage `json:"mls_event,omitempty"`
	// Welcome, with a commit that adds, is the Welcome for the added devices
	// (WelcomeFor, by devKey); the group remembers this entry's id for each of them.
	Welcome    []byte   `json:"welcome,omitempty"`
	WelcomeFor []string `json:"welcome_for,omitempty"`
	// Skip names the connection that made the change ("<node>:<sid>"), left out of
	// the event: a committer does not get its own commit.
	Skip string `json:"skip,omitempty"`
}

// invitation is whom an invite names and who invited them (their user JSON).
type invitation struct {
	User  string          `json:"user,omitempty"`
	Email string          `json:"email,omitempty"`
	By    json.RawMessage `json:"by"`
}

// applyRoom installs a room change in the hub's memory and makes its effects on this
// node's connections.
func (h *Hub) applyRoom(e *roomEntry) {
	if e.Info == nil {
		if r := h.rooms[e.Name]; r != nil {
			ev := appendObject(nil, "room_deleted", e.Name, func(b []byte) []byte { return b })
			for o := range r.clients {
				h.deliver(o, ev)
				h.leaveRoom(o, e.Name)
			}
		}
		h.dropRoom(e.Name)
		delete(h.mls.groups, e.Name) // its record went in the deletion's batch (or with the room's in Redis)
		delete(h.mlsJoined, e.Name)
		return
	}
	h.putRoom(e.Info)
	if r := h.rooms[e.Name]; r != nil && e.Expel != "" {
		h.removeUser(r, e.Expel, e.Event)
	}
	if e.Refresh != "" {
		h.refreshUser(e.Refresh)
	}
	if e.Notify {
		h.notifyRoom(h.meta[e.Name])
	}
	if e.Invite != nil {
		h.tellInvited(e.Name, e.Invite)
	}
}

// tellInvited tells the invitee's connections here that they were invited into room.
func (h *Hub) tellInvited(room string, iv *invitation) {
	ri := h.meta[room]
	if ri == nil {
		return
	}
	invited := roomEvent("invited", ri, 0, func(b []byte) []byte {
		b = append(b, `,"by":`...)
		return append(b, iv.By...)
	})
	invitees := h.clientsOf(iv.User)
	if iv.Email != "" {
		invitees = h.clientsWithEmail(iv.Email)
	}
	for o := range invitees {
		h.deliver(o, invited)
	}
}

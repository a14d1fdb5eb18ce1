package main

import (
	"encoding/json"
	"strconv"

	"modified-chat/internal/store"
)

// Deleting a message: its sender may delete it, and so may whoever holds expel in its
// room (the owner, the room's moderators, global moderators and admins), except in a
// direct-message conversation, where only the sender may. The hub does not keep who
// sent what, so it asks the store (off its loop, after every commit already queued,
// as history does), then decides on its loop and deletes through the writer. Once the
// delete is durable every connection in the room gets `deleted` and the message is gone
// from history; a moderator's removal is audited (who, which message, whose; never
// its text).

// Who deleted a message, as the `deleted` event says it.
const (
	deletedBySender    = "sender"
	deletedByModerator = "moderator"
)

// storedSender is what deletion needs of a message in history: its type and sender.
type storedSender struct {
	Type string `json:"type"`
	From struct {
		ID string `json:"id"`
	} `json:"from"`
}

// deletable are the history records a delete may name: what someone said (text,
// file, or in an E2EE room its ciphertext). The rest of an E2EE room's log (its
// commits, proposals, group info) is the group's key schedule: a device catching up
// needs every one, so deleting one (even one's own commit) would break the room.
var deletable = map[string]bool{"message": true, "file": true, "mls_app": true}

// cmdDelete deletes a message from a room's history and from every open page.
func (h *Hub) cmdDelete(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	if env.ID <= ri.FirstID || (h.feed == nil && env.ID > h.bp.Last()) || (h.feed != nil && !h.roomsInRedis(ri.Name) && env.ID > h.boundary(ri.Name)) {
		h.refuse(c, env, codeNoSuchMessage, "no such message")
		return
	}
	room, id, s := ri.Name, env.ID, h.app.store
	read := func() (string, bool) { return readSender(s, room, id) }
	if h.roomsInRedis(room) {
		feed := h.feed
		read = func() (string, bool) { return readClusterSender(feed, room, id) }
	}
	ok := h.bp.Submit(nil, func(error) {
		h.goTask(taskDeleteRead, func() {
			sender, found := read()
			h.completions <- func() {
				if _, ok := h.clients[c]; ok {
					h.deleteMessage(c, env, sender, found)
				}
			}
		}, func() { h.taskFailed(c, env) })
	})
	if !ok {
		h.refuse(c, env, codeBusy, "the server is busy; nothing changed, try again")
	}
}

// readSender finds a message in a room's history and returns its sender's id; a
// record that is not deletable is not found.
func readSender(s store.Store, room string, id uint64) (string, bool) {
	var sender string
	found := false
	s.After(historyBucket(room), store.SeqKey(id-1), 1, func(k, v []byte) error {
		if store.KeySeq(k) != id {
			return nil
		}
		var m storedSender
		if json.Unmarshal(v, &m) == nil && m.From.ID != "" && deletable[m.Type] {
			sender, found = m.From.ID, true
		}
		return nil
	})
	return sender, found
}

// deleteMessage decides, on the hub, whether c may delete the message whose sender the
// store named, and deletes it. Everything is checked again: the room may have gone or
// c's role changed while the store was read.
func (h *Hub) deleteMessage(c *Client, env *envelope, sender string, found bool) {
	ri := h.visible(c.user, env.Room)
	if ri == nil {
		h.refuse(c, env, codeNoSuchRoom, "no such room")
		return
	}
	if !found || env.ID <= ri.FirstID {
		h.refuse(c, env, codeNoSuchMessage, "no such message")
		return
	}
	by := deletedBySender
	if sender != c.user.ID {
		if ri.DM || h.perms(c.user, ri)&permExpel == 0 {
			h.refuse(c, env, codeForbidden, "you may delete only your own messages")
			return
		}
		by = deletedByModerator
	}
	var audit *auditEntry
	if by == deletedByModerator {
		a := newAudit(h.now(), c.user.ID, "delete_message", ri.Name+" "+strconv.FormatUint(env.ID, 10), sender, nil)
		audit = &a
	}
	room, id := ri.Name, env.ID
	h.commit(c, env, change{
		key:    "message/" + room + "/" + strconv.FormatUint(id, 10),
		writes: messageDeletes(room, id),
		audit:  audit,
		erase:  &erasure{Room: room, ID: id, By: by},
		apply:  func() {},
	})
}

// erasure is a message deletion: on one node applied when the store has it, in
// cluster mode an entry of the room's log that every node applies at its position
// (clusterfiles.go).
type erasure struct {
	Room string `json:"room"`
	ID   uint64 `json:"id"`
	By   string `json:"by"`
}

// applyErasure tells this node's connections in the room that the message is gone.
func (h *Hub) applyErasure(e *erasure) {
	if r := h.rooms[e.Room]; r != nil {
		h.broadcast(r, deletedEvent(e.Room, e.ID, e.By))
	}
}

// messageDeletes are the store writes that delete one message, with its file.
func messageDeletes(room string, id uint64) []store.Write {
	return []store.Write{
		{Bucket: historyBucket(room), Key: store.SeqKey(id)},
		{Bucket: filesBucket(room), Key: store.SeqKey(id)},
	}
}

// deletedEvent tells a room's pages that a message is gone, and by whom.
func deletedEvent(room string, id uint64, by string) []byte {
	return appendObject(nil, "deleted", room, func(b []byte) []byte {
		b = append(b, `,"id":`...)
		b = strconv.AppendUint(b, id, 10)
		b = append(b, `,"by":"`...)
		b = append(b, by...)
		return append(b, '"')
	})
}

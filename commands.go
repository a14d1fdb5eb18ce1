package main

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/store"
)

// How to add a command. A command is defined by its row in commandTable below, and
// only there: its fields (fields.go: reuse a shared fieldSpec such as roomRefField or
// userField, or write a check that validates, bounds and cleans the field in the
// readPump), the room it acts on (room: the dispatcher looks it up, no_such_room if the
// caller cannot see it), the permissions it needs (needs, checked in that room or
// globally), whether a direct-message conversation allows it (dm), any permission
// that one flag cannot say (allow, a check the dispatcher runs before the handler),
// whether clients may send it at all (internal), and the handler (run), which starts
// from a caller who may do what it asks and decides only what depends on the state.
// New fields go into envelope (filter.go). Then document the command in PROTOCOL.md's
// client-to-server table, with exactly the row's fields and the permissions it needs:
// TestCommandTableMatchesProtocol fails until the two agree. A refusal uses an error
// code defined in codes.go, by name; a new code goes there and into PROTOCOL.md's
// error-code table (TestErrorCodesMatchProtocol), and likewise a close.

// cmdSpec is one row of the command table, the one place a command is defined: the
// fields it takes and how they are checked, the permission it needs, whether clients
// may send it, and its handler. The readPump checks the fields (filter.checkFields);
// the hub's dispatcher checks everything else the row says, in this order, before the
// handler runs, so a handler starts from a caller who may do what it asks.
type cmdSpec struct {
	// fields are checked in the readPump, in this order (fields.go).
	fields []fieldSpec
	// room: the command names an existing room, which must be visible to the caller
	// (else no_such_room, exactly as for a missing room); the permission is then
	// checked in that room, otherwise globally.
	room bool
	// needs are the permissions the caller must hold (forbidden otherwise).
	needs perm
	// dm allows the command in a direct-message conversation; the others (invite,
	// kick, topic, ...) are refused there with forbidden, whatever roles say.
	dm bool
	// allow, when set, is the rest of the command's permission, where it depends on
	// more than one flag (may this user create rooms, send files into this locked
	// room, act on that other user's device); it refuses with its own code.
	allow func(h *Hub, c *Client, env *envelope, ri *roomInfo) *protoError
	// internal rows are posted by the server itself (file_data, once a file's bytes
	// arrived); a client sending the type gets unknown_type.
	internal bool
	run      func(h *Hub, c *Client, cmd command, ri *roomInfo)
}

// commandTable maps each command type to its row. It is filled in init: a command that
// waited for a record is dispatched again from the handlers' own path (durable.go),
// a cycle Go allows only outside a variable's initialiser.
var commandTable map[string]cmdSpec

// init fills commandTable; see its comment for why it is not an initialiser.
func init() {
	kickFields := []fieldSpec{roomRefField, userField}
	commandTable = map[string]cmdSpec{
		"join":  {fields: []fieldSpec{roomRefField, afterField}, allow: (*Hub).mayJoin, run: (*Hub).cmdJoin},
		"leave": {fields: []fieldSpec{roomRefField}, run: (*Hub).cmdLeave},
		"say": {fields: []fieldSpec{roomRefField, field("text", checkSayText), sigField},
			room: true, needs: permSend, dm: true, run: (*Hub).cmdSay},
		"rooms": {run: (*Hub).cmdRooms},
		"create": {fields: []fieldSpec{newRoomField, field("private", nil), topicField(false), e2eeCreateField},
			allow: (*Hub).mayCreateRoom, run: (*Hub).cmdCreate},
		"invite": {fields: []fieldSpec{roomRefField, userOrEmailField}, room: true, needs: permInvite, run: (*Hub).cmdInvite},
		"kick":   {fields: kickFields, room: true, needs: permExpel, run: (*Hub).cmdKick},
		"ban":    {fields: kickFields, room: true, needs: permExpel, run: (*Hub).cmdKick},
		"unban":  {fields: kickFields, room: true, needs: permExpel, run: (*Hub).cmdUnban},
		"set_room_role": {fields: []fieldSpec{roomRefField, userField, field("role", checkRoomRole)},
			room: true, needs: permManage, run: (*Hub).cmdSetRoomRole},
		"lock": {fields: []fieldSpec{roomRefField, field("locked", checkLocked)},
			room: true, needs: permManage, run: (*Hub).cmdLock},
		"topic":       {fields: []fieldSpec{roomRefField, topicField(true)}, room: true, needs: permManage, run: (*Hub).cmdTopic},
		"delete_room": {fields: []fieldSpec{roomRefField}, room: true, needs: permManage, run: (*Hub).cmdDeleteRoom},
		"set_role": {fields: []fieldSpec{userField, field("role", checkGlobalRole)},
			needs: permAdmin, run: (*Hub).cmdSetRole},
		"global_ban":   {fields: []fieldSpec{userField, field("reason", checkReason)}, needs: permAdmin, run: (*Hub).cmdGlobalBan},
		"global_unban": {fields: []fieldSpec{userField}, needs: permAdmin, run: (*Hub).cmdGlobalUnban},
		"get_settings": {needs: permAdmin, run: (*Hub).cmdGetSettings},
		"set_settings": {fields: []fieldSpec{field("settings", checkSettings)}, needs: permAdmin, run: (*Hub).cmdSetSettings},
		"audit":        {fields: []fieldSpec{field("limit", clampAuditLimit)}, needs: permAdmin, run: (*Hub).cmdAudit},
		"history":      {fields: []fieldSpec{roomRefField, afterField}, room: true, dm: true, run: (*Hub).cmdHistory},
		"fetch_file": {fields: []fieldSpec{roomRefField, idField("fetch_file needs the id of a file message")},
			room: true, dm: true, run: (*Hub).cmdFetchFile},
		// A file is announced, answered on the readPump's reply channel, then its
		// bytes come back as file_data, checked again (a role may have changed).
		"file": {fields: []fieldSpec{roomRefField, fieldSpec{names: []string{"name", "mime", "size"}, check: checkFileFields}, sigField},
			room: true, needs: permSendBinary, dm: true, allow: (*Hub).maySendFile, run: (*Hub).cmdFileAnnounce},
		"file_data": {internal: true, room: true, needs: permSendBinary, dm: true, allow: (*Hub).maySendFile, run: (*Hub).cmdFileData},
		// The key directory (devices.go).
		"register_device": {fields: []fieldSpec{uploadFields(true), field("user", nil)}, allow: (*Hub).mayRegister, run: (*Hub).cmdRegisterDevice},
		"certify_device":  {fields: []fieldSpec{uploadFields(false), field("user", nil)}, allow: (*Hub).mayRegister, run: (*Hub).cmdRegisterDevice},
		"reset_identity":  {fields: []fieldSpec{uploadFields(true)}, run: (*Hub).cmdResetIdentity},
		"devices":         {fields: []fieldSpec{{names: []string{"user", "users"}, check: checkDevicesQuery}}, run: (*Hub).cmdDevices},
		"revoke_device":   {fields: []fieldSpec{optUserField, deviceField}, allow: (*Hub).mayRevoke, run: (*Hub).cmdRevokeDevice},
		"link_request":    {fields: []fieldSpec{linkFields}, run: (*Hub).cmdLinkRequest},
		// Direct messages (dm.go) and deleting messages (delete.go).
		"open_dm": {fields: []fieldSpec{userOrEmailField, field("e2ee", nil)}, run: (*Hub).cmdOpenDM},
		"dm_prefs": {fields: []fieldSpec{{names: []string{"block", "unblock"}, check: checkDMPrefs}, field("refuse_strangers", nil)},
			run: (*Hub).cmdDMPrefs},
		"delete": {fields: []fieldSpec{roomRefField, idField("delete needs the message id")}, room: true, dm: true, run: (*Hub).cmdDelete},
	}
}

// dispatch checks a command against its row, in the order the row's comment gives,
// and runs its handler. A refusal goes back as an error event, or for a file
// announcement on its reply channel.
func (h *Hub) dispatch(cmd command) {
	c, env := cmd.client, cmd.env
	spec, ok := commandTable[env.Type]
	if !ok {
		h.refuseCmd(cmd, newProtoError(codeUnknownType, "unknown type"))
		return
	}
	if name, stale := h.staleRoom(cmd); stale {
		h.refreshRoom(name, cmd) // cluster mode: read the room's record first
		return
	}
	var ri *roomInfo
	if spec.room {
		if ri = h.visible(c.user, env.Room); ri == nil {
			if !h.recheckRoom(cmd) {
				h.refuseCmd(cmd, newProtoError(codeNoSuchRoom, "no such room"))
			}
			return
		}
	}
	if h.perms(c.user, ri)&spec.needs != spec.needs || (ri != nil && ri.DM && !spec.dm) {
		h.refuseCmd(cmd, newProtoError(codeForbidden, "you are not allowed to do that"))
		return
	}
	if spec.allow != nil {
		if perr := spec.allow(h, c, env, ri); perr != nil {
			if perr.Code != codeNoSuchRoom || !h.recheckRoom(cmd) {
				h.refuseCmd(cmd, perr)
			}
			return
		}
	}
	spec.run(h, c, cmd, ri)
}

// refuseCmd refuses a command the dispatcher stopped: on the readPump's reply channel
// when it waits for one (a file announcement), else with an error event. Either way
// the refusal is counted.
func (h *Hub) refuseCmd(cmd command, perr *protoError) {
	if cmd.reply != nil {
		h.metrics.rejected.WithLabelValues(perr.Code).Inc()
		cmd.reply <- perr // buffered; the readPump waits for exactly one answer
		return
	}
	h.refuse(cmd.client, cmd.env, perr.Code, perr.Message)
}

// refuseRate answers a request over one of its connection's answer budgets with
// rate_limited and the time to wait, and counts it.
func (h *Hub) refuseRate(c *Client, room, ref string, retry time.Duration) {
	h.metrics.rateLimited.Inc()
	h.metrics.rejected.WithLabelValues(codeRateLimited).Inc()
	h.deliver(c, rateLimitedRoomEvent(ref, room, retry))
}

// deliverReply delivers an answer to c's own request and charges its bytes to c's
// reply budget.
func (h *Hub) deliverReply(c *Client, ev []byte) {
	c.limiter.chargeReply(len(ev))
	h.deliver(c, ev)
}

// replyRefused refuses a request, with rate_limited, while c's reply budget is in
// debt; it reports whether it did.
func (h *Hub) replyRefused(c *Client, env *envelope) bool {
	retry, ok := c.limiter.replyAllowed()
	if !ok {
		room := ""
		if validRoom(env.Room) == nil {
			room = env.Room
		}
		h.refuseRate(c, room, env.Ref, retry)
	}
	return !ok
}

// refuse answers a command with an error event and counts it.
func (h *Hub) refuse(c *Client, env *envelope, code, msg string) {
	h.metrics.rejected.WithLabelValues(code).Inc()
	room := ""
	if validRoomRef(env.Room) == nil {
		room = env.Room
	}
	h.deliver(c, errorEvent(code, msg, env.Ref, room))
}

// mayCreate reports whether c may create rooms now.
func (h *Hub) mayCreate(c *Client) bool {
	p := h.perms(c.user, nil)
	if p&permSend == 0 {
		return false
	}
	return h.settings().MembersCanCreateRooms || p&(permExpel|permAdmin) != 0
}

// createRoom makes a new room owned by c, or refuses. The room exists once it is
// durable: then entered runs (with the new record), and c's ref is acknowledged.
// Rooms being created count against the room caps until they settle.
func (h *Hub) createRoom(c *Client, env *envelope, private bool, entered func(*roomInfo)) {
	if len(h.meta)+len(h.creating) >= h.settings().MaxRooms {
		h.refuse(c, env, codeRoomLimit, "the server has as many rooms as it may keep")
		return
	}
	owned := 0
	for _, ri := range h.meta {
		if ri.Owner == c.user.ID {
			owned++
		}
	}
	for _, owner := range h.creating {
		if owner == c.user.ID {
			owned++
		}
	}
	if owned >= maxOwnedRooms && h.perms(c.user, nil)&permAdmin == 0 {
		h.refuse(c, env, codeRoomLimit, "you own as many rooms as one user may")
		return
	}
	ri := newRoomInfo(env.Room, c.user.ID, private, h.now())
	ri.FirstID = h.bp.Last()
	if env.wantsE2EE() && env.Type == "create" {
		ri.E2EE, ri.MLSGroup = true, newGroupID()
	}
	if env.Topic != nil {
		ri.Topic = *env.Topic
	}
	name := ri.Name
	if h.waitTurn(roomKey(name), c, env) {
		return
	}
	h.creating[name] = c.user.ID
	h.commit(c, env, change{
		key:     roomKey(name),
		writes:  []store.Write{ri.write()},
		release: func() { delete(h.creating, name) },
		room:    &roomEntry{Name: name, Info: ri, Created: true},
		apply: func() {
			if _, ok := h.clients[c]; ok && h.meta[name] != nil {
				entered(h.meta[name])
			}
		},
	})
}

// cmdJoin joins a room. A public room that does not exist yet is created, with the
// joiner as owner, when they may create rooms. A private room the joiner was not
// invited to answers no_such_room, exactly like a missing room. A join costs the
// reply budget what its answer (members, history) costs, and is refused while that is
// in debt: a join and leave loop cannot buy member lists and history for ever.
func (h *Hub) cmdJoin(c *Client, cmd command, _ *roomInfo) {
	if h.replyRefused(c, cmd.env) {
		return
	}
	h.join(c, cmd.env)
}

// mayJoin is join's permission: a room c is in or can see, or a public room that does
// not exist yet and that c may create. Anything else is no_such_room, the answer for a
// missing room, so a private room's existence is not given away.
func (h *Hub) mayJoin(c *Client, env *envelope, _ *roomInfo) *protoError {
	if c.rooms[env.Room] != nil || h.visible(c.user, env.Room) != nil {
		return nil
	}
	if h.meta[env.Room] != nil || isDMName(env.Room) || !h.mayCreate(c) {
		return newProtoError(codeNoSuchRoom, "no such room")
	}
	return nil
}

// join is cmdJoin, also used for the lobby on connect, a conversation's opening and a
// new room's first entry. Its callers have checked the permission (mayJoin, or the
// room is the caller's own).
func (h *Hub) join(c *Client, env *envelope) {
	if r, ok := c.rooms[env.Room]; ok {
		// Already in: a reconnecting client's join of the lobby (joined on connect)
		// still asks for what it missed. That is a catch-up, counted as one.
		if env.After != nil {
			if retry, ok := c.limiter.allowCatchup(); !ok {
				h.refuseRate(c, env.Room, env.Ref, retry)
				return
			}
		}
		h.deliverReply(c, h.joinedEvent(c, r, env.Ref))
		if env.After != nil {
			h.sendHistory(c, env.Room, env.After, "")
		}
		return
	}
	if len(c.rooms) >= h.settings().MaxRoomsPerClient {
		h.refuse(c, env, codeTooManyRooms, "you are in too many rooms; leave one first")
		return
	}
	ri := h.visible(c.user, env.Room)
	if ri == nil {
		// A room c may create (mayJoin let the command through): joined once the
		// new room is durable, when the join runs again.
		h.createRoom(c, env, false, func(*roomInfo) { h.join(c, env) })
		return
	}
	if _, banned := ri.Bans[c.user.ID]; banned {
		h.refuse(c, env, codeBanned, "you are banned from this room")
		return
	}
	if r := h.rooms[ri.Name]; r != nil && len(r.clients) >= h.settings().MaxMembersPerRoom {
		h.refuse(c, env, codeRoomFull, "this room is full")
		return
	}
	if ri.Private && !ri.isMember(c.user.ID) {
		if key, ok := ri.invitation(c.user, h.now()); ok {
			h.acceptInvitation(c, env, ri, key)
			return
		}
	}
	h.enter(c, ri, env.Ref)
	h.sendHistory(c, ri.Name, env.After, "")
	h.mlsEntered(c, ri)
}

// cmdHistory answers a page of history for a room c is in: the newest messages, or
// with after those after that id (the next page, or a reconnect's catch-up). Catch-ups
// are counted per connection and refused with rate_limited beyond their budget.
func (h *Hub) cmdHistory(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if c.rooms[env.Room] == nil {
		h.refuse(c, env, codeNotInRoom, "join the room before reading its history")
		return
	}
	if retry, ok := c.limiter.allowCatchup(); !ok {
		h.refuseRate(c, env.Room, env.Ref, retry)
		return
	}
	h.sendHistory(c, env.Room, env.After, env.Ref)
}

// cmdFetchFile sends the bytes of a file in a room's history, which history itself
// carries as metadata only. One fetch at a time per connection; each is charged to
// the connection's file bucket (see Hub.fetchFile).
func (h *Hub) cmdFetchFile(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if c.rooms[env.Room] == nil {
		h.refuse(c, env, codeNotInRoom, "join the room before fetching its files")
		return
	}
	if c.fetching {
		h.refuse(c, env, codeFetchPending, "one file at a time: wait for the previous one")
		return
	}
	h.fetchFile(c, env.Room, env.ID, env.Ref)
}

// acceptInvitation makes an invited user a member of a private room for good, within
// the room's role cap. The join goes on once the membership is durable; until then the
// user is not in the room.
func (h *Hub) acceptInvitation(c *Client, env *envelope, ri *roomInfo, key string) {
	if len(ri.Roles) >= maxRolesPerRoom {
		h.refuse(c, env, codeRoomLimit, "this room has as many members as it may keep")
		return
	}
	next := ri.clone()
	delete(next.Invites, key)
	next.Roles[c.user.ID] = roomMember
	h.commit(c, env, change{
		key:    roomKey(ri.Name),
		writes: []store.Write{next.write()},
		noAck:  true, // the join is answered with joined
		room:   &roomEntry{Name: next.Name, Info: next},
		apply: func() {
			if _, ok := h.clients[c]; ok {
				h.join(c, env)
			}
		},
	})
}

// cmdLeave leaves a room.
func (h *Hub) cmdLeave(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if _, ok := c.rooms[env.Room]; !ok {
		h.refuse(c, env, codeNotInRoom, "you are not in this room")
		return
	}
	h.leaveRoom(c, env.Room)
	h.mlsLeft(c, env)
	h.deliver(c, appendObject(nil, "left", env.Room, func(b []byte) []byte {
		if env.Ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, env.Ref)
		}
		return b
	}))
}

// cmdSay stamps a message and delivers it to the room's members only.
func (h *Hub) cmdSay(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	r := c.rooms[env.Room]
	if r == nil {
		h.refuse(c, env, codeNotInRoom, "join the room before speaking in it")
		return
	}
	if ri.E2EE {
		// Plaintext here would be stored and shown inside an encrypted conversation.
		h.refuse(c, env, codeE2EERoom, "this room is end-to-end encrypted: send mls_app")
		return
	}
	if ri.Locked && h.perms(c.user, ri)&permExpel == 0 {
		h.refuse(c, env, codeReadOnly, "this room is read-only")
		return
	}
	if ri.DM && h.dmRefuses(ri.peerOf(c.user.ID), c.user.ID) {
		h.refuse(c, env, codeDMRefused, "that user does not take direct messages from you")
		return
	}
	if env.sig != nil && !h.acceptSigned(c, env) {
		return
	}
	h.stamp(c, r, cmd, true)
}

// stamp gives a message (text or file) its id and time, delivers it to the room's
// members, and stores it in the room's history when keep is set; the sender's ack
// waits for the store.
func (h *Hub) stamp(c *Client, r *room, cmd command, keep bool) {
	env := cmd.env
	if r.info.DM {
		h.pullIntoDM(r.info)
		h.announceDM(r.info) // the peer's connections on other nodes (clusterdm.go)
	}
	typ := "message"
	if env.Type == "file_data" {
		typ = "file"
	}
	if h.feed != nil {
		if env.sig != nil {
			h.persist(nil, "", []store.Write{env.sig.write}, nil) // the device's counter
		}
		h.clusterStamp(c, r, cmd, typ, keep)
		return
	}
	id := h.bp.Next(env.Room)
	msg := make([]byte, 0, 64+len(env.Room)+len(cmd.body))
	msg = append(msg, `{"type":"`...)
	msg = append(msg, typ...)
	msg = append(msg, `","room":"`...)
	msg = append(msg, env.Room...)
	msg = append(msg, `","id":`...)
	msg = strconv.AppendUint(msg, id, 10)
	msg = append(msg, `,"ts":`...)
	msg = strconv.AppendInt(msg, h.now().UnixMilli(), 10)
	msg = append(msg, ',')
	msg = append(msg, cmd.body...)
	shared := &msg
	for m := range r.clients {
		h.enqueue(m, shared)
	}
	h.metrics.messages.Inc()
	h.metrics.deliveries.Add(float64(len(r.clients)))
	var ack []byte
	if env.Ref != "" {
		ack = ackEvent(env.Ref, env.Room, id)
	}
	writes := []store.Write{{Bucket: bucketMeta, Key: []byte(keyLastID), Value: store.SeqKey(id)}}
	switch {
	case keep && typ == "file":
		// History keeps the file's metadata; its base64 goes to the files bucket,
		// read only by fetch_file. Both share the live event's bytes.
		end := len(msg) - len(cmd.body) + cmd.meta
		meta := append(msg[:end:end], '}')
		data := msg[end+len(dataField) : len(msg)-2]
		writes = append(historyWrites(env.Room, id, meta), store.Write{Bucket: filesBucket(env.Room), Key: store.SeqKey(id), Value: data})
	case keep:
		writes = historyWrites(env.Room, id, msg)
	}
	if env.sig != nil {
		writes = append(writes, env.sig.write) // the device's counter, with its message
	}
	h.persistAck(c, env.Ref, ack, writes, nil)
}

// cmdRooms lists the rooms c may see.
// Its answer is charged to c's reply budget.
func (h *Hub) cmdRooms(c *Client, cmd command, _ *roomInfo) {
	if h.replyRefused(c, cmd.env) {
		return
	}
	h.deliverReply(c, h.roomsEvent(c))
}

// mayCreateRoom is create's permission.
func (h *Hub) mayCreateRoom(c *Client, _ *envelope, _ *roomInfo) *protoError {
	if !h.mayCreate(c) {
		return newProtoError(codeForbidden, "you are not allowed to create rooms")
	}
	return nil
}

// cmdCreate creates a room, public or private, and joins the creator to it once it is
// durable.
func (h *Hub) cmdCreate(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if h.meta[env.Room] != nil {
		h.refuse(c, env, codeRoomExists, "that name is taken")
		return
	}
	if len(c.rooms) >= h.settings().MaxRoomsPerClient {
		h.refuse(c, env, codeTooManyRooms, "you are in too many rooms; leave one first")
		return
	}
	// The ref comes back on the ack, after the joined.
	h.createRoom(c, env, env.Private, func(ri *roomInfo) {
		if _, in := c.rooms[ri.Name]; !in && len(c.rooms) < h.settings().MaxRoomsPerClient {
			h.enter(c, ri, "")
		}
	})
}

// cmdInvite invites a user (by id) or an email address into a room. In a private room
// the invitation is durable until used or expired; once it is stored, the invitee's
// open connections are told (found through the by-id and by-email indexes).
func (h *Hub) cmdInvite(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	key := "user:" + env.User
	if env.Email != "" {
		key = "email:" + lowerEmail(env.Email)
	}
	if env.User != "" {
		if _, banned := ri.Bans[env.User]; banned {
			h.refuse(c, env, codeBanned, "that user is banned from this room; unban them first")
			return
		}
	}
	next := ri.clone()
	next.pruneInvites(h.now())
	if ri.Private {
		if _, again := next.Invites[key]; !again && len(next.Invites) >= maxInvitesPerRoom {
			h.refuse(c, env, codeRoomLimit, "this room has too many open invitations")
			return
		}
		next.Invites[key] = h.now().Add(inviteTTL).Unix()
	}
	audit := newAudit(h.now(), c.user.ID, "invite", ri.Name, nil, key)
	e := &roomEntry{Name: next.Name, Info: next, Invite: &invitation{User: env.User, Email: env.Email, By: c.userJSON}}
	h.commitRoom(c, env, e, &audit, nil)
}

// cmdKick removes a user from a room (their connections leave once the change is
// durable); with type "ban" it also keeps them out until unbanned. One may only expel
// a user of lower rank, judged with everything known of the target even when offline.
func (h *Hub) cmdKick(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	target := h.identityOf(env.User)
	if env.User == c.user.ID || h.rank(target, ri) >= h.rank(c.user, ri) {
		h.refuse(c, env, codeForbidden, "you cannot expel that user")
		return
	}
	ban := env.Type == "ban"
	if _, already := ri.Bans[env.User]; ban && !already && len(ri.Bans) >= maxRolesPerRoom {
		h.refuse(c, env, codeRoomLimit, "this room has too many bans")
		return
	}
	next := ri.clone()
	old := ri.Roles[env.User]
	if ri.Private || ban {
		delete(next.Roles, env.User)
	}
	if ban {
		next.Bans[env.User] = h.now().Unix()
		delete(next.Invites, "user:"+env.User)
	}
	kicked := appendObject(nil, "kicked", ri.Name, func(b []byte) []byte {
		b = append(b, `,"ban":`...)
		b = strconv.AppendBool(b, ban)
		b = append(b, `,"by":`...)
		return append(b, c.userJSON...)
	})
	audit := newAudit(h.now(), c.user.ID, env.Type, ri.Name+" "+env.User, old, nil)
	e := &roomEntry{Name: next.Name, Info: next, Expel: env.User, Event: kicked}
	h.commitRoom(c, env, e, &audit, func() {
		h.reconcileUser(env.User) // E2EE rooms: Remove their leaves
	})
}

// cmdUnban lifts a room ban.
func (h *Hub) cmdUnban(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	next := ri.clone()
	delete(next.Bans, env.User)
	audit := newAudit(h.now(), c.user.ID, "unban", ri.Name+" "+env.User, nil, nil)
	h.commitRoom(c, env, &roomEntry{Name: next.Name, Info: next}, &audit, nil)
}

// commitRoom commits a room change (the next record and its effects on every node),
// then runs after (may be nil) on the acting node.
func (h *Hub) commitRoom(c *Client, env *envelope, e *roomEntry, audit *auditEntry, after func()) {
	h.commit(c, env, change{
		key:    roomKey(e.Name),
		writes: []store.Write{e.Info.write()},
		audit:  audit,
		room:   e,
		apply: func() {
			if after != nil {
				after()
			}
		},
	})
}

// cmdSetRoomRole appoints or removes a room moderator. The owner's role is not
// transferable this way.
func (h *Hub) cmdSetRoomRole(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	if env.User == ri.Owner || env.User == c.user.ID {
		h.refuse(c, env, codeForbidden, "the owner's role cannot be changed")
		return
	}
	old := ri.Roles[env.User]
	if len(ri.Roles) >= maxRolesPerRoom && old == "" {
		h.refuse(c, env, codeRoomLimit, "this room has too many roles")
		return
	}
	next := ri.clone()
	switch {
	case env.Role == roomModerator:
		next.Roles[env.User] = roomModerator
	case ri.Private:
		next.Roles[env.User] = roomMember
	default:
		delete(next.Roles, env.User)
	}
	audit := newAudit(h.now(), c.user.ID, "set_room_role", ri.Name+" "+env.User, old, env.Role)
	h.commitRoom(c, env, &roomEntry{Name: next.Name, Info: next, Refresh: env.User}, &audit, nil)
}

// cmdLock makes a room read-only for everyone but its owner and moderators, or undoes it.
func (h *Hub) cmdLock(c *Client, cmd command, ri *roomInfo) {
	next := ri.clone()
	next.Locked = *cmd.env.Locked
	h.roomChanged(c, cmd.env, next, "lock", ri.Locked, next.Locked)
}

// cmdTopic sets a room's topic.
func (h *Hub) cmdTopic(c *Client, cmd command, ri *roomInfo) {
	next := ri.clone()
	next.Topic = *cmd.env.Topic
	h.roomChanged(c, cmd.env, next, "topic", ri.Topic, next.Topic)
}

// roomChanged stores and audits a change to a room's description and, once it is
// durable, tells the members inside.
func (h *Hub) roomChanged(c *Client, env *envelope, next *roomInfo, action string, old, new any) {
	audit := newAudit(h.now(), c.user.ID, action, next.Name, old, new)
	h.commitRoom(c, env, &roomEntry{Name: next.Name, Info: next, Notify: true}, &audit, nil)
}

// cmdDeleteRoom deletes a room: once that is durable, everyone inside is told and
// removed and its record goes. The lobby cannot be deleted.
func (h *Hub) cmdDeleteRoom(c *Client, cmd command, ri *roomInfo) {
	env := cmd.env
	if ri.Name == lobby {
		h.refuse(c, env, codeForbidden, "the lobby cannot be deleted")
		return
	}
	name, mark := ri.Name, h.bp.Last()
	audit := newAudit(h.now(), c.user.ID, "delete_room", name, ri, nil)
	// The history goes too: the janitor deletes it, and until then a new room of the
	// same name cannot see it (its FirstID starts after). So does an E2EE room's group
	// record, in the same batch as the room's: kept, it stayed on disk until a room of
	// the same name replaced it, a leak anyone allowed to create and delete rooms could
	// grow (deleting a plain room's, which is none or a leftover, costs nothing). In
	// cluster mode the group rides in the room's record in Redis, which the deletion
	// replaces, and these writes are not made.
	h.commit(c, env, change{
		key: roomKey(name),
		writes: []store.Write{
			{Bucket: bucketRooms, Key: []byte(name)},
			{Bucket: bucketPurge, Key: []byte(name), Value: store.SeqKey(mark)},
			{Bucket: bucketMLSGroups, Key: []byte(name)},
		},
		audit: &audit,
		room:  &roomEntry{Name: name},
		apply: func() {
			// The Welcomes kept for devices not yet joined go with the room.
			writes := h.mls.welcomes.dropRoom(name)
			if last := h.bp.Last(); last > mark {
				// Messages said while the deletion was in flight go with the rest, and
				// so does the group's record if one of them (a commit, proposals)
				// wrote it again after the deletion's batch.
				writes = append(writes, store.Write{Bucket: bucketPurge, Key: []byte(name), Value: store.SeqKey(last)},
					store.Write{Bucket: bucketMLSGroups, Key: []byte(name)})
			}
			if len(writes) > 0 {
				h.persist(nil, "", writes, nil)
			}
		},
	})
}

// cmdSetRole grants a global role. Once durable it applies to the user's open
// connections. Admins cannot change their own role (no accidental lock-out).
func (h *Hub) cmdSetRole(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if env.User == c.user.ID {
		h.refuse(c, env, codeForbidden, "you cannot change your own role")
		return
	}
	target := h.identityOf(env.User)
	old := h.globalRole(target)
	b, _ := json.Marshal(env.Role)
	audit := newAudit(h.now(), c.user.ID, "set_role", env.User, old, env.Role)
	h.commit(c, env, change{
		key:    grantKey(env.User),
		writes: []store.Write{{Bucket: bucketGrants, Key: []byte(env.User), Value: b}},
		audit:  &audit,
		ctl: h.ctlChange(func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.SetRole(ctx, env.User, env.Role)
			return err
		}),
		apply: func() {
			h.grants[env.User] = env.Role
			h.deliverUser(env.User, h.youEvent(h.identityOf(env.User)))
			h.refreshUser(env.User)
		},
	})
}

// cmdGlobalBan bans a user from the server: once the ban is durable their connections
// close with 1008, their sessions stop working and their next login is refused. Admins
// cannot be banned, whether online or not.
func (h *Hub) cmdGlobalBan(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if env.User == c.user.ID || h.globalRole(h.identityOf(env.User)) == roleAdmin {
		h.refuse(c, env, codeForbidden, "admins cannot be banned")
		return
	}
	ban := banInfo{By: c.user.ID, Reason: env.Reason, Time: h.now().Unix()}
	b, _ := json.Marshal(ban)
	audit := newAudit(h.now(), c.user.ID, "global_ban", env.User, nil, ban)
	// The user's sessions die for good, not only while the ban lasts: the cutoff is
	// committed with the ban and outlives global_unban. Like the ban, it takes effect
	// in memory only once durable.
	at := h.now()
	h.commit(c, env, change{
		key:    banKey(env.User),
		writes: []store.Write{{Bucket: bucketBans, Key: []byte(env.User), Value: b}, h.app.sessions.cutoffWrite(env.User, at)},
		audit:  &audit,
		ctl: h.ctlChange(func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.Ban(ctx, env.User, b, at)
			return err
		}),
		apply: func() {
			h.bans[env.User] = ban
			h.app.bans.add(env.User)
			h.app.sessions.endSessions(env.User, at)
			for o := range h.clientsOf(env.User) {
				h.doom(o, closeBanned)
			}
			h.reconcileUser(env.User) // E2EE rooms: Remove their leaves
		},
	})
}

// cmdGlobalUnban lifts a global ban once that is durable.
func (h *Hub) cmdGlobalUnban(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	var before any
	if old, ok := h.bans[env.User]; ok {
		before = old
	}
	audit := newAudit(h.now(), c.user.ID, "global_unban", env.User, before, nil)
	h.commit(c, env, change{
		key:    banKey(env.User),
		writes: []store.Write{{Bucket: bucketBans, Key: []byte(env.User)}},
		audit:  &audit,
		ctl: h.ctlChange(func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.Unban(ctx, env.User)
			return err
		}),
		apply: func() {
			delete(h.bans, env.User)
			h.app.bans.remove(env.User)
		},
	})
}

// settingsEvent describes the run-time settings.
func settingsEvent(s Settings, ref string) []byte {
	b, _ := json.Marshal(struct {
		Type     string   `json:"type"`
		Settings Settings `json:"settings"`
		Ref      string   `json:"ref,omitempty"`
	}{"settings", s, ref})
	return b
}

// cmdGetSettings answers with the current run-time settings.
func (h *Hub) cmdGetSettings(c *Client, cmd command, _ *roomInfo) {
	h.deliver(c, settingsEvent(settingsOf(h.settings()), cmd.env.Ref))
}

// cmdSetSettings changes run-time settings: merged over the current ones, validated as
// a whole, persisted and audited, and once durable swapped in atomically (live
// connections see them on their next message) and announced.
func (h *Hub) cmdSetSettings(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	cur := h.settings()
	old := settingsOf(cur)
	next, err := mergeSettings(old, env.Settings)
	if err != nil {
		h.refuse(c, env, codeBadSetting, err.Error())
		return
	}
	cfg, err := next.applyTo(cur)
	if err != nil {
		h.refuse(c, env, codeBadSetting, err.Error())
		return
	}
	b, _ := json.Marshal(next)
	audit := newAudit(h.now(), c.user.ID, "set_settings", "", old, next)
	h.commit(c, env, change{
		key:    settingsKey,
		writes: []store.Write{{Bucket: bucketSettings, Key: []byte("current"), Value: b}},
		audit:  &audit,
		ctl: h.ctlChange(func(ctx context.Context, l *cluster.Ctl) error {
			_, err := l.SetSettings(ctx, b)
			return err
		}),
		apply: func() { h.applySettings(c, cfg, old, next) },
	})
}

// applySettings swaps in durable new settings and tells everyone what changed.
func (h *Hub) applySettings(c *Client, cfg *Config, old, next Settings) {
	h.app.cfg.Store(cfg)
	if _, ok := h.clients[c]; ok {
		h.deliver(c, settingsEvent(next, ""))
	}
	// Everyone's page learns the new limits (text length, file size) at once.
	limits := h.limitsEvent()
	for o := range h.clients {
		h.deliver(o, limits)
	}
	if next.MOTD != old.MOTD {
		motd := appendObject(nil, "motd", "", func(b []byte) []byte {
			b = append(b, `,"motd":`...)
			return appendJSONString(b, next.MOTD)
		})
		for o := range h.clients {
			h.deliver(o, motd)
		}
	}
}

// cmdAudit answers with the newest audit entries, newest first, charged to c's reply
// budget.
func (h *Hub) cmdAudit(c *Client, cmd command, _ *roomInfo) {
	if h.replyRefused(c, cmd.env) {
		return
	}
	if h.clusterAudit(c, cmd.env) {
		return
	}
	h.deliverReply(c, auditEvent(h.newestAudit(cmd.env.Limit), cmd.env.Ref))
}

// newestAudit is up to limit (at least one) of the newest audit entries this node
// remembers, newest first.
func (h *Hub) newestAudit(limit int) []auditEntry {
	n := min(max(limit, 1), len(h.audit))
	entries := make([]auditEntry, 0, n)
	for i := len(h.audit) - 1; i >= len(h.audit)-n; i-- {
		entries = append(entries, h.audit[i])
	}
	return entries
}

// auditEvent is the answer to `audit`.
func auditEvent(entries []auditEntry, ref string) []byte {
	b, _ := json.Marshal(struct {
		Type    string       `json:"type"`
		Entries []auditEntry `json:"entries"`
		Ref     string       `json:"ref,omitempty"`
	}{"audit", entries, ref})
	return b
}

// refreshUser re-sends the room state to a user's connections after their role
// changed, so the page shows the new role and controls at once, and tells the other
// members of those rooms.
func (h *Hub) refreshUser(userID string) {
	for c := range h.clientsOf(userID) {
		for _, r := range c.rooms {
			h.deliver(c, h.joinedEvent(c, r, ""))
		}
	}
	seen := map[string]bool{}
	for c := range h.clientsOf(userID) {
		for name, r := range c.rooms {
			if seen[name] {
				continue
			}
			seen[name] = true
			ev := appendObject(nil, "role", name, func(b []byte) []byte {
				b = append(b, `,"user":`...)
				return append(b, h.memberJSON(c.user, r.info)...)
			})
			h.broadcastExcept(r, userID, ev)
		}
	}
}

// lowerEmail normalises an email for comparison. Only ASCII letters are folded:
// emails compare case-insensitively in practice, and leaving other letters alone
// avoids Unicode case-folding surprises.
func lowerEmail(e string) string {
	b := []byte(e)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// maySendFile is the rest of a file's permission, once the dispatcher checked the room
// is visible and c holds send_binary there: c is in the room, the room is not locked
// against c, and in a conversation the other member takes c's messages. It runs for
// the announcement and again for the bytes (a role may have changed meanwhile).
func (h *Hub) maySendFile(c *Client, env *envelope, ri *roomInfo) *protoError {
	if c.rooms[env.Room] == nil {
		return newProtoError(codeNotInRoom, "join the room before sending to it")
	}
	if ri.Locked && h.perms(c.user, ri)&permExpel == 0 {
		return newProtoError(codeReadOnly, "this room is read-only")
	}
	if ri.DM && h.dmRefuses(ri.peerOf(c.user.ID), c.user.ID) {
		return newProtoError(codeDMRefused, "that user does not take direct messages from you")
	}
	return h.e2eeFileRule(env, ri)
}

// cmdFileAnnounce accepts a file announcement the dispatcher let through, on the
// readPump's reply channel; the readPump then reads the file's binary frame.
func (h *Hub) cmdFileAnnounce(_ *Client, cmd command, _ *roomInfo) {
	if cmd.reply != nil {
		cmd.reply <- nil // buffered; the readPump waits for exactly one answer
	}
}

// cmdFileData delivers a checked file to the room; its row checked the permission
// again. Files up to HistoryFileMax are kept in history; larger ones are delivered
// live only.
func (h *Hub) cmdFileData(c *Client, cmd command, _ *roomInfo) {
	if cmd.env.sig != nil && !h.acceptSigned(c, cmd.env) {
		return
	}
	h.stamp(c, c.rooms[cmd.env.Room], cmd, cmd.env.Size <= h.settings().HistoryFileMax)
}

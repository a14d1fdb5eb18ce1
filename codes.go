package main

import (
	"fmt"

	"github.com/gorilla/websocket"

	"modified-chat/internal/keydir"
)

// The codes a client can be sent, each defined here once and used everywhere by name
// (as centrifuge defines its disconnects): the close codes, each with the reason the
// close frame carries, and the error codes of `error` events, each with its meaning.
// They are part of the protocol: clients and outside probes switch on them, so none is
// ever renamed or renumbered. PROTOCOL.md's close-code and error-code tables say the
// same, and TestCodesMatchProtocol holds the two together both ways; it also fails on a
// close number, a websocket close constant or an error-code string written anywhere
// else in the server's code. A new code goes here and into PROTOCOL.md's table.

// closeFrame is a close the server sends: its code and reason on the wire, and when,
// a phrase of PROTOCOL.md's row for the code that says when it is sent (the test looks
// for it there). The zero value closes with an empty close frame (no code).
type closeFrame struct {
	code   int
	reason string
	when   string
}

// closeFrames lists every close defined below, for the protocol test.
var closeFrames []closeFrame

// defineClose defines a close the server sends and records it in closeFrames.
func defineClose(code int, reason, when string) closeFrame {
	f := closeFrame{code: code, reason: reason, when: when}
	closeFrames = append(closeFrames, f)
	return f
}

// The closes the server sends.
var (
	closeShutdown = defineClose(websocket.CloseGoingAway, "server shutting down", "the server is shutting down")
	// closeUnannouncedBinary: binary data only ever follows a file announcement.
	closeUnannouncedBinary = defineClose(websocket.CloseUnsupportedData, "binary frames must follow a file announcement",
		"a binary frame that no `file`")
	closeBadUTF8 = defineClose(websocket.CloseInvalidFramePayloadData, "invalid UTF-8", "not valid UTF-8")
	// closeAbuse: too many rate-limited messages within the abuse window.
	closeAbuse       = defineClose(websocket.ClosePolicyViolation, "rate limit exceeded repeatedly", "too many rate-limited messages")
	closePingFlood   = defineClose(websocket.ClosePolicyViolation, "ping flood", "or pings")
	closeSessionOver = defineClose(websocket.ClosePolicyViolation, "session expired", "session ended")
	closeLoggedOut   = defineClose(websocket.ClosePolicyViolation, "logged out", "logged out")
	closeBanned      = defineClose(websocket.ClosePolicyViolation, "banned", "banned")
	// closeTooSlow: more events (or bytes of them) wait than the send queue holds.
	closeTooSlow = defineClose(websocket.ClosePolicyViolation, "too slow", "too slow")
	// closeMessageTooBig is sent by readPump for a text frame over the read limit; an
	// oversize frame the library itself refuses gets the library's own 1009.
	closeMessageTooBig = defineClose(websocket.CloseMessageTooBig, "message too big", "larger than the read limit")
	closeFileTooBig    = defineClose(websocket.CloseMessageTooBig, "file too big", "larger than the read limit")
	// closeMLSTooBig: an announced MLS frame (E2EE rooms) larger than it may be.
	closeMLSTooBig = defineClose(websocket.CloseMessageTooBig, "MLS frame too big", "larger than the read limit")
	// closeClusterLost: cluster mode, Redis lost its data; this node stops serving.
	// A command the server failed on (a handler's bug): only its sender is closed.
	closeInternal    = defineClose(websocket.CloseInternalServerErr, "internal error", "a command the server failed on")
	closeClusterLost = defineClose(websocket.CloseServiceRestart, "cluster state lost; try again later", "Redis lost its data")
	// closeResync: cluster mode, this node missed entries of a room that the Stream can
	// no longer give it; the members reconnect and resume with `after`.
	closeResync = defineClose(4000, "resync: reconnect and resume", "resync")
)

// errorCodes maps every error code defined below to its meaning, exactly as
// PROTOCOL.md's error-code table words it.
var errorCodes = map[string]string{}

// defineError defines an error code with its meaning and records it in errorCodes;
// a code defined twice stops the program at start.
func defineError(code, meaning string) string {
	if _, dup := errorCodes[code]; dup {
		panic(fmt.Sprintf("error code %s defined twice", code))
	}
	errorCodes[code] = meaning
	return code
}

// The error codes. Those of the key directory are its package's own (it returns them
// in its errors); they are named and documented here like the rest.
var (
	codeBadJSON = defineError("bad_json",
		"the line is not a JSON object")
	codeBadEnvelope = defineError("bad_envelope",
		"a field has the wrong type, a required field is missing, or `ref` is too long")
	codeUnknownType = defineError("unknown_type",
		"`type` is not one of the client-to-server types")
	codeBadRoom = defineError("bad_room",
		"room name is not 1–32 characters of `a-z`, `0-9`, `-`, `_`, starting with a letter or digit (commands on an existing room also take a conversation's `dm:` name; `create` never does)")
	codeDMRefused = defineError("dm_refused",
		"`open_dm`, or a `say`, file or `mls_app` in a conversation, to a user who does not take direct messages from you, or who does not exist: one answer for both, nothing else is said")
	codeNoSuchMessage = defineError("no_such_message",
		"`delete` of an id that is not (or no longer) a message in that room's history (an E2EE room's `mls_app` is one; its proposals, group info and commits are not)")
	codeNotInRoom = defineError("not_in_room",
		"`say` or `leave` for a room the connection has not joined")
	codeTooManyRooms = defineError("too_many_rooms",
		"the connection is already in the maximum number of rooms")
	codeRoomFull = defineError("room_full",
		"the room has the maximum number of members")
	codeEmptyText = defineError("empty_text",
		"nothing is left after cleaning")
	codeTextTooLong = defineError("text_too_long",
		"more characters than `text_max_chars`")
	codeBlockedContent = defineError("blocked_content",
		"the text matches an operator-configured blocked pattern")
	codeRateLimited = defineError("rate_limited",
		"over the per-connection or per-user budget (messages, bytes, file bytes, answer bytes, catch-ups); `retry_after_ms` says when to try again (device changes: five at once, then one a minute per user, without `retry_after_ms`)")
	codeForbidden = defineError("forbidden",
		"you lack the permission for this command (or the target outranks you)")
	codeNoSuchRoom = defineError("no_such_room",
		"the room does not exist, or is private and not yours to see")
	codeBanned = defineError("banned",
		"you are banned from this room")
	codeReadOnly = defineError("read_only",
		"the room is locked")
	codeRoomExists = defineError("room_exists",
		"`create` with a name already taken")
	codeRoomLimit = defineError("room_limit",
		"the server or the room holds as many rooms, invitations, bans or roles (members) as it may")
	codeBadSetting = defineError("bad_setting",
		"`set_settings` with an unknown field or a value out of range")
	codeStoreFailed = defineError("store_failed",
		"the store could not save it: a security-state change (see above) was not made; a message was delivered but is not kept")
	codeBusy = defineError("busy",
		"the store's queue is full, or too many changes wait for the same record; a security-state change was not made; try again. In cluster mode also a room change made while another node changed the same room: nothing changed; likewise a device change (`register_device`, `certify_device`, `revoke_device`, `reset_identity`) or a `dm_prefs` change made while another node changed the same user's record")
	codeFileType = defineError("file_type",
		"the file's content is not an allowed type, does not match `mime`, or hides markup or active content")
	codeFileTooBig = defineError("file_too_big",
		"`size` is over `-file-max-bytes`")
	codeBadFileName = defineError("bad_filename",
		"the file name has a path, special, control or bidi characters, or is too long")
	codeBadFile = defineError("bad_file",
		"the binary frame's length differs from the announced `size`, or `size` is not positive")
	codeBadSignature = defineError("bad_signature",
		"a signed `say` or `file` whose signature does not verify under the named device's key over exactly these bytes (another room, user, text, counter, id or time)")
	codeBadSignedText = defineError("bad_signed_text",
		"a signed `say` whose text the server's cleaning would change: signed text must be sent already clean")
	codeBadDevice = defineError(keydir.CodeBadDevice,
		"the device id is malformed, is not a live device of yours (unknown, revoked, or another user's), or is registered with another key")
	codeBadCertificate = defineError(keydir.CodeBadCertificate,
		"the certificate is not the root key's signature over (your user id, the device id, the device key, `created`), or there is no root key to certify with")
	codeURKMismatch = defineError(keydir.CodeURKMismatch,
		"`register_device` names a root key other than the one on record (use `certify_device` or `reset_identity`), or `reset_identity` names the current one")
	codeTooManyDevices = defineError(keydir.CodeTooManyDevices,
		"you already have `-max-devices-per-user` live devices; revoke one first")
	codeTooManyLinks = defineError(keydir.CodeTooManyLinks,
		"`link_request` while 3 other devices of yours wait to be linked; link them or let them lapse (10 minutes)")
	codeDirectoryFull = defineError(keydir.CodeDirectoryFull,
		"the key directory holds as many users as it may")
	codeReplayed = defineError(keydir.CodeReplayed,
		"a signed message whose `counter` is not above every earlier one of that device (in cluster mode: accepted on any node)")
	codeNoSuchFile = defineError("no_such_file",
		"`fetch_file` names no file in the room's history")
	codeFetchPending = defineError("fetch_pending",
		"`fetch_file` while this connection's previous one is still unanswered")
	// codeInternal: a request's read off the hub's loop failed (tasks.go); the request
	// is given up, the connection goes on.
	codeInternal = defineError("internal",
		"the server failed while answering this request (a bug, which it logs): it was not done and nothing changed (after a `join` of an E2EE room: its Welcome was not sent, see `mls_resync`); the connection stays open and the next request is answered as usual")
)

// The error codes of end-to-end encrypted rooms (PROTOCOL.md, "Errors (E2EE)") and of
// cluster mode (`unavailable`).
var (
	codeBadMLS = defineError("bad_mls",
		"malformed or unacceptable MLS bytes (wrong wire format, suite, group, epoch inside, signature, credential, lifetime; a KeyPackage already stored or used), or an E2EE command in a room that is not E2EE or has no group yet")
	codeStaleEpoch = defineError("stale_epoch",
		"the command's `epoch` is not the room's current one (the `error` carries `epoch`); or `mls_group_init` for a room whose group exists")
	codeCommitInvalid = defineError("commit_invalid",
		"a commit breaking the DS rules (see Commits)")
	codeCommitRequired = defineError("commit_required",
		"`mls_app` while proposals are outstanding (in cluster mode also while a membership change made on another node waits for its Remove to be proposed): a member must commit first")
	codeNoKeyPackage = defineError("no_keypackage",
		"you (on `join`) or the device (on `mls_resync`) has no KeyPackage: nothing can be added until one is uploaded")
	codeUnknownDevice = defineError("unknown_device",
		"the connection has no device (send `kp_upload`), or its device is not (or no longer) a live device of yours")
	codeE2EERoom = defineError("e2ee_room",
		"`say` in an end-to-end encrypted room or conversation: its messages are `mls_app` only, so no plaintext is stored or relayed there")
	codeKPFull = defineError("kp_full",
		"a `kp_upload` would leave the device more than 20 KeyPackages")
	codeUpdateLimited = defineError("update_limited",
		"an `mls_commit` with no proposals outstanding (a self-update) beyond the device's budget in this room: 3 at once, then one every 10 minutes (nothing was applied; commit later)")
	codeUnavailable = defineError("unavailable",
		"cluster mode only: Redis cannot be reached, so the `say` (or file) was neither stored nor delivered and gets no `ack`; `retry_after_ms` says when to try again. The socket stays open. The same answers `global_ban`, `global_unban`, `set_role`, `set_settings`, device changes and `dm_prefs` changes that Redis did not take: nothing changed on any node; a `kp_upload` Redis did not take (nothing stored); and a signed `say` or file whose device counter Redis could not check")
)

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strconv"

	"modified-chat/internal/keydir"
	"modified-chat/internal/sigmsg"
	"modified-chat/internal/store"
)

// maxDevicesQuery bounds the users one `devices` asks about: a page that opens a busy
// room asks about every sender at once, in one message, instead of one per sender.
const maxDevicesQuery = 50

// maxJSSafe is the largest integer a JavaScript number holds exactly (2^53 - 1):
// counters and times beyond it could not be reproduced by the page that signs them.
const maxJSSafe = 1<<53 - 1

// sigEnvelope is the `sig` field of a signed `say` or `file` as the client sends it.
type sigEnvelope struct {
	Device    string `json:"device"`
	Counter   uint64 `json:"counter"`
	MsgID     string `json:"msg_id"`
	TS        uint64 `json:"ts"`
	Signature string `json:"signature"`
}

// signature is a parsed sigEnvelope, and what the checks learn on the way: the
// device key it was verified with (the hub checks the device is still live with that
// key) and the write that keeps the device's new counter.
type signature struct {
	device  string
	counter uint64
	msgID   [sigmsg.MsgIDLen]byte
	ts      uint64
	sig     []byte
	dik     []byte
	write   store.Write
	// unchecked says Redis did not answer the cluster-wide counter check
	// (clusterkeys.go): the hub answers unavailable.
	unchecked bool
}

// decodeB64 decodes standard base64 (with padding) of exactly n bytes.
func decodeB64(s string, n int) ([]byte, bool) {
	if base64.StdEncoding.EncodedLen(n) != len(s) {
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(s)
	return b, err == nil && len(b) == n
}

// parseSig decodes a `sig` field.
func parseSig(e *sigEnvelope) (*signature, *protoError) {
	s := &signature{device: e.Device, counter: e.Counter, ts: e.TS}
	if !keydir.ValidDeviceID(e.Device) {
		return nil, newProtoError(codeBadDevice, "sig.device is not a device id")
	}
	if e.Counter == 0 || e.Counter > maxJSSafe || e.TS > maxJSSafe {
		return nil, newProtoError(codeBadEnvelope, "sig.counter must be 1 to 2^53-1 and sig.ts a time in Unix milliseconds")
	}
	id, ok := decodeB64(e.MsgID, sigmsg.MsgIDLen)
	if !ok {
		return nil, newProtoError(codeBadEnvelope, "sig.msg_id must be 16 random bytes in base64")
	}
	copy(s.msgID[:], id)
	if s.sig, ok = decodeB64(e.Signature, 64); !ok {
		return nil, newProtoError(codeBadEnvelope, "sig.signature must be a base64 64-byte Ed25519 signature")
	}
	return s, nil
}

// message is the sigmsg.Message a signed envelope from user claims to carry; data is
// the file's bytes for a file (nil for a say).
func (s *signature) message(env *envelope, user string, data []byte) *sigmsg.Message {
	m := &sigmsg.Message{Kind: "say", Room: env.Room, User: user, Device: s.device, Counter: s.counter, ID: s.msgID, TS: s.ts, Text: env.Text}
	if env.Type == "file" || env.Type == "file_data" {
		m.Kind, m.Text, m.Name, m.Mime, m.SHA256 = "file", "", env.Name, env.Mime, sha256.Sum256(data)
	}
	return m
}

// verifySigned checks a signed say or file against the key directory, on the readPump
// (one verification per message, on the sender's goroutine: a room's fan-out does not
// multiply it, and the hub's loop never does the cryptography). The device must be a
// live device of the session's user, and the signature must cover exactly this room,
// user, device, counter, id, time and content.
func (c *Client) verifySigned(env *envelope, data []byte) *protoError {
	s := env.sig
	dev := c.app.keys.Lookup(c.user.ID, s.device)
	if dev == nil {
		return newProtoError(codeBadDevice, "that device is not a live device of yours")
	}
	if !s.message(env, c.user.ID, data).Verify(dev.DIK, s.sig) {
		return newProtoError(codeBadSignature, "the signature does not verify")
	}
	s.dik = dev.DIK
	return c.signedCounterInCluster(s)
}

// appendSig appends the delivered `sig` field, re-encoded from the parsed values (a
// client's own spelling never reaches other clients).
func (s *signature) appendSig(b []byte) []byte {
	b = append(b, `,"sig":{"device":"`...)
	b = append(b, s.device...) // validated: base64url characters only
	b = append(b, `","counter":`...)
	b = strconv.AppendUint(b, s.counter, 10)
	b = append(b, `,"msg_id":"`...)
	b = base64.StdEncoding.AppendEncode(b, s.msgID[:])
	b = append(b, `","ts":`...)
	b = strconv.AppendUint(b, s.ts, 10)
	b = append(b, `,"signature":"`...)
	b = base64.StdEncoding.AppendEncode(b, s.sig)
	return append(b, `"}`...)
}

// acceptSigned is the hub's half of the check, just before a signed message is
// stamped: the device is still live with the key the readPump verified (it may have
// been revoked since), and its counter is above every earlier one (a replay of the
// device's own message is refused). It refuses and returns false, or records the
// counter for the message's store batch.
func (h *Hub) acceptSigned(c *Client, env *envelope) bool {
	s := env.sig
	if s.unchecked {
		h.refuseUnavailable(c, env)
		return false
	}
	if dev := h.app.keys.Lookup(c.user.ID, s.device); dev == nil || !bytes.Equal(dev.DIK, s.dik) {
		h.refuse(c, env, codeBadDevice, "that device was revoked")
		return false
	}
	w, kerr := h.app.keys.Use(c.user.ID, s.device, s.counter)
	if kerr != nil {
		h.refuse(c, env, kerr.Code, kerr.Message)
		return false
	}
	s.write = w
	return true
}

// devicesEvent describes a user's record for a `devices` answer, a `key_changed`
// event and the like: the root key and every device, revoked ones included.
func devicesEvent(typ, user string, u *keydir.User, ref string) []byte {
	return devicesEventLinks(typ, user, u, nil, ref)
}

// devicesEventLinks is devicesEvent with the user's waiting link requests, which only
// the user's own connections are told about.
func devicesEventLinks(typ, user string, u *keydir.User, links []keydir.Link, ref string) []byte {
	v := struct {
		Type    string          `json:"type"`
		User    string          `json:"user"`
		URK     []byte          `json:"urk"`
		Devices []keydir.Device `json:"devices"`
		Links   []keydir.Link   `json:"links,omitempty"`
		ResetAt int64           `json:"reset_at,omitempty"`
		Ref     string          `json:"ref,omitempty"`
	}{Type: typ, User: user, Devices: []keydir.Device{}, Links: links, Ref: ref}
	if u != nil {
		v.URK, v.Devices, v.ResetAt = u.URK, u.Devices, u.ResetAt
	}
	b, _ := json.Marshal(v)
	return b
}

// contacts are the connections that should hear about a user's keys: the user's own,
// and every connection in a room with one of them. A user who is offline has no live
// contacts; the others learn of the change from `devices` when they next need it.
func (h *Hub) contacts(userID string) map[*Client]struct{} {
	out := map[*Client]struct{}{}
	for c := range h.clients {
		if c.user.ID != userID {
			continue
		}
		out[c] = struct{}{}
		for _, r := range c.rooms {
			for m := range r.clients {
				out[m] = struct{}{}
			}
		}
	}
	return out
}

// tellContacts sends ev to the contacts of userID, and to also (the actor, who may not
// be one) while it is still connected: the event may follow a store write that
// outlived the actor's connection.
func (h *Hub) tellContacts(userID string, also *Client, ev []byte) {
	shared := &ev
	to := h.contacts(userID)
	if _, ok := h.clients[also]; ok {
		to[also] = struct{}{}
	}
	for m := range to {
		h.enqueue(m, shared)
	}
}

// mayRegister is the permission of register_device and certify_device: a device is
// only ever registered for the session's own user.
func (h *Hub) mayRegister(c *Client, env *envelope, _ *roomInfo) *protoError {
	if env.User != "" && env.User != c.user.ID {
		return newProtoError(codeForbidden, "devices can only be registered for yourself")
	}
	return nil
}

// keysKey names a user's key-directory record for changes in flight (durable.go).
func keysKey(userID string) string { return "keys/" + userID }

// commitKeys makes a planned directory change durable and only then applies it and
// runs effects (the events to contacts); see durable.go. A change that changes nothing
// (a page registering its known device again) is acknowledged at once.
func (h *Hub) commitKeys(c *Client, env *envelope, user string, ch *keydir.Change, audit *auditEntry, effects func()) {
	if ch.Writes == nil {
		ch.Release()
		if env.Ref != "" {
			h.deliver(c, ackOnly(env.Ref))
		}
		return
	}
	if h.app.ctl != nil {
		h.commitKeysCluster(c, env, user, ch, change{key: keysKey(user), writes: ch.Writes, audit: audit, apply: effects, release: ch.Release})
		return
	}
	h.commit(c, env, change{
		key:    keysKey(user),
		writes: ch.Writes,
		audit:  audit,
		apply: func() {
			ch.Apply()
			effects()
		},
		release: ch.Release,
	})
}

// deviceAddedEvent is `device_added`: user's root key and the new device.
func deviceAddedEvent(user string, urk []byte, d *keydir.Device) []byte {
	b, _ := json.Marshal(struct {
		Type   string        `json:"type"`
		User   string        `json:"user"`
		URK    []byte        `json:"urk"`
		Device keydir.Device `json:"device"`
	}{"device_added", user, urk, *d})
	return b
}

// deviceRevokedEvent is `device_revoked`: whose device, which, and who revoked it.
func deviceRevokedEvent(user, device, by string) []byte {
	return appendObject(nil, "device_revoked", "", func(b []byte) []byte {
		b = append(b, `,"user":`...)
		b = appendJSONString(b, user)
		b = append(b, `,"device":"`...)
		b = append(b, device...) // validated device id
		b = append(b, `","by":`...)
		return appendJSONString(b, by)
	})
}

// cmdRegisterDevice registers a device for the session's user (register_device, with
// the root key, which the first device creates) or certifies another device of theirs
// with the root key already on record (certify_device). The user is always the
// session's: a certificate made for anyone else does not verify.
func (h *Hub) cmdRegisterDevice(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if h.waitTurn(keysKey(c.user.ID), c, env) {
		return
	}
	ch, kerr := h.app.keys.Register(c.user.ID, env.upload)
	if kerr != nil {
		h.refuse(c, env, kerr.Code, kerr.Message)
		return
	}
	h.commitKeys(c, env, c.user.ID, ch, nil, func() {
		if !ch.Added {
			return
		}
		h.app.keys.ForgetLink(c.user.ID, env.upload.Device)
		h.tellContacts(c.user.ID, c, deviceAddedEvent(c.user.ID, ch.User.URK, ch.User.Live(env.upload.Device)))
	})
}

// cmdResetIdentity replaces the session user's root key: all their devices are
// revoked, the uploaded one (certified by the new key) is the only live one, and every
// contact gets `key_changed`, which pages show as a blocking warning.
func (h *Hub) cmdResetIdentity(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	if h.waitTurn(keysKey(c.user.ID), c, env) {
		return
	}
	ch, kerr := h.app.keys.Reset(c.user.ID, env.upload)
	if kerr != nil {
		h.refuse(c, env, kerr.Code, kerr.Message)
		return
	}
	audit := newAudit(h.now(), c.user.ID, "reset_identity", c.user.ID, nil, base64.StdEncoding.EncodeToString(ch.User.URK))
	h.commitKeys(c, env, c.user.ID, ch, &audit, func() {
		h.app.keys.ForgetLink(c.user.ID, env.upload.Device)
		h.tellContacts(c.user.ID, c, devicesEvent("key_changed", c.user.ID, ch.User, ""))
		h.reconcileUser(c.user.ID) // E2EE rooms: Remove the revoked devices' leaves
	})
}

// linkFields are a link_request: the new device's id, key and creation time, decoded
// into env.upload (no root key and no certificate: the device has neither yet).
var linkFields = fieldSpec{names: []string{"device", "dik", "created"}, check: func(_ *filter, env *envelope) *protoError {
	up := &keydir.Upload{Device: env.Device}
	var ok bool
	if up.DIK, ok = decodeB64(env.DIK, 32); !ok {
		return newProtoError(codeBadEnvelope, "dik must be a base64 32-byte Ed25519 public key")
	}
	if env.Created > maxJSSafe {
		return newProtoError(codeBadEnvelope, "created must be a time in Unix milliseconds")
	}
	up.Created = env.Created
	if perr := checkDeviceID(up.Device); perr != nil {
		return perr
	}
	env.upload = up
	return nil
}}

// cmdLinkRequest records a new device's request to be certified by one of the
// session user's devices that holds their root key, and shows it to every connection
// of that user (`link_request`); nobody else hears of it. It changes nothing durable:
// the certify_device that follows does, and a request lapses unanswered.
func (h *Hub) cmdLinkRequest(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	l, kerr := h.app.keys.RequestLink(c.user.ID, env.upload)
	if kerr != nil {
		h.refuse(c, env, kerr.Code, kerr.Message)
		return
	}
	h.tellLink(c.user.ID, l)
	h.shareLink(c.user.ID, l) // the other nodes (clusterkeys.go)
	if env.Ref != "" {
		h.deliver(c, ackOnly(env.Ref))
	}
}

// tellLink sends `link_request` to every connection of user here.
func (h *Hub) tellLink(user string, l *keydir.Link) {
	b, _ := json.Marshal(struct {
		Type string `json:"type"`
		User string `json:"user"`
		keydir.Link
	}{"link_request", user, *l})
	shared := &b
	for o := range h.clientsOf(user) {
		h.enqueue(o, shared)
	}
}

// cmdDevices answers with a user's record (one's own when no user is named), or with
// one `devices` event per user of a list. Public keys are not secret: anyone signed in
// may ask, as they must to check signatures.
func (h *Hub) cmdDevices(c *Client, cmd command, _ *roomInfo) {
	users := cmd.env.Users
	if len(users) == 0 {
		user := cmd.env.User
		if user == "" {
			user = c.user.ID
		}
		users = []string{user}
	}
	for _, user := range users {
		var links []keydir.Link
		if user == c.user.ID {
			links = h.app.keys.Links(user)
		}
		h.deliver(c, devicesEventLinks("devices", user, h.app.keys.Describe(user), links, cmd.env.Ref))
	}
}

// mayRevoke is revoke_device's permission: one's own device, or admins anyone's.
func (h *Hub) mayRevoke(c *Client, env *envelope, _ *roomInfo) *protoError {
	if env.User != "" && env.User != c.user.ID && h.perms(c.user, nil)&permAdmin == 0 {
		return newProtoError(codeForbidden, "only admins may revoke another user's device")
	}
	return nil
}

// cmdRevokeDevice revokes a device: one's own, or (admins) anyone's. Its signed
// messages are refused from then on, and contacts get `device_revoked`.
func (h *Hub) cmdRevokeDevice(c *Client, cmd command, _ *roomInfo) {
	env := cmd.env
	user := env.User
	if user == "" {
		user = c.user.ID
	}
	if h.waitTurn(keysKey(user), c, env) {
		return
	}
	ch, kerr := h.app.keys.Revoke(user, env.Device, c.user.ID)
	if kerr != nil {
		h.refuse(c, env, kerr.Code, kerr.Message)
		return
	}
	var audit *auditEntry
	if user != c.user.ID {
		a := newAudit(h.now(), c.user.ID, "revoke_device", user+" "+env.Device, nil, nil)
		audit = &a
	}
	by := c.user.ID
	h.commitKeys(c, env, user, ch, audit, func() {
		h.tellContacts(user, c, deviceRevokedEvent(user, env.Device, by))
		h.reconcileUser(user) // E2EE rooms: Remove the device's leaves
	})
}

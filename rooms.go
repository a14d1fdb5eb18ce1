package main

import (
	"encoding/json"
	"strconv"
	"time"

	"modified-chat/internal/store"
)

// Room tunables.
const (
	// inviteTTL is how long an unused invitation stays valid.
	inviteTTL = 7 * 24 * time.Hour
	// maxTopicChars bounds a room topic.
	maxTopicChars = 200
	// maxInvitesPerRoom and maxRolesPerRoom bound a room's durable record (DoS
	// hardening: a moderator cannot grow it without limit).
	maxInvitesPerRoom = 1000
	maxRolesPerRoom   = 10000
)

// Store buckets for the hub's durable state.
const (
	bucketRooms    = "rooms"    // room name -> roomInfo
	bucketGrants   = "grants"   // user id -> global role granted at run time
	bucketBans     = "bans"     // user id -> banInfo (global bans)
	bucketSettings = "settings" // "current" -> Settings
	bucketAudit    = "audit"    // seqKey -> auditEntry
)

// roomInfo is the durable record of a room: who owns it, whether it is private, who
// holds a room role (in a private room, every member holds at least "member"), who is
// invited and who is banned. The hub owns it; the store keeps a copy.
type roomInfo struct {
	Name    string `json:"name"`
	Private bool   `json:"private"`
	Owner   string `json:"owner,omitempty"`
	Topic   string `json:"topic,omitempty"`
	Locked  bool   `json:"locked,omitempty"`
	Created int64  `json:"created"`
	// FirstID is the last message id when the room was made: history with ids at or
	// below it belongs to an earlier room of the same name and is never shown.
	FirstID uint64 `json:"first_id,omitempty"`
	// Roles maps user id -> room role.
	Roles map[string]string `json:"roles,omitempty"`
	// Invites maps "user:<id>" or "email:<address>" -> expiry (Unix seconds).
	Invites map[string]int64 `json:"invites,omitempty"`
	// Bans maps user id -> when the ban was made (Unix seconds).
	Bans map[string]int64 `json:"bans,omitempty"`
	// DM marks a direct-message conversation: private, its two members in Roles,
	// their names when it was opened in Names (dm.go).
	DM    bool              `json:"dm,omitempty"`
	Names map[string]string `json:"names,omitempty"`
	// E2EE marks an end-to-end encrypted room; MLSGroup is its MLS group_id, picked
	// at creation, so a re-created room of the same name is another group (e2ee.go).
	E2EE     bool   `json:"e2ee,omitempty"`
	MLSGroup []byte `json:"mls_group,omitempty"`
}

// banInfo is a global ban.
type banInfo struct {
	By     string `json:"by"`
	Reason string `json:"reason,omitempty"`
	Time   int64  `json:"ts"`
}

// newRoomInfo makes the record of a new room.
func newRoomInfo(name, owner string, private bool, now time.Time) *roomInfo {
	ri := &roomInfo{Name: name, Private: private, Owner: owner, Created: now.Unix(),
		Roles: map[string]string{}, Invites: map[string]int64{}, Bans: map[string]int64{}}
	if owner != "" {
		ri.Roles[owner] = roomOwner
	}
	return ri
}

// write is the store write that saves this record.
func (ri *roomInfo) write() store.Write {
	b, _ := json.Marshal(ri)
	return store.Write{Bucket: bucketRooms, Key: []byte(ri.Name), Value: b}
}

// isMember reports whether a user belongs to a private room (holds any room role).
func (ri *roomInfo) isMember(userID string) bool {
	_, ok := ri.Roles[userID]
	return ok
}

// invitation finds a live invitation for the user, by id or verified email.
func (ri *roomInfo) invitation(id identity, now time.Time) (string, bool) {
	for _, key := range []string{"user:" + id.ID, "email:" + lowerEmail(id.Email)} {
		if exp, ok := ri.Invites[key]; ok && key != "email:" && exp > now.Unix() {
			return key, true
		}
	}
	return "", false
}

// pruneInvites drops expired invitations.
func (ri *roomInfo) pruneInvites(now time.Time) {
	for k, exp := range ri.Invites {
		if exp <= now.Unix() {
			delete(ri.Invites, k)
		}
	}
}

// roomEvent describes a room to a client who can see it.
func roomEvent(typ string, ri *roomInfo, online int, extra func([]byte) []byte) []byte {
	return appendObject(nil, typ, ri.Name, func(b []byte) []byte {
		b = append(b, `,"private":`...)
		b = strconv.AppendBool(b, ri.Private)
		b = append(b, `,"locked":`...)
		b = strconv.AppendBool(b, ri.Locked)
		b = append(b, `,"topic":`...)
		b = appendJSONString(b, ri.Topic)
		b = append(b, `,"owner":`...)
		b = appendJSONString(b, ri.Owner)
		b = append(b, `,"online":`...)
		b = strconv.AppendInt(b, int64(online), 10)
		if ri.E2EE {
			b = append(b, `,"e2ee":true`...)
		}
		if extra != nil {
			b = extra(b)
		}
		return b
	})
}

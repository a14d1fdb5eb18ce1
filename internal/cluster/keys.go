package cluster

import (
	"encoding/base64"
	"errors"
	"fmt"
	"regexp"
)

// The key layout (SCALE-OUT.md §3.2). Every key and channel name is built here, by one
// function per kind, from parts that are checked again on the way in: a key built from
// an unchecked part could land in another room's slot or outside the prefix the Redis
// ACL allows. Hash tags ({r:<room>}, {u:<id>}, {g}) keep every key of one room, one
// user or the global state in one slot, which a Lua script touching several of them
// needs on Redis Cluster and which rueidis' cluster client checks.

// Name patterns of the parts of a key.
var (
	// roomName is the room-name rule of filter.go (`bad_room`): no braces, colons or
	// glob characters can reach a key through it.
	roomName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	// dmHash is the hash part of a conversation's name (dm.go: "dm:" and 28 lowercase
	// hex digits): no braces, colons or glob characters reach a key through it either.
	dmHash = regexp.MustCompile(`^[0-9a-f]{28}$`)
	// prefixName is what -redis-prefix may be: the same alphabet, so the prefix can
	// never open a hash tag or a pattern of its own.
	prefixName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	// nodeName is a node id (hex, made at start-up).
	nodeName = regexp.MustCompile(`^[0-9a-f]{1,32}$`)
)

// Errors of the key builder.
var (
	ErrBadRoom   = errors.New("cluster: room name not allowed in a key")
	ErrBadUser   = errors.New("cluster: empty user id")
	ErrBadPrefix = errors.New("cluster: -redis-prefix must match [a-z0-9][a-z0-9_-]{0,31}")
	ErrBadNode   = errors.New("cluster: bad node id")
)

// Keys builds the names of every Redis key and channel of one deployment (one
// -redis-prefix). The zero value is not usable; make one with NewKeys.
type Keys struct {
	prefix string
}

// NewKeys checks the prefix and returns the builder.
func NewKeys(prefix string) (Keys, error) {
	if !prefixName.MatchString(prefix) {
		return Keys{}, ErrBadPrefix
	}
	return Keys{prefix: prefix}, nil
}

// Prefix is the deployment's prefix (the ACL pattern is Prefix()+":*").
func (k Keys) Prefix() string { return k.prefix }

// DMPrefix starts a conversation's name (dm.go's dmPrefix): a room name cannot hold ':'.
const DMPrefix = "dm:"

// room is the common start of a room's keys: <prefix>:{r:<room>}, and for a
// conversation dm:<hash>, <prefix>:{d:<hash>}. The two tags differ in their letter, so
// no room name can give a conversation's key, and neither part can close the tag.
func (k Keys) room(name string) (string, error) {
	if roomName.MatchString(name) {
		return k.prefix + ":{r:" + name + "}", nil
	}
	if h, ok := dmHashOf(name); ok {
		return k.prefix + ":{d:" + h + "}", nil
	}
	return "", fmt.Errorf("%w: %q", ErrBadRoom, name)
}

// dmHashOf returns the hash of a conversation's name, checked.
func dmHashOf(name string) (string, bool) {
	if len(name) <= len(DMPrefix) || name[:len(DMPrefix)] != DMPrefix {
		return "", false
	}
	h := name[len(DMPrefix):]
	return h, dmHash.MatchString(h)
}

// ValidRoomKey reports whether name may be part of a room's keys: a room name, or a
// conversation's.
func ValidRoomKey(name string) bool {
	_, dm := dmHashOf(name)
	return dm || roomName.MatchString(name)
}

// user is the common start of a user's keys: the id as unpadded base64url, because user
// ids come from identity providers (issuer|subject) and may hold any byte, braces and
// colons included.
func (k Keys) user(id string) (string, error) {
	if id == "" {
		return "", ErrBadUser
	}
	return k.prefix + ":{u:" + base64.RawURLEncoding.EncodeToString([]byte(id)) + "}", nil
}

// global is the common start of the deployment-wide keys.
func (k Keys) global() string { return k.prefix + ":{g}" }

// RoomMeta is a room's HASH: seq (the last id), floor (the first id of this epoch).
func (k Keys) RoomMeta(room string) (string, error) { return k.roomKey(room, ":meta") }

// RoomLog is a room's STREAM of MAC'd entries, one per id (<seq>-0).
func (k Keys) RoomLog(room string) (string, error) { return k.roomKey(room, ":log") }

// RoomChannel is the PUB/SUB channel a room's entries are fanned out on.
func (k Keys) RoomChannel(room string) (string, error) { return k.room(room) }

// RoomInfo is a room's record (MAC'd JSON).
func (k Keys) RoomInfo(room string) (string, error) { return k.roomKey(room, ":info") }

// RoomRoles is a room's HASH of user id -> room role.
func (k Keys) RoomRoles(room string) (string, error) { return k.roomKey(room, ":roles") }

// RoomBans is a room's HASH of banned user ids.
func (k Keys) RoomBans(room string) (string, error) { return k.roomKey(room, ":bans") }

// RoomInvites is a room's HASH of open invitations.
func (k Keys) RoomInvites(room string) (string, error) { return k.roomKey(room, ":invites") }

// RoomDeleted is a room's HASH of deleted message ids -> the id of the deletion.
func (k Keys) RoomDeleted(room string) (string, error) { return k.roomKey(room, ":deleted") }

// RoomPresence is a room's presence ZSET (member <node>|<b64 user id>).
func (k Keys) RoomPresence(room string) (string, error) { return k.roomKey(room, ":pres") }

// roomKey is room(name)+suffix.
func (k Keys) roomKey(name, suffix string) (string, error) {
	base, err := k.room(name)
	if err != nil {
		return "", err
	}
	return base + suffix, nil
}

// RoomPattern is the PSUBSCRIBE pattern matching every room's and conversation's
// channel and nothing else: a room channel is <prefix>:{r:<room>}, a conversation's
// <prefix>:{d:<hash>}, and no other key or channel of this layout ends in "}" after
// "{r:" or "{d:".
func (k Keys) RoomPattern() string { return k.prefix + ":{[rd]:*}" }

// RoomOfChannel returns the room a channel from RoomPattern names, re-checked: for a
// conversation's channel its name, dm:<hash>.
func (k Keys) RoomOfChannel(ch string) (string, bool) {
	if len(ch) <= len(k.prefix)+5 || ch[:len(k.prefix)+2] != k.prefix+":{" || ch[len(ch)-1] != '}' {
		return "", false
	}
	tag, name := ch[len(k.prefix)+2:len(k.prefix)+4], ch[len(k.prefix)+4:len(ch)-1]
	switch tag {
	case "r:":
		return name, roomName.MatchString(name)
	case "d:":
		return DMPrefix + name, dmHash.MatchString(name)
	}
	return "", false
}

// Global keys.

// Ctl is the global control STREAM (and its channel has the same name).
func (k Keys) Ctl() string { return k.global() + ":ctl" }

// Rooms is the HASH index of rooms.
func (k Keys) Rooms() string { return k.global() + ":rooms" }

// Grants is the HASH of run-time global roles.
func (k Keys) Grants() string { return k.global() + ":grants" }

// Bans is the HASH of global bans.
func (k Keys) Bans() string { return k.global() + ":bans" }

// Settings is the run-time settings (MAC'd JSON).
func (k Keys) Settings() string { return k.global() + ":settings" }

// Audit is the audit STREAM.
func (k Keys) Audit() string { return k.global() + ":audit" }

// Revoked is the ZSET of revoked session ids -> expiry (ms).
func (k Keys) Revoked() string { return k.global() + ":revoked" }

// Epoch is the cluster's epoch: a random value made once, compared with the copy each
// node keeps in its data directory, so a Redis that lost its data is noticed.
func (k Keys) Epoch() string { return k.global() + ":epoch" }

// User keys.

// UserConns is a user's ZSET of live connections (<node>:<conn> -> expiry ms).
func (k Keys) UserConns(id string) (string, error) { return k.userKey(id, ":conns") }

// UserRate is a user's GCRA theoretical arrival time.
func (k Keys) UserRate(id string) (string, error) { return k.userKey(id, ":rate") }

// userKey is user(id)+suffix.
func (k Keys) userKey(id, suffix string) (string, error) {
	base, err := k.user(id)
	if err != nil {
		return "", err
	}
	return base + suffix, nil
}

// Probe is a node's liveness channel.
func (k Keys) Probe(node string) (string, error) {
	if !nodeName.MatchString(node) {
		return "", ErrBadNode
	}
	return k.prefix + ":probe:" + node, nil
}

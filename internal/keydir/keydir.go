// Package keydir is the server's key directory: for each user the user root key (URK,
// an Ed25519 public key) and the devices it certified (device id, device identity key
// or DIK, the URK's certificate over them, when the server first and last saw each).
// Pages fetch it to check signatures; the hub checks every signed message against it.
//
// The directory is not a trust anchor: a server that lies here is caught by clients
// that pinned a user's URK on first use and compare safety numbers. Its job is to
// refuse what is malformed or unauthorised, stay bounded, and survive restarts.
//
// Concurrency: one goroutine (the hub) changes the directory; any goroutine may read
// it. Each user's record is immutable once published and swapped whole, so a reader
// (a readPump verifying a signature) sees one consistent record without a lock.
package keydir

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"modified-chat/internal/sigmsg"
	"modified-chat/internal/store"
)

// Directory tunables.
const (
	// DefaultMaxDevices is the default number of live devices per user: a phone, a
	// laptop, a few browser profiles, with room to spare.
	DefaultMaxDevices = 10
	// DefaultMaxUsers bounds the users with a record (DoS hardening: every record is
	// memory and disk).
	DefaultMaxUsers = 100000
	// keepRevoked is how many revoked devices a record keeps, so clients that pinned
	// one learn it was revoked; beyond it the oldest is forgotten (DoS hardening: a
	// user revoking and re-adding devices in a loop cannot grow the record).
	keepRevoked = 20
	// registerEvery and registerBurst rate-limit changes per user (new devices,
	// revocations, resets): a few at once, then one a minute. Each costs a store write
	// and an event to every contact.
	registerEvery = time.Minute
	registerBurst = 5
	// maxTrackedLimiters bounds the rate-limiter map; past it, limiters that have
	// refilled (and so equal fresh ones) are dropped.
	maxTrackedLimiters = 10000
	// maxDeviceID bounds a device id, in bytes.
	maxDeviceID = 64
	// minDeviceID keeps device ids unguessable enough not to collide by chance.
	minDeviceID = 8
)

// Store buckets.
const (
	// BucketUsers maps a user id to its record (JSON).
	BucketUsers = "keydir"
	// BucketSeen maps user id ‖ NUL ‖ device id to the device's newest message counter
	// and the time it was last seen (two u64, big-endian).
	BucketSeen = "keydir_seen"
)

// Error codes. They are part of the protocol (PROTOCOL.md) and never renamed.
const (
	CodeBadDevice      = "bad_device"
	CodeBadCertificate = "bad_certificate"
	CodeTooManyDevices = "too_many_devices"
	CodeURKMismatch    = "urk_mismatch"
	CodeRateLimited    = "rate_limited"
	CodeDirectoryFull  = "directory_full"
	CodeReplayed       = "replayed"
)

// Error is a refusal with a stable code; nothing changed when one is returned.
type Error struct {
	Code, Message string
}

// Error makes an Error usable as an error.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// refuse builds an Error.
func refuse(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Device is one certified device of a user. Revoked is 0 while it is live.
type Device struct {
	ID        string `json:"device"`
	DIK       []byte `json:"dik"`
	Cert      []byte `json:"cert"`
	Created   uint64 `json:"created"`
	FirstSeen int64  `json:"first_seen"`
	LastSeen  int64  `json:"last_seen"`
	Revoked   int64  `json:"revoked,omitempty"`
	RevokedBy string `json:"revoked_by,omitempty"`
}

// User is one user's record: the root key and the devices, in the order they were
// added. A published User is never modified; changes publish a copy.
type User struct {
	ID      string   `json:"user"`
	URK     []byte   `json:"urk"`
	Devices []Device `json:"devices"`
	// ResetAt is when the URK was last replaced (0: never).
	ResetAt int64 `json:"reset_at,omitempty"`
}

// Live returns the live device with this id, or nil.
func (u *User) Live(device string) *Device {
	if u == nil {
		return nil
	}
	for i := range u.Devices {
		if d := &u.Devices[i]; d.ID == device && d.Revoked == 0 {
			return d
		}
	}
	return nil
}

// find returns the index of the device with this id, live or revoked, or -1.
func (u *User) find(device string) int {
	for i := range u.Devices {
		if u.Devices[i].ID == device {
			return i
		}
	}
	return -1
}

// clone copies u deeply enough to change its device list.
func (u *User) clone() *User {
	c := *u
	c.Devices = append([]Device(nil), u.Devices...)
	return &c
}

// Upload is a device registration as the client sent it, already decoded.
type Upload struct {
	URK     []byte
	Device  string
	DIK     []byte
	Created uint64
	Cert    []byte
}

// Change is a change to one user's record, computed from the published record but
// not yet in effect: the caller makes Writes durable first, then calls Apply, so
// readers never see a device, revocation or root key the next restart would not
// have. A Change that is not applied (the store failed) leaves the directory as it
// was; Release must then still be called.
type Change struct {
	// User is the record once applied.
	User *User
	// Writes keep the change; nil for a change that changes nothing.
	Writes []store.Write
	// Added says whether a device was added.
	Added bool
	// dropSeen are the counters the change forgets (BucketSeen keys).
	dropSeen []string
	// isNew says the change creates the user's record.
	isNew    bool
	d        *Directory
	released bool
}

// Apply publishes the change to every reader. Call it only once Writes are durable,
// on the directory's goroutine.
func (c *Change) Apply() {
	if c.Writes == nil {
		return
	}
	for _, k := range c.dropSeen {
		delete(c.d.seen, k)
	}
	if c.isNew {
		c.d.count++
	}
	c.d.users.Store(c.User.ID, c.User)
}

// Release ends the change's claim on the directory's bounds, applied or not. Calling it
// again does nothing.
func (c *Change) Release() {
	if c.released {
		return
	}
	c.released = true
	if c.isNew {
		c.d.pendingNew--
	}
}

// Limits bound the directory.
type Limits struct {
	// MaxDevices is the most live devices per user. Zero means DefaultMaxDevices.
	MaxDevices int
	// MaxUsers is the most users with a record. Zero means DefaultMaxUsers.
	MaxUsers int
}

// seen is what the hub tracks per device between records: the newest counter and the
// time it was last used.
type seen struct {
	counter  uint64
	lastSeen int64
}

// Directory is the key directory. Lookups are safe from any goroutine; every other
// method must be called from the single goroutine that owns it (the hub).
type Directory struct {
	users sync.Map // user id -> *User
	// Owned by the writing goroutine:
	count int
	// pendingNew counts users whose first device is planned but not yet durable, so
	// changes in flight cannot together pass MaxUsers.
	pendingNew int
	seen       map[string]seen // seenKey -> seen
	limiters   map[string]*rate.Limiter
	links      map[string][]Link // user id -> waiting link requests, oldest first
	// revs are the cluster's revisions of the records (remote.go); empty on one node.
	revs   map[string]uint64
	limits Limits
	now    func() time.Time
}

// New makes an empty directory.
func New(limits Limits, now func() time.Time) *Directory {
	if limits.MaxDevices <= 0 {
		limits.MaxDevices = DefaultMaxDevices
	}
	if limits.MaxUsers <= 0 {
		limits.MaxUsers = DefaultMaxUsers
	}
	return &Directory{seen: map[string]seen{}, limiters: map[string]*rate.Limiter{}, links: map[string][]Link{}, revs: map[string]uint64{}, limits: limits, now: now}
}

// Load reads the directory from the store (at start-up, before the hub runs).
func Load(s store.Store, limits Limits, now func() time.Time) (*Directory, error) {
	d := New(limits, now)
	err := s.Scan(BucketUsers, func(k, v []byte) error {
		var u User
		if err := json.Unmarshal(v, &u); err != nil || u.ID != string(k) {
			return fmt.Errorf("key directory record %q is damaged", k)
		}
		d.users.Store(u.ID, &u)
		d.count++
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.Scan(BucketSeen, func(k, v []byte) error {
		if len(v) == 16 {
			d.seen[string(k)] = seen{binary.BigEndian.Uint64(v), int64(binary.BigEndian.Uint64(v[8:]))}
		}
		return nil
	})
	return d, err
}

// User returns a user's record (nil when they have none). Safe from any goroutine.
func (d *Directory) User(id string) *User {
	v, ok := d.users.Load(id)
	if !ok {
		return nil
	}
	return v.(*User)
}

// Lookup returns a user's live device. Safe from any goroutine.
func (d *Directory) Lookup(user, device string) *Device {
	return d.User(user).Live(device)
}

// seenKey is the BucketSeen key of a device.
func seenKey(user, device string) string { return user + "\x00" + device }

// ValidDeviceID accepts 8 to 64 characters of A-Z, a-z, 0-9, '-' and '_' (a base64url
// random id, as the page makes them).
func ValidDeviceID(id string) bool {
	if len(id) < minDeviceID || len(id) > maxDeviceID {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// allow takes one change from a user's rate limit.
func (d *Directory) allow(user string) bool {
	now := d.now()
	l := d.limiters[user]
	if l == nil {
		if len(d.limiters) >= maxTrackedLimiters {
			for id, o := range d.limiters {
				if o.TokensAt(now) >= registerBurst {
					delete(d.limiters, id)
				}
			}
		}
		if len(d.limiters) >= maxTrackedLimiters {
			return false
		}
		l = rate.NewLimiter(rate.Every(registerEvery), registerBurst)
		d.limiters[user] = l
	}
	return l.AllowN(now, 1)
}

// checkCert verifies an upload's certificate under urk for user.
func checkCert(user string, urk []byte, up *Upload) *Error {
	if !ValidDeviceID(up.Device) {
		return refuse(CodeBadDevice, "device ids are 8 to 64 characters of A-Z, a-z, 0-9, - and _")
	}
	if len(up.DIK) != ed25519.PublicKeySize {
		return refuse(CodeBadDevice, "the device key must be a 32-byte Ed25519 public key")
	}
	if len(urk) != ed25519.PublicKeySize {
		return refuse(CodeBadCertificate, "the root key must be a 32-byte Ed25519 public key")
	}
	c := sigmsg.DeviceCert{User: user, Device: up.Device, Created: up.Created}
	copy(c.DIK[:], up.DIK)
	if !c.Verify(urk, up.Cert) {
		return refuse(CodeBadCertificate, "the certificate is not the root key's signature over this user, device and key")
	}
	return nil
}

// Register adds a device to user's record. With up.URK set (a register_device) the
// first device also creates the user's root key, and later ones must name the same
// key; without it (a certify_device) the record's root key must already exist. The
// certificate must verify under that key for this user. Registering a live device
// again with the same key changes nothing and is not refused (a page does it at every
// load); with another key it is bad_device. It returns the change (to apply once
// durable), or an Error and no change.
func (d *Directory) Register(user string, up *Upload) (*Change, *Error) {
	old := d.User(user)
	urk := up.URK
	switch {
	case old == nil && urk == nil:
		return nil, refuse(CodeBadCertificate, "this user has no root key yet; register a first device with its root key")
	case old != nil && urk == nil:
		urk = old.URK
	case old != nil && !bytes.Equal(old.URK, urk):
		return nil, refuse(CodeURKMismatch, "this user already has another root key; certify the device with it, or reset the identity")
	}
	if e := checkCert(user, urk, up); e != nil {
		return nil, e
	}
	if live := old.Live(up.Device); live != nil {
		if !bytes.Equal(live.DIK, up.DIK) {
			return nil, refuse(CodeBadDevice, "this device id is registered with another key")
		}
		return &Change{User: old, d: d, released: true}, nil
	}
	if old != nil && old.find(up.Device) >= 0 {
		// Revoked ids stay revoked: otherwise whoever holds a revoked device (and the
		// session) could bring it back by sending its old registration again.
		return nil, refuse(CodeBadDevice, "this device id was revoked; make a new device")
	}
	if old == nil && d.count+d.pendingNew >= d.limits.MaxUsers {
		return nil, refuse(CodeDirectoryFull, "the key directory is full")
	}
	if old != nil && d.liveCount(old) >= d.limits.MaxDevices {
		return nil, refuse(CodeTooManyDevices, "a user may have at most %d devices; revoke one first", d.limits.MaxDevices)
	}
	if !d.allow(user) {
		return nil, refuse(CodeRateLimited, "too many device changes; try again in a minute")
	}
	next := &User{ID: user, URK: bytes.Clone(urk)}
	if old != nil {
		next = old.clone()
	}
	now := d.now().UnixMilli()
	next.Devices = append(next.Devices, Device{ID: up.Device, DIK: bytes.Clone(up.DIK), Cert: bytes.Clone(up.Cert), Created: up.Created, FirstSeen: now, LastSeen: now})
	ch := d.prepare(next)
	ch.Added, ch.isNew = true, old == nil
	if ch.isNew {
		d.pendingNew++
		ch.released = false
	}
	ch.dropSeen = append(ch.dropSeen, seenKey(user, up.Device))
	ch.Writes = append(ch.Writes, store.Write{Bucket: BucketSeen, Key: []byte(seenKey(user, up.Device))})
	return ch, nil
}

// Reset replaces a user's root key: every device of theirs is revoked and the
// uploaded one, certified by the new key, becomes the only live device. It is the
// only way a known user's root key changes; contacts then see a key change.
func (d *Directory) Reset(user string, up *Upload) (*Change, *Error) {
	old := d.User(user)
	if old == nil {
		return nil, refuse(CodeBadCertificate, "this user has no root key to reset; register a device")
	}
	if e := checkCert(user, up.URK, up); e != nil {
		return nil, e
	}
	if bytes.Equal(old.URK, up.URK) {
		return nil, refuse(CodeURKMismatch, "the new root key is the current one")
	}
	if i := old.find(up.Device); i >= 0 && old.Devices[i].Revoked != 0 {
		return nil, refuse(CodeBadDevice, "this device id was revoked; make a new device")
	}
	if !d.allow(user) {
		return nil, refuse(CodeRateLimited, "too many device changes; try again in a minute")
	}
	now := d.now().UnixMilli()
	next := old.clone()
	next.URK, next.ResetAt = bytes.Clone(up.URK), now
	for i := range next.Devices {
		if next.Devices[i].Revoked == 0 {
			next.Devices[i].Revoked, next.Devices[i].RevokedBy = now, user
		}
	}
	if i := next.find(up.Device); i >= 0 {
		next.Devices = append(next.Devices[:i], next.Devices[i+1:]...)
	}
	next.Devices = append(next.Devices, Device{ID: up.Device, DIK: bytes.Clone(up.DIK), Cert: bytes.Clone(up.Cert), Created: up.Created, FirstSeen: now, LastSeen: now})
	ch := d.prepare(next)
	ch.Added = true
	ch.dropSeen = append(ch.dropSeen, seenKey(user, up.Device))
	ch.Writes = append(ch.Writes, store.Write{Bucket: BucketSeen, Key: []byte(seenKey(user, up.Device))})
	return ch, nil
}

// Revoke revokes a live device of user, recording who did it. A revoked device's
// messages are refused from then on (once the change is applied).
func (d *Directory) Revoke(user, device, by string) (*Change, *Error) {
	old := d.User(user)
	if old.Live(device) == nil {
		return nil, refuse(CodeBadDevice, "no such live device")
	}
	if !d.allow(by) {
		return nil, refuse(CodeRateLimited, "too many device changes; try again in a minute")
	}
	next := old.clone()
	i := next.find(device)
	next.Devices[i].Revoked, next.Devices[i].RevokedBy = d.now().UnixMilli(), by
	return d.prepare(next), nil
}

// liveCount counts a record's live devices.
func (d *Directory) liveCount(u *User) int {
	n := 0
	for i := range u.Devices {
		if u.Devices[i].Revoked == 0 {
			n++
		}
	}
	return n
}

// prepare trims revoked devices beyond keepRevoked (oldest first) from next, a copy
// no reader holds, and returns the change that writes and then publishes it.
func (d *Directory) prepare(next *User) *Change {
	ch := &Change{User: next, d: d, released: true}
	revoked := len(next.Devices) - d.liveCount(next)
	kept := next.Devices[:0]
	for _, dev := range next.Devices {
		if dev.Revoked != 0 && revoked > keepRevoked {
			revoked--
			ch.dropSeen = append(ch.dropSeen, seenKey(next.ID, dev.ID))
			ch.Writes = append(ch.Writes, store.Write{Bucket: BucketSeen, Key: []byte(seenKey(next.ID, dev.ID))})
			continue
		}
		kept = append(kept, dev)
	}
	next.Devices = kept
	b, _ := json.Marshal(next)
	ch.Writes = append(ch.Writes, store.Write{Bucket: BucketUsers, Key: []byte(next.ID), Value: b})
	return ch
}

// Use records a signed message from a live device: its counter must be above every
// earlier one of that device (else CodeReplayed, and nothing changes). It returns the
// write that keeps the new counter; the caller commits it with the message, so a
// restart cannot reopen a replay window.
func (d *Directory) Use(user, device string, counter uint64) (store.Write, *Error) {
	k := seenKey(user, device)
	s := d.seen[k]
	if counter <= s.counter {
		return store.Write{}, refuse(CodeReplayed, "this device already sent message %d or later", counter)
	}
	s = seen{counter: counter, lastSeen: d.now().UnixMilli()}
	d.seen[k] = s
	v := binary.BigEndian.AppendUint64(make([]byte, 0, 16), s.counter)
	v = binary.BigEndian.AppendUint64(v, uint64(s.lastSeen))
	return store.Write{Bucket: BucketSeen, Key: []byte(k), Value: v}, nil
}

// Describe returns a copy of user's record with each device's last-seen time brought
// up to date from its messages (nil when the user has no record).
func (d *Directory) Describe(user string) *User {
	u := d.User(user)
	if u == nil {
		return nil
	}
	c := u.clone()
	for i := range c.Devices {
		if s, ok := d.seen[seenKey(user, c.Devices[i].ID)]; ok && s.lastSeen > c.Devices[i].LastSeen {
			c.Devices[i].LastSeen = s.lastSeen
		}
	}
	return c
}

// Link requests: a new browser profile of a user who already has a root key asks to
// be certified by a device holding that key. The request only carries the new
// device's public key to the user's other connections; the certificate that follows
// is the proof, checked like any other. What keeps the server from swapping the key
// on the way is the code the user compares on both screens (PROTOCOL.md, "Linking a
// device"), which the pages compute; the server checks no code.

// Link request tunables.
const (
	// linkTTL is how long a request waits for a certificate: time to walk to the
	// other device and type a code.
	linkTTL = 10 * time.Minute
	// maxLinksPerUser bounds one user's waiting requests (DoS hardening: each is
	// shown on every one of the user's devices).
	maxLinksPerUser = 3
	// maxLinkUsers bounds the users with waiting requests (DoS hardening: memory).
	maxLinkUsers = 10000
)

// CodeTooManyLinks refuses a link request while the user has maxLinksPerUser
// waiting (part of the protocol, never renamed).
const CodeTooManyLinks = "too_many_links"

// Link is a waiting request to certify a new device.
type Link struct {
	Device  string `json:"device"`
	DIK     []byte `json:"dik"`
	Created uint64 `json:"created"`
	// At is when the request was made (Unix ms); it lapses linkTTL later.
	At int64 `json:"at"`
}

// RequestLink records a request to certify up's device (no certificate: the device
// has no root key) for user, who must already have one. A request for a device
// already waiting replaces it. It returns the request, or an Error and no change.
func (d *Directory) RequestLink(user string, up *Upload) (*Link, *Error) {
	u := d.User(user)
	if u == nil {
		return nil, refuse(CodeBadCertificate, "this user has no root key yet; register this device as the first")
	}
	if !ValidDeviceID(up.Device) || len(up.DIK) != ed25519.PublicKeySize {
		return nil, refuse(CodeBadDevice, "a device id of 8 to 64 characters and a 32-byte Ed25519 key")
	}
	if u.find(up.Device) >= 0 {
		return nil, refuse(CodeBadDevice, "this device id is already in the directory; make a new device")
	}
	if d.liveCount(u) >= d.limits.MaxDevices {
		return nil, refuse(CodeTooManyDevices, "a user may have at most %d devices; revoke one first", d.limits.MaxDevices)
	}
	now := d.now()
	links := d.pendingLinks(user, now)
	i := slices.IndexFunc(links, func(l Link) bool { return l.Device == up.Device })
	if i < 0 && len(links) >= maxLinksPerUser {
		return nil, refuse(CodeTooManyLinks, "%d devices are already waiting to be linked; link or let them lapse first", maxLinksPerUser)
	}
	if len(links) == 0 && len(d.links) >= maxLinkUsers {
		return nil, refuse(CodeDirectoryFull, "too many devices are waiting to be linked; try again later")
	}
	if !d.allow(user) {
		return nil, refuse(CodeRateLimited, "too many device changes; try again in a minute")
	}
	l := Link{Device: up.Device, DIK: bytes.Clone(up.DIK), Created: up.Created, At: now.UnixMilli()}
	if i >= 0 {
		links = slices.Delete(links, i, i+1)
	}
	d.links[user] = append(links, l)
	return &l, nil
}

// pendingLinks returns user's requests that have not lapsed, forgetting the others.
func (d *Directory) pendingLinks(user string, now time.Time) []Link {
	links := slices.DeleteFunc(d.links[user], func(l Link) bool {
		return now.UnixMilli()-l.At > linkTTL.Milliseconds()
	})
	if len(links) == 0 {
		delete(d.links, user)
		return nil
	}
	d.links[user] = links
	return links
}

// Links returns a copy of user's waiting requests.
func (d *Directory) Links(user string) []Link {
	return slices.Clone(d.pendingLinks(user, d.now()))
}

// ForgetLink drops a request once its device is in the directory (or the user's root
// key was replaced).
func (d *Directory) ForgetLink(user, device string) {
	links := slices.DeleteFunc(d.links[user], func(l Link) bool { return l.Device == device })
	if len(links) == 0 {
		delete(d.links, user)
		return
	}
	d.links[user] = links
}

package main

import (
	"bytes"
	"crypto/ed25519"
	"path/filepath"
	"time"

	"modified-chat/internal/mls"
	"modified-chat/internal/store"
)

// KeyPackage directory rules (PROTOCOL.md, "KeyPackage directory").
const (
	// kpPerDevice bounds the KeyPackages kept per device: enough for about 20 rooms
	// to add the device while it is offline, small enough that a device cannot fill
	// the store with them.
	kpPerDevice = 20
	// kpLow is when a device is told to upload more (kp_low).
	kpLow = 5
	// kpMaxLifetime is the longest lifetime accepted (30 days, RFC 9750 §8.4.2: initial
	// keys should expire); kpSlack tolerates clocks that differ by a few minutes.
	kpMaxLifetime = 30 * 24 * time.Hour
	kpSlack       = 5 * time.Minute
	// externalSenderKeyFile holds the seed of the hub's external-sender key in the
	// data directory (mode 0600, created on first start).
	externalSenderKeyFile = "mls-external-sender.key"
)

// Store buckets of the directory: KeyPackages by "user\x00device\x00ref", and the
// references already used, by ref, with their expiry (Unix seconds), so a used
// KeyPackage cannot be uploaded again while it could still be added.
const (
	bucketKPs    = "mls_kp"
	bucketKPUsed = "mls_kp_used"
)

// kpEntry is one checked KeyPackage: what an Add needs and what the leaf will be.
type kpEntry struct {
	user, device string
	ref          []byte // KeyPackageRef
	msg          []byte // the whole MLSMessage, as stored
	kp           *mls.KeyPackage
	notAfter     int64
}

// devKey names a device in the hub's maps.
func devKey(user, device string) string { return user + "\x00" + device }

// kpKey is an entry's store key.
func (e *kpEntry) key() []byte {
	return append([]byte(devKey(e.user, e.device)+"\x00"), e.ref...)
}

// checkKeyPackage parses and checks one KeyPackage for user (and device, when not
// empty): suite 1, its own signature, a credential whose chain is this user's live
// device as the key directory knows it, and a lifetime that covers now and lasts at
// most 30 days. It reads only the directory, which is safe from any goroutine, so the
// readPump runs it, not the hub.
func (app *App) checkKeyPackage(user, device string, b []byte) (*kpEntry, *protoError) {
	bad := func(why string) (*kpEntry, *protoError) { return nil, newProtoError(codeBadMLS, "%s", why) }
	m, err := mls.ParseMessage(b)
	if err != nil || m.KeyPackage == nil {
		return bad("not a KeyPackage")
	}
	kp := m.KeyPackage
	if kp.CipherSuite != mls.Suite1 {
		return bad("the KeyPackage is not of ciphersuite 1")
	}
	if !mls.VerifyKeyPackage(kp) {
		return bad("the KeyPackage's signature does not verify")
	}
	if kp.Leaf.Credential.Type != mls.CredentialBasic {
		return bad("the credential must be basic")
	}
	id, err := mls.ParseIdentity(kp.Leaf.Credential.Identity)
	if err != nil {
		return bad("the credential's identity is not an mc1 identity")
	}
	if id.User != user || (device != "" && id.Device != device) {
		return bad("the credential names another user or device")
	}
	u := app.keys.User(user)
	d := u.Live(id.Device)
	if d == nil || !bytes.Equal(d.DIK, id.DIK) || !bytes.Equal(u.URK, id.URK) || !bytes.Equal(d.Cert, id.Cert) || d.Created != id.Created {
		return bad("the credential's device is not a live device of yours with these keys")
	}
	if !id.VerifyLeaf(kp.Leaf.SignatureKey) {
		return bad("the device key did not sign the leaf key")
	}
	now := app.now()
	nb, na := int64(kp.Leaf.NotBefore), int64(kp.Leaf.NotAfter)
	if kp.Leaf.NotAfter > 1<<62 || nb > now.Add(kpSlack).Unix() || na < now.Unix() || na > now.Add(kpMaxLifetime+kpSlack).Unix() {
		return bad("the KeyPackage's lifetime must cover now and end within 30 days")
	}
	return &kpEntry{user: user, device: id.Device, ref: mls.KeyPackageRef(kp), msg: b, kp: kp, notAfter: na}, nil
}

// loadExternalSender reads (or creates, mode 0600) the hub's Ed25519 external-sender
// key in the data directory. Members accept Adds and Removes only from it, so it must
// survive restarts: a new key would orphan every group.
func loadExternalSender(dataDir string) (ed25519.PrivateKey, error) {
	seed, err := loadOrCreateKey(filepath.Join(dataDir, externalSenderKeyFile))
	if err != nil {
		return nil, err
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// kpDirectory is the hub's KeyPackage directory: owned by the hub goroutine.
type kpDirectory struct {
	byDevice map[string][]*kpEntry // devKey -> oldest first
	used     map[string]int64      // string(ref) -> expiry
	// sweepAt is the size of used that triggers the next sweep of expired refs.
	sweepAt int
}

// loadKPDirectory reads the directory at start-up (re-checking nothing: entries were
// checked at upload; the hub drops expired ones before use).
func loadKPDirectory(s store.Store) (*kpDirectory, error) {
	d := &kpDirectory{byDevice: map[string][]*kpEntry{}, used: map[string]int64{}, sweepAt: 1024}
	err := s.Scan(bucketKPs, func(k, v []byte) error {
		parts := bytes.SplitN(k, []byte{0}, 3)
		m, err := mls.ParseMessage(v)
		if len(parts) != 3 || err != nil || m.KeyPackage == nil {
			return nil // damaged: never offered
		}
		e := &kpEntry{user: string(parts[0]), device: string(parts[1]), ref: bytes.Clone(parts[2]), msg: bytes.Clone(v), notAfter: int64(m.KeyPackage.Leaf.NotAfter)}
		e.kp = mustParseKP(e.msg)
		d.byDevice[devKey(e.user, e.device)] = append(d.byDevice[devKey(e.user, e.device)], e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.Scan(bucketKPUsed, func(k, v []byte) error {
		d.used[string(k)] = int64(store.KeySeq(v))
		return nil
	})
	return d, err
}

// mustParseKP parses bytes already known to be a KeyPackage MLSMessage.
func mustParseKP(b []byte) *mls.KeyPackage {
	m, _ := mls.ParseMessage(b)
	return m.KeyPackage
}

// known reports whether a KeyPackage is stored or was used already.
func (d *kpDirectory) known(e *kpEntry) bool {
	if _, ok := d.used[string(e.ref)]; ok {
		return true
	}
	for _, o := range d.byDevice[devKey(e.user, e.device)] {
		if bytes.Equal(o.ref, e.ref) {
			return true
		}
	}
	return false
}

// add stores checked entries of one device and returns the writes.
func (d *kpDirectory) add(entries []*kpEntry) []store.Write {
	var w []store.Write
	for _, e := range entries {
		k := devKey(e.user, e.device)
		d.byDevice[k] = append(d.byDevice[k], e)
		w = append(w, store.Write{Bucket: bucketKPs, Key: e.key(), Value: e.msg})
	}
	return w
}

// take removes and returns the device's oldest live KeyPackage (nil when none),
// deleting expired ones on the way; the writes delete them and remember the used ref.
func (d *kpDirectory) take(user, device string, now time.Time) (*kpEntry, []store.Write) {
	k := devKey(user, device)
	var w []store.Write
	list := d.byDevice[k]
	for len(list) > 0 {
		e := list[0]
		list = list[1:]
		w = append(w, store.Write{Bucket: bucketKPs, Key: e.key()})
		if e.notAfter < now.Unix() {
			continue
		}
		d.used[string(e.ref)] = e.notAfter
		w = append(w, store.Write{Bucket: bucketKPUsed, Key: e.ref, Value: store.SeqKey(uint64(e.notAfter))})
		d.setList(k, list)
		return e, append(w, d.sweep(now)...)
	}
	d.setList(k, list)
	return nil, w
}

// setList stores a device's list, dropping the map entry when empty (bounded maps).
func (d *kpDirectory) setList(k string, list []*kpEntry) {
	if len(list) == 0 {
		delete(d.byDevice, k)
		return
	}
	d.byDevice[k] = list
}

// count is how many KeyPackages a device has.
func (d *kpDirectory) count(user, device string) int { return len(d.byDevice[devKey(user, device)]) }

// sweep forgets used refs that have expired (they could no longer be added anyway),
// whenever the set doubles: it stays bounded by the KeyPackages of the last 30 days.
func (d *kpDirectory) sweep(now time.Time) []store.Write {
	if len(d.used) < d.sweepAt {
		return nil
	}
	var w []store.Write
	for ref, exp := range d.used {
		if exp < now.Unix() {
			delete(d.used, ref)
			w = append(w, store.Write{Bucket: bucketKPUsed, Key: []byte(ref)})
		}
	}
	d.sweepAt = max(1024, 2*len(d.used))
	return w
}

package mls

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
)

// Identity encoding of a device's leaf credential (PROTOCOL.md, "Credential").
const (
	// identityTag starts every identity: the encoding's version.
	identityTag = "mc1"
	// TagLeaf starts the bytes a device key signs to bind an MLS leaf key to itself.
	TagLeaf = "modified-chat/v1/mls-leaf\x00"
	// maxIdentityField bounds the user and device ids inside, like the key
	// directory's own bound: far above what the server issues.
	maxIdentityField = 1024
)

// ErrIdentity is returned for identity bytes that are not exactly one encoding.
var ErrIdentity = errors.New("mls: malformed credential identity")

// Identity is a decoded leaf credential: which user's which device this leaf is, and
// the chain root key → device key → leaf key that proves it.
type Identity struct {
	User, Device string
	URK, DIK     []byte // 32 bytes each
	Created      uint64 // the device certificate's time
	Cert         []byte // URK's signature over the device certificate
	LeafSig      []byte // DIK's signature over LeafBinding
}

// appendField appends a 4-byte big-endian length and the bytes, as sigmsg does.
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// Encode returns the identity bytes:
//
//	"mc1" ‖ f(user) ‖ f(device) ‖ urk[32] ‖ dik[32] ‖ u64(created) ‖ cert[64] ‖ leaf_sig[64]
func (id *Identity) Encode() []byte {
	b := append(make([]byte, 0, 220+len(id.User)+len(id.Device)), identityTag...)
	b = appendField(b, id.User)
	b = appendField(b, id.Device)
	b = append(append(b, id.URK...), id.DIK...)
	b = binary.BigEndian.AppendUint64(b, id.Created)
	return append(append(b, id.Cert...), id.LeafSig...)
}

// ParseIdentity decodes identity bytes made by Encode, exactly.
func ParseIdentity(b []byte) (*Identity, error) {
	if len(b) < len(identityTag) || string(b[:len(identityTag)]) != identityTag {
		return nil, ErrIdentity
	}
	b = b[len(identityTag):]
	field := func() (string, bool) {
		if len(b) < 4 {
			return "", false
		}
		n := binary.BigEndian.Uint32(b)
		if n > maxIdentityField || int(n) > len(b)-4 {
			return "", false
		}
		s := string(b[4 : 4+n])
		b = b[4+n:]
		return s, true
	}
	id := &Identity{}
	var ok1, ok2 bool
	id.User, ok1 = field()
	id.Device, ok2 = field()
	const fixed = 32 + 32 + 8 + 64 + 64
	if !ok1 || !ok2 || len(b) != fixed {
		return nil, ErrIdentity
	}
	id.URK, id.DIK = b[0:32:32], b[32:64:64]
	id.Created = binary.BigEndian.Uint64(b[64:72])
	id.Cert, id.LeafSig = b[72:136:136], b[136:200:200]
	return id, nil
}

// LeafBinding is what the device key signs to vouch for an MLS leaf signature key:
//
//	TagLeaf ‖ f(user) ‖ f(device) ‖ signature_key[32]
func LeafBinding(user, device string, sigKey []byte) []byte {
	b := append(make([]byte, 0, len(TagLeaf)+8+len(user)+len(device)+len(sigKey)), TagLeaf...)
	b = appendField(b, user)
	b = appendField(b, device)
	return append(b, sigKey...)
}

// VerifyLeaf reports whether the identity's device key signed this leaf key.
func (id *Identity) VerifyLeaf(sigKey []byte) bool {
	return len(sigKey) == ed25519.PublicKeySize &&
		ed25519.Verify(ed25519.PublicKey(id.DIK), LeafBinding(id.User, id.Device, sigKey), id.LeafSig)
}

// Package sigmsg holds the exact bytes that devices sign: a chat message, a file
// announcement and a device certificate. Each encoding starts with a fixed version
// tag ending in a NUL byte, then fields in a fixed order, every variable-length field
// prefixed by its length as 4 bytes big-endian, every number 8 bytes big-endian. There
// is no JSON canonicalisation anywhere: two implementations that agree on this page
// (and PROTOCOL.md, "Signed bytes") produce the same bytes for the same message, and
// no two different messages share an encoding.
package sigmsg

import (
	"encoding/binary"
	"errors"
)

// Field bounds. They keep decoding cheap whatever the input and are far above what
// the server accepts in its envelopes (room names are 32 bytes, user ids 256, texts a
// few thousand characters).
const (
	// MaxField is the longest variable-length field (a text or a name), in bytes.
	MaxField = 1 << 20
	// MaxID bounds the short identifiers: room, user id, device id, MIME type.
	MaxID = 1024
	// MsgIDLen is the length of the random message id (128 bits).
	MsgIDLen = 16
	// KeyLen is the length of an Ed25519 public key.
	KeyLen = 32
	// HashLen is the length of a SHA-256 digest.
	HashLen = 32
)

// ErrMalformed is returned for bytes that are not exactly one encoding.
var ErrMalformed = errors.New("sigmsg: malformed encoding")

// appendField appends a length-prefixed field.
func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// reader walks an encoding; the first failure sticks, so decoders check once at the end.
type reader struct {
	b   []byte
	bad bool
}

// tag consumes a fixed version tag.
func (r *reader) tag(t string) {
	if r.bad || len(r.b) < len(t) || string(r.b[:len(t)]) != t {
		r.bad = true
		return
	}
	r.b = r.b[len(t):]
}

// field consumes a length-prefixed field of at most limit bytes.
func (r *reader) field(limit int) string {
	if r.bad || len(r.b) < 4 {
		r.bad = true
		return ""
	}
	n := binary.BigEndian.Uint32(r.b)
	if uint64(n) > uint64(limit) || uint64(n) > uint64(len(r.b)-4) {
		r.bad = true
		return ""
	}
	s := string(r.b[4 : 4+n])
	r.b = r.b[4+n:]
	return s
}

// u64 consumes an 8-byte big-endian number.
func (r *reader) u64() uint64 {
	if r.bad || len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// fixed consumes exactly len(dst) bytes into dst.
func (r *reader) fixed(dst []byte) {
	if r.bad || len(r.b) < len(dst) {
		r.bad = true
		return
	}
	copy(dst, r.b)
	r.b = r.b[len(dst):]
}

// done reports whether everything was consumed without a failure: trailing bytes are
// malformed too, so an encoding never has a second reading.
func (r *reader) done() error {
	if r.bad || len(r.b) != 0 {
		return ErrMalformed
	}
	return nil
}

// Package mls parses the parts of MLS (RFC 9420) messages that a Delivery Service
// must check. Its input comes from untrusted clients, so every read is bounded by the
// bytes actually present: a length field can never make it allocate or look beyond
// the input, and each failure is a typed *Error that says which field was bad.
// It checks structure only: no signature, MAC or tree is verified here.
package mls

import (
	"errors"
	"fmt"
)

// The kinds of failure, for errors.Is; an *Error wraps exactly one of them.
var (
	// ErrTruncated: the input ended inside a field or a vector.
	ErrTruncated = errors.New("mls: truncated")
	// ErrVarint: a vector length used the reserved 0b11 prefix.
	ErrVarint = errors.New("mls: invalid variable-length integer")
	// ErrNonMinimal: a vector length was not in its shortest encoding (§2.1.2 MUST).
	ErrNonMinimal = errors.New("mls: non-minimal variable-length integer")
	// ErrTrailing: bytes were left over after a structure or inside a vector.
	ErrTrailing = errors.New("mls: trailing bytes")
	// ErrUnsupported: a version, wire format, type or selector this parser does not
	// know, whose length it therefore cannot tell.
	ErrUnsupported = errors.New("mls: unsupported value")
	// ErrInvalid: a value the RFC forbids (an optional flag other than 0/1, ...).
	ErrInvalid = errors.New("mls: invalid value")
)

// Error says where parsing failed: the field, its byte offset in the whole input,
// and the kind (one of the Err* values above).
type Error struct {
	Field  string
	Offset int
	Kind   error
}

// Error formats the failure for logs; it never includes the input bytes.
func (e *Error) Error() string {
	return fmt.Sprintf("%v: %s at byte %d", e.Kind, e.Field, e.Offset)
}

// Unwrap lets errors.Is match the kind.
func (e *Error) Unwrap() error { return e.Kind }

// reader walks one bounded slice of the input. base is the slice's offset in the
// whole input, so errors point at the right byte even inside nested vectors.
type reader struct {
	b    []byte
	off  int
	base int
	err  error
}

// fail records the first error only; later reads on a failed reader return zeros,
// so parsing code can read a whole structure and check the error once.
func (r *reader) fail(field string, kind error) {
	if r.err == nil {
		r.err = &Error{Field: field, Offset: r.base + r.off, Kind: kind}
	}
}

// take returns the next n bytes as a sub-slice of the input (no copy).
func (r *reader) take(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b)-r.off {
		r.fail(field, ErrTruncated)
		return nil
	}
	v := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return v
}

func (r *reader) u8(field string) uint8 {
	v := r.take(field, 1)
	if v == nil {
		return 0
	}
	return v[0]
}

func (r *reader) u16(field string) uint16 {
	v := r.take(field, 2)
	if v == nil {
		return 0
	}
	return uint16(v[0])<<8 | uint16(v[1])
}

func (r *reader) u32(field string) uint32 {
	v := r.take(field, 4)
	if v == nil {
		return 0
	}
	return uint32(v[0])<<24 | uint32(v[1])<<16 | uint32(v[2])<<8 | uint32(v[3])
}

func (r *reader) u64(field string) uint64 {
	v := r.take(field, 8)
	if v == nil {
		return 0
	}
	var x uint64
	for _, c := range v {
		x = x<<8 | uint64(c)
	}
	return x
}

// varint reads a vector length (RFC 9420 §2.1.2): the top two bits of the first byte
// give the size (1, 2 or 4 bytes), 0b11 is reserved, and a value that would fit in a
// shorter form is refused.
func (r *reader) varint(field string) int {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.b) {
		r.fail(field, ErrTruncated)
		return 0
	}
	start := r.off
	prefix := r.b[r.off] >> 6
	var size int
	var min uint32
	switch prefix {
	case 0:
		size, min = 1, 0
	case 1:
		size, min = 2, 1<<6
	case 2:
		size, min = 4, 1<<14
	default:
		r.fail(field, ErrVarint)
		return 0
	}
	v := r.take(field, size)
	if v == nil {
		return 0
	}
	x := uint32(v[0] & 0x3f)
	for _, c := range v[1:] {
		x = x<<8 | uint32(c)
	}
	if x < min {
		r.off = start
		r.fail(field, ErrNonMinimal)
		return 0
	}
	return int(x)
}

// opaque reads an opaque<V>: a varint length, then that many bytes of the input.
func (r *reader) opaque(field string) []byte {
	n := r.varint(field)
	return r.take(field, n)
}

// vector reads a vector<V> and returns a reader bounded to its bytes; the caller
// parses elements until it is empty, so an element can never run past the vector.
func (r *reader) vector(field string) *reader {
	b := r.opaque(field)
	return &reader{b: b, base: r.base + r.off - len(b)}
}

// more reports whether a vector reader has bytes left and its parent has not failed.
func (r *reader) more() bool { return r.err == nil && r.off < len(r.b) }

// end fails unless the reader consumed every byte.
func (r *reader) end(field string) {
	if r.err == nil && r.off != len(r.b) {
		r.fail(field, ErrTrailing)
	}
}

// join moves a sub-reader's error into its parent, so one check at the top suffices.
func (r *reader) join(sub *reader) {
	if r.err == nil && sub.err != nil {
		r.err = sub.err
	}
}

// optional reads an optional<T>'s presence byte, which must be 0 or 1.
func (r *reader) optional(field string) bool {
	v := r.u8(field)
	if v > 1 {
		r.off--
		r.fail(field, ErrInvalid)
		return false
	}
	return v == 1
}

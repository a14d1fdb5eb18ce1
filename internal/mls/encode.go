package mls

import "encoding/binary"

// maxVarint is the largest vector length the QUIC-style varint of RFC 9420 §2.1.2
// can carry (30 bits).
const maxVarint = 1<<30 - 1

// appendVarint appends n in the shortest varint form, as the parser demands.
// Callers never pass more than maxVarint: every value the hub encodes is a key, a
// group id or a KeyPackage it has already parsed, all far smaller.
func appendVarint(b []byte, n int) []byte {
	switch {
	case n < 1<<6:
		return append(b, byte(n))
	case n < 1<<14:
		return binary.BigEndian.AppendUint16(b, uint16(n)|0x4000)
	default:
		return binary.BigEndian.AppendUint32(b, uint32(n)|0x80000000)
	}
}

// appendOpaque appends an opaque<V>: the varint length, then the bytes.
func appendOpaque(b, v []byte) []byte {
	return append(appendVarint(b, len(v)), v...)
}

package main

import (
	"bytes"
	"encoding/binary"
	"testing"
)

// mlsFrame joins parts as a `bin` frame does: each is u32(len) ‖ bytes.
func mlsFrame(parts ...[]byte) []byte {
	var b []byte
	for _, p := range parts {
		b = binary.BigEndian.AppendUint32(b, uint32(len(p)))
		b = append(b, p...)
	}
	return b
}

// FuzzSplitMLSFrame attacks splitMLSFrame with untrusted binary frames of each type
// that may carry one (its seeds run in the normal suite). Whatever the bytes: no panic;
// a refusal is bad_mls and leaves no payload; an accepted frame is exactly its parts
// re-joined (nothing dropped, nothing left over), each part capped at its own length
// (appending to one cannot write into the next), a zero-length Welcome is none, and
// an mls_app is the frame itself.
func FuzzSplitMLSFrame(f *testing.F) {
	commit, welcome, gi, kp := []byte("commit-bytes"), []byte("welcome"), []byte("group-info"), []byte("kp")
	for _, seed := range []struct {
		typ  string
		data []byte
	}{
		{"mls_commit", mlsFrame(commit, welcome, gi)},
		{"mls_commit", mlsFrame(commit, nil, gi)},
		{"mls_commit", mlsFrame(commit, welcome)},                          // a part missing
		{"mls_commit", append(mlsFrame(commit, nil, gi), 0)},               // one byte left over
		{"mls_commit", []byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3}},            // a length past the end
		{"mls_commit", []byte{0, 0, 0}},                                    // a length cut short
		{"mls_group_init", mlsFrame(gi, kp)},                               // a valid init
		{"mls_group_init", mlsFrame(gi, kp, commit)},                       // a part too many
		{"mls_group_init", nil},                                            // nothing
		{"mls_app", []byte("any ciphertext")},                              // the message itself
		{"mls_commit", mlsFrame(nil, nil, nil)},                            // empty parts
		{"mls_group_init", append([]byte{0x7f, 0xff, 0xff, 0xff}, gi...)},  // a huge length
		{"mls_commit", append(mlsFrame(commit), []byte{0x80, 0, 0, 0}...)}, // a length with the top bit
	} {
		f.Add(seed.typ, seed.data)
	}
	f.Fuzz(func(t *testing.T, typ string, data []byte) {
		if !mlsBinTypes[typ] {
			typ = "mls_commit"
		}
		env := &envelope{Type: typ}
		orig := bytes.Clone(data)
		perr := splitMLSFrame(env, data)
		if !bytes.Equal(data, orig) {
			t.Fatal("splitMLSFrame wrote into the frame")
		}
		if perr != nil {
			if perr.Code != codeBadMLS || env.mls != nil {
				t.Fatalf("refusal %q with payload %v", perr.Code, env.mls)
			}
			return
		}
		p := env.mls
		var parts [][]byte
		switch typ {
		case "mls_app":
			if !bytes.Equal(p.msg, data) {
				t.Fatal("mls_app: the message is not the frame")
			}
			return
		case "mls_commit":
			if p.welcome != nil && len(p.welcome) == 0 {
				t.Fatal("an empty Welcome is not none")
			}
			parts = [][]byte{p.commit, p.welcome, p.groupInfo}
		default:
			parts = [][]byte{p.groupInfo, p.keyPackage}
		}
		for i, part := range parts {
			if cap(part) != len(part) {
				t.Fatalf("part %d has room to grow into the next (len %d, cap %d)", i, len(part), cap(part))
			}
		}
		if again := mlsFrame(parts...); !bytes.Equal(again, data) {
			t.Fatalf("the parts re-joined are %d bytes, the frame %d", len(again), len(data))
		}
	})
}

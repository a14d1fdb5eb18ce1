package mls

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// enc builds hand-made vectors: big-endian integers and RFC 9420 varint-prefixed
// vectors, written here independently of the parser.
type enc struct{ b []byte }

func (e *enc) u8(v uint8) *enc   { e.b = append(e.b, v); return e }
func (e *enc) u16(v uint16) *enc { e.b = append(e.b, byte(v>>8), byte(v)); return e }
func (e *enc) u32(v uint32) *enc {
	e.b = append(e.b, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	return e
}
func (e *enc) u64(v uint64) *enc { return e.u32(uint32(v >> 32)).u32(uint32(v)) }
func (e *enc) raw(b []byte) *enc { e.b = append(e.b, b...); return e }
func (e *enc) vec(b []byte) *enc {
	switch n := len(b); {
	case n < 1<<6:
		e.u8(uint8(n))
	case n < 1<<14:
		e.u16(uint16(n) | 0x4000)
	default:
		e.u32(uint32(n) | 0x80000000)
	}
	return e.raw(b)
}

// handCommit is a member's PublicMessage commit with one Remove by value and one
// proposal reference, and no path.
func handCommit() []byte {
	proposals := (&enc{}).u8(1).u16(ProposalRemove).u32(7).u8(2).vec([]byte("ref-32-bytes-ref-32-bytes-ref-32")).b
	return (&enc{}).u16(Version10).u16(WirePublic).
		vec([]byte("room-1")).u64(5).u8(SenderMember).u32(3).vec(nil).u8(ContentCommit).
		vec(proposals).u8(0). // no path
		vec(bytes.Repeat([]byte{0xaa}, 64)).vec(bytes.Repeat([]byte{0xbb}, 32)).vec(bytes.Repeat([]byte{0xcc}, 32)).b
}

func TestParseHandBuiltCommit(t *testing.T) {
	m, err := ParseMessage(handCommit())
	if err != nil {
		t.Fatal(err)
	}
	p := m.Public
	if m.WireFormat != WirePublic || p == nil || string(p.GroupID) != "room-1" || p.Epoch != 5 ||
		p.Sender != (Sender{Type: SenderMember, Index: 3}) || p.ContentType != ContentCommit {
		t.Fatalf("header: %+v", p)
	}
	c := p.Commit
	if c == nil || len(c.Proposals) != 2 || c.HasPath {
		t.Fatalf("commit: %+v", c)
	}
	if c.Proposals[0].Proposal == nil || c.Proposals[0].Proposal.Type != ProposalRemove || c.Proposals[0].Proposal.Removed != 7 {
		t.Errorf("first entry: %+v", c.Proposals[0])
	}
	if string(c.Proposals[1].Ref) != "ref-32-bytes-ref-32-bytes-ref-32" {
		t.Errorf("second entry: %+v", c.Proposals[1])
	}
	if len(p.Signature) != 64 || len(p.ConfirmationTag) != 32 || len(p.MembershipTag) != 32 {
		t.Errorf("auth: sig %d tag %d membership %d", len(p.Signature), len(p.ConfirmationTag), len(p.MembershipTag))
	}
}

// TestParseRejects: each malformed input fails with the exact kind and field.
func TestParseRejects(t *testing.T) {
	good := handCommit()
	withByte := func(i int, v byte) []byte { b := bytes.Clone(good); b[i] = v; return b }
	cases := []struct {
		name  string
		in    []byte
		kind  error
		field string
	}{
		{"empty", nil, ErrTruncated, "version"},
		{"version 2", withByte(1, 2), ErrUnsupported, "version"},
		{"wire format 9", withByte(3, 9), ErrUnsupported, "wire_format"},
		{"trailing byte", append(bytes.Clone(good), 0), ErrTrailing, "MLSMessage"},
		{"cut in the signature", good[:len(good)-70], ErrTruncated, "signature"},
		{"group_id length 1 in two bytes", (&enc{}).u16(1).u16(1).raw([]byte{0x40, 0x01, 'x'}).b, ErrNonMinimal, "group_id"},
		{"group_id length 63 in four bytes", (&enc{}).u16(1).u16(1).raw([]byte{0x80, 0, 0, 63}).b, ErrNonMinimal, "group_id"},
		{"reserved varint prefix", (&enc{}).u16(1).u16(1).u8(0xc0).b, ErrVarint, "group_id"},
		{"group_id longer than the input", (&enc{}).u16(1).u16(1).u32(0x80ffffff).b, ErrTruncated, "group_id"},
		{"sender type 9", withByte(2+2+7+8, 9), ErrUnsupported, "sender_type"},
		{"content type 0", withByte(2+2+7+8+5+1, 0), ErrUnsupported, "content_type"},
		{"path flag 2", withByte(2+2+7+8+5+1+1+1+7+1+33, 2), ErrInvalid, "path"},
		{"proposal type 99", withByte(2+2+7+8+5+1+1+1+1+1, 99), ErrUnsupported, "proposal_type"},
	}
	for _, c := range cases {
		_, err := ParseMessage(c.in)
		var pe *Error
		if !errors.Is(err, c.kind) || !errors.As(err, &pe) || pe.Field != c.field {
			t.Errorf("%s: got %v, want %v in %s", c.name, err, c.kind, c.field)
		}
	}
}

// TestParseTooManyProposals: a commit of more than maxListEntries tiny references is
// refused rather than kept.
func TestParseTooManyProposals(t *testing.T) {
	list := bytes.Repeat([]byte{2, 0}, maxListEntries+1) // empty proposal refs
	in := (&enc{}).u16(Version10).u16(WirePublic).vec([]byte("g")).u64(0).u8(SenderMember).u32(0).vec(nil).
		u8(ContentCommit).vec(list).u8(0).vec(nil).vec(nil).vec(nil).b
	_, err := ParseMessage(in)
	var pe *Error
	if !errors.Is(err, ErrInvalid) || !errors.As(err, &pe) || pe.Field != "proposals" {
		t.Fatalf("got %v, want too many proposals", err)
	}
	list = list[:2*maxListEntries]
	in = (&enc{}).u16(Version10).u16(WirePublic).vec([]byte("g")).u64(0).u8(SenderMember).u32(0).vec(nil).
		u8(ContentCommit).vec(list).u8(0).vec(nil).vec(nil).vec(nil).b
	if m, err := ParseMessage(in); err != nil || len(m.Public.Commit.Proposals) != maxListEntries {
		t.Fatalf("exactly maxListEntries: %v", err)
	}
}

// TestParseEveryPrefix: no prefix of a valid message parses, and none panics.
func TestParseEveryPrefix(t *testing.T) {
	for _, in := range append(tsmlsVectors(t), handCommit()) {
		for n := range len(in) {
			if _, err := ParseMessage(in[:n]); err == nil {
				t.Fatalf("a %d-byte prefix of a %d-byte message parsed", n, len(in))
			}
		}
	}
}

// tsmlsVectors reads the messages ts-mls 1.6.4 produced (third_party/ts-mls/vectors.mjs).
func tsmlsVectors(t testing.TB) [][]byte {
	names, _ := filepath.Glob("testdata/tsmls/*.hex")
	if len(names) == 0 {
		t.Fatal("no ts-mls vectors in testdata/tsmls")
	}
	var out [][]byte
	for _, n := range names {
		out = append(out, readVector(t, filepath.Base(strings.TrimSuffix(n, ".hex"))))
	}
	return out
}

func readVector(t testing.TB, name string) []byte {
	h, err := os.ReadFile(filepath.Join("testdata/tsmls", name+".hex"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := hex.DecodeString(strings.TrimSpace(string(h)))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestParseTSMLS: the messages ts-mls 1.6.4 makes for a group of alice, bob and carol
// parse with the fields the hub will check.
func TestParseTSMLS(t *testing.T) {
	parse := func(name string, wire uint16) *Message {
		t.Helper()
		m, err := ParseMessage(readVector(t, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if m.WireFormat != wire {
			t.Fatalf("%s: wire format %d, want %d", name, m.WireFormat, wire)
		}
		return m
	}
	kp := parse("keypackage", WireKeyPackage).KeyPackage
	if kp.Version != Version10 || kp.CipherSuite != 1 || kp.Leaf.Credential.Type != CredentialBasic ||
		string(kp.Leaf.Credential.Identity) != "bob" || len(kp.Leaf.SignatureKey) != 32 || len(kp.InitKey) != 32 {
		t.Errorf("key package: %+v", kp)
	}

	add := parse("commit-add", WirePublic).Public
	if string(add.GroupID) != "room-vectors" || add.Epoch != 0 || add.Sender != (Sender{SenderMember, 0}) || add.Commit == nil {
		t.Fatalf("add commit header: %+v", add)
	}
	var joined []string
	for _, e := range add.Commit.Proposals {
		if e.Proposal == nil || e.Proposal.Type != ProposalAdd {
			t.Fatalf("add commit entry: %+v", e)
		}
		joined = append(joined, string(e.Proposal.Add.Leaf.Credential.Identity))
	}
	if strings.Join(joined, ",") != "bob,carol" {
		t.Errorf("added %v, want bob,carol", joined)
	}

	w := parse("welcome", WireWelcome).Welcome
	if w.CipherSuite != 1 || len(w.Recipients) != 2 || len(w.Recipients[0]) != 32 {
		t.Errorf("welcome: suite %d, %d recipients", w.CipherSuite, len(w.Recipients))
	}

	app := parse("private-app", WirePrivate).Private
	if string(app.GroupID) != "room-vectors" || app.Epoch != 1 || app.ContentType != ContentApplication {
		t.Errorf("private message header: %+v", app)
	}

	rm := parse("commit-remove", WirePublic).Public
	if rm.Epoch != 1 || rm.Commit == nil || len(rm.Commit.Proposals) != 1 || rm.Commit.Proposals[0].Proposal == nil ||
		rm.Commit.Proposals[0].Proposal.Type != ProposalRemove || rm.Commit.Proposals[0].Proposal.Removed != 2 {
		t.Fatalf("remove commit: %+v", rm.Commit)
	}
	if !rm.Commit.HasPath || string(rm.Commit.PathLeaf.Credential.Identity) != "alice" {
		t.Errorf("remove commit without the committer's path (RFC 9420 §12.4): %+v", rm.Commit)
	}

	gi := parse("groupinfo", WireGroupInfo).GroupInfo
	if string(gi.GroupID) != "room-vectors" || gi.Epoch != 2 || gi.CipherSuite != 1 || gi.Signer != 0 {
		t.Errorf("group info: %+v", gi)
	}

	pr := parse("proposal-remove", WirePublic).Public
	if pr.ContentType != ContentProposal || pr.Proposal == nil || pr.Proposal.Type != ProposalRemove || pr.Proposal.Removed != 1 {
		t.Errorf("remove proposal: %+v", pr)
	}
}

// FuzzParseMessage: any input either parses or fails with an *Error, never panics,
// and whatever parses keeps its slices inside the input.
func FuzzParseMessage(f *testing.F) {
	f.Add(handCommit())
	for _, v := range tsmlsVectors(f) {
		f.Add(v)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := ParseMessage(in)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || pe.Offset < 0 || pe.Offset > len(in) {
				t.Fatalf("error %v is not a bounded *Error", err)
			}
			return
		}
		if m.Public == nil && m.Private == nil && m.Welcome == nil && m.GroupInfo == nil && m.KeyPackage == nil {
			t.Fatal("parsed with no body")
		}
	})
}

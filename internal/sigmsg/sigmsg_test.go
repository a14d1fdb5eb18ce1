package sigmsg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"testing"
)

// goldenSay is the example in PROTOCOL.md ("Signed bytes"): a page or an outside
// client checks its encoder against these exact bytes.
func goldenSay() *Message {
	m := &Message{Kind: "say", Room: "lobby", User: "dev:alice", Device: "d1", Counter: 7, TS: 1700000000000, Text: "hi"}
	for i := range m.ID {
		m.ID[i] = byte(i)
	}
	return m
}

const goldenSayHex = "6d6f6469666965642d636861742f76312f73617900" + // tag
	"000000056c6f626279" + // room "lobby"
	"000000096465763a616c696365" + // user "dev:alice"
	"000000026431" + // device "d1"
	"0000000000000007" + // counter 7
	"000102030405060708090a0b0c0d0e0f" + // message id
	"0000018bcfe56800" + // ts 1700000000000
	"000000026869" // text "hi"

// TestGoldenSay pins the layout byte for byte.
func TestGoldenSay(t *testing.T) {
	got := hex.EncodeToString(goldenSay().Encode())
	if got != goldenSayHex {
		t.Fatalf("encoding\n got %s\nwant %s", got, goldenSayHex)
	}
}

// TestGoldenSignature pins a signature by a key from a fixed seed (Ed25519 is
// deterministic), so another implementation can check its signer end to end.
func TestGoldenSignature(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
	sig := ed25519.Sign(priv, goldenSay().Encode())
	pub := priv.Public().(ed25519.PublicKey)
	if !goldenSay().Verify(pub, sig) {
		t.Fatal("own signature does not verify")
	}
	const wantPub = "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c"
	const wantSig = "842c7397b6a0d35bae60ffbc726b0a20394392fad7b28e02e6108428fca663e35a929b1774a625d8f68b02db3a3278d1996723a1681e204de09e9ca28ab89800"
	if hex.EncodeToString(pub) != wantPub || hex.EncodeToString(sig) != wantSig {
		t.Fatalf("pub %x sig %x", pub, sig)
	}
}

// TestVerifyRefusesEveryChange flips each field in turn: the signature over the
// original must fail on every altered message.
func TestVerifyRefusesEveryChange(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	pub := priv.Public().(ed25519.PublicKey)
	sig := ed25519.Sign(priv, goldenSay().Encode())
	changes := map[string]func(*Message){
		"room":    func(m *Message) { m.Room = "other" },
		"user":    func(m *Message) { m.User = "dev:bob" },
		"device":  func(m *Message) { m.Device = "d2" },
		"counter": func(m *Message) { m.Counter++ },
		"id":      func(m *Message) { m.ID[3] ^= 1 },
		"ts":      func(m *Message) { m.TS++ },
		"text":    func(m *Message) { m.Text = "hI" },
		"kind":    func(m *Message) { m.Kind = "file" },
		// Moving bytes between adjacent fields keeps the concatenation but not the
		// length prefixes.
		"boundary": func(m *Message) { m.Room, m.User = "lobbyd", "ev:alice" },
	}
	for name, change := range changes {
		m := goldenSay()
		change(m)
		if m.Verify(pub, sig) {
			t.Errorf("%s changed, signature still verifies", name)
		}
	}
	if !goldenSay().Verify(pub, sig) {
		t.Fatal("unchanged message does not verify")
	}
	other, _, _ := ed25519.GenerateKey(nil)
	if goldenSay().Verify(other, sig) {
		t.Fatal("another key verifies")
	}
	if goldenSay().Verify(pub[:31], sig) || goldenSay().Verify(pub, sig[:63]) {
		t.Fatal("short key or signature accepted")
	}
}

// TestFileRoundTrip covers the file layout and that a file never reads as a say.
func TestFileRoundTrip(t *testing.T) {
	m := &Message{Kind: "file", Room: "r", User: "u", Device: "d", Counter: 1, TS: 2, Name: "cat.png", Mime: "image/png", SHA256: sha256.Sum256([]byte("x"))}
	got, err := Decode(m.Encode())
	if err != nil || *got != *m {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	say := *m
	say.Kind = "say"
	if bytes.Equal(say.Encode(), m.Encode()) {
		t.Fatal("a say and a file share an encoding")
	}
}

// TestDecodeRefusesMalformed covers truncation, trailing bytes, a wrong tag and an
// oversized length.
func TestDecodeRefusesMalformed(t *testing.T) {
	good := goldenSay().Encode()
	for i := range good {
		if _, err := Decode(good[:i]); err == nil {
			t.Fatalf("truncated at %d accepted", i)
		}
	}
	if _, err := Decode(append(bytes.Clone(good), 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	bad := bytes.Clone(good)
	bad[0] = 'M'
	if _, err := Decode(bad); err == nil {
		t.Fatal("wrong tag accepted")
	}
	bad = bytes.Clone(good)
	copy(bad[len(TagSay):], []byte{0xff, 0xff, 0xff, 0xff})
	if _, err := Decode(bad); err == nil {
		t.Fatal("huge length accepted")
	}
}

// TestDeviceCert round-trips a certificate and checks that it binds the user.
func TestDeviceCert(t *testing.T) {
	_, urk, _ := ed25519.GenerateKey(nil)
	dik, _, _ := ed25519.GenerateKey(nil)
	d := &DeviceCert{User: "dev:alice", Device: "d1", Created: 5}
	copy(d.DIK[:], dik)
	sig := ed25519.Sign(urk, d.Encode())
	if !d.Verify(urk.Public().(ed25519.PublicKey), sig) {
		t.Fatal("certificate does not verify")
	}
	got, err := DecodeDeviceCert(d.Encode())
	if err != nil || *got != *d {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	other := *d
	other.User = "dev:bob"
	if other.Verify(urk.Public().(ed25519.PublicKey), sig) {
		t.Fatal("a certificate for alice verifies for bob")
	}
}

// FuzzDecode: whatever the bytes, Decode does not panic, and what it accepts encodes
// back to exactly the same bytes (one reading per encoding, one encoding per message).
func FuzzDecode(f *testing.F) {
	f.Add(goldenSay().Encode())
	f.Add((&Message{Kind: "file", Room: "r", Name: "a.png", Mime: "image/png"}).Encode())
	f.Add([]byte(TagSay))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if !bytes.Equal(m.Encode(), b) {
			t.Fatalf("decode/encode changed the bytes: %x", b)
		}
	})
}

// FuzzEncode: every message within the bounds decodes back to itself.
func FuzzEncode(f *testing.F) {
	f.Add(false, "lobby", "dev:alice", "d1", uint64(7), uint64(9), "hi", "", "")
	f.Add(true, "r", "u", "d", uint64(0), uint64(0), "", "cat.png", "image/png")
	f.Fuzz(func(t *testing.T, file bool, room, user, device string, counter, ts uint64, text, name, mime string) {
		m := &Message{Kind: "say", Room: room, User: user, Device: device, Counter: counter, TS: ts, Text: text}
		if file {
			m.Kind, m.Text, m.Name, m.Mime = "file", "", name, mime
		}
		got, err := Decode(m.Encode())
		if err != nil {
			if len(room) > MaxID || len(user) > MaxID || len(device) > MaxID || len(mime) > MaxID {
				return
			}
			t.Fatalf("decode of own encoding: %v", err)
		}
		if *got != *m {
			t.Fatalf("round trip: %+v != %+v", got, m)
		}
	})
}

// BenchmarkVerifySay is the hub's cost per signed message: encode plus one Ed25519
// verification. It runs once per message on the sender's readPump, not once per
// recipient, so a room's fan-out does not multiply it.
func BenchmarkVerifySay(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(nil)
	pub := priv.Public().(ed25519.PublicKey)
	m := goldenSay()
	m.Text = string(bytes.Repeat([]byte("x"), 64))
	sig := ed25519.Sign(priv, m.Encode())
	b.ReportAllocs()
	for b.Loop() {
		if !m.Verify(pub, sig) {
			b.Fatal("does not verify")
		}
	}
}

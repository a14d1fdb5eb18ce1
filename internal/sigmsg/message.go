package sigmsg

import "crypto/ed25519"

// Version tags. A new layout gets a new tag; a verifier never guesses between them.
const (
	// TagSay starts the signed bytes of a chat message.
	TagSay = "modified-chat/v1/say\x00"
	// TagFile starts the signed bytes of a file announcement.
	TagFile = "modified-chat/v1/file\x00"
)

// Message is what a device signs for one chat message or file: where it goes (Room),
// who sends it (User, Device), its place in the device's sequence (Counter, which only
// grows), a random ID that recipients use to spot a replay, the sender's clock (TS,
// Unix milliseconds) and the content. For a text, Kind is "say" and Text is the exact
// text as delivered (already cleaned: the server refuses to change signed text). For a
// file, Kind is "file" and Name, Mime and SHA256 (of the file's bytes) stand in for it.
type Message struct {
	Kind    string
	Room    string
	User    string
	Device  string
	Counter uint64
	ID      [MsgIDLen]byte
	TS      uint64
	Text    string
	Name    string
	Mime    string
	SHA256  [HashLen]byte
}

// Encode returns the signed bytes of m:
//
//	say:  TagSay  ‖ f(room) ‖ f(user) ‖ f(device) ‖ u64(counter) ‖ id[16] ‖ u64(ts) ‖ f(text)
//	file: TagFile ‖ f(room) ‖ f(user) ‖ f(device) ‖ u64(counter) ‖ id[16] ‖ u64(ts) ‖ f(name) ‖ f(mime) ‖ sha256[32]
//
// where f(x) is len(x) as 4 bytes big-endian followed by x's bytes and u64 is 8 bytes
// big-endian. A Kind other than "file" encodes as a say.
func (m *Message) Encode() []byte {
	n := len(TagFile) + 3*4 + len(m.Room) + len(m.User) + len(m.Device) + 8 + MsgIDLen + 8
	if m.Kind == "file" {
		n += 8 + len(m.Name) + len(m.Mime) + HashLen
	} else {
		n += 4 + len(m.Text)
	}
	b := make([]byte, 0, n)
	if m.Kind == "file" {
		b = append(b, TagFile...)
	} else {
		b = append(b, TagSay...)
	}
	b = appendField(b, m.Room)
	b = appendField(b, m.User)
	b = appendField(b, m.Device)
	b = appendU64(b, m.Counter)
	b = append(b, m.ID[:]...)
	b = appendU64(b, m.TS)
	if m.Kind == "file" {
		b = appendField(b, m.Name)
		b = appendField(b, m.Mime)
		return append(b, m.SHA256[:]...)
	}
	return appendField(b, m.Text)
}

// Decode parses signed bytes made by Encode. It accepts exactly one encoding (no
// trailing bytes, fields within their bounds) and never panics, whatever b holds.
func Decode(b []byte) (*Message, error) {
	r := &reader{b: b}
	m := &Message{Kind: "say"}
	tag := TagSay
	if len(b) >= len(TagFile) && string(b[:len(TagFile)]) == TagFile {
		m.Kind, tag = "file", TagFile
	}
	r.tag(tag)
	m.Room = r.field(MaxID)
	m.User = r.field(MaxID)
	m.Device = r.field(MaxID)
	m.Counter = r.u64()
	r.fixed(m.ID[:])
	m.TS = r.u64()
	if m.Kind == "file" {
		m.Name = r.field(MaxField)
		m.Mime = r.field(MaxID)
		r.fixed(m.SHA256[:])
	} else {
		m.Text = r.field(MaxField)
	}
	if err := r.done(); err != nil {
		return nil, err
	}
	return m, nil
}

// Verify reports whether sig is pub's Ed25519 signature over m's signed bytes. A
// public key of the wrong length never verifies.
func (m *Message) Verify(pub []byte, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pub), m.Encode(), sig)
}

// appendU64 appends v as 8 bytes big-endian.
func appendU64(b []byte, v uint64) []byte {
	return append(b, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32), byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
}

package sigmsg

import "crypto/ed25519"

// TagDevice starts the signed bytes of a device certificate.
const TagDevice = "modified-chat/v1/device\x00"

// DeviceCert is what a user root key (URK) signs to certify one of the user's devices
// (cross-signing): the device's id and its identity key (DIK) belong to this user,
// since Created (Unix milliseconds, the certifying device's clock). Recipients who
// pinned the user's URK accept exactly the devices it certified.
type DeviceCert struct {
	User    string
	Device  string
	DIK     [KeyLen]byte
	Created uint64
}

// Encode returns the certificate's signed bytes:
//
//	TagDevice ‖ f(user) ‖ f(device) ‖ dik[32] ‖ u64(created)
func (d *DeviceCert) Encode() []byte {
	b := make([]byte, 0, len(TagDevice)+8+len(d.User)+len(d.Device)+KeyLen+8)
	b = append(b, TagDevice...)
	b = appendField(b, d.User)
	b = appendField(b, d.Device)
	b = append(b, d.DIK[:]...)
	return appendU64(b, d.Created)
}

// DecodeDeviceCert parses bytes made by DeviceCert.Encode, exactly.
func DecodeDeviceCert(b []byte) (*DeviceCert, error) {
	r := &reader{b: b}
	d := &DeviceCert{}
	r.tag(TagDevice)
	d.User = r.field(MaxID)
	d.Device = r.field(MaxID)
	r.fixed(d.DIK[:])
	d.Created = r.u64()
	if err := r.done(); err != nil {
		return nil, err
	}
	return d, nil
}

// Verify reports whether sig is urk's Ed25519 signature over the certificate.
func (d *DeviceCert) Verify(urk []byte, sig []byte) bool {
	if len(urk) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(urk), d.Encode(), sig)
}

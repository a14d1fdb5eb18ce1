package mls

import (
	"crypto/ed25519"
	"crypto/sha256"
)

// Labels of RFC 9420 (§5.1.2, §5.2, §6.1, §10) the hub signs, verifies or hashes with.
// Each is prefixed with "MLS 1.0 " when used.
const (
	labelPrefix        = "MLS 1.0 "
	LabelKeyPackageTBS = "KeyPackageTBS"
	LabelFramedContent = "FramedContentTBS"
	refKeyPackage      = "MLS 1.0 KeyPackage Reference"
	refProposal        = "MLS 1.0 Proposal Reference"
)

// Suite1 is MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519, the only ciphersuite the
// hub accepts: RFC 9420's mandatory one, all native WebCrypto in the page.
const Suite1 = 1

// signContent is the SignContent struct (§5.1.2) that SignWithLabel signs: the
// prefixed label and the content, each as an opaque vector. Binding the label keeps a
// signature over one structure from passing as one over another.
func signContent(label string, content []byte) []byte {
	b := make([]byte, 0, len(labelPrefix)+len(label)+len(content)+8)
	b = appendOpaque(b, []byte(labelPrefix+label))
	return appendOpaque(b, content)
}

// SignWithLabel signs content under label with an Ed25519 key (ciphersuite 1).
func SignWithLabel(priv ed25519.PrivateKey, label string, content []byte) []byte {
	return ed25519.Sign(priv, signContent(label, content))
}

// VerifyWithLabel reports whether sig is pub's SignWithLabel signature of content.
// A key of the wrong length is simply not a valid signer.
func VerifyWithLabel(pub []byte, label string, content, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false
	}
	return ed25519.Verify(ed25519.PublicKey(pub), signContent(label, content), sig)
}

// refHash is RefHash (§5.2) with SHA-256, ciphersuite 1's hash: a digest over the
// label and the value, so references of different kinds never collide.
func refHash(label string, value []byte) []byte {
	b := make([]byte, 0, len(label)+len(value)+8)
	b = appendOpaque(b, []byte(label))
	b = appendOpaque(b, value)
	sum := sha256.Sum256(b)
	return sum[:]
}

// KeyPackageRef is the reference (§5.2) a Welcome names its recipients by.
func KeyPackageRef(kp *KeyPackage) []byte { return refHash(refKeyPackage, kp.Raw) }

// VerifyKeyPackage checks a KeyPackage's own signature (§10.1): its TBS signed with
// the leaf's signature key under "KeyPackageTBS". The leaf's signature is not checked
// here: members do that, and a forged one only keeps its own device out.
func VerifyKeyPackage(kp *KeyPackage) bool {
	return kp.TBS != nil && VerifyWithLabel(kp.Leaf.SignatureKey, LabelKeyPackageTBS, kp.TBS, kp.Signature)
}

package mls

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"modified-chat/internal/mlsoracle"
)

// seedKey makes a deterministic Ed25519 key, so failures reproduce.
func seedKey(b byte) ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{b}, ed25519.SeedSize))
}

// identityFor builds a credential identity whose chain (URK → DIK → leaf key) is
// genuine: what a page sends. The certificate bytes follow sigmsg's device encoding.
func identityFor(user, device string, urk, dik ed25519.PrivateKey, leafPub []byte) []byte {
	certBytes := append([]byte("modified-chat/v1/device\x00"), appendField(appendField(nil, user), device)...)
	certBytes = append(certBytes, dik.Public().(ed25519.PublicKey)...)
	certBytes = append(certBytes, 0, 0, 0, 0, 0, 0, 0, 7)
	id := &Identity{User: user, Device: device, URK: urk.Public().(ed25519.PublicKey), DIK: dik.Public().(ed25519.PublicKey),
		Created: 7, Cert: ed25519.Sign(urk, certBytes), LeafSig: ed25519.Sign(dik, LeafBinding(user, device, leafPub))}
	return id.Encode()
}

// member is one oracle client with its KeyPackage as the hub parsed it.
type member struct {
	id       string
	identity []byte
	kp       *KeyPackage
	kpMsg    []byte
}

// newMember makes an oracle client, its signature key and one KeyPackage.
func newMember(t *testing.T, o *mlsoracle.Oracle, name string, seed byte) *member {
	t.Helper()
	pub := o.Do(map[string]any{"op": "keygen", "id": name}).Bytes("pub")
	identity := identityFor("dev:"+name, name+"-device", seedKey(seed), seedKey(seed+1), pub)
	msg := o.Do(map[string]any{"op": "kp", "id": name, "identity": mlsoracle.B64(identity)}).Bytes("kp")
	m, err := ParseMessage(msg)
	if err != nil || m.KeyPackage == nil {
		t.Fatalf("%s's KeyPackage: %v", name, err)
	}
	return &member{id: name, identity: identity, kp: m.KeyPackage, kpMsg: msg}
}

// TestOracleGroupLifecycle drives ts-mls through what the hub does as Delivery
// Service: it checks KeyPackages made by the library, frames Add and Remove proposals
// as external sender that the library accepts, inspects the library's commits with
// the DS rules, and routes a Welcome, so every Go-built or Go-checked byte is proven
// against the real implementation.
func TestOracleGroupLifecycle(t *testing.T) {
	o := mlsoracle.Start(t)
	hub := seedKey(9)
	gid := []byte("0123456789abcdef")
	alice, bob := newMember(t, o, "alice", 1), newMember(t, o, "bob", 3)

	// KeyPackages: the library's signature and our credential chain verify; any
	// changed byte of the signed part fails.
	if !VerifyKeyPackage(alice.kp) || !VerifyKeyPackage(bob.kp) {
		t.Fatal("ts-mls KeyPackages do not verify")
	}
	id, err := ParseIdentity(alice.kp.Leaf.Credential.Identity)
	if err != nil || id.User != "dev:alice" || id.Device != "alice-device" || !id.VerifyLeaf(alice.kp.Leaf.SignatureKey) {
		t.Fatalf("alice's identity: %+v, %v", id, err)
	}
	if id.VerifyLeaf(bob.kp.Leaf.SignatureKey) {
		t.Fatal("alice's device vouches for bob's leaf key")
	}
	for _, off := range []int{0, len(alice.kp.TBS) / 2, len(alice.kp.TBS) - 1} {
		bad := bytes.Clone(alice.kpMsg)
		bad[4+off] ^= 1
		if m, err := ParseMessage(bad); err == nil && VerifyKeyPackage(m.KeyPackage) {
			t.Errorf("a KeyPackage with byte %d flipped verifies", off)
		}
	}

	created := o.Do(map[string]any{"op": "create", "id": "alice", "group_id": mlsoracle.B64(gid),
		"ext_pub": mlsoracle.B64(hub.Public().(ed25519.PublicKey)), "ext_identity": mlsoracle.B64([]byte(ExternalSenderIdentity))})
	if _, err := CheckGroupInfo(created.Bytes("group_info"), gid, 0); err != nil {
		t.Fatalf("the creator's GroupInfo: %v", err)
	}

	// A forged external Add (signed by another key) is refused by the member; the
	// hub's own is accepted and its reference is the one ProposalRef computes.
	forged := SignExternalProposal(seedKey(20), gid, 0, AddProposal(bob.kp))
	if r := o.Try(map[string]any{"op": "process", "id": "alice", "msg": mlsoracle.B64(forged.Message)}); r.Err() == "" {
		t.Fatal("alice accepted an external proposal not signed by the hub")
	}
	add := SignExternalProposal(hub, gid, 0, AddProposal(bob.kp))
	if ref, ok := ProposalRef(add.Message); !ok || !bytes.Equal(ref, add.Ref) {
		t.Fatalf("ProposalRef of our own proposal: %x, want %x", ref, add.Ref)
	}
	o.Do(map[string]any{"op": "process", "id": "alice", "msg": mlsoracle.B64(add.Message)})
	c := o.Do(map[string]any{"op": "commit", "id": "alice"})
	rules := &CommitRules{GroupID: gid, Epoch: 0, Leaf: 0, SignatureKey: alice.kp.Leaf.SignatureKey,
		Identity: alice.identity, Outstanding: [][]byte{add.Ref}}
	if _, err := CheckCommit(c.Bytes("commit"), rules); err != nil {
		t.Fatalf("alice's Add commit: %v", err)
	}
	if _, err := CheckWelcome(c.Bytes("welcome"), [][]byte{KeyPackageRef(bob.kp)}); err != nil {
		t.Fatalf("the Welcome for bob: %v", err)
	}
	if _, err := CheckWelcome(c.Bytes("welcome"), [][]byte{KeyPackageRef(alice.kp)}); !IsRuleError(err) {
		t.Fatalf("a Welcome checked against a KeyPackage it does not carry: %v", err)
	}
	if _, err := CheckGroupInfo(c.Bytes("group_info"), gid, 1); err != nil {
		t.Fatalf("the new GroupInfo: %v", err)
	}
	o.Do(map[string]any{"op": "apply", "id": "alice"})
	o.Do(map[string]any{"op": "join", "id": "bob", "welcome": c.Str("welcome")})

	msg := o.Do(map[string]any{"op": "encrypt", "id": "alice", "text": "canary-1"})
	if got := o.Do(map[string]any{"op": "process", "id": "bob", "msg": msg.Str("msg")}); got.Str("text") != "canary-1" {
		t.Fatalf("bob read %q", got.Str("text"))
	}
	if m, err := ParseMessage(msg.Bytes("msg")); err != nil || m.Private == nil || m.Private.Epoch != 1 || !bytes.Equal(m.Private.GroupID, gid) {
		t.Fatalf("the application message's header: %+v %v", m, err)
	}

	// The hub's Remove of bob (leaf 1): committed with a path; a commit checked
	// against one more outstanding proposal is refused for omitting it.
	rm := SignExternalProposal(hub, gid, 1, RemoveProposal(1))
	o.Do(map[string]any{"op": "process", "id": "alice", "msg": mlsoracle.B64(rm.Message)})
	o.Do(map[string]any{"op": "process", "id": "bob", "msg": mlsoracle.B64(rm.Message)})
	c = o.Do(map[string]any{"op": "commit", "id": "alice"})
	rules = &CommitRules{GroupID: gid, Epoch: 1, Leaf: 0, SignatureKey: alice.kp.Leaf.SignatureKey,
		Identity: alice.identity, Outstanding: [][]byte{rm.Ref}, PathRequired: true}
	p, err := CheckCommit(c.Bytes("commit"), rules)
	if err != nil || !p.Commit.HasPath {
		t.Fatalf("alice's Remove commit: %v", err)
	}
	if c.Str("welcome") != "" {
		t.Error("a Remove commit came with a Welcome")
	}
	omit := *rules
	omit.Outstanding = [][]byte{rm.Ref, add.Ref}
	if _, err := CheckCommit(c.Bytes("commit"), &omit); !IsRuleError(err) || !strings.Contains(err.Error(), "omits") {
		t.Fatalf("a commit omitting an outstanding proposal: %v", err)
	}
	other := *rules
	other.Leaf = 1
	if _, err := CheckCommit(c.Bytes("commit"), &other); !IsRuleError(err) {
		t.Fatalf("a commit from another leaf than the device's: %v", err)
	}
	o.Do(map[string]any{"op": "apply", "id": "alice"})
	if got := o.Do(map[string]any{"op": "process", "id": "bob", "msg": c.Str("commit")}); got.Str("kind") != "removedFromGroup" {
		t.Fatalf("bob after his Remove: %v", got)
	}
	after := o.Do(map[string]any{"op": "encrypt", "id": "alice", "text": "canary-2"})
	if got := o.Try(map[string]any{"op": "process", "id": "bob", "msg": after.Str("msg")}); got.Err() == "" {
		t.Fatalf("removed bob read the next epoch: %v", got)
	}

	// A PrivateMessage commit is refused as one.
	o.Do(map[string]any{"op": "process", "id": "alice", "msg": mlsoracle.B64(SignExternalProposal(hub, gid, 2, AddProposal(bob.kp)).Message)})
	priv := o.Do(map[string]any{"op": "commit", "id": "alice", "private": true})
	rules.Epoch = 2
	if _, err := CheckCommit(priv.Bytes("commit"), rules); !IsRuleError(err) || !strings.Contains(err.Error(), "PublicMessage") {
		t.Fatalf("a PrivateMessage commit: %v", err)
	}
}

// TestIdentityRejects: identity bytes that are not exactly one encoding are refused.
func TestIdentityRejects(t *testing.T) {
	good := identityFor("dev:a", "device-1", seedKey(1), seedKey(2), seedKey(3).Public().(ed25519.PublicKey))
	if _, err := ParseIdentity(good); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty": nil, "tag": append([]byte("mc2"), good[3:]...), "short": good[:len(good)-1],
		"long": append(bytes.Clone(good), 0), "huge length": append([]byte("mc1\xff\xff\xff\xff"), good[7:]...),
	} {
		if _, err := ParseIdentity(b); !errors.Is(err, ErrIdentity) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// FuzzParseIdentity: any input parses or fails with ErrIdentity, and what parses
// encodes back to the same bytes.
func FuzzParseIdentity(f *testing.F) {
	f.Add(identityFor("dev:a", "device-1", seedKey(1), seedKey(2), seedKey(3).Public().(ed25519.PublicKey)))
	f.Add([]byte("mc1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, err := ParseIdentity(b)
		if err != nil {
			if !errors.Is(err, ErrIdentity) {
				t.Fatal(err)
			}
			return
		}
		if !bytes.Equal(id.Encode(), b) {
			t.Fatal("round trip changed the bytes")
		}
	})
}

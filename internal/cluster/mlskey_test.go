package cluster

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestExternalSenderSeed: the first node's seed becomes the cluster's and a second
// node with another local seed gets the first one; what Redis holds is not the seed
// (encrypted, not only sealed); a stored value a rogue Redis client wrote or altered
// is refused (ErrMLSKey), never used; after a key rotation (new key first, old kept)
// the seed still opens and is wrapped again under the new key, so the old key can go.
func TestExternalSenderSeed(t *testing.T) {
	mr, c := newMini(t, time.Now())
	k, _ := NewKeys("mc")
	ctx := context.Background()
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	first, second := bytes.Repeat([]byte{0xa1}, 32), bytes.Repeat([]byte{0xb2}, 32)
	got, err := ExternalSenderSeed(ctx, c, k, [][]byte{oldKey}, first)
	if err != nil || !bytes.Equal(got, first) {
		t.Fatalf("first node: %x, %v", got, err)
	}
	if got, err = ExternalSenderSeed(ctx, c, k, [][]byte{oldKey}, second); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("second node got %x, %v; want the first node's seed", got, err)
	}
	stored, _ := mr.Get(k.MLSKey())
	if strings.Contains(stored, string(first)) || strings.Contains(stored, "a1a1a1a1") {
		t.Fatalf("Redis holds the seed in the clear: %q", stored)
	}

	// Rotation: the new key first, the old one still accepted.
	if got, err = ExternalSenderSeed(ctx, c, k, [][]byte{newKey, oldKey}, second); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("after rotation: %x, %v", got, err)
	}
	if got, err = ExternalSenderSeed(ctx, c, k, [][]byte{newKey}, second); err != nil || !bytes.Equal(got, first) {
		t.Fatalf("with the old key dropped: %x, %v (not wrapped again under the new key)", got, err)
	}

	// A rogue client flips a byte of the ciphertext, or writes its own seed wrapped
	// under a key it made up.
	rewrapped, _ := mr.Get(k.MLSKey())
	b := []byte(rewrapped)
	b[len(b)-3] ^= 1
	mr.Set(k.MLSKey(), string(b))
	if _, err := ExternalSenderSeed(ctx, c, k, [][]byte{newKey}, second); !errors.Is(err, ErrMLSKey) {
		t.Fatalf("an altered seed: %v, want ErrMLSKey", err)
	}
	forged, _ := wrapSeed(bytes.Repeat([]byte{9}, 32), k.Prefix(), second)
	mr.Set(k.MLSKey(), forged)
	if _, err := ExternalSenderSeed(ctx, c, k, [][]byte{newKey}, second); !errors.Is(err, ErrMLSKey) {
		t.Fatalf("a seed under an unknown key: %v, want ErrMLSKey", err)
	}
}

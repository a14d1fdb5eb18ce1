package cluster

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// The E2EE groups' external sender (E2EE.md §3.2) is the hub: every group lists one
// Ed25519 key whose Add and Remove proposals its members accept. On one node that key
// is a file in the data directory; in a cluster every node must sign as the same
// sender, or a proposal made by node 2 for a group node 1 created would be refused by
// every member. So the seed lives in Redis, encrypted (AES-256-GCM) under a key
// derived from the cluster key with HKDF: a Redis reader learns nothing of it, and a
// Redis writer cannot substitute one (the tag fails). The first node to start puts its
// own data directory's seed there (a single node moved with migrate-redis keeps the
// key its groups already list); every later node takes the stored one.

// mlsKeyInfo is the HKDF info naming what the derived key wraps.
const mlsKeyInfo = "modified-chat mls external sender seed v1"

// ErrMLSKey says the stored external-sender seed cannot be opened with any key of the
// ring (the key that wrapped it was dropped, or someone wrote the entry by hand).
var ErrMLSKey = errors.New("cluster: the MLS external-sender seed in Redis opens with no cluster key")

// MLSKey is the STRING holding the wrapped external-sender seed: "<kid> <base64>".
func (k Keys) MLSKey() string { return k.global() + ":mlskey" }

// wrapKey derives the AES key that wraps the seed from one cluster key.
func wrapKey(key []byte) ([]byte, error) {
	return hkdf.Key(sha256.New, key, nil, mlsKeyInfo, 32)
}

// wrapSeed encrypts seed under key; the prefix is the additional data, so an entry
// cannot be moved between two clusters sharing a key.
func wrapSeed(key []byte, prefix string, seed []byte) (string, error) {
	aead, err := seedAEAD(key)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, aead.NonceSize())
	rand.Read(nonce)
	ct := aead.Seal(nonce, nonce, seed, []byte(prefix))
	return keyID(key) + " " + base64.StdEncoding.EncodeToString(ct), nil
}

// unwrapSeed opens a stored entry with whichever ring key it names; first says it was
// the ring's sealing key (otherwise the entry is wrapped again under that one).
func unwrapSeed(ring [][]byte, prefix, stored string) (seed []byte, first bool, err error) {
	kid, b64, ok := strings.Cut(stored, " ")
	ct, derr := base64.StdEncoding.DecodeString(b64)
	if !ok || derr != nil {
		return nil, false, ErrMLSKey
	}
	for i, key := range ring {
		if keyID(key) != kid {
			continue
		}
		aead, err := seedAEAD(key)
		if err != nil {
			return nil, false, err
		}
		if len(ct) < aead.NonceSize() {
			return nil, false, ErrMLSKey
		}
		seed, err := aead.Open(nil, ct[:aead.NonceSize()], ct[aead.NonceSize():], []byte(prefix))
		if err != nil {
			return nil, false, ErrMLSKey
		}
		return seed, i == 0, nil
	}
	return nil, false, ErrMLSKey
}

// seedAEAD is AES-256-GCM under the key derived from a cluster key.
func seedAEAD(key []byte) (cipher.AEAD, error) {
	wk, err := wrapKey(key)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(wk)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// mlsKeyTimeout bounds the start-up exchange of the seed.
const mlsKeyTimeout = 5 * time.Second

// ExternalSenderSeed returns the cluster's external-sender seed: the one Redis holds,
// or, when it holds none, local (this node's own), stored for every node with SET NX
// so two nodes starting at once agree on one. A seed wrapped under a cluster key that
// is no longer the ring's first is wrapped again under the first (key rotation: once
// every node has the new key first, the old one can be dropped).
func ExternalSenderSeed(ctx context.Context, c rueidis.Client, k Keys, ring [][]byte, local []byte) ([]byte, error) {
	if len(ring) == 0 {
		return nil, errors.New("cluster: no cluster key")
	}
	ctx, cancel := context.WithTimeout(ctx, mlsKeyTimeout)
	defer cancel()
	wrapped, err := wrapSeed(ring[0], k.Prefix(), local)
	if err != nil {
		return nil, err
	}
	err = c.Do(ctx, c.B().Set().Key(k.MLSKey()).Value(wrapped).Nx().Build()).Error()
	if err == nil {
		return local, nil // this node's seed is the cluster's now
	}
	if !rueidis.IsRedisNil(err) {
		return nil, fmt.Errorf("cluster: storing the MLS external-sender seed: %w", err)
	}
	stored, err := c.Do(ctx, c.B().Get().Key(k.MLSKey()).Build()).ToString()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the MLS external-sender seed: %w", err)
	}
	seed, first, err := unwrapSeed(ring, k.Prefix(), stored)
	if err != nil {
		return nil, err
	}
	if !first {
		if again, err := wrapSeed(ring[0], k.Prefix(), seed); err == nil {
			// Best effort: another node with the new key first does it too.
			c.Do(ctx, c.B().Set().Key(k.MLSKey()).Value(again).Build())
		}
	}
	return seed, nil
}

// PutExternalSenderSeed makes seed the cluster's external-sender seed, replacing any:
// migrate-redis moves a single node's key with its groups, which list it (the nodes
// start after the move and read it).
func PutExternalSenderSeed(ctx context.Context, c rueidis.Client, k Keys, ring [][]byte, seed []byte) error {
	if len(ring) == 0 {
		return errors.New("cluster: no cluster key")
	}
	wrapped, err := wrapSeed(ring[0], k.Prefix(), seed)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, mlsKeyTimeout)
	defer cancel()
	return c.Do(ctx, c.B().Set().Key(k.MLSKey()).Value(wrapped).Build()).Error()
}

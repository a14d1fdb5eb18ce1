package cluster

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Authenticated envelopes (SCALE-OUT.md §3.6). Anyone who can PUBLISH or XADD on the
// Redis instance could otherwise inject a message under any name. Every entry a node
// writes is sealed with HMAC-SHA256 under the cluster key, over the scope it is meant
// for (a room's log, the control log), the writing node's id and per-node sequence
// number, its time and its body. Redis's own sequence number stays outside the MAC
// (Lua cannot hold the key); replays are caught by the (node, node seq) high-water per
// scope and the time window (see Replay). Integrity only: a hostile Redis can still
// withhold or delete.

// Envelope tunables.
const (
	// ClusterKeySize is the length of a cluster key (hex in the file: 64 characters).
	ClusterKeySize = 32
	// macSize is the HMAC truncated to 16 bytes: forging one is 2^-128 per try.
	macSize = 16
	// envMagic starts every envelope and the MAC input, naming the format version.
	envMagic = "mc1"
	// maxClusterKeys bounds the keys one file may hold (current + ones being retired).
	maxClusterKeys = 4
	// ReplayWindow is how far an entry's time may be from the reader's clock when the
	// reader has no high-water for its node (SCALE-OUT.md: ±2 min).
	ReplayWindow = 2 * time.Minute
)

// Errors of opening an envelope; the caller drops the entry and counts it.
var (
	ErrMalformed  = errors.New("cluster: malformed envelope")
	ErrUnknownKey = errors.New("cluster: envelope sealed with an unknown key")
	ErrBadMAC     = errors.New("cluster: envelope MAC does not verify")
	ErrReplay     = errors.New("cluster: envelope replayed or outside the time window")
)

// clusterKey is one key of the ring and its id.
type clusterKey struct {
	kid string
	key []byte
}

// Sealer seals this node's envelopes with the current cluster key and opens anyone's
// with any key of the ring (old and new are both accepted while a key is rotated).
// It is safe for concurrent use.
type Sealer struct {
	keys []clusterKey // keys[0] seals
	node string
	seq  atomic.Uint64
	now  func() time.Time
}

// LoadKeyFile reads a cluster key file: one or more lines of 64 hex characters, the
// first being the key that seals, the others accepted too (rotation: add the new key
// as the first line on every node, then drop the old one). The file must not be
// readable by group or others: it lets its holder write as any node.
func LoadKeyFile(path string) ([][]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("cluster key file %s is readable by group or others (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cluster key file: %w", err)
	}
	var keys [][]byte
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, err := hex.DecodeString(line)
		if err != nil || len(k) != ClusterKeySize {
			return nil, fmt.Errorf("cluster key file %s: every line must be %d bytes as hex", path, ClusterKeySize)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 || len(keys) > maxClusterKeys {
		return nil, fmt.Errorf("cluster key file %s must hold 1 to %d keys", path, maxClusterKeys)
	}
	return keys, nil
}

// keyID names a key without revealing it: the first 8 hex digits of a hash of it.
func keyID(k []byte) string {
	sum := sha256.Sum256(append([]byte("mc-kid|"), k...))
	return hex.EncodeToString(sum[:4])
}

// NewSealer makes the sealer of node (its id, see NewNodeID) over keys (keys[0]
// seals). now is the clock stamped into envelopes and used by Replay's window.
func NewSealer(keys [][]byte, node string, now func() time.Time) (*Sealer, error) {
	if !nodeName.MatchString(node) {
		return nil, ErrBadNode
	}
	if len(keys) == 0 {
		return nil, errors.New("cluster: no cluster key")
	}
	s := &Sealer{node: node, now: now}
	for _, k := range keys {
		if len(k) != ClusterKeySize {
			return nil, fmt.Errorf("cluster: a key must be %d bytes", ClusterKeySize)
		}
		s.keys = append(s.keys, clusterKey{kid: keyID(k), key: bytes.Clone(k)})
	}
	return s, nil
}

// Node is the id this sealer writes as.
func (s *Sealer) Node() string { return s.node }

// Envelope is an opened envelope.
type Envelope struct {
	Node    string
	NodeSeq uint64
	TS      int64 // unix milliseconds
	Body    []byte
}

// mac computes the truncated MAC of an envelope's fields for scope.
func mac(key []byte, scope, kid, node, nodeSeq, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	for _, part := range []string{envMagic, scope, kid, node, nodeSeq, ts} {
		m.Write([]byte(part))
		m.Write([]byte{'|'})
	}
	m.Write(body)
	return m.Sum(nil)[:macSize]
}

// Seal wraps body for scope: "mc1 <kid> <node> <node seq> <ts ms> <mac> <body>".
// Every call takes the next node sequence number.
func (s *Sealer) Seal(scope string, body []byte) []byte {
	k := s.keys[0]
	seq := strconv.FormatUint(s.seq.Add(1), 10)
	ts := strconv.FormatInt(s.now().UnixMilli(), 10)
	sum := base64.RawURLEncoding.EncodeToString(mac(k.key, scope, k.kid, s.node, seq, ts, body))
	out := make([]byte, 0, len(envMagic)+len(k.kid)+len(s.node)+len(seq)+len(ts)+len(sum)+len(body)+6)
	for _, part := range []string{envMagic, k.kid, s.node, seq, ts, sum} {
		out = append(out, part...)
		out = append(out, ' ')
	}
	return append(out, body...)
}

// Open checks an envelope meant for scope and returns its fields. It checks the MAC
// only; replays are Replay's business.
func (s *Sealer) Open(scope string, env []byte) (Envelope, error) {
	parts := bytes.SplitN(env, []byte{' '}, 7)
	if len(parts) != 7 || string(parts[0]) != envMagic {
		return Envelope{}, ErrMalformed
	}
	kid, node, seqS, tsS, sumS := string(parts[1]), string(parts[2]), string(parts[3]), string(parts[4]), parts[5]
	if !nodeName.MatchString(node) {
		return Envelope{}, ErrMalformed
	}
	seq, err1 := strconv.ParseUint(seqS, 10, 64)
	ts, err2 := strconv.ParseInt(tsS, 10, 64)
	sum, err3 := base64.RawURLEncoding.DecodeString(string(sumS))
	if err1 != nil || err2 != nil || err3 != nil || len(sum) != macSize {
		return Envelope{}, ErrMalformed
	}
	for _, k := range s.keys {
		if k.kid != kid {
			continue
		}
		if !hmac.Equal(sum, mac(k.key, scope, kid, node, seqS, tsS, parts[6])) {
			return Envelope{}, ErrBadMAC
		}
		return Envelope{Node: node, NodeSeq: seq, TS: ts, Body: parts[6]}, nil
	}
	return Envelope{}, ErrUnknownKey
}

// Replay drops envelopes seen before. Per scope it keeps each writing node's highest
// node sequence number: a node's entries in one scope reach Redis in the order it sent
// them, so anything at or below the high-water is a copy. A node it has no high-water
// for (it has just started, or the node is new) is believed only within ReplayWindow
// of the clock, so an old envelope copied in after a restart is refused too.
//
// Not safe for concurrent use: one goroutine (the feed's) owns it.
type Replay struct {
	hw  map[string]map[string]uint64
	now func() time.Time
}

// maxNodesPerScope bounds one scope's high-water table (DoS hardening: a writer with
// Redis access could invent node ids). Beyond it the table is forgotten and the time
// window alone protects, which is what a restarted reader has anyway.
const maxNodesPerScope = 1024

// NewReplay makes an empty replay filter.
func NewReplay(now func() time.Time) *Replay {
	return &Replay{hw: map[string]map[string]uint64{}, now: now}
}

// Check reports whether e is new in scope and, if so, records it.
func (r *Replay) Check(scope string, e Envelope) error {
	nodes := r.hw[scope]
	if last, ok := nodes[e.Node]; ok {
		if e.NodeSeq <= last {
			return ErrReplay
		}
	} else {
		d := r.now().Sub(time.UnixMilli(e.TS))
		if d > ReplayWindow || d < -ReplayWindow {
			return ErrReplay
		}
	}
	if nodes == nil || len(nodes) >= maxNodesPerScope {
		nodes = map[string]uint64{}
		r.hw[scope] = nodes
	}
	nodes[e.Node] = e.NodeSeq
	return nil
}

// Forget drops a scope's table (a room nobody on this node is in any more).
func (r *Replay) Forget(scope string) { delete(r.hw, scope) }

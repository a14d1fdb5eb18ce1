package cluster

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testKey is a fixed cluster key for tests.
func testKey(b byte) []byte { return bytes.Repeat([]byte{b}, ClusterKeySize) }

// TestSealOpenRefusesForgeries: an envelope opens only for the scope, key and bytes it
// was sealed with; any change is ErrBadMAC, another key ErrUnknownKey, garbage
// ErrMalformed.
func TestSealOpenRefusesForgeries(t *testing.T) {
	now := func() time.Time { return time.UnixMilli(1_700_000_000_000) }
	s, err := NewSealer([][]byte{testKey(1)}, "a1", now)
	if err != nil {
		t.Fatal(err)
	}
	env := s.Seal("r:lobby", []byte(`m 1 {"text":"hi there"}`))
	e, err := s.Open("r:lobby", env)
	if err != nil || string(e.Body) != `m 1 {"text":"hi there"}` || e.Node != "a1" || e.NodeSeq != 1 || e.TS != 1_700_000_000_000 {
		t.Fatalf("Open = %+v, %v", e, err)
	}
	if _, err := s.Open("r:other", env); !errors.Is(err, ErrBadMAC) {
		t.Errorf("another room's scope: %v, want ErrBadMAC", err)
	}
	forged := bytes.Replace(env, []byte("hi there"), []byte("hi THERE"), 1)
	if _, err := s.Open("r:lobby", forged); !errors.Is(err, ErrBadMAC) {
		t.Errorf("changed body: %v, want ErrBadMAC", err)
	}
	renamed := bytes.Replace(env, []byte(" a1 "), []byte(" b2 "), 1)
	if _, err := s.Open("r:lobby", renamed); !errors.Is(err, ErrBadMAC) {
		t.Errorf("changed node: %v, want ErrBadMAC", err)
	}
	other, _ := NewSealer([][]byte{testKey(2)}, "b2", now)
	if _, err := s.Open("r:lobby", other.Seal("r:lobby", []byte("x"))); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("another key: %v, want ErrUnknownKey", err)
	}
	for _, junk := range []string{"", "mc1", "mc2 a b 1 2 x body", "mc1 k a1 x 2 y b"} {
		if _, err := s.Open("r:lobby", []byte(junk)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%q: %v, want ErrMalformed", junk, err)
		}
	}
	// Rotation: a ring holding the new key first and the old one still opens both.
	ring, _ := NewSealer([][]byte{testKey(2), testKey(1)}, "c3", now)
	if _, err := ring.Open("r:lobby", env); err != nil {
		t.Errorf("old key during rotation: %v", err)
	}
}

// TestReplayDropsCopies: a copy of an envelope already seen, or an older one from the
// same node, is ErrReplay; from a node without a high-water only the time window
// admits it.
func TestReplayDropsCopies(t *testing.T) {
	clock := time.UnixMilli(1_700_000_000_000)
	now := func() time.Time { return clock }
	s, _ := NewSealer([][]byte{testKey(1)}, "a1", now)
	r := NewReplay(now)
	first, _ := s.Open("r:x", s.Seal("r:x", []byte("one")))
	second, _ := s.Open("r:x", s.Seal("r:x", []byte("two")))
	if err := r.Check("r:x", first); err != nil {
		t.Fatal(err)
	}
	if err := r.Check("r:x", second); err != nil {
		t.Fatal(err)
	}
	for _, e := range []Envelope{first, second} {
		if err := r.Check("r:x", e); !errors.Is(err, ErrReplay) {
			t.Errorf("copy of node seq %d: %v, want ErrReplay", e.NodeSeq, err)
		}
	}
	// Another scope keeps its own table; a restarted reader only has the window.
	clock = clock.Add(ReplayWindow + time.Second)
	if err := NewReplay(now).Check("r:x", first); !errors.Is(err, ErrReplay) {
		t.Errorf("an envelope older than the window: %v, want ErrReplay", err)
	}
	if err := r.Check("r:y", first); !errors.Is(err, ErrReplay) {
		t.Errorf("an old envelope in a scope with no high-water: %v, want ErrReplay", err)
	}
}

// TestLoadKeyFile: the file holds hex keys, one a line, and must be private.
func TestLoadKeyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "k")
	os.WriteFile(good, []byte(strings.Repeat("ab", 32)+"\n"+strings.Repeat("cd", 32)+"\n"), 0o600)
	keys, err := LoadKeyFile(good)
	if err != nil || len(keys) != 2 || keys[0][0] != 0xab {
		t.Fatalf("LoadKeyFile = %v, %v", keys, err)
	}
	open := filepath.Join(dir, "open")
	os.WriteFile(open, []byte(strings.Repeat("ab", 32)), 0o644)
	if _, err := LoadKeyFile(open); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("a world-readable key file: %v", err)
	}
	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("abcd"), 0o600)
	if _, err := LoadKeyFile(short); err == nil {
		t.Error("a short key was accepted")
	}
}

package store

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// fileHas reports how often needle occurs in the raw bytes of the store file.
func fileHas(t *testing.T, path string, needle []byte) int {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(raw, needle)
}

// TestScrubErasesDeleted: a deleted value leaves no copy in the file, neither in its
// own freed leaf nor in the older copies earlier commits left behind.
func TestScrubErasesDeleted(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	secret := []byte("the-secret-text-0815")
	if err := s.Apply([]Write{{Bucket: "h", Key: SeqKey(1), Value: secret}}); err != nil {
		t.Fatal(err)
	}
	// Each commit copies the leaf: several stale copies of the secret pile up.
	for i := uint64(2); i < 20; i++ {
		if err := s.Apply([]Write{{Bucket: "h", Key: SeqKey(i), Value: []byte(fmt.Sprint("filler ", i))}}); err != nil {
			t.Fatal(err)
		}
	}
	if n := fileHas(t, path, secret); n < 2 {
		t.Fatalf("the file holds %d copies before the delete; the test needs stale ones", n)
	}
	if err := s.Apply([]Write{{Bucket: "h", Key: SeqKey(1)}}); err != nil {
		t.Fatal(err)
	}
	if n := fileHas(t, path, secret); n != 0 {
		t.Fatalf("%d copies of the deleted value are left in the file", n)
	}
	// What is still in use is untouched.
	var got []string
	s.Scan("h", func(k, v []byte) error { got = append(got, string(v)); return nil })
	if len(got) != 18 || got[0] != "filler 2" {
		t.Fatalf("after the scrub the bucket reads %q", got)
	}
}

// TestScrubSparesOpenReaders: a reader that began before the delete still reads the
// old pages intact (the scrub must not zero a page bbolt keeps for it); once it ends,
// the next commit's scrub erases them.
func TestScrubSparesOpenReaders(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.db")
	s, err := OpenBolt(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Free pages to allocate from while the reader is open: with none, the commit
	// would grow the file, and bbolt remaps it only once every reader is done.
	var pad, unpad []Write
	for i := uint64(1); i <= 64; i++ {
		pad = append(pad, Write{Bucket: "pad", Key: SeqKey(i), Value: bytes.Repeat([]byte{'p'}, 1024)})
		unpad = append(unpad, Write{Bucket: "pad", Key: SeqKey(i)})
	}
	if err := s.Apply(pad); err != nil {
		t.Fatal(err)
	}
	if err := s.Apply(unpad); err != nil {
		t.Fatal(err)
	}
	secret := []byte("held-by-a-reader-4242")
	if err := s.Apply([]Write{{Bucket: "h", Key: SeqKey(1), Value: secret}}); err != nil {
		t.Fatal(err)
	}
	tx, err := s.db.Begin(false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Apply([]Write{{Bucket: "h", Key: SeqKey(1)}}); err != nil {
		t.Fatal(err)
	}
	if v := tx.Bucket([]byte("h")).Get(SeqKey(1)); !bytes.Equal(v, secret) {
		t.Fatalf("the open reader reads %q, want the value it began with", v)
	}
	if !s.unscrubbed {
		t.Fatal("the scrub ran while a reader held the old pages")
	}
	tx.Rollback()
	if err := s.Apply([]Write{{Bucket: "h", Key: SeqKey(2), Value: []byte("next")}}); err != nil {
		t.Fatal(err)
	}
	if n := fileHas(t, path, secret); n != 0 {
		t.Fatalf("%d copies left after the reader ended and the next commit", n)
	}
}

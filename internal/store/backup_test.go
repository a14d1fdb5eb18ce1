package store

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

// TestBoltBackupIsConsistentCopy: a backup taken between two writes holds the first and
// not the second, announces its exact size, and is itself a valid data file; a cut-off
// copy fails the check.
func TestBoltBackupIsConsistentCopy(t *testing.T) {
	dir := t.TempDir()
	s, err := OpenBolt(filepath.Join(dir, "chat.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Apply([]Write{{Bucket: "rooms", Key: []byte("lobby"), Value: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var announced int64
	n, err := s.Backup(&buf, func(size int64) { announced = size })
	if err != nil {
		t.Fatal(err)
	}
	if n != announced || int64(buf.Len()) != n {
		t.Fatalf("wrote %d, announced %d, buffer %d", n, announced, buf.Len())
	}
	if err := s.Apply([]Write{{Bucket: "rooms", Key: []byte("later"), Value: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}

	copyPath := filepath.Join(dir, "copy.db")
	if err := os.WriteFile(copyPath, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckBolt(copyPath); err != nil {
		t.Fatalf("check of a whole copy: %v", err)
	}
	c, err := OpenBolt(copyPath)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	c.Scan("rooms", func(k, v []byte) error { keys = append(keys, string(k)); return nil })
	c.Close()
	if len(keys) != 1 || keys[0] != "lobby" {
		t.Fatalf("copy holds %q, want only lobby", keys)
	}

	cut := filepath.Join(dir, "cut.db")
	if err := os.WriteFile(cut, buf.Bytes()[:buf.Len()/2], 0o600); err != nil {
		t.Fatal(err)
	}
	if err := CheckBolt(cut); err == nil {
		t.Fatal("a cut-off copy passed the check")
	}
}

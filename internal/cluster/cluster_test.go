package cluster

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
)

// quiet is a logger that drops everything.
var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// TestConnectGivesUpNamingTheAddress: a closed port is retried for the wait, then the
// error names the address (and not the URL's password).
func TestConnectGivesUpNamingTheAddress(t *testing.T) {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	start := time.Now()
	_, err := Connect(context.Background(), "redis://user:s3cret@"+addr, 500*time.Millisecond, quiet)
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), addr) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("err = %v", err)
	}
	if took < 250*time.Millisecond || took > 3*time.Second {
		t.Errorf("gave up after %v, want about the 500ms wait", took)
	}
}

// TestEpochDetectsLostData: the first node makes the epoch and keeps a copy, a second
// node takes the same; once Redis comes back without its data both see
// ErrEpochMismatch, and removing the copy (re-initialising) makes a new epoch.
func TestEpochDetectsLostData(t *testing.T) {
	rs := redistest.Start(t)
	ctx := context.Background()
	c, err := Connect(ctx, rs.URL(), 5*time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { c.Close() }()
	k, _ := NewKeys("mc")
	d1, d2 := t.TempDir(), t.TempDir()
	e1, err := CheckEpoch(ctx, c, k, d1)
	if err != nil {
		t.Fatal(err)
	}
	e2, err := CheckEpoch(ctx, c, k, d2)
	if err != nil || e2 != e1 {
		t.Fatalf("second node: %q, %v; want %q", e2, err, e1)
	}
	if again, err := CheckEpoch(ctx, c, k, d1); err != nil || again != e1 {
		t.Fatalf("restart of the first node: %q, %v", again, err)
	}
	rs.Kill()
	rs.RestartEmpty()
	c.Close()
	if c, err = Connect(ctx, rs.URL(), 5*time.Second, quiet); err != nil {
		t.Fatal(err)
	}
	if same, err := SameEpoch(ctx, c, k, e1); same || err != nil {
		t.Errorf("SameEpoch after data loss = %v, %v", same, err)
	}
	for _, d := range []string{d1, d2} {
		if _, err := CheckEpoch(ctx, c, k, d); !errors.Is(err, ErrEpochMismatch) {
			t.Fatalf("node with a copy after data loss: %v, want ErrEpochMismatch", err)
		}
	}
	os.Remove(filepath.Join(d1, epochFile))
	e3, err := CheckEpoch(ctx, c, k, d1)
	if err != nil || e3 == e1 {
		t.Fatalf("re-initialised: %q, %v", e3, err)
	}
}

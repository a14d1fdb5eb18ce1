package backplane

import (
	"testing"
	"time"

	"modified-chat/internal/store"
)

// TestLocalIDs checks that the local backplane continues after the stored id and that
// one counter serves every room, so ids stay unique across rooms as before the seam.
func TestLocalIDs(t *testing.T) {
	w := store.NewWriter(store.NewMem(), 8, 0)
	defer w.Close()
	var b Backplane = NewLocal(41, w)
	if got := b.Last(); got != 41 {
		t.Fatalf("Last = %d, want 41", got)
	}
	if a, c := b.Next("lobby"), b.Next("other"); a != 42 || c != 43 {
		t.Fatalf("ids = %d, %d, want 42, 43", a, c)
	}
	if got := b.Last(); got != 43 {
		t.Fatalf("Last = %d, want 43", got)
	}
}

// TestLocalSubmit checks that writes reach the store before done reports success.
func TestLocalSubmit(t *testing.T) {
	mem := store.NewMem()
	w := store.NewWriter(mem, 8, 0)
	defer w.Close()
	b := NewLocal(0, w)
	done := make(chan error, 1)
	if !b.Submit([]store.Write{{Bucket: "meta", Key: []byte("k"), Value: []byte("v")}}, func(err error) { done <- err }) {
		t.Fatal("Submit refused with an empty queue")
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("done: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("done never ran")
	}
	var got string
	if err := mem.Scan("meta", func(k, v []byte) error { got = string(k) + "=" + string(v); return nil }); err != nil || got != "k=v" {
		t.Fatalf("stored %q, %v; want \"k=v\"", got, err)
	}
}

package cluster

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"
)

// TestRoomsIndex: IndexRoom adds and removes names and announces each change on the
// control log; LoadRooms reads the names back, leaving out (and counting) a value
// written without the cluster key and a sealed value filed under another name; a name
// the key builder refuses is never written.
func TestRoomsIndex(t *testing.T) {
	_, c := newMini(t, time.Now())
	a := newCtlNode(t, c, "a1", true)
	ctx, quiet := context.Background(), slog.New(slog.DiscardHandler)
	for _, r := range []string{"den", "attic", "cellar"} {
		if _, err := a.ctl.IndexRoom(ctx, r, true); err != nil {
			t.Fatal(err)
		}
		if e := a.next(t, 2*time.Second); e.Op != OpRoom || e.Room != r {
			t.Fatalf("announced %+v, want room %s", e, r)
		}
	}
	if _, err := a.ctl.IndexRoom(ctx, "attic", false); err != nil {
		t.Fatal(err)
	}
	if _, err := a.ctl.IndexRoom(ctx, "a{b}*", true); err == nil {
		t.Fatal("a name outside the room rule was indexed")
	}
	keys, _ := NewKeys("mc")
	den, _ := c.Do(ctx, c.B().Hget().Key(keys.Rooms()).Field("den").Build()).ToString()
	c.Do(ctx, c.B().Hset().Key(keys.Rooms()).FieldValue().FieldValue("forged", "x").FieldValue("copy", den).Build())
	names, err := a.ctl.LoadRooms(ctx, quiet)
	slices.Sort(names)
	if err != nil || !slices.Equal(names, []string{"cellar", "den"}) {
		t.Fatalf("LoadRooms = %v %v, want cellar den", names, err)
	}
	if bad, _ := a.ctl.Dropped(); bad != 2 {
		t.Fatalf("dropped %d index values, want 2 (forged, filed under another name)", bad)
	}
}

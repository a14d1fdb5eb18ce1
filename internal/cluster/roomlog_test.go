package cluster

import (
	"context"
	"errors"
	"testing"
)

// TestRoomChangeRevision: a room change is numbered in the room's log like a message
// and becomes the room's record at that revision; a change computed from an older
// revision (another node changed the room first) is refused with ErrStale and writes
// nothing, and RoomState reads the id, revision and record together.
func TestRoomChangeRevision(t *testing.T) {
	// landed is the next Entry, with its token: from the Entry itself, or from the
	// Stored that follows when PUB/SUB brought the entry before the writer's answer.
	landed := func(r *feedRig) Event {
		t.Helper()
		ev := r.expect(Entry)
		if ev.Token == nil {
			ev.Token = r.expect(Stored).Token
		}
		return ev
	}
	r := newFeedRig(t)
	r.feed.Open("den")
	r.expect(Opened)
	if !r.feed.Change("den", []byte("room 1 first"), 0, "t1") {
		t.Fatal("queue full")
	}
	first := landed(r)
	if first.Token != "t1" || string(first.Body) != "room 1 first" {
		t.Fatalf("first change delivered as %+v", first)
	}
	r.feed.Say("den", []byte("message 2 hi"), nil, "t2")
	msg := landed(r)
	// Computed from revision 0 again: refused, and nothing is numbered.
	r.feed.Change("den", []byte("room 3 lost update"), 0, "t3")
	if ev := r.expect(Failed); ev.Token != "t3" || !errors.Is(ev.Err, ErrStale) {
		t.Fatalf("stale change answered %+v, want Failed with ErrStale", ev)
	}
	r.feed.Change("den", []byte("room 3 second"), first.Seq, "t4")
	second := landed(r)
	if second.Seq != msg.Seq+1 || second.Token != "t4" {
		t.Fatalf("second change %+v, want id %d", second, msg.Seq+1)
	}
	st, err := r.feed.RoomState(context.Background(), "den")
	if err != nil || st.Top != second.Seq || st.Rev != second.Seq || string(st.Body) != "room 3 second" {
		t.Fatalf("room state %+v %v, want top and rev %d, the second record", st, err, second.Seq)
	}
	// A record overwritten by anyone without the cluster key reads as none.
	rec, _ := r.keys.RoomInfo("den")
	r.raw.Do(context.Background(), r.raw.B().Set().Key(rec).Value("forged").Build())
	if st, err := r.feed.RoomState(context.Background(), "den"); err != nil || st.Body != nil || r.feed.Counters.BadMAC.Load() != 1 {
		t.Fatalf("forged record read as %+v %v (bad MACs %d)", st, err, r.feed.Counters.BadMAC.Load())
	}
}

package cluster

import (
	"context"
	"errors"
	"testing"
	"time"
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

// TestFeedPassesOverDeletions: a deletion removes its message from the Stream and is
// numbered itself; a node that missed both on PUB/SUB catches up across the hole
// (the deleted id is passed over, not taken for a loss: no Resync), History from
// before the hole starts with it as a bodiless item, and deleting the same message
// again, or one the Stream never had, is ErrGone.
func TestFeedPassesOverDeletions(t *testing.T) {
	r := newFeedRig(t)
	r.put("room3", 200, r.other.Seal(scope("room3"), []byte("message 1 a")), false)
	r.feed.Open("room3")
	r.expect(Opened)
	r.put("room3", 201, r.other.Seal(scope("room3"), []byte("message 1 doomed")), false)
	// Another node deletes 201 and says more; this node hears none of it.
	ctx := context.Background()
	gone, _ := r.keys.RoomDeleted("room3")
	log, _ := r.keys.RoomLog("room3")
	r.raw.Do(ctx, r.raw.B().Xdel().Key(log).Id("201-0").Build())
	r.raw.Do(ctx, r.raw.B().Hset().Key(gone).FieldValue().FieldValue("201", "202").Build())
	r.put("room3", 202, r.other.Seal(scope("room3"), []byte(`delete 1 {"room":"room3","id":201}`)), false)
	r.put("room3", 203, r.other.Seal(scope("room3"), []byte("message 1 after")), false)
	for _, want := range []string{`delete 1 {"room":"room3","id":201}`, "message 1 after"} {
		if ev := r.expect(Entry); string(ev.Body) != want {
			t.Fatalf("caught up %q (seq %d), want %q", ev.Body, ev.Seq, want)
		}
	}
	if n := r.feed.Counters.Resyncs.Load(); n != 0 {
		t.Fatalf("%d resyncs across a deletion", n)
	}
	items, _, err := r.feed.History(ctx, "room3", 200, 203, 10, false)
	if err != nil || len(items) != 3 || items[0].Seq != 201 || items[0].Body != nil || items[2].Seq != 203 {
		t.Fatalf("History after 200: %+v %v, want 201 (deleted), 202, 203", items, err)
	}
	// The script itself: deleting 203 removes it; again, or 999, is ErrGone.
	r.feed.Delete("room3", 203, []byte(`delete 1 {"room":"room3","id":203}`), "d1")
	if ev := r.expect(Entry); ev.Seq != 204 {
		t.Fatalf("deletion numbered %+v, want 204", ev)
	}
	if _, ok, _ := r.feed.Entry(ctx, "room3", 203); ok {
		t.Fatal("deleted message still in the Stream")
	}
	for _, id := range []uint64{203, 999} {
		r.feed.Delete("room3", id, []byte("delete again"), "d2")
		for {
			ev := r.expect2(Stored, Failed)
			if ev.Kind == Failed {
				if !errors.Is(ev.Err, ErrGone) {
					t.Fatalf("delete of %d: %v, want ErrGone", id, ev.Err)
				}
				break
			}
		}
	}
}

// expect2 waits for the next event of kind a or b, skipping health reports and the
// Stored answers of entries delivered already.
func (r *feedRig) expect2(a, b Kind) Event {
	r.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		var ev Event
		select {
		case ev = <-r.events:
		case <-timeout:
			r.t.Fatalf("no event of kind %d or %d", a, b)
		}
		if ev.Kind == a || ev.Kind == b {
			return ev
		}
		if ev.Kind != Health && ev.Kind != Stored {
			r.t.Fatalf("got event %+v", ev)
		}
	}
}

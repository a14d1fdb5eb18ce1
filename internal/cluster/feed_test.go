package cluster

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/rueidis"
)

// feedRig is a feed on miniredis with the events it delivered, and a second client
// playing the other nodes (or an attacker with Redis access).
type feedRig struct {
	t      *testing.T
	feed   *Feed
	raw    rueidis.Client
	keys   Keys
	other  *Sealer
	events chan Event
}

// newFeedRig starts a feed over a fresh miniredis.
func newFeedRig(t *testing.T) *feedRig {
	t.Helper()
	m := miniredis.RunT(t)
	ctx := context.Background()
	c, err := Connect(ctx, "redis://"+m.Addr(), 2*time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := Connect(ctx, "redis://"+m.Addr(), 2*time.Second, quiet)
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := NewKeys("mc")
	epoch, err := CheckEpoch(ctx, c, keys, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	mine, _ := NewSealer([][]byte{testKey(7)}, "aa", time.Now)
	other, _ := NewSealer([][]byte{testKey(7)}, "bb", time.Now)
	r := &feedRig{t: t, raw: raw, keys: keys, other: other, events: make(chan Event, 1024)}
	r.feed = StartFeed(FeedConfig{Client: c, Keys: keys, Sealer: mine, Epoch: epoch, HistoryMax: 100, ResumeMax: 50,
		Log: quiet, Now: time.Now, Deliver: func(ev Event) bool { r.events <- ev; return true }})
	t.Cleanup(func() { r.feed.Stop(); c.Close(); raw.Close() })
	r.expect(Health)
	return r
}

// expect waits for the next event of kind k, skipping health reports.
func (r *feedRig) expect(k Kind) Event {
	r.t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-r.events:
			if ev.Kind == k {
				return ev
			}
			if ev.Kind != Health {
				r.t.Fatalf("got event %+v, want kind %d", ev, k)
			}
		case <-timeout:
			r.t.Fatalf("no event of kind %d", k)
		}
	}
}

// none asserts no event but health reports comes within d.
func (r *feedRig) none(d time.Duration) {
	r.t.Helper()
	timeout := time.After(d)
	for {
		select {
		case ev := <-r.events:
			if ev.Kind != Health {
				r.t.Fatalf("unexpected event %+v", ev)
			}
		case <-timeout:
			return
		}
	}
}

// put writes an entry as another node's script would: the counter, the Stream entry
// and, when publish is set, the PUB/SUB message.
func (r *feedRig) put(room string, seq uint64, env []byte, publish bool) {
	r.t.Helper()
	ctx := context.Background()
	meta, _ := r.keys.RoomMeta(room)
	log, _ := r.keys.RoomLog(room)
	ch, _ := r.keys.RoomChannel(room)
	s := strconv.FormatUint(seq, 10)
	cmds := rueidis.Commands{
		r.raw.B().Hset().Key(meta).FieldValue().FieldValue("seq", s).Build(),
		r.raw.B().Xadd().Key(log).Id(s+"-0").FieldValue().FieldValue("e", string(env)).Build(),
	}
	if publish {
		cmds = append(cmds, r.raw.B().Publish().Channel(ch).Message(s+" "+string(env)).Build())
	}
	for _, res := range r.raw.DoMulti(ctx, cmds...) {
		if err := res.Error(); err != nil {
			r.t.Fatal(err)
		}
	}
}

// TestFeedSayScript: the script starts a new room at Redis's time × 1000 (the floor),
// numbers the next entries one by one, keeps them in the Stream, and the sender's
// entries come back in order with their tokens.
func TestFeedSayScript(t *testing.T) {
	r := newFeedRig(t)
	r.feed.Open("lobby")
	if ev := r.expect(Opened); ev.Seq != 0 {
		t.Fatalf("a new room opened at %d", ev.Seq)
	}
	before := uint64(time.Now().UnixMilli()) * 1000
	for i := range 3 {
		r.feed.Say("lobby", []byte("message "+strconv.Itoa(i)), nil, i)
	}
	// Each entry comes once, in order; each token once, with its entry or after it
	// (PUB/SUB may be faster than the script's reply).
	var first uint64
	var entries []Event
	tokens := map[any]uint64{}
	timeout := time.After(5 * time.Second)
	for len(entries) < 3 || len(tokens) < 3 {
		select {
		case ev := <-r.events:
			switch ev.Kind {
			case Entry:
				entries = append(entries, ev)
				if ev.Token != nil {
					tokens[ev.Token] = ev.Seq
				}
			case Stored:
				if _, dup := tokens[ev.Token]; dup {
					t.Fatalf("token %v answered twice", ev.Token)
				}
				tokens[ev.Token] = ev.Seq
			case Health:
			default:
				t.Fatalf("unexpected %+v", ev)
			}
		case <-timeout:
			t.Fatalf("entries %+v tokens %v", entries, tokens)
		}
	}
	first = entries[0].Seq
	for i, ev := range entries {
		if ev.Seq != first+uint64(i) || string(ev.Body) != "message "+strconv.Itoa(i) || tokens[i] != ev.Seq {
			t.Fatalf("entry %d: %+v (token seq %d)", i, ev, tokens[i])
		}
	}
	if first < before || first > before+10_000_000 || first%1000 != 0 {
		t.Errorf("first id %d is not Redis's time in ms × 1000 (about %d)", first, before)
	}
	items, floor, err := r.feed.History(context.Background(), "lobby", 0, first+2, 10, false)
	if err != nil || len(items) != 3 || floor != first || items[2].Seq != first+2 {
		t.Fatalf("History = %+v, floor %d, %v", items, floor, err)
	}
	// A room not open here: the say is acknowledged without a delivery.
	r.feed.Say("elsewhere", []byte("x"), nil, "t")
	if ev := r.expect(Stored); ev.Token != "t" || ev.Seq == 0 {
		t.Fatalf("say in a closed room: %+v", ev)
	}
}

// TestFeedFillsGapsAndDropsDuplicates: an entry PUB/SUB lost is read from the Stream
// before the one after it is delivered; a duplicate is dropped; a gap the Stream
// cannot fill is a Resync.
func TestFeedFillsGapsAndDropsDuplicates(t *testing.T) {
	r := newFeedRig(t)
	r.put("room1", 100, r.other.Seal(scope("room1"), []byte("zero")), false)
	r.feed.Open("room1")
	if ev := r.expect(Opened); ev.Seq != 100 {
		t.Fatalf("opened at %d, want 100", ev.Seq)
	}
	lost := r.other.Seal(scope("room1"), []byte("lost"))
	r.put("room1", 101, lost, false) // stored, never published
	r.put("room1", 102, r.other.Seal(scope("room1"), []byte("seen")), true)
	for _, want := range []string{"lost", "seen"} {
		if ev := r.expect(Entry); string(ev.Body) != want {
			t.Fatalf("got %q (seq %d), want %q", ev.Body, ev.Seq, want)
		}
	}
	ch, _ := r.keys.RoomChannel("room1")
	r.raw.Do(context.Background(), r.raw.B().Publish().Channel(ch).Message("101 "+string(lost)).Build())
	r.none(300 * time.Millisecond)
	if n := r.feed.Counters.Filled.Load(); n != 1 {
		t.Errorf("filled %d entries from the Stream, want 1", n)
	}
	// 103 and 104 are nowhere: 105 cannot be delivered in order.
	r.put("room1", 105, r.other.Seal(scope("room1"), []byte("far")), true)
	if ev := r.expect(Resync); ev.Room != "room1" {
		t.Fatalf("resync of %q", ev.Room)
	}
}

// TestFeedPositionCheckFindsTheLostTail: when the last entries were never published
// (a dead subscription), the position check finds them within about a second.
func TestFeedPositionCheckFindsTheLostTail(t *testing.T) {
	r := newFeedRig(t)
	r.put("room2", 10, r.other.Seal(scope("room2"), []byte("a")), false)
	r.feed.Open("room2")
	r.expect(Opened)
	start := time.Now()
	r.put("room2", 11, r.other.Seal(scope("room2"), []byte("tail")), false)
	ev := r.expect(Entry)
	if string(ev.Body) != "tail" || time.Since(start) > 2*positionEvery {
		t.Fatalf("got %+v after %v", ev, time.Since(start))
	}
}

// TestFeedDropsForgedAndReplayedEntries: an entry written by someone without the
// cluster key, or a copy of a real one at a new id, is never delivered; it is counted,
// and the entries after it still are.
func TestFeedDropsForgedAndReplayedEntries(t *testing.T) {
	r := newFeedRig(t)
	r.put("room3", 1, r.other.Seal(scope("room3"), []byte("first")), false)
	r.feed.Open("room3")
	r.expect(Opened)
	stranger, _ := NewSealer([][]byte{testKey(9)}, "cc", time.Now)
	forged := r.other.Seal(scope("room3"), []byte("real"))
	forged = append(forged[:len(forged)-4], []byte("fake")...)
	r.put("room3", 2, forged, true)
	r.put("room3", 3, stranger.Seal(scope("room3"), []byte("stranger")), true)
	real := r.other.Seal(scope("room3"), []byte("genuine"))
	r.put("room3", 4, real, true)
	r.put("room3", 5, real, true) // the same envelope again, at a new id
	r.put("room3", 6, r.other.Seal(scope("lobby"), []byte("other room")), true)
	r.put("room3", 7, r.other.Seal(scope("room3"), []byte("last")), true)
	for _, want := range []string{"genuine", "last"} {
		if ev := r.expect(Entry); string(ev.Body) != want {
			t.Fatalf("delivered %q (seq %d), want %q", ev.Body, ev.Seq, want)
		}
	}
	if bad, rep := r.feed.Counters.BadMAC.Load(), r.feed.Counters.Replayed.Load(); bad != 3 || rep != 1 {
		t.Fatalf("counted %d bad MACs and %d replays, want 3 and 1", bad, rep)
	}
	// History leaves them out as well.
	items, _, err := r.feed.History(context.Background(), "room3", 0, 7, 10, false)
	if err != nil || len(items) != 3 || string(items[1].Body) != "genuine" || string(items[2].Body) != "last" {
		t.Fatalf("history %+v, %v", items, err)
	}
}

// TestFeedNewRoomStartsAtItsFloor: a room opened before its first message (at 0)
// whose first entry to arrive is not the epoch's first id (another node's earlier
// entry is still on its way) starts at the room's floor and fetches the earlier
// entry, instead of taking the later one as the first and losing the other.
func TestFeedNewRoomStartsAtItsFloor(t *testing.T) {
	r := newFeedRig(t)
	r.feed.Open("fresh")
	if ev := r.expect(Opened); ev.Seq != 0 {
		t.Fatalf("opened at %d, want 0", ev.Seq)
	}
	const floor = 5000
	meta, _ := r.keys.RoomMeta("fresh")
	r.raw.Do(context.Background(), r.raw.B().Hset().Key(meta).FieldValue().FieldValue("floor", "5000").Build())
	r.put("fresh", floor, r.other.Seal(scope("fresh"), []byte("first")), false)
	r.put("fresh", floor+1, r.other.Seal(scope("fresh"), []byte("second")), true)
	for i, want := range []string{"first", "second"} {
		if ev := r.expect(Entry); string(ev.Body) != want || ev.Seq != floor+uint64(i) {
			t.Fatalf("got %q at %d, want %q at %d", ev.Body, ev.Seq, want, floor+i)
		}
	}
}

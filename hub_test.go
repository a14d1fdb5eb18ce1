package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newTestHub starts an App (memory store, no listener) and returns its hub, to be
// driven directly with fake clients.
func newTestHub(tb testing.TB, mutate func(*Config)) *Hub {
	cfg := defaultConfig()
	cfg.DataDir = tb.TempDir()
	cfg.Store = "memory"
	if mutate != nil {
		mutate(cfg)
	}
	app, err := newApp(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { app.shutdown(time.Second) })
	return app.hub
}

// fakeClient is a Client with a queue but no connection: the hub only ever touches
// the queue, so its behaviour can be observed directly.
func fakeClient(name string, queue int) *Client {
	c := &Client{
		send:  make(chan *[]byte, queue),
		user:  identity{ID: "dev:" + name, Name: name},
		rooms: make(map[string]*room),
	}
	c.limiter = newConnLimiter(defaultConfig(), nil, time.Now)
	c.userJSON = userJSON(c.user.ID, c.user.Name)
	c.fromTail = append(append([]byte(`"from":`), c.userJSON...), `,"text":`...)
	return c
}

// sayCmd builds the command readPump would send for a say.
func sayCmd(c *Client, room, text string) command {
	body := appendJSONString(append([]byte(nil), c.fromTail...), text)
	return command{client: c, env: &envelope{Type: "say", Room: room}, body: append(body, '}')}
}

// drain returns the events queued for c so far, decoded, history events left out. It synchronises with the hub
// first, so everything the hub did before is visible.
func drain(t testing.TB, h *Hub, c *Client) []map[string]any {
	settleHub(t, h)
	var out []map[string]any
	for {
		select {
		case b, ok := <-c.send:
			if !ok {
				return append(out, map[string]any{"type": "closed"})
			}
			var ev map[string]any
			if err := json.Unmarshal(*b, &ev); err != nil {
				t.Fatalf("hub queued invalid JSON %q", b)
			}
			// History arrives asynchronously, after a store round trip; the
			// history tests look at it, these do not.
			if ev["type"] != "history" {
				out = append(out, ev)
			}
		default:
			return out
		}
	}
}

// settleHub waits until the hub has handled every command queued so far and every
// security-state change they started is durable and applied (see durable.go): a round
// trip through the store writer and back through the hub's completions, repeated while
// changes are in flight (a settled change may let a waiting one go).
func settleHub(t testing.TB, h *Hub) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var inflight int
		h.do(func() { inflight = len(h.inflight) })
		if inflight == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("changes still in flight")
		}
		done := make(chan struct{})
		if !h.bp.Submit(nil, func(error) { h.completions <- func() { close(done) } }) {
			t.Fatal("store queue full")
		}
		<-done
	}
}

// types lists the event types in evs, for compact assertions.
func types(evs []map[string]any) string {
	var s []string
	for _, e := range evs {
		s = append(s, fmt.Sprint(e["type"]))
	}
	return strings.Join(s, ",")
}

// TestHubRoomIsolation: a message to room A never reaches a member of only room B.
func TestHubRoomIsolation(t *testing.T) {
	h := newTestHub(t, nil)
	a, b := fakeClient("a", 64), fakeClient("b", 64)
	h.register <- a
	h.register <- b
	h.inbound <- command{client: a, env: &envelope{Type: "join", Room: "alpha"}}
	h.inbound <- command{client: b, env: &envelope{Type: "join", Room: "beta"}}
	h.inbound <- command{client: b, env: &envelope{Type: "leave", Room: lobby}}
	drain(t, h, a)
	drain(t, h, b)
	h.inbound <- sayCmd(a, "alpha", "for alpha only")
	if evs := drain(t, h, b); len(evs) != 0 {
		t.Fatalf("b received %v", evs)
	}
	if evs := drain(t, h, a); types(evs) != "message" || evs[0]["room"] != "alpha" {
		t.Fatalf("a received %v", evs)
	}
}

// TestHubPresence: joining announces to the others and gives the joiner the member
// list; leaving announces too; a second connection of the same user is not a new
// member.
func TestHubPresence(t *testing.T) {
	h := newTestHub(t, nil)
	a, b, b2 := fakeClient("a", 64), fakeClient("b", 64), fakeClient("b", 64)
	h.register <- a
	drain(t, h, a)
	h.register <- b
	evs := drain(t, h, b)
	if types(evs) != "welcome,joined" || len(evs[1]["members"].([]any)) != 2 {
		t.Fatalf("joiner got %v", evs)
	}
	evs = drain(t, h, a)
	if types(evs) != "presence" || evs[0]["event"] != "join" || evs[0]["user"].(map[string]any)["id"] != "dev:b" {
		t.Fatalf("member got %v", evs)
	}
	h.register <- b2
	if evs := drain(t, h, a); len(evs) != 0 {
		t.Fatalf("second connection of b announced again: %v", evs)
	}
	h.unregister <- b
	if evs := drain(t, h, a); len(evs) != 0 {
		t.Fatalf("b left while b2 still there: %v", evs)
	}
	h.unregister <- b2
	if evs := drain(t, h, a); types(evs) != "presence" || evs[0]["event"] != "leave" {
		t.Fatalf("leave not announced: %v", evs)
	}
}

// TestHubEmptyRoomDropped: a room whose last member leaves is gone from memory.
func TestHubEmptyRoomDropped(t *testing.T) {
	h := newTestHub(t, nil)
	a := fakeClient("a", 64)
	h.register <- a
	h.inbound <- command{client: a, env: &envelope{Type: "join", Room: "temp"}}
	settleHub(t, h) // a new room exists once durable
	rooms := func() (n int, has bool) {
		h.do(func() { n = len(h.rooms); _, has = h.rooms["temp"] })
		return
	}
	if n, has := rooms(); n != 2 || !has {
		t.Fatalf("rooms %d, temp %v", n, has)
	}
	h.inbound <- command{client: a, env: &envelope{Type: "leave", Room: "temp"}}
	if n, has := rooms(); n != 1 || has {
		t.Fatalf("after leave: rooms %d, temp %v", n, has)
	}
	h.unregister <- a
	if n, _ := rooms(); n != 0 {
		t.Fatalf("after disconnect: %d rooms", n)
	}
}

// TestHubRoomCaps: rooms per client and members per room are capped with errors.
func TestHubRoomCaps(t *testing.T) {
	h := newTestHub(t, func(c *Config) { c.MaxRoomsPerClient = 2; c.MaxMembersPerRoom = 1 })
	a, b := fakeClient("a", 64), fakeClient("b", 64)
	h.register <- a
	h.inbound <- command{client: a, env: &envelope{Type: "join", Room: "two"}}
	h.inbound <- command{client: a, env: &envelope{Type: "join", Room: "three"}}
	evs := drain(t, h, a)
	if last := evs[len(evs)-1]; last["code"] != codeTooManyRooms {
		t.Fatalf("third room: %v", evs)
	}
	h.register <- b // lobby already holds its one member
	evs = drain(t, h, b)
	if types(evs) != "welcome,error" || evs[1]["code"] != codeRoomFull {
		t.Fatalf("full lobby: %v", evs)
	}
}

// TestHubSlowConsumerEvicted: a client whose queue is full is evicted (queue closed,
// counted) and the others keep receiving every message, with no delay from it.
func TestHubSlowConsumerEvicted(t *testing.T) {
	h := newTestHub(t, func(c *Config) { c.SendBacklog = 8 })
	fast, slow, sender := fakeClient("fast", 1024), fakeClient("slow", 4), fakeClient("sender", 1024)
	for _, c := range []*Client{fast, slow, sender} {
		h.register <- c
	}
	drain(t, h, fast)
	drain(t, h, sender)
	// slow never reads. Fill its queue (4) and its backlog (8), and more.
	for i := 0; i < 20; i++ {
		h.inbound <- sayCmd(sender, lobby, fmt.Sprint("m", i))
	}
	got := drain(t, h, fast)
	msgs := 0
	for _, e := range got {
		if e["type"] == "message" {
			msgs++
		}
	}
	if msgs != 20 {
		t.Fatalf("fast client got %d of 20 messages (%s)", msgs, types(got))
	}
	var evicted float64
	var stillThere bool
	h.do(func() { _, stillThere = h.clients[slow] })
	if stillThere {
		t.Fatal("slow client still registered")
	}
	evicted = testutil.ToFloat64(h.metrics.evictions)
	if evicted != 1 {
		t.Fatalf("evictions counted %v", evicted)
	}
	// Its queue is closed: the writePump would send 1008 and stop.
	for range slow.send {
	}
	if slow.hubClose.code != 1008 {
		t.Fatalf("close code %d", slow.hubClose.code)
	}
}

// BenchmarkHubFanout measures one room of 1000 clients: ns per delivery and allocations
// per broadcast. Each op is one message delivered to all 1000 members.
func BenchmarkHubFanout(b *testing.B) {
	const members = 1000
	h, clients := fanoutBench(b, members)
	runFanout(b, h, sayCmd(clients[0], lobby, strings.Repeat("x", 64)), members)
}

// fanoutBench is a test hub whose lobby holds members fake clients, each drained by a
// reader as a writePump would be (taking its bytes off the count), for the fan-out
// benchmarks. The readers stop when the benchmark ends.
func fanoutBench(b *testing.B, members int) (*Hub, []*Client) {
	h := newTestHub(b, func(c *Config) { c.SendQueue = 1 << 16 })
	clients := make([]*Client, members)
	stop := make(chan struct{})
	b.Cleanup(func() { close(stop) })
	for i := range clients {
		clients[i] = fakeClient(fmt.Sprint("u", i), 4096)
		h.register <- clients[i]
		go func(c *Client) {
			for {
				select {
				case b, ok := <-c.send:
					if !ok {
						return
					}
					c.queued.Add(-int64(len(*b)))
				case <-stop:
					return
				}
			}
		}(clients[i])
	}
	return h, clients
}

// runFanout sends cmd b.N times through the hub and reports ns per delivery. It fails
// the benchmark unless every message was relayed and no reader fell behind, because
// then the figure would be wrong.
func runFanout(b *testing.B, h *Hub, cmd command, members int) {
	h.do(func() {})
	before := testutil.ToFloat64(h.metrics.messages)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h.inbound <- cmd
	}
	h.do(func() {})
	b.StopTimer()
	if n := testutil.ToFloat64(h.metrics.messages) - before; n != float64(b.N) {
		b.Fatalf("%v of %d messages relayed", n, b.N)
	}
	if n := testutil.ToFloat64(h.metrics.evictions); n != 0 {
		b.Fatalf("%v clients evicted: the readers did not keep up", n)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*members), "ns/delivery")
}

// TestHubBacklogKeepsOrder: a client that falls behind for a moment is not evicted;
// what did not fit in its queue reaches it later, all of it, in order.
func TestHubBacklogKeepsOrder(t *testing.T) {
	h := newTestHub(t, func(c *Config) { c.SendBacklog = 100 })
	lagging, sender := fakeClient("lagging", 4), fakeClient("sender", 1024)
	h.register <- lagging
	h.register <- sender
	drain(t, h, lagging)
	for i := 0; i < 50; i++ {
		h.inbound <- sayCmd(sender, lobby, fmt.Sprint(i))
	}
	h.do(func() {})
	var got []string
	deadline := time.After(10 * time.Second)
	for len(got) < 50 {
		select {
		case b, ok := <-lagging.send:
			if !ok {
				t.Fatalf("evicted after %d messages", len(got))
			}
			var ev map[string]any
			json.Unmarshal(*b, &ev)
			if ev["type"] == "message" {
				got = append(got, ev["text"].(string))
			}
		case <-deadline:
			t.Fatalf("only %d of 50 arrived", len(got))
		}
	}
	for i, text := range got {
		if text != fmt.Sprint(i) {
			t.Fatalf("message %d is %q: order lost", i, text)
		}
	}
	if n := testutil.ToFloat64(h.metrics.evictions); n != 0 {
		t.Fatalf("%v evictions", n)
	}
}

// TestHubSurvivesPanic: a handler that panics (a bug) costs its sender the connection,
// closed with 1011 and counted, never the server: another user's connection goes on,
// and the sender can connect again.
func TestHubSurvivesPanic(t *testing.T) {
	spec := commandTable["rooms"]
	broken := spec
	broken.run = func(*Hub, *Client, command, *roomInfo) {
		var m map[string]int
		m["boom"]++ // a write to a nil map: a runtime panic, as a real bug would make
	}
	commandTable["rooms"] = broken
	t.Cleanup(func() { commandTable["rooms"] = spec }) // after the server has stopped
	ts := startServer(t, nil)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	alice.send(map[string]any{"type": "rooms"})
	alice.expectClose(closeInternal.code)
	bob.mustAck(map[string]any{"type": "say", "room": lobby, "text": "still here"})
	if n := testutil.ToFloat64(ts.App.metrics.panics); n != 1 {
		t.Errorf("panics counted %v, want 1", n)
	}
	again := ts.user(t, "alice")
	again.mustAck(map[string]any{"type": "say", "room": lobby, "text": "back"})
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// rawHub is a tiny stand-in for the original gorilla chat example: every
// text frame is broadcast to every client (the sender included) and queued
// texts are coalesced into one frame separated by '\n', as the example does.
type rawHub struct {
	mu      sync.Mutex
	clients map[chan []byte]bool
}

// serveWS upgrades with the default same-origin check (the original's
// behaviour) and runs one reader and one coalescing writer per client.
//
// The client is registered before the upgrade answers: chatload starts sending as soon
// as every handshake has returned, and a client registered only after its 101 could
// miss the first broadcast (one delivery short, now and then).
func (h *rawHub) serveWS(w http.ResponseWriter, r *http.Request) {
	send := make(chan []byte, 4096)
	h.mu.Lock()
	h.clients[send] = true
	h.mu.Unlock()
	up := websocket.Upgrader{}
	conn, err := up.Upgrade(w, r, nil)
	if err != nil {
		h.mu.Lock()
		if h.clients[send] {
			delete(h.clients, send)
			close(send)
		}
		h.mu.Unlock()
		return
	}
	go rawWriter(conn, send)
	defer func() {
		h.mu.Lock()
		if h.clients[send] {
			delete(h.clients, send)
			close(send)
		}
		h.mu.Unlock()
		conn.Close()
	}()
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		h.mu.Lock()
		for c := range h.clients {
			select {
			case c <- msg:
			default: // too slow: dropped, as the original does
				delete(h.clients, c)
				close(c)
			}
		}
		h.mu.Unlock()
	}
}

// rawWriter writes queued texts, coalescing whatever is waiting into one
// frame so the load generator's line splitting is exercised.
func rawWriter(conn *websocket.Conn, send chan []byte) {
	defer conn.Close()
	for msg := range send {
		var b bytes.Buffer
		b.Write(msg)
		for n := len(send); n > 0; n-- {
			m, ok := <-send
			if !ok {
				break
			}
			b.WriteByte('\n')
			b.Write(m)
		}
		if err := conn.WriteMessage(websocket.TextMessage, b.Bytes()); err != nil {
			return
		}
	}
}

// runBounded runs the load generator with an overall deadline so that a
// broken server fails the test instead of hanging it.
func runBounded(t *testing.T, cfg Config) *Report {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var logs strings.Builder
	rep, err := Run(ctx, cfg, &logs)
	if err != nil {
		t.Fatalf("run: %v\n%s", err, logs.String())
	}
	return rep
}

// checkExactlyOnce asserts the report shows every sent message delivered
// exactly once, in order, to every client.
func checkExactlyOnce(t *testing.T, rep *Report, clients int) {
	t.Helper()
	var b strings.Builder
	rep.WriteText(&b)
	if rep.Connected != clients || len(rep.Refused) != 0 {
		t.Fatalf("connected %d of %d, refused %v\n%s", rep.Connected, clients, rep.Refused, b.String())
	}
	if rep.Sent == 0 {
		t.Fatalf("nothing sent\n%s", b.String())
	}
	if rep.Expected != rep.Sent*int64(clients) {
		t.Errorf("expected %d, want sent %d x %d clients", rep.Expected, rep.Sent, clients)
	}
	if rep.Delivered != rep.Expected || rep.DeliveryRatio != 1 {
		t.Errorf("delivered %d of %d (ratio %v)\n%s", rep.Delivered, rep.Expected, rep.DeliveryRatio, b.String())
	}
	if rep.Duplicates != 0 || rep.Reordered != 0 || rep.Foreign != 0 || rep.Dropped != 0 {
		t.Errorf("dups %d reordered %d foreign %d dropped %d\n%s", rep.Duplicates, rep.Reordered, rep.Foreign, rep.Dropped, b.String())
	}
	if rep.Latency.Max <= 0 || rep.Latency.P50 > rep.Latency.P99 || rep.Latency.P99 > rep.Latency.Max {
		t.Errorf("latency %+v", rep.Latency)
	}
}

// TestRunOriginalProtocol drives 4 clients, all sending for about a second,
// against the in-process raw-text broadcast server.
func TestRunOriginalProtocol(t *testing.T) {
	hub := &rawHub{clients: map[chan []byte]bool{}}
	srv := httptest.NewServer(http.HandlerFunc(hub.serveWS))
	defer srv.Close()

	rep := runBounded(t, Config{
		Target: srv.URL, Proto: protoOriginal, Clients: 4, Senders: 4, Rate: 20, Size: 64,
		Duration: time.Second, Room: "lobby", SrcAddrs: 2, ConnectRate: 200, Settle: 20 * time.Second,
	})
	checkExactlyOnce(t, rep, 4)
	if rep.SrcAddrs != 2 {
		t.Errorf("src addrs %d", rep.SrcAddrs)
	}
}

// fakeModified is a minimal server speaking the modified protocol's subset
// that the load generator uses: dev login, cookie check, welcome/joined on
// connect, join, say with ack, and message events (with presence noise).
type fakeModified struct {
	mu    sync.Mutex
	rooms map[string]map[*fakeClient]bool
	id    int64
	hits  map[string]int
}

// fakeClient is one connection of fakeModified.
type fakeClient struct {
	name string
	send chan []byte
}

// login sets a cookie named after the user and answers 303, as /login/dev does.
func (f *fakeModified) login(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.FormValue("name") == "" {
		http.Error(w, "bad", http.StatusBadRequest)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: "sid", Value: "s-" + r.FormValue("name"), Path: "/", HttpOnly: true})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// emit queues one JSON event for a client.
func emit(c *fakeClient, v any) {
	b, _ := json.Marshal(v)
	select {
	case c.send <- b:
	default:
	}
}

// joinRoom adds c to a room, tells it, and tells the others (presence).
func (f *fakeModified) joinRoom(c *fakeClient, room string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.rooms[room] == nil {
		f.rooms[room] = map[*fakeClient]bool{}
	}
	for o := range f.rooms[room] {
		emit(o, map[string]any{"type": "presence", "room": room, "event": "join", "user": map[string]string{"id": c.name, "name": c.name}})
	}
	f.rooms[room][c] = true
	emit(c, map[string]any{"type": "joined", "room": room, "members": []map[string]string{{"id": c.name, "name": c.name}}})
}

// serveWS checks the session cookie and Origin, then runs the client.
func (f *fakeModified) serveWS(w http.ResponseWriter, r *http.Request) {
	ck, err := r.Cookie("sid")
	if err != nil {
		http.Error(w, "no session", http.StatusUnauthorized)
		return
	}
	if r.Header.Get("Origin") != "http://"+r.Host {
		http.Error(w, "origin", http.StatusForbidden)
		return
	}
	conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
	if err != nil {
		return
	}
	c := &fakeClient{name: ck.Value, send: make(chan []byte, 4096)}
	go rawWriter(conn, c.send)
	defer func() {
		f.mu.Lock()
		for _, m := range f.rooms {
			delete(m, c)
		}
		f.mu.Unlock()
		close(c.send)
	}()
	emit(c, map[string]any{"type": "welcome", "you": map[string]string{"id": c.name, "name": c.name}, "dev": true})
	f.joinRoom(c, "lobby")
	for {
		_, msg, err := conn.ReadMessage()
		if err != nil {
			return
		}
		var in struct{ Type, Room, Text string }
		if json.Unmarshal(msg, &in) != nil {
			emit(c, map[string]any{"type": "error", "code": "bad_json", "message": "no"})
			continue
		}
		switch in.Type {
		case "join":
			f.joinRoom(c, in.Room)
		case "say":
			f.mu.Lock()
			members := f.rooms[in.Room]
			if !members[c] {
				f.mu.Unlock()
				emit(c, map[string]any{"type": "error", "code": "not_in_room", "message": "join first", "room": in.Room})
				continue
			}
			f.id++
			for o := range members {
				emit(o, map[string]any{"type": "message", "room": in.Room, "id": f.id,
					"from": map[string]string{"id": c.name, "name": c.name}, "ts": time.Now().UnixMilli(), "text": in.Text})
			}
			emit(c, map[string]any{"type": "ack", "room": in.Room, "id": f.id})
			f.mu.Unlock()
		default:
			emit(c, map[string]any{"type": "error", "code": "unknown_type", "message": "?"})
		}
	}
}

// TestRunModifiedProtocol drives 5 clients (3 senders) through login, a
// join of a non-lobby room and JSON messages against the fake server.
func TestRunModifiedProtocol(t *testing.T) {
	f := &fakeModified{rooms: map[string]map[*fakeClient]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/login/dev", f.login)
	mux.HandleFunc("/ws", f.serveWS)
	srv := httptest.NewServer(mux)
	defer srv.Close()

	rep := runBounded(t, Config{
		Target: srv.URL, Proto: protoModified, Clients: 5, Senders: 3, Rate: 20, Size: 80,
		Duration: time.Second, Room: "bench", ConnectRate: 200, Settle: 20 * time.Second,
	})
	checkExactlyOnce(t, rep, 5)
	if rep.Acked != rep.Sent {
		t.Errorf("acked %d, sent %d", rep.Acked, rep.Sent)
	}
	if rep.LoadCPUSendS <= 0 {
		t.Errorf("chatload's own CPU over the send phase is %v s; it parsed every delivery", rep.LoadCPUSendS)
	}
	if rep.Events["presence"] == 0 || rep.Events["welcome"] != 5 {
		t.Errorf("events %v", rep.Events)
	}
	if len(rep.Errors) != 0 {
		t.Errorf("errors %v", rep.Errors)
	}
}

// TestRunCountsRefusals points the modified protocol at a server whose login
// refuses everyone and checks that refusals are counted by status.
func TestRunCountsRefusals(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	defer srv.Close()
	rep := runBounded(t, Config{
		Target: srv.URL, Proto: protoModified, Clients: 3, Senders: 1, Rate: 1, Size: 10,
		Duration: 100 * time.Millisecond, Room: "lobby", ConnectRate: 100, Settle: 0,
	})
	if rep.Connected != 0 || rep.Refused["login:429"] != 3 || rep.Sent != 0 {
		t.Errorf("connected %d refused %v sent %d", rep.Connected, rep.Refused, rep.Sent)
	}
}

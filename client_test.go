package main

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestChatInRoom is the happy path: two users, a room, a message stamped by the server.
func TestChatInRoom(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	a.expect("presence") // bob joined the lobby
	a.send(map[string]any{"type": "say", "room": "lobby", "text": "hello bob", "ref": "r1"})
	msg := b.expect("message")
	from := msg["from"].(map[string]any)
	if msg["text"] != "hello bob" || msg["room"] != "lobby" || from["id"] != "dev:alice" || from["name"] != "alice" {
		t.Fatalf("bob got %v", msg)
	}
	if _, ok := msg["id"].(float64); !ok {
		t.Fatalf("message without numeric id: %v", msg)
	}
	if ts, ok := msg["ts"].(float64); !ok || time.Since(time.UnixMilli(int64(ts))) > time.Minute {
		t.Fatalf("message ts %v", msg["ts"])
	}
	ack := a.expect("ack")
	if ack["ref"] != "r1" || ack["id"] != msg["id"] {
		t.Fatalf("ack %v for message %v", ack, msg)
	}
}

// TestSpoofedFromIgnored: a client-chosen sender, id and time are ignored; the server
// stamps its own: the id the sender's ack names, and the server's clock.
func TestSpoofedFromIgnored(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, nil)
	a, b := ts.user(t, "mallory"), ts.user(t, "bob")
	const spoofedID, spoofedTS = 987654321, 1234
	a.send(map[string]any{"type": "say", "room": "lobby", "text": "trust me", "ref": "r",
		"from": map[string]any{"id": "dev:admin", "name": "admin"}, "id": spoofedID, "ts": spoofedTS})
	msg := b.expect("message")
	if from := msg["from"].(map[string]any); from["id"] != "dev:mallory" || from["name"] != "mallory" {
		t.Fatalf("spoofed sender went through: %v", msg)
	}
	ack := a.expect("ack")
	if msg["id"] == float64(spoofedID) || msg["id"] != ack["id"] {
		t.Fatalf("message id %v, want the server's (the ack says %v), not %d", msg["id"], ack["id"], spoofedID)
	}
	if msg["ts"] != float64(clock.Now().UnixMilli()) {
		t.Fatalf("message ts %v, want the server's clock %d, not %d", msg["ts"], clock.Now().UnixMilli(), spoofedTS)
	}
}

// TestMalformedEnvelopes: each bad object gets an error with its code, the connection
// stays open, and nothing reaches the other member.
func TestMalformedEnvelopes(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.MsgBurst = 100; c.UserMsgBurst = 100 })
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	cases := map[string]string{
		`not json`: codeBadJSON,
		`{"type":"say","room":"lobby","text":42}`:    codeBadEnvelope,
		`{"type":"teleport","room":"lobby"}`:         codeUnknownType,
		`{"type":"say","room":"Lobby","text":"x"}`:   codeBadRoom,
		`{"type":"say","room":"lobby","text":"  "}`:  codeEmptyText,
		`{"type":"say","room":"other","text":"hey"}`: codeNoSuchRoom,
		`{"type":"leave","room":"other"}`:            codeNotInRoom,
	}
	before := testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues(codeBadJSON))
	for line, code := range cases {
		a.sendRaw(websocket.TextMessage, []byte(line))
		a.expectError(code)
	}
	if got := testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues(codeBadJSON)); got != before+1 {
		t.Fatalf("bad_json counter %v, want %v", got, before+1)
	}
	noneOfType(t, b.barrier(), "message")
	// Still usable afterwards.
	a.send(map[string]any{"type": "say", "room": "lobby", "text": "fine now"})
	if m := b.expect("message"); m["text"] != "fine now" {
		t.Fatalf("got %v", m)
	}
}

// TestErrorEchoesRef: the error carries the client's ref so it can match it up.
func TestErrorEchoesRef(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.user(t, "alice")
	a.send(map[string]any{"type": "say", "room": "lobby", "text": "", "ref": "abc"})
	if ev := a.expectError(codeEmptyText); ev["ref"] != "abc" {
		t.Fatalf("error without ref: %v", ev)
	}
}

// TestCoalescedClientFrame: several objects in one frame, separated by newlines, are
// each handled.
func TestCoalescedClientFrame(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	a.sendRaw(websocket.TextMessage, []byte(`{"type":"say","room":"lobby","text":"one"}`+"\n"+`{"type":"say","room":"lobby","text":"two"}`))
	if m := b.expect("message"); m["text"] != "one" {
		t.Fatal(m)
	}
	if m := b.expect("message"); m["text"] != "two" {
		t.Fatal(m)
	}
}

// TestOversizeFrameCloses1009 sends a frame over the read limit.
func TestOversizeFrameCloses1009(t *testing.T) {
	ts := startServer(t, nil)
	a := ts.user(t, "alice")
	big := `{"type":"say","room":"lobby","text":"` + strings.Repeat("x", 9<<10) + `"}`
	a.sendRaw(websocket.TextMessage, []byte(big))
	a.expectClose(websocket.CloseMessageTooBig)
	waitFor(t, "too_big counted", func() bool {
		return testutil.ToFloat64(ts.App.metrics.rejected.WithLabelValues("too_big")) == 1
	})
}

// TestOversizeCompressedCloses1009: with compression on, a small compressed frame that
// inflates past the read limit is caught on the decompressed bytes.
func TestOversizeCompressedCloses1009(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Compression = true })
	cookie := devLogin(t, ts.URL, "alice")
	d := websocket.Dialer{EnableCompression: true, HandshakeTimeout: 5 * time.Second}
	h := http.Header{"Origin": {ts.URL}, "Cookie": {cookie.Name + "=" + cookie.Value}}
	conn, _, err := d.Dial(ts.wsURL(), h)
	if err != nil {
		t.Fatal(err)
	}
	c := &wsClient{t: t, conn: conn}
	defer conn.Close()
	c.expect("joined")
	conn.EnableWriteCompression(true)
	// 64 KiB of one letter compresses to a few hundred bytes: under the frame limit,
	// far over it once inflated.
	c.sendRaw(websocket.TextMessage, bytes.Repeat([]byte("a"), 64<<10))
	c.expectClose(websocket.CloseMessageTooBig)
}

// TestInvalidUTF8Closes1007 sends a text frame that is not UTF-8.
func TestInvalidUTF8Closes1007(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	a.sendRaw(websocket.TextMessage, []byte("{\"type\":\"say\",\"room\":\"lobby\",\"text\":\"\xff\xfe\"}"))
	a.expectClose(websocket.CloseInvalidFramePayloadData)
	noneOfType(t, b.barrier(), "message")
}

// TestBinaryCloses1003: a binary frame that no file announcement precedes closes 1003.
func TestBinaryCloses1003(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	a.sendRaw(websocket.BinaryMessage, []byte("GIF89a<script>"))
	a.expectClose(websocket.CloseUnsupportedData)
	noneOfType(t, b.barrier(), "message")
}

// TestRateLimitBurstThenAbuse: a burst beyond the bucket is partly dropped with
// rate_limited and a retry hint; keeping it up closes with 1008.
func TestRateLimitBurstThenAbuse(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.MsgRate = 1; c.MsgBurst = 5; c.AbuseDrops = 10; c.UserMsgBurst = 100 })
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	for i := 0; i < 6; i++ {
		a.send(map[string]any{"type": "say", "room": "lobby", "text": "spam", "ref": "x"})
	}
	ev := a.expectError(codeRateLimited)
	if ms, ok := ev["retry_after_ms"].(float64); !ok || ms <= 0 {
		t.Fatalf("rate_limited without retry hint: %v", ev)
	}
	got := 0
	for _, e := range b.barrier() {
		if e["type"] == "message" {
			got++
		}
	}
	if got != 5 {
		t.Fatalf("bob received %d of the burst, want exactly the bucket's 5", got)
	}
	// The clock stands still, so every further message is dropped: abuse.
	for i := 0; i < 9; i++ {
		a.send(map[string]any{"type": "say", "room": "lobby", "text": "spam"})
	}
	a.expectClose(websocket.ClosePolicyViolation)
	if n := testutil.ToFloat64(ts.App.metrics.abuseCloses); n != 1 {
		t.Fatalf("abuse closes %v", n)
	}
	if n := testutil.ToFloat64(ts.App.metrics.rateLimited); n != 10 {
		t.Fatalf("rate-limited drops %v, want 10", n)
	}
}

// TestUserBudgetShared: a second connection of the same user draws from the same
// per-user bucket instead of doubling it.
func TestUserBudgetShared(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.MsgBurst = 10; c.UserMsgRate = 1; c.UserMsgBurst = 4 })
	cookie := devLogin(t, ts.URL, "alice")
	a1, a2 := ts.dial(t, cookie), ts.dial(t, cookie)
	b := ts.user(t, "bob")
	for i := 0; i < 3; i++ {
		a1.send(map[string]any{"type": "say", "room": "lobby", "text": "one", "ref": "r"})
		a2.send(map[string]any{"type": "say", "room": "lobby", "text": "two", "ref": "r"})
	}
	// Each say is answered by an ack (delivered) or a rate_limited error.
	acks := 0
	for _, c := range []*wsClient{a1, a2} {
		for answered := 0; answered < 3; {
			ev, err := c.next(5 * time.Second)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case ev["type"] == "ack":
				acks++
				answered++
			case ev["type"] == "error" && ev["code"] == codeRateLimited:
				answered++
			}
		}
	}
	if acks != 4 {
		t.Fatalf("two connections of one user got %d messages through, want the user's burst of 4", acks)
	}
	got := 0
	for _, e := range b.barrier() {
		if e["type"] == "message" {
			got++
		}
	}
	if got != 4 {
		t.Fatalf("two connections of one user delivered %d messages, want the user's burst of 4", got)
	}
}

// TestForeignOriginRefused: cross-site WebSocket hijacking gets 403, even with a
// valid cookie; an allow-listed origin passes.
func TestForeignOriginRefused(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.AllowedOrigins = []string{"https://chat.example.org"} })
	cookie := devLogin(t, ts.URL, "alice")
	for _, origin := range []string{"https://evil.example", "http://127.0.0.1:1", "null", strings.Replace(ts.URL, "http:", "https:", 1)} {
		_, resp, err := ts.tryDial(cookie, http.Header{"Origin": {origin}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("origin %s: err %v, resp %v", origin, err, resp)
		}
	}
	conn, _, err := ts.tryDial(cookie, http.Header{"Origin": {"https://CHAT.example.org:443"}})
	if err != nil {
		t.Fatalf("allow-listed origin refused: %v", err)
	}
	conn.Close()
	// No Origin at all (not a browser): allowed on to the session check.
	conn, _, err = ts.tryDial(cookie, http.Header{"Origin": nil})
	if err != nil {
		t.Fatalf("no-origin client with session refused: %v", err)
	}
	conn.Close()
}

// TestNoOrTamperedCookie401: the handshake needs a genuine session.
func TestNoOrTamperedCookie401(t *testing.T) {
	ts := startServer(t, nil)
	cookie := devLogin(t, ts.URL, "alice")
	tampered := *cookie
	v := []byte(tampered.Value)
	v[len(v)/2] ^= 1
	tampered.Value = string(v)
	forged := &http.Cookie{Name: sessionCookie, Value: "eyJ1aWQiOiJkZXY6YWRtaW4ifQ"}
	for name, c := range map[string]*http.Cookie{"none": nil, "tampered": &tampered, "forged": forged} {
		_, resp, err := ts.tryDial(c, http.Header{"Origin": nil})
		if err == nil || resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("%s cookie: err %v resp %v", name, err, resp)
		}
	}
}

// TestHandshakeRateLimit429: too many handshakes from one address get 429 with
// Retry-After before any upgrade, even unauthenticated ones.
func TestHandshakeRateLimit429(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.IPHandshakeRate = 0.01; c.IPHandshakeBurst = 3 })
	for i := 0; i < 3; i++ {
		_, resp, _ := ts.tryDial(nil, nil)
		if resp == nil || resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %v", i, resp)
		}
	}
	_, resp, err := ts.tryDial(nil, nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusTooManyRequests || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("4th handshake: err %v resp %v", err, resp)
	}
	if n := testutil.ToFloat64(ts.App.metrics.refused.WithLabelValues(refuseHandshakeRate)); n != 1 {
		t.Fatalf("refused counter %v", n)
	}
}

// TestConnectionCaps: per-IP, per-user and global caps refuse before the upgrade.
// Distinct client addresses come from a trusted proxy's X-Forwarded-For.
func TestConnectionCaps(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MaxConnsPerIP = 2
		c.MaxConnsPerUser = 3
		c.MaxConns = 5
		c.TrustedProxies = mustPrefixes(t, "127.0.0.1")
	})
	from := func(ip string) http.Header { return http.Header{"X-Forwarded-For": {ip}} }
	open := func(c *http.Cookie, ip string) *http.Response {
		t.Helper()
		conn, resp, err := ts.tryDial(c, from(ip))
		if err == nil {
			t.Cleanup(func() { conn.Close() })
			return nil
		}
		if resp == nil {
			t.Fatal(err)
		}
		return resp
	}
	alice := devLogin(t, ts.URL, "alice")
	if r := open(alice, "10.0.0.1"); r != nil {
		t.Fatal(r.Status)
	}
	if r := open(alice, "10.0.0.1"); r != nil {
		t.Fatal(r.Status)
	}
	if r := open(alice, "10.0.0.1"); r == nil || r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("per-IP cap: %v", r)
	}
	if r := open(alice, "10.0.0.2"); r != nil {
		t.Fatal(r.Status)
	}
	if r := open(alice, "10.0.0.3"); r == nil || r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("per-user cap: %v", r)
	}
	bob, carol := devLogin(t, ts.URL, "bob"), devLogin(t, ts.URL, "carol")
	if r := open(bob, "10.0.0.4"); r != nil {
		t.Fatal(r.Status)
	}
	if r := open(bob, "10.0.0.5"); r != nil {
		t.Fatal(r.Status)
	}
	r := open(carol, "10.0.0.6")
	if r == nil || r.StatusCode != http.StatusServiceUnavailable || r.Header.Get("Retry-After") == "" {
		t.Fatalf("global cap: %v", r)
	}
	for _, reason := range []string{refuseIPConns, refuseUserConns, refuseGlobalConns} {
		if n := testutil.ToFloat64(ts.App.metrics.refused.WithLabelValues(reason)); n != 1 {
			t.Fatalf("%s counted %v times", reason, n)
		}
	}
}

// TestShutdownSends1001: shutting down tells every client "going away".
func TestShutdownSends1001(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	go ts.App.shutdown(5 * time.Second)
	a.expectClose(websocket.CloseGoingAway)
	b.expectClose(websocket.CloseGoingAway)
	// Readiness goes off before the hub sends a single 1001.
	if ts.App.ready.Load() {
		t.Fatal("ready after the 1001 closes")
	}
	resp, err := http.Get(ts.URL + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("readyz during shutdown: %d", resp.StatusCode)
	}
}

// TestRoomIsolationOverWire: a message to room A never reaches a member of only room B.
func TestRoomIsolationOverWire(t *testing.T) {
	ts := startServer(t, nil)
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	a.send(map[string]any{"type": "join", "room": "alpha"})
	a.expect("joined")
	b.send(map[string]any{"type": "join", "room": "beta"})
	b.expect("joined")
	b.send(map[string]any{"type": "leave", "room": "lobby"})
	b.expect("left")
	a.send(map[string]any{"type": "say", "room": "alpha", "text": "secret", "ref": "1"})
	a.expect("ack")
	for _, ev := range b.barrier() {
		if ev["type"] == "message" {
			t.Fatalf("bob, in beta only, got %v", ev)
		}
	}
}

// TestPingFloodCloses1008: pings draw from the message buckets; a flood of them is not
// answered past the limit and ends in 1008 like any other flood.
func TestPingFloodCloses1008(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.MsgRate, c.MsgBurst, c.AbuseDrops = 0.001, 2, 3 })
	a, b := ts.user(t, "pinger"), ts.user(t, "bob")
	pongs := 0
	a.conn.SetPongHandler(func(string) error { pongs++; return nil })
	for i := 0; i < 6; i++ {
		if err := a.conn.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(time.Second)); err != nil {
			break
		}
	}
	a.expectClose(websocket.ClosePolicyViolation)
	if pongs != 2 {
		t.Fatalf("%d pongs, want the burst of 2", pongs)
	}
	b.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "unaffected"})
}

// TestBlankFramesCount: empty and whitespace-only frames are messages for the
// buckets; a flood of them ends in 1008 instead of slipping past every limit.
func TestBlankFramesCount(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.MsgRate, c.MsgBurst, c.AbuseDrops = 0.001, 2, 3 })
	a := ts.user(t, "blank")
	a.sendRaw(websocket.TextMessage, []byte(""))
	a.expectError(codeBadJSON)
	for i := 0; i < 6; i++ {
		a.sendRaw(websocket.TextMessage, []byte("\n\n  \n"))
	}
	a.expectClose(websocket.ClosePolicyViolation)
}

// stalledReader starts a server whose write watchdog waits one second and whose
// per-connection queue and backlog are queue and backlog, with a "victim" that never
// reads (its receive buffer shrunk to 4 kB) and a "sender" free to flood 4000-character
// messages, whose frames a goroutine reads and discards until drained is closed. stuck
// is the victim's server side: its writePump closes closeSent when it ends.
func stalledReader(t *testing.T, queue, backlog int) (ts *testServer, sender *wsClient, stuck *Client, drained chan struct{}) {
	t.Helper()
	ts = startServer(t, func(c *Config) {
		c.MsgRate, c.MsgBurst, c.UserMsgRate, c.UserMsgBurst = 1e6, 1e6, 1e6, 1e6
		c.ByteRate, c.ByteBurst = 1e9, 1e9
		c.TextMaxChars = 4000
		c.ReadLimit = 64 << 10
		c.SendQueue, c.SendBacklog = queue, backlog
	})
	h := ts.App.hub
	h.do(func() { h.writeWait = time.Second })
	victim := ts.user(t, "victim")
	victim.conn.UnderlyingConn().(*net.TCPConn).SetReadBuffer(4096)
	sender = ts.user(t, "sender")
	drained = make(chan struct{})
	go func() {
		defer close(drained)
		for {
			sender.conn.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, _, err := sender.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	h.do(func() {
		for c := range h.clients {
			if c.user.Name == "victim" {
				stuck = c
			}
		}
	})
	return ts, sender, stuck, drained
}

// TestStalledWriteClosed: a peer that stops reading until the network buffers are full
// leaves its writePump stuck in a write. The hub's watchdog closes that connection after
// writeWait (shortened here), counts an eviction, and everyone else carries on.
func TestStalledWriteClosed(t *testing.T) {
	// Room enough that the queue-length eviction never comes first.
	ts, sender, stuck, drained := stalledReader(t, 1<<16, 1<<16)
	h := ts.App.hub
	text := strings.Repeat("x", 4000)
	ended := false
	for i := 0; i < 20000 && !ended; i++ {
		sender.send(map[string]any{"type": "say", "room": lobby, "text": text})
		select {
		case <-stuck.closeSent:
			ended = true
		default:
		}
	}
	select {
	case <-stuck.closeSent:
	case <-time.After(15 * time.Second):
		t.Fatal("the stalled connection was never closed")
	}
	if n := testutil.ToFloat64(ts.App.metrics.evictions); n != 1 {
		t.Fatalf("%v evictions, want the stalled connection's one", n)
	}
	// The stalled connection's readPump ends once its socket is closed, and
	// unregisters it; only the sender may be left.
	var left []string
	waitFor(t, "the stalled connection to be unregistered", func() bool {
		left = left[:0]
		h.do(func() {
			for c := range h.clients {
				left = append(left, c.user.Name)
			}
		})
		return len(left) == 1
	})
	if left[0] != "sender" {
		t.Fatalf("clients left %v, want only the sender", left)
	}
	// The sender still chats.
	other := ts.user(t, "other")
	sender.send(map[string]any{"type": "say", "room": lobby, "text": "still here"})
	for {
		if ev := other.expect("message"); ev["text"] == "still here" {
			break
		}
	}
	sender.conn.Close()
	<-drained
}

// TestEvictedStalledWriterClosed: a peer that stops reading fills its socket and its
// queue, and is evicted as too slow while its writePump is blocked inside a write. The
// eviction closes the queue, which that write never looks at, and takes the connection
// off the hub's clients, where the write watchdog looked: without the watchdog's pass
// over dropped connections the write, both goroutines and the connection slot would
// stay for as long as the peer keeps the socket open. The eviction is counted once.
func TestEvictedStalledWriterClosed(t *testing.T) {
	// Small enough that the queue eviction comes long before the watchdog.
	ts, sender, stuck, drained := stalledReader(t, 256, 256)
	h := ts.App.hub
	text := strings.Repeat("x", 4000)
	evicted := func() (gone bool) {
		h.do(func() { _, in := h.clients[stuck]; gone = !in })
		return gone
	}
	for i := 0; i < 20000 && !evicted(); i++ {
		sender.send(map[string]any{"type": "say", "room": lobby, "text": text})
	}
	if !evicted() {
		t.Fatal("the stalled reader was never evicted")
	}
	var code int
	h.do(func() { code = stuck.hubClose.code })
	if code != closeTooSlow.code {
		t.Fatalf("dropped with close code %d, want the queue eviction's %d", code, closeTooSlow.code)
	}
	if stuck.writingSince.Load() == 0 {
		t.Fatal("the writer was not inside a write when the queue evicted it; the test shows nothing")
	}
	select {
	case <-stuck.closeSent:
	case <-time.After(5 * time.Second):
		t.Fatal("the evicted connection's write was never ended")
	}
	waitFor(t, "the hub to forget the dropped connection", func() (empty bool) {
		h.do(func() { empty = len(h.leaving) == 0 })
		return empty
	})
	if n := testutil.ToFloat64(ts.App.metrics.evictions); n != 1 {
		t.Fatalf("%v evictions, want 1", n)
	}
	sender.conn.Close()
	<-drained
}

// TestWriteFrameAllocatesNothing: writing an event allocates nothing, and coalescing
// adds nothing of ours. At a hundred thousand frames a second an allocation per frame is
// garbage-collector work that shows in the latency of everyone (see writeBufferSize).
func TestWriteFrameAllocatesNothing(t *testing.T) {
	up := websocket.Upgrader{ReadBufferSize: readBufferSize, WriteBufferSize: writeBufferSize}
	conns := make(chan *websocket.Conn, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, err := up.Upgrade(w, r, nil); err == nil {
			conns <- c
		}
	}))
	defer srv.Close()
	peer, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	// The peer swallows raw bytes: parsing frames would allocate, and the count is
	// process-wide.
	go io.Copy(io.Discard, peer.UnderlyingConn())
	conn := <-conns
	defer conn.Close()
	c := &Client{conn: conn, send: make(chan *[]byte, 32), replies: make(chan *[]byte, replyQueue), app: &App{metrics: newMetrics()}}
	event := []byte(`{"type":"message","room":"lobby","id":12345,"ts":1764000000000,"from":{"id":"dev:someone","name":"someone"},"text":"` + strings.Repeat("x", 64) + `"}`)
	shared := &event
	write := func() {
		if err := c.writeFrame(event, false); err != nil {
			t.Fatal(err)
		}
	}
	if n := testing.AllocsPerRun(2000, write); n != 0 {
		t.Errorf("a lone event: %v allocations per frame, want 0", n)
	}
	// Four events (880 bytes) outgrow the write buffer: the library hands the rest to
	// writev, and its net.Buffers costs two allocations a frame, half one per event.
	if n := testing.AllocsPerRun(2000, func() {
		c.send <- shared
		c.send <- shared
		c.replies <- shared
		write()
	}); n > 2 {
		t.Errorf("four coalesced events: %v allocations per frame, want at most 2", n)
	}
	if c.frames == 0 && testutil.ToFloat64(c.app.metrics.framesOut) == 0 {
		t.Error("frames were not counted")
	}
}

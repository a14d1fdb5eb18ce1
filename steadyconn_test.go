package main

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// tcpPair is a connected loopback TCP pair: the server's side and the peer's.
func tcpPair(t testing.TB) (*net.TCPConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sc.Close(); peer.Close() })
	return sc.(*net.TCPConn), peer
}

// TestSteadyConnDeadlines: skipping a write deadline that changes nothing must never
// skip one that does. A deadline in the past makes the next write time out; clearing
// it makes writes work again. A steadyConn that skipped every call would let the first
// write through; one that forgot what it set would skip the clearing and time out.
func TestSteadyConnDeadlines(t *testing.T) {
	tc, peer := tcpPair(t)
	go io.Copy(io.Discard, peer)
	s := &steadyConn{TCPConn: tc}
	if _, err := s.Write([]byte("a")); err != nil {
		t.Fatalf("write without a deadline: %v", err)
	}
	if err := s.SetWriteDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("b")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past its deadline: %v, want a timeout", err)
	}
	if err := s.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("c")); err != nil {
		t.Fatalf("write after the deadline was cleared: %v", err)
	}
	// The same through SetDeadline, which sets both.
	if err := s.SetDeadline(time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("d")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past SetDeadline's deadline: %v, want a timeout", err)
	}
	if err := s.SetWriteDeadline(time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write([]byte("e")); err != nil {
		t.Fatalf("write after SetDeadline's deadline was cleared: %v", err)
	}
}

// TestServerConnIsSteady: the server's own WebSocket connections sit on a steadyConn,
// and a frame larger than the write buffer (the gathered-write path) and a close frame
// (which sets a real deadline) both reach the peer intact.
func TestServerConnIsSteady(t *testing.T) {
	var mu sync.Mutex
	var kinds []string
	testHookPump = func(c *Client, p string) {
		if p != "write" {
			return
		}
		_, steady := c.conn.UnderlyingConn().(*steadyConn)
		mu.Lock()
		kinds = append(kinds, map[bool]string{true: "steady", false: "plain"}[steady])
		mu.Unlock()
	}
	ts := startServer(t, nil)
	t.Cleanup(func() { testHookPump = nil })
	alice := ts.user(t, "alice")
	alice.send(map[string]any{"type": "join", "room": "lobby"})
	alice.expect("joined")
	long := strings.Repeat("x", 3*writeBufferSize)
	alice.send(map[string]any{"type": "say", "room": "lobby", "text": long})
	for {
		ev := alice.expect("message")
		if ev["text"] == long {
			break
		}
	}
	mu.Lock()
	got := strings.Join(kinds, ",")
	mu.Unlock()
	if got != "steady" {
		t.Fatalf("write pumps saw %q, want one steady connection", got)
	}
	ts.stop()
	alice.expectClose(websocket.CloseGoingAway)
}

// BenchmarkFrameWrite is the library's server-side write of one chat event over
// loopback TCP, on the plain socket and on a steadyConn: the difference is the
// per-frame deadline call the steadyConn skips.
func BenchmarkFrameWrite(b *testing.B) {
	msg := []byte(`{"type":"message","room":"lobby","id":123456,"ts":1764672000000,"from":{"id":"dev:alice","name":"alice"},"text":"` + strings.Repeat("x", 64) + `"}`)
	for _, steady := range []bool{false, true} {
		name := map[bool]string{false: "plain", true: "steady"}[steady]
		b.Run(name, func(b *testing.B) {
			up := websocket.Upgrader{ReadBufferSize: readBufferSize, WriteBufferSize: writeBufferSize}
			got := make(chan *websocket.Conn, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var hw http.ResponseWriter = w
				if steady {
					hw = steadyHijacker{w}
				}
				c, err := up.Upgrade(hw, r, nil)
				if err != nil {
					b.Error(err)
					return
				}
				got <- c
			}))
			defer srv.Close()
			peer, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
			if err != nil {
				b.Fatal(err)
			}
			defer peer.Close()
			go io.Copy(io.Discard, peer.UnderlyingConn())
			c := <-got
			defer c.Close()
			b.ReportAllocs()
			b.SetBytes(int64(len(msg)))
			b.ResetTimer()
			for b.Loop() {
				if err := c.WriteMessage(websocket.TextMessage, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkWriteDeadline is the call the library makes before every frame, setting the
// deadline to none again: on the plain socket it goes into the runtime's poller, on a
// steadyConn it is a comparison.
func BenchmarkWriteDeadline(b *testing.B) {
	tc, _ := tcpPair(b)
	for _, c := range []struct {
		name string
		conn net.Conn
	}{{"plain", tc}, {"steady", &steadyConn{TCPConn: tc}}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := c.conn.SetWriteDeadline(time.Time{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

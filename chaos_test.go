package main

import (
	"encoding/json"
	"errors"
	"math/rand"
	"strconv"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// endChaosConn finds out how a hostile connection ends. It asks for a barrier
// (`rooms`); a server that closed the connection has sent its close frame first, and
// its code is returned. A connection still open answers the barrier (or refuses it
// with an error naming its ref); the test then closes it with 1000 and returns the
// server's echo. Anything else (a reset, silence) fails the test.
func endChaosConn(t *testing.T, c *wsClient) (int, string) {
	t.Helper()
	c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
	c.conn.WriteMessage(websocket.TextMessage, []byte(`{"type":"rooms","ref":"chaos-end"}`))
	closing := false
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) {
				t.Fatalf("hostile connection ended without a close frame: %v", err)
			}
			return ce.Code, ce.Text
		}
		if !closing && (ev["type"] == "rooms" || ev["ref"] == "chaos-end") {
			closing = true
			msg := websocket.FormatCloseMessage(websocket.CloseNormalClosure, "")
			if err := c.conn.WriteControl(websocket.CloseMessage, msg, time.Now().Add(2*time.Second)); err != nil {
				t.Fatalf("closing a live hostile connection: %v", err)
			}
		}
	}
}

// TestChaosClientsCannotHurtOthers throws hundreds of random and half-valid frames at
// the server from hostile connections while two users talk. Every hostile connection
// ends with a close frame: one of the documented codes, or, if it stayed open, the
// echo of the test's own 1000; the users get every
// message; the server keeps accepting. The seed is fixed so a failure can be replayed.
func TestChaosClientsCannotHurtOthers(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		generousLimits(c)
		c.FileMaxBytes, c.FileBurst = 4<<10, 1<<20
		c.IPHandshakeBurst = 1000
	})
	rng := rand.New(rand.NewSource(1))
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	fragments := []string{`{"type":"say","room":"lobby","text":`, `{"type":"join","room":`, `{"type":"file","room":"lobby","name":"a.png","mime":"image/png","size":`,
		`{"type":"set_settings","settings":`, `{"type":"kick","room":"lobby","user":"dev:alice"}`, `{"type":"create","room":"x","private":true}`,
		`{"type":"invite","room":"x","email":"a@b"}`, `{"type":"leave","room":"lobby"}`, `"\u202e"`, `null`, `[]`, `{}`, `1e999`, `"\xff"`, "\n", `}}}`}
	allowed := map[int]bool{websocket.CloseUnsupportedData: true, websocket.CloseInvalidFramePayloadData: true,
		websocket.ClosePolicyViolation: true, websocket.CloseMessageTooBig: true}
	cookie := devLogin(t, ts.URL, "chaos0")
	sent, conns := 0, 0
	for sent < 600 && conns < 150 {
		conns++
		c := ts.dial(t, cookie)
		for sent < 600 {
			var frame []byte
			mt := websocket.TextMessage
			switch rng.Intn(8) {
			case 0:
				frame = make([]byte, rng.Intn(64))
				rng.Read(frame)
			case 1:
				mt = websocket.BinaryMessage
				frame = make([]byte, rng.Intn(5000))
				rng.Read(frame)
			default:
				for k := rng.Intn(4) + 1; k > 0; k-- {
					frame = append(frame, fragments[rng.Intn(len(fragments))]...)
				}
			}
			c.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if err := c.conn.WriteMessage(mt, frame); err != nil {
				break // closed by the server: checked below
			}
			sent++
			if mt == websocket.BinaryMessage || rng.Intn(20) == 0 {
				break // the server may be closing this one: see how it ended
			}
		}
		// Every hostile connection ends with a close frame whose code is checked:
		// the server's own (one of the allowed codes), or, when the server kept it
		// open, the echo of ours once a barrier shows it still answers.
		if code, text := endChaosConn(t, c); code != websocket.CloseNormalClosure && !allowed[code] {
			t.Fatalf("chaos connection %d closed with %d (%s)", conns, code, text)
		}
		c.conn.Close()
		// Meanwhile the conversation goes on untouched.
		text := "still fine " + strconv.Itoa(conns)
		alice.mustAck(map[string]any{"type": "say", "room": "lobby", "text": text})
		for {
			m := bob.expect("message")
			if m["text"] == text {
				break
			}
			if f := m["from"].(map[string]any); f["id"] == "dev:alice" {
				b, _ := json.Marshal(m)
				t.Fatalf("bob got an unexpected message from alice: %s", b)
			}
		}
	}
	if sent < 500 {
		t.Fatalf("only %d hostile frames sent", sent)
	}
	// And the server still takes new users.
	carol := ts.user(t, "carol")
	carol.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "hello after the storm"})
}

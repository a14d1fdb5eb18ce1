package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/gorilla/websocket"
)

// relay is a test-only man in the middle between a page and the real hub, playing a
// server that tampers with what it relays: HTTP goes through unchanged, and each JSON
// line the hub sends the page over /ws goes through rewrite, which returns the lines to
// deliver instead (none drops it, several duplicate or inject). Nothing in the
// production path changes; the page cannot tell the relay from the hub.
type relay struct {
	URL string
	mu  sync.Mutex
	// rewrite, when set, decides each hub-to-page line (nil: pass it on).
	rewrite func(ev map[string]any, line []byte) [][]byte
}

// startRelay serves a relay in front of ts until the test ends.
func startRelay(t *testing.T, ts *testServer) *relay {
	t.Helper()
	up, _ := url.Parse(ts.URL)
	rl := &relay{}
	proxy := httputil.NewSingleHostReverseProxy(up)
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ws" {
			proxy.ServeHTTP(w, r)
			return
		}
		hdr := http.Header{}
		if c := r.Header.Get("Cookie"); c != "" {
			hdr.Set("Cookie", c)
		}
		hub, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(ts.URL, "http")+"/ws", hdr)
		if err != nil {
			http.Error(w, "hub: "+err.Error(), http.StatusBadGateway)
			return
		}
		page, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			hub.Close()
			return
		}
		go rl.pump(page, hub, nil)
		rl.pump(hub, page, rl.rewriteFrame)
	}))
	t.Cleanup(srv.Close)
	rl.URL = srv.URL
	return rl
}

// pump copies frames from src to dst until either side closes, rewriting text frames
// with edit when it is set.
func (rl *relay) pump(src, dst *websocket.Conn, edit func([]byte) []byte) {
	defer src.Close()
	defer dst.Close()
	for {
		mt, data, err := src.ReadMessage()
		if err != nil {
			return
		}
		if mt == websocket.TextMessage && edit != nil {
			if data = edit(data); len(data) == 0 {
				continue
			}
		}
		if dst.WriteMessage(mt, data) != nil {
			return
		}
	}
}

// rewriteFrame passes each line of a hub frame through rewrite.
func (rl *relay) rewriteFrame(frame []byte) []byte {
	rl.mu.Lock()
	f := rl.rewrite
	rl.mu.Unlock()
	if f == nil {
		return frame
	}
	var out [][]byte
	for _, line := range bytes.Split(frame, []byte("\n")) {
		var ev map[string]any
		if json.Unmarshal(line, &ev) != nil {
			out = append(out, line)
			continue
		}
		out = append(out, f(ev, line)...)
	}
	return bytes.Join(out, []byte("\n"))
}

// set makes f decide the hub's lines from now on (nil: relay them as they are).
func (rl *relay) set(f func(ev map[string]any, line []byte) [][]byte) {
	rl.mu.Lock()
	rl.rewrite = f
	rl.mu.Unlock()
}

// once makes f decide the next hub line that match accepts, and only that one.
func (rl *relay) once(match func(ev map[string]any) bool, f func(ev map[string]any, line []byte) [][]byte) {
	var done bool
	rl.set(func(ev map[string]any, line []byte) [][]byte {
		if done || !match(ev) {
			return [][]byte{line}
		}
		done = true
		return f(ev, line)
	})
}

// encodeEvent is an event as one JSON line.
func encodeEvent(t *testing.T, ev map[string]any) []byte {
	b, err := json.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

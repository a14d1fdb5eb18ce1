package main

// One load connection: login, dial, the read loop that does the accounting,
// and the send loop for senders.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// Per-step time limits, so that a stuck server cannot hold a run forever.
const (
	loginTimeout     = 10 * time.Second
	handshakeTimeout = 10 * time.Second
	joinTimeout      = 15 * time.Second
	writeTimeout     = 5 * time.Second
	latBufSize       = 256
)

// endpoint is everything needed to open connections from one source
// address: the HTTP client for the login and the WebSocket dialer, both bound
// to that address.
type endpoint struct {
	ip     net.IP
	http   *http.Client
	dialer *websocket.Dialer
}

// newEndpoint binds both clients to ip. Keep-alives are off so that logins
// leave no idle HTTP connections behind to inflate the server's memory, and
// proxies are off so that nothing in the environment can send the load
// anywhere but the loopback target.
func newEndpoint(ip net.IP, writePool websocket.BufferPool) *endpoint {
	nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: ip}, Timeout: handshakeTimeout}
	tr := &http.Transport{
		Proxy:             nil,
		DialContext:       nd.DialContext,
		DisableKeepAlives: true,
	}
	return &endpoint{
		ip: ip,
		http: &http.Client{
			Transport: tr,
			Timeout:   loginTimeout,
			// Keep the 303 and its Set-Cookie instead of following it.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		dialer: &websocket.Dialer{
			NetDialContext:   nd.DialContext,
			HandshakeTimeout: handshakeTimeout,
			WriteBufferPool:  writePool,
		},
	}
}

// loadConn is one client connection. The read loop owns tally, events,
// errors and the latency buffer; the send loop owns sent. Both are read by
// the runner only after the loops have finished.
type loadConn struct {
	idx    int
	r      *runner
	ws     *websocket.Conn
	ready  chan struct{} // closed when the connection is in the room
	done   chan struct{} // closed when the read loop ends
	isRdy  bool
	live   atomic.Int64 // fresh deliveries, read while the run is going
	tally  *Tally
	events map[string]int64
	errs   map[string]int64
	acks   int64
	lat    []int64
	endErr error // why the read loop ended
	buf    bytes.Buffer

	sent    int64
	sendErr error
	sig     *signer // -sign: this sender's device (sign.go)
}

// login performs the development login for one client and returns the
// cookies of the 303 answer, whatever their names.
func login(ctx context.Context, ep *endpoint, t *target, name string) ([]*http.Cookie, string) {
	form := url.Values{"name": {name}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.base+"/login/dev", strings.NewReader(form.Encode()))
	if err != nil {
		return nil, "login:" + classifyErr(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// A browser sends Origin on a form POST; a server with CSRF checks expects it.
	req.Header.Set("Origin", t.origin)
	resp, err := ep.http.Do(req)
	if err != nil {
		return nil, "login:" + classifyErr(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther && resp.StatusCode != http.StatusFound {
		return nil, "login:" + strconv.Itoa(resp.StatusCode)
	}
	cookies := resp.Cookies()
	if len(cookies) == 0 {
		return nil, "login:no-cookie"
	}
	return cookies, ""
}

// cookieHeader renders cookies for the handshake request.
func cookieHeader(cookies []*http.Cookie) string {
	parts := make([]string, 0, len(cookies))
	for _, c := range cookies {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// parseCookieFlag turns -cookie into cookies: "name=value" as given, or a
// bare value under the name "session".
func parseCookieFlag(s string) []*http.Cookie {
	if s == "" {
		return nil
	}
	if name, value, ok := strings.Cut(s, "="); ok && name != "" {
		return []*http.Cookie{{Name: name, Value: value}}
	}
	return []*http.Cookie{{Name: "chat_session", Value: s}}
}

// dial opens the WebSocket; a refusal is returned as a short reason such as
// "ws:429" so that the report can count refusals by status.
func dial(ctx context.Context, ep *endpoint, t *target, cookies []*http.Cookie) (*websocket.Conn, string) {
	h := http.Header{}
	h.Set("Origin", t.origin)
	if len(cookies) > 0 {
		h.Set("Cookie", cookieHeader(cookies))
	}
	ws, resp, err := ep.dialer.DialContext(ctx, t.wsURL, h)
	if err != nil {
		if resp != nil {
			return nil, "ws:" + strconv.Itoa(resp.StatusCode)
		}
		return nil, "ws:" + classifyErr(err)
	}
	return ws, ""
}

// classifyErr shortens a network error to a stable word, so that refusals
// group into a few report lines instead of one per port number.
func classifyErr(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "conn-refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "conn-reset"
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return "addr-not-avail"
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return "too-many-files"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	case errors.Is(err, websocket.ErrBadHandshake):
		return "bad-handshake"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return "other"
}

// closeReason names why a read loop ended, for the report's close counts.
func closeReason(err error) string {
	var ce *websocket.CloseError
	if errors.As(err, &ce) {
		return "close:" + strconv.Itoa(ce.Code)
	}
	return classifyErr(err)
}

// readLoop reads frames until the connection ends, splitting each on '\n'
// (both servers coalesce) and accounting every line. It reuses one buffer
// per connection because a busy run reads hundreds of thousands of frames a
// second on a machine it shares with the server.
func (c *loadConn) readLoop() {
	defer close(c.done)
	defer c.flushLatency()
	if !c.r.modified {
		c.markReady()
	}
	for {
		_, rd, err := c.ws.NextReader()
		if err != nil {
			c.endErr = err
			return
		}
		c.buf.Reset()
		if _, err := c.buf.ReadFrom(rd); err != nil {
			c.endErr = err
			return
		}
		frame := c.buf.Bytes()
		now := time.Now().UnixNano()
		for len(frame) > 0 {
			line := frame
			if i := bytes.IndexByte(frame, '\n'); i >= 0 {
				line, frame = frame[:i], frame[i+1:]
			} else {
				frame = nil
			}
			if len(line) == 0 {
				continue
			}
			if c.r.modified {
				c.handleEvent(line, now)
			} else {
				c.handleText(line, now)
			}
		}
	}
}

// markReady signals once that this connection is in the room.
func (c *loadConn) markReady() {
	if !c.isRdy {
		c.isRdy = true
		close(c.ready)
	}
}

// handleText accounts one delivery of the original protocol: the line is the
// sender's text itself.
func (c *loadConn) handleText(text []byte, now int64) {
	sender, seq, sentAt, ok := ParsePayload(text)
	if !ok {
		c.tally.Foreign++
		return
	}
	if c.tally.Observe(sender, seq) {
		c.live.Add(1)
		c.recordLatency(now - sentAt)
	}
}

// Keys the fast path looks for in the modified protocol's JSON lines.
var (
	keyType = []byte(`"type":"`)
	keyRoom = []byte(`"room":"`)
	keyText = []byte(`"text":"`)
)

// fastField returns the raw string value of a top-level key in one of the
// server's compact JSON lines, or false when it is absent or contains
// escapes (then the caller decodes properly). A key pattern cannot match
// inside a string value because a quote there is always escaped. This keeps
// full JSON decoding off the hot path, which matters when the load generator
// shares two cores with the server.
func fastField(line, key []byte) ([]byte, bool) {
	i := bytes.Index(line, key)
	if i < 0 {
		return nil, false
	}
	v := line[i+len(key):]
	j := bytes.IndexByte(v, '"')
	if j < 0 || bytes.IndexByte(v[:j], '\\') >= 0 {
		return nil, false
	}
	return v[:j], true
}

// event is the slow-path decoding of a server line: only the fields the
// load generator reads.
type event struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Text string `json:"text"`
	Code string `json:"code"`
}

// handleEvent accounts one JSON object of the modified protocol.
func (c *loadConn) handleEvent(line []byte, now int64) {
	typ, ok := fastField(line, keyType)
	room, rok := fastField(line, keyRoom)
	if !ok || !rok && bytes.Equal(typ, []byte("message")) {
		c.slowEvent(line, now)
		return
	}
	switch string(typ) {
	case "message":
		if string(room) != c.r.cfg.Room {
			c.events["message-other-room"]++
			return
		}
		text, ok := fastField(line, keyText)
		if !ok {
			c.slowEvent(line, now)
			return
		}
		c.handleText(text, now)
	case "ack":
		c.acks++
		c.signAck()
	case "joined":
		if rok && string(room) == c.r.cfg.Room {
			c.markReady()
		}
		c.events["joined"]++
	case "error":
		c.slowEvent(line, now)
	default:
		c.events[string(typ)]++
	}
}

// slowEvent decodes a line fully: errors (to read their code) and anything
// the fast path could not read.
func (c *loadConn) slowEvent(line []byte, now int64) {
	var ev event
	if err := json.Unmarshal(line, &ev); err != nil || ev.Type == "" {
		c.events["undecodable"]++
		return
	}
	switch ev.Type {
	case "message":
		if ev.Room != c.r.cfg.Room {
			c.events["message-other-room"]++
			return
		}
		c.handleText([]byte(ev.Text), now)
	case "error":
		code := ev.Code
		if code == "" {
			code = "(none)"
		}
		c.errs[code]++
		c.signRefused(code)
	case "ack":
		c.acks++
		c.signAck()
	case "joined":
		if ev.Room == c.r.cfg.Room {
			c.markReady()
		}
		c.events["joined"]++
	default:
		c.events[ev.Type]++
	}
}

// recordLatency buffers a sample and flushes the buffer into a shared,
// locked histogram shard every latBufSize samples, so the lock is taken
// rarely and per-connection memory stays small.
func (c *loadConn) recordLatency(ns int64) {
	c.lat = append(c.lat, ns)
	if len(c.lat) >= latBufSize {
		c.flushLatency()
	}
}

// flushLatency moves buffered samples into this connection's shard.
func (c *loadConn) flushLatency() {
	if len(c.lat) == 0 {
		return
	}
	s := &c.r.latShards[c.idx%len(c.r.latShards)]
	s.mu.Lock()
	for _, v := range c.lat {
		s.h.Record(v)
	}
	s.mu.Unlock()
	c.lat = c.lat[:0]
}

// sendLoop sends one load message every interval from start (a per-sender
// phase offset, so senders do not fire in lockstep) until ctx ends. A ticker
// drops ticks it cannot keep up with, so a slow server lowers the send count
// instead of building a burst.
func (c *loadConn) sendLoop(ctx context.Context, senderIdx int, start time.Time, interval time.Duration) {
	cfg := c.r.cfg
	select {
	case <-time.After(time.Until(start)):
	case <-ctx.Done():
		return
	}
	tk := time.NewTicker(interval)
	defer tk.Stop()
	var buf, text []byte
	prefix := []byte(`{"type":"say","room":"` + cfg.Room + `","text":"`)
	for seq := 0; ; seq++ {
		buf = buf[:0]
		if c.sig != nil {
			text = EncodePayload(text[:0], senderIdx, seq, time.Now().UnixNano(), cfg.Size)
			buf = c.sig.appendSay(buf, cfg.Room, text)
		} else {
			if c.r.modified {
				buf = append(buf, prefix...)
			}
			buf = EncodePayload(buf, senderIdx, seq, time.Now().UnixNano(), cfg.Size)
			if c.r.modified {
				buf = append(buf, `"}`...)
			}
		}
		_ = c.ws.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := c.ws.WriteMessage(websocket.TextMessage, buf); err != nil {
			c.sendErr = err
			return
		}
		c.sent++
		select {
		case <-tk.C:
		case <-ctx.Done():
			return
		}
	}
}

// closeConn ends the connection with a normal close frame and then the
// socket; the read loop sees the error and finishes.
func (c *loadConn) closeConn() {
	_ = c.ws.WriteControl(websocket.CloseMessage,
		websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(200*time.Millisecond))
	_ = c.ws.Close()
}

// latShard is one lock-protected part of the run's latency histogram.
type latShard struct {
	mu sync.Mutex
	h  Histogram
}

// clientName is the development-login name of client i, unique per run.
func clientName(i int) string {
	return fmt.Sprintf("load-%06d", i)
}

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"modified-chat/internal/crash"
)

// Connection timing, as in the original example.
const (
	// writeWait is the time allowed to write one frame to the peer. The hub's write
	// watchdog enforces it (see Hub.checkWrites), to the second.
	writeWait = 10 * time.Second
	// pongWait is the time allowed to read the next pong from the peer.
	pongWait = 60 * time.Second
	// pingPeriod sends pings at this period. Must be less than pongWait.
	pingPeriod = (pongWait * 9) / 10
	// handshakeTimeout bounds the upgrade itself.
	handshakeTimeout = 10 * time.Second
	// replyQueue is the length of the queue of direct replies from readPump (errors);
	// a client that lets it fill is flooding and loses some of its own error events.
	replyQueue = 8
	// closeGrace bounds how long a connection being closed waits for the peer's close
	// frame, reading and discarding what it still sends.
	closeGrace = 2 * time.Second
	// drainBudget bounds the bytes discarded after a close for an oversize frame.
	drainBudget = 4 << 20
)

// Buffer sizes. Reads are small (chat lines). Each connection keeps a small write
// buffer of its own, big enough for a typical event and its frame header, which then
// go out in one write(2); WriteMessage hands a longer payload's rest to the kernel in
// the same writev, so a bigger buffer would only cost idle memory. (The library's
// shared write-buffer pool was tried: its Put boxes a struct, an allocation per
// frame, and at a hundred thousand frames a second the garbage collector's work hurt
// more than the idle memory saved. A 256-byte buffer sent half of all chat events
// through the slower writev.)
const (
	readBufferSize  = 512
	writeBufferSize = 512
	// framePoolMax is the largest coalescing buffer kept for reuse.
	framePoolMax = 64 << 10
)

// framePool holds buffers for coalescing several queued events into one frame; they
// are taken only when more than one event is waiting, and returned after the write.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// readBufferPool holds buffers for assembling one incoming frame; returned after use.
var readBufferPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// identity is who is on the other end of a connection, from their session.
type identity struct {
	ID        string // stable: issuer + subject, or dev:<name>
	Name      string // display name
	Email     string
	SessionID string
	Dev       bool
	Expires   time.Time
}

// Client is the middleman between one WebSocket connection and the hub.
type Client struct {
	hub  *Hub
	conn *websocket.Conn

	// send is the outbound queue of encoded events. Only the hub sends on it and
	// closes it; writePump drains it. It holds pointers, shared by every recipient of
	// a broadcast: a slot costs 8 bytes instead of a slice's 24, which counts when
	// thousands of idle queues sit waiting.
	send chan *[]byte
	// replies carries events readPump answers itself (errors from the filter and the
	// rate limiter), and two markers: nil, a close readPump asks for (readClose says
	// which), and timerTick, from the ping timer. In one queue the errors that explain
	// a close are written before it, and writePump waits on two channels only, as the
	// original does: every case costs each wakeup, and there is one per delivery. It is
	// never closed. writePump closes closeSent once it has written its last frame.
	replies       chan *[]byte
	readClose     closeFrame
	closeSent     chan struct{}
	closeSentOnce sync.Once
	// timer fires for the next ping, or the end of the session if that comes first.
	timer *time.Timer
	// writingSince is when the write in progress began (Unix nanoseconds), 0 between
	// writes; the hub's watchdog closes a connection stuck in one write too long.
	writingSince atomic.Int64

	user     identity
	userJSON []byte // {"id":..,"name":..}, encoded once
	fromTail []byte // `"from":{...},"text":` prefix for the message tail
	limiter  *connLimiter
	ticket   *ticket

	// pendingFile is the accepted announcement whose bytes the next binary frame
	// carries; discardBinary says the next binary frame belongs to a refused one.
	// Both are used by readPump only.
	pendingFile   *envelope
	discardBinary bool
	// pendingMLS is the accepted E2EE announcement (`bin`) whose bytes the next
	// binary frame carries; discardMLS says the next one belongs to a refused one.
	// Used by readPump only (e2ee_wire.go).
	pendingMLS *envelope
	discardMLS bool

	// closePending and tickPending are set by writePump when it takes a marker from
	// the replies queue; it acts on them after the frame it is writing. frames counts
	// frames not yet added to the frames metric. All three are writePump's own.
	closePending bool
	tickPending  bool
	frames       int

	// queued is the bytes of the events in send and backlog, the event being written
	// included: the hub adds each event as it queues it, writePump takes it off once
	// written (see Hub.enqueue).
	queued atomic.Int64

	// Fields below are owned by the hub goroutine.
	rooms map[string]*room
	// device is the key-directory device this connection speaks for in E2EE rooms,
	// set by kp_upload.
	device string
	// sid numbers the connection on its node, in cluster mode, once it sends an MLS
	// message: other nodes see "<node>:<sid>" on the entry, and this node leaves the
	// sender out of the event (e2eecluster.go).
	sid    uint64
	doomed bool // already queued for eviction
	// backlog holds events that did not fit in send (see Hub.enqueue).
	backlog []*[]byte
	// histBusy says a history page is being read for this connection; histQueue holds
	// the requests waiting behind it (see Hub.sendHistory). fetching says a fetch_file
	// is being answered.
	histBusy  bool
	histQueue []historyLoad
	fetching  bool
	// hubClose is set by the hub before it closes send; writePump reads it after
	// seeing send closed (the close orders the two).
	hubClose closeFrame

	app *App
	id  string // connection number, for logs
}

// readPump pumps messages from the WebSocket connection to the hub.
//
// The application runs readPump in a per-connection goroutine. It ensures that there
// is at most one reader on a connection by executing all reads from this goroutine.
// Every check that needs no shared state (size, frame type, UTF-8, rate, envelope,
// text cleaning) runs here, on all cores, before anything reaches the hub.
//
// A panic here (a bug in a check) costs this connection only: it is logged with the
// stack, counted (chat_pump_panics_total{pump="read"}) and the peer is closed with
// 1011 through writePump, as a failed command is; the hub and every other connection
// go on, since nothing shared was being changed (the hub owns all of that).
func (c *Client) readPump() {
	defer func() {
		if v := recover(); v != nil {
			c.pumpPanicked("read", v)
			c.closeWith(closeInternal, false)
		}
		select {
		case c.hub.unregister <- c:
		case <-c.hub.stopped:
		}
		c.conn.Close()
		c.app.conns.Done()
	}()
	cfg := c.app.settings()
	// The library enforces the limit on the bytes of each frame as they arrive;
	// readText enforces it again on the message as read, which is what counts when
	// compression is on (a small compressed frame can inflate enormously).
	c.conn.SetReadLimit(cfg.ReadLimit)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(c.onPong)
	c.conn.SetPingHandler(c.onPing)
	if testHookPump != nil {
		testHookPump(c, "read")
	}
	for {
		mt, r, err := c.conn.NextReader()
		if err != nil {
			c.readFailed(err)
			return
		}
		if next := c.app.settings(); next != cfg {
			// An admin changed the settings: apply them to this live connection.
			cfg = next
			c.conn.SetReadLimit(cfg.ReadLimit)
		}
		var ok bool
		if mt == websocket.BinaryMessage {
			ok = c.handleBinary(r, cfg)
		} else {
			ok = c.readText(r, cfg)
		}
		if !ok {
			return
		}
	}
}

// onPong extends the read deadline, as in the original. Pongs answer our pings (one a
// minute); unasked-for ones count like pings.
func (c *Client) onPong(data string) error {
	if _, _, abusive := c.limiter.allow(len(data) + 2); abusive {
		return errPingFlood
	}
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	return nil
}

// onPing answers a ping with a pong. DoS hardening: a ping costs the server a pong, so
// pings draw from the same buckets as messages. Over the limit a ping goes unanswered;
// sustained, it ends the connection like any other flood.
func (c *Client) onPing(data string) error {
	ok, _, abusive := c.limiter.allow(len(data) + 2)
	if abusive {
		return errPingFlood
	}
	if !ok {
		c.app.metrics.rateLimited.Inc()
		return nil
	}
	if err := c.conn.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(writeWait)); err != nil && !errors.Is(err, websocket.ErrCloseSent) {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil
		}
		return err
	}
	return nil
}

// readFailed classifies the error that ended the reads: a ping flood (closed 1008), an
// oversize frame (the library has sent 1009; let it reach the peer), or the peer going
// away, logged only when unexpected, as in the original.
func (c *Client) readFailed(err error) {
	switch {
	case errors.Is(err, errPingFlood):
		c.app.metrics.abuseCloses.Inc()
		c.closeWith(closePingFlood, false)
	case errors.Is(err, websocket.ErrReadLimit):
		c.app.metrics.rejected.WithLabelValues("too_big").Inc()
		c.app.metrics.closes.WithLabelValues(strconv.Itoa(closeMessageTooBig.code)).Inc()
		c.drainRaw()
	case websocket.IsUnexpectedCloseError(err, websocket.CloseGoingAway, websocket.CloseNormalClosure, websocket.CloseNoStatusReceived):
		c.app.log.Debug("connection ended", "conn", c.id, "err", err)
	}
}

// readText reads one text frame within the read limit, checks it is UTF-8 (the library
// does not: a browser would reject what we relayed, and other clients' parsers may do
// worse) and hands it to handleFrame. It returns false when the connection must end.
func (c *Client) readText(r io.Reader, cfg *Config) bool {
	buf := readBufferPool.Get().(*bytes.Buffer)
	defer readBufferPool.Put(buf)
	buf.Reset()
	n, err := buf.ReadFrom(io.LimitReader(r, cfg.ReadLimit+1))
	if err != nil || n > cfg.ReadLimit {
		if errors.Is(err, websocket.ErrReadLimit) || n > cfg.ReadLimit {
			c.app.metrics.rejected.WithLabelValues("too_big").Inc()
			c.closeWith(closeMessageTooBig, false)
		}
		return false
	}
	data := buf.Bytes()
	if !utf8.Valid(data) {
		c.app.metrics.rejected.WithLabelValues("bad_utf8").Inc()
		c.closeWith(closeBadUTF8, true)
		return false
	}
	return c.handleFrame(data, cfg)
}

// handleFrame handles each newline-separated object in one text frame. It returns false
// when the connection must end.
func (c *Client) handleFrame(data []byte, cfg *Config) bool {
	if len(bytes.TrimSpace(data)) == 0 {
		// A blank frame still costs the server a read: it is a message like any
		// other, so a flood of them meets the buckets (and gets bad_json).
		return c.handleLine(data, cfg)
	}
	for len(data) > 0 {
		line := data
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			line, data = data[:i], data[i+1:]
		} else {
			data = nil
		}
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		if !c.handleLine(line, cfg) {
			return false
		}
	}
	return true
}

// handleLine handles one object of a frame: buckets, envelope, then the hub. It
// returns false when the connection must end.
func (c *Client) handleLine(line []byte, cfg *Config) bool {
	c.app.metrics.messagesIn.Inc()
	if c.limiter.cfg != cfg {
		c.limiter.setConfig(cfg)
	}
	ok, retry, abusive := c.limiter.allow(len(line))
	if !ok {
		c.app.metrics.rateLimited.Inc()
		if abusive {
			c.app.metrics.abuseCloses.Inc()
			c.app.log.Info("closing abusive connection", "conn", c.id, "user", c.user.ID)
			c.closeWith(closeAbuse, true)
			return false
		}
		typ, ref := peekEnvelope(line)
		c.reply(rateLimitedEvent(ref, retry))
		if typ == "file" {
			c.discardNextFile(cfg)
		}
		return true
	}
	env, perr := c.app.filter.parseEnvelope(line)
	if perr != nil {
		c.app.metrics.rejected.WithLabelValues(perr.Code).Inc()
		ref, room := "", ""
		if env != nil {
			ref, room = env.Ref, env.Room
			if validRoomRef(room) != nil {
				room = ""
			}
		}
		c.reply(errorEvent(perr.Code, perr.Message, ref, room))
		if env != nil && env.Type == "file" {
			c.discardNextFile(cfg)
		}
		return true
	}
	if env.Type == "file" {
		c.announceFile(env, cfg)
		return true
	}
	if env.Bin > 0 {
		c.announceMLS(env)
		return true
	}
	if env.Type == "kp_upload" || env.Type == "mls_group_init" {
		if perr := c.checkKeyPackages(env); perr != nil {
			c.app.metrics.rejected.WithLabelValues(perr.Code).Inc()
			c.reply(errorEvent(perr.Code, perr.Message, env.Ref, env.Room))
			return true
		}
	}
	if env.sig != nil && env.Type == "say" {
		if perr := c.verifySigned(env, nil); perr != nil {
			c.app.metrics.rejected.WithLabelValues(perr.Code).Inc()
			c.reply(errorEvent(perr.Code, perr.Message, env.Ref, env.Room))
			return true
		}
	}
	cmd := command{client: c, env: env}
	if env.Type == "say" {
		// Encode the sender and text here, on this connection's goroutine, so the
		// hub only stamps id, room and time.
		body := make([]byte, 0, len(c.fromTail)+len(env.Text)+8)
		body = append(body, c.fromTail...)
		body = appendJSONString(body, env.Text)
		if env.sig != nil {
			body = env.sig.appendSig(body)
		}
		cmd.body = append(body, '}')
	}
	c.hub.post(cmd)
	return true
}

// fileAnswerWait bounds how long readPump waits for the hub's verdict on a file.
const fileAnswerWait = 5 * time.Second

// announceFile asks the hub whether this connection may send the announced file to
// the room now (the permission lives in the hub's state) and prepares for the binary
// frame that follows: its bytes are read if accepted, discarded if refused. Either way
// the read limit is raised for that one frame only.
func (c *Client) announceFile(env *envelope, cfg *Config) {
	reply := make(chan *protoError, 1)
	c.hub.post(command{client: c, env: env, reply: reply})
	var perr *protoError
	wait := time.NewTimer(fileAnswerWait)
	defer wait.Stop()
	select {
	case perr = <-reply:
	case <-c.hub.stopped:
		perr = newProtoError(codeBusy, "the server is busy; try again")
	case <-wait.C:
		perr = newProtoError(codeBusy, "the server is busy; try again")
	}
	if perr != nil {
		c.app.metrics.rejected.WithLabelValues(perr.Code).Inc()
		c.reply(errorEvent(perr.Code, perr.Message, env.Ref, env.Room))
		c.discardNextFile(cfg)
		return
	}
	c.conn.SetReadLimit(max(cfg.ReadLimit, cfg.FileMaxBytes))
	c.pendingFile, c.discardBinary = env, false
}

// discardNextFile prepares to read and drop the binary frame of a refused file
// announcement: its bytes are likely already on their way, and the connection stays.
func (c *Client) discardNextFile(cfg *Config) {
	c.conn.SetReadLimit(max(cfg.ReadLimit, cfg.FileMaxBytes))
	c.pendingFile, c.discardBinary = nil, true
}

// handleBinary reads one binary frame. Without an announcement it is refused with 1003
// (binary data only ever follows an accepted or refused `file`); otherwise the bytes
// must match the announced size, fit the file bucket, and sniff as an allowed type
// equal to the declared one. It returns false when the connection must end.
func (c *Client) handleBinary(r io.Reader, cfg *Config) bool {
	if c.pendingMLS != nil || c.discardMLS {
		return c.readMLSFrame(r, cfg)
	}
	env, discard := c.pendingFile, c.discardBinary
	c.pendingFile, c.discardBinary = nil, false
	if env == nil && !discard {
		c.app.metrics.rejected.WithLabelValues("binary").Inc()
		c.closeWith(closeUnannouncedBinary, true)
		return false
	}
	defer c.conn.SetReadLimit(cfg.ReadLimit)
	data, ok, retry, live := c.readAnnounced(r, cfg.FileMaxBytes, closeFileTooBig)
	if !live {
		return false
	}
	if discard {
		return true
	}
	refuse := func(perr *protoError) bool { return c.refuseFrame(env, perr) }
	if int64(len(data)) != env.Size {
		return refuse(newProtoError(codeBadFile, "the file has %d bytes, not the %d announced", len(data), env.Size))
	}
	if !ok {
		c.reply(rateLimitedEvent(env.Ref, retry))
		return true
	}
	// An opaque file got past the hub only into an end-to-end encrypted room
	// (e2eeFileRule): its bytes are ciphertext, kept as they came, never sniffed.
	sniffed := opaqueFileType
	if env.Mime != opaqueFileType {
		var perr *protoError
		if sniffed, perr = sniffFile(data, env.Mime, cfg.FileTypes); perr != nil {
			return refuse(perr)
		}
	}
	if env.sig != nil {
		if perr := c.verifySigned(env, data); perr != nil {
			return refuse(perr)
		}
	}
	file := *env
	file.Type, file.Mime = "file_data", sniffed
	body, meta := fileBody(c.userJSON, env.Name, sniffed, data, env.sig)
	c.hub.post(command{client: c, env: &file, body: body, meta: meta})
	return true
}

// readAnnounced reads the binary frame an announcement (a file, or an MLS `bin`) made
// room for: at most limit bytes, a longer one ends the connection with tooBig. Every
// byte read costs the file bucket, discarded frames too: a refused sender must not get
// free bandwidth by announcing what it may not send. ok and retry are the bucket's
// answer; live is false when the connection must end (too big, a failed read, or
// sustained abuse).
func (c *Client) readAnnounced(r io.Reader, limit int64, tooBig closeFrame) (data []byte, ok bool, retry time.Duration, live bool) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil || int64(len(data)) > limit {
		if errors.Is(err, websocket.ErrReadLimit) || int64(len(data)) > limit {
			c.app.metrics.rejected.WithLabelValues("too_big").Inc()
			c.closeWith(tooBig, false)
		}
		return nil, false, 0, false
	}
	ok, retry = c.limiter.allowFile(len(data))
	if !ok {
		c.app.metrics.rateLimited.Inc()
		if c.limiter.noteDrop(c.app.now()) {
			c.app.metrics.abuseCloses.Inc()
			c.closeWith(closeAbuse, true)
			return nil, false, 0, false
		}
	}
	return data, ok, retry, true
}

// refuseFrame answers an announced binary frame's command with its error, counted;
// the connection goes on.
func (c *Client) refuseFrame(env *envelope, perr *protoError) bool {
	c.app.metrics.rejected.WithLabelValues(perr.Code).Inc()
	c.reply(errorEvent(perr.Code, perr.Message, env.Ref, env.Room))
	return true
}

// peekEnvelope recovers the type and ref of a line refused before parsing, so a
// rate_limited error can still name the message it refuses, and a refused file's
// bytes can be discarded. Anything odd yields empty strings.
func peekEnvelope(line []byte) (typ, ref string) {
	var v struct {
		Type string `json:"type"`
		Ref  string `json:"ref"`
	}
	if json.Unmarshal(line, &v) != nil {
		return "", ""
	}
	if len(v.Ref) > maxRef || !isPrintable(v.Ref) {
		v.Ref = ""
	}
	return v.Type, v.Ref
}

// reply queues an event from readPump itself. It never blocks: a client that does not
// read its errors while flooding loses some of them.
func (c *Client) reply(msg []byte) {
	select {
	case c.replies <- &msg:
	default:
		c.app.metrics.repliesDropped.Inc()
	}
}

// errPingFlood ends a connection whose pings keep exceeding its buckets.
var errPingFlood = errors.New("ping flood")

// closeWith ends the connection from readPump with a close code, without losing what
// explains it: writePump first flushes the error events already queued (the
// rate_limited errors before an abuse close, say), then sends the close frame. readPump
// waits for that, then keeps reading and discarding for up to closeGrace until the
// peer answers with its own close frame: closing a socket with unread data in it makes
// the kernel send a reset, and the peer would lose the close frame and see 1006. When
// the unread rest may be unbounded (an oversize or inflating frame), drain is false.
func (c *Client) closeWith(f closeFrame, drain bool) {
	c.app.metrics.closes.WithLabelValues(strconv.Itoa(f.code)).Inc()
	// The channel send orders this write before writePump's read of it.
	c.readClose = f
	wait := time.NewTimer(writeWait)
	defer wait.Stop()
	select {
	case c.replies <- nil:
		select {
		case <-c.closeSent:
		case <-wait.C:
		}
	case <-c.closeSent: // writePump has already ended
	case <-wait.C:
	}
	if !drain {
		c.drainRaw()
		return
	}
	c.conn.SetReadDeadline(time.Now().Add(closeGrace))
	for {
		if _, _, err := c.conn.NextReader(); err != nil {
			return
		}
	}
}

// markCloseSent tells a waiting closeWith that writePump is done writing.
func (c *Client) markCloseSent() {
	c.closeSentOnce.Do(func() { close(c.closeSent) })
}

// drainRaw discards what the peer still sends, below the WebSocket framing, for at
// most closeGrace and drainBudget bytes. It follows a close caused by an oversize
// frame, whose unread rest cannot be parsed as frames; without it, closing the socket
// with data unread makes the kernel send a reset and the peer loses the close frame.
func (c *Client) drainRaw() {
	nc := c.conn.UnderlyingConn()
	nc.SetReadDeadline(time.Now().Add(closeGrace))
	io.CopyN(io.Discard, nc, drainBudget)
}

// timerTick is the marker the ping timer puts in the replies queue.
var timerTick = new([]byte)

// errSessionOver ends writePump after the close for an expired session.
var errSessionOver = errors.New("session over")

// framesBatch is how many frames writePump counts before adding them to the shared
// metric: one atomic add per frame, on a counter every core touches, is measurable at
// a hundred thousand frames a second.
const framesBatch = 64

// writePump pumps messages from the hub to the WebSocket connection.
//
// A goroutine running writePump is started for each connection. It ensures that there
// is at most one writer to a connection by executing all writes from this goroutine.
// Events queued while a frame is being written are coalesced into the next frame,
// separated by newlines, as the original example does.
//
// It sets no write deadline of its own: a deadline is a runtime timer to move on every
// frame, measurable at a hundred thousand frames a second. The hub's watchdog reads
// writingSince instead, once a second for all connections.
//
// A panic here (a bug) costs this connection only: logged, counted
// (chat_pump_panics_total{pump="write"}), and the close frame 1011 written by this
// goroutine itself, the only writer, before the socket is closed; readPump then ends
// and unregisters the client as for any lost connection. The frame that was being
// written when it failed may be cut short: the peer sees a broken connection at worst.
func (c *Client) writePump() {
	c.timer = time.AfterFunc(c.nextTimer(), c.tick)
	defer func() {
		if v := recover(); v != nil {
			c.pumpPanicked("write", v)
			c.writingSince.Store(0)
			c.app.metrics.closes.WithLabelValues(strconv.Itoa(closeInternal.code)).Inc()
			c.writeClose(closeInternal)
		}
		// Whatever ended the pump, readPump must not wait for a close frame that
		// will never be written.
		c.markCloseSent()
		c.timer.Stop()
		c.app.metrics.framesOut.Add(float64(c.frames))
		c.conn.Close()
		c.ticket.release()
		c.app.conns.Done()
	}()
	if testHookPump != nil {
		testHookPump(c, "write")
	}
	for {
		var err error
		select {
		case msg, ok := <-c.send:
			if !ok {
				// The hub closed the queue.
				if c.hubClose.code != 0 {
					c.app.metrics.closes.WithLabelValues(strconv.Itoa(c.hubClose.code)).Inc()
				}
				c.writeClose(c.hubClose)
				return
			}
			err = c.writeFrame(*msg, true)
		case msg := <-c.replies:
			switch msg {
			case nil:
				c.closePending = true
			case timerTick:
				c.tickPending = true
			default:
				err = c.writeFrame(*msg, false)
			}
		}
		if err == nil && c.tickPending {
			c.tickPending = false
			err = c.onTick()
		}
		if err != nil {
			return
		}
		if c.closePending {
			// readPump asked for a close (the errors before it are written).
			c.writeClose(c.readClose)
			c.markCloseSent()
			// Nothing more is written; wait for readPump to end (it drains the
			// peer's last frames) and the hub to close the queue.
			for range c.send {
			}
			return
		}
	}
}

// testHookPump, when set (tests only; nil in production), is called by each pump
// once as it starts, before its loop, with the pump's name (read, write): a test makes
// it panic to see the pump's guard work. Nothing is added per frame.
var testHookPump func(c *Client, pump string)

// pumpPanicked logs and counts a panic in one of c's pumps: the stack and the value as
// crash.Value gives it (its type; the text of an error or string, capped), never the
// frame being handled (it may hold a message).
func (c *Client) pumpPanicked(pump string, v any) {
	c.app.metrics.pumpPanics.WithLabelValues(pump).Inc()
	kind, text := crash.Value(v)
	c.app.log.Error("connection pump failed", "pump", pump, "conn", c.id, "panic_type", kind, "panic", text, "stack", string(debug.Stack()))
}

// tick runs on the timer's own goroutine: it hands the tick to writePump, in order
// with the replies, unless writePump has ended.
func (c *Client) tick() {
	select {
	case c.replies <- timerTick:
	case <-c.closeSent:
	}
}

// onTick pings the peer, or closes the connection when the session is over: a
// WebSocket must not outlive the login that opened it.
func (c *Client) onTick() error {
	if !c.app.now().Before(c.user.Expires) {
		c.app.metrics.closes.WithLabelValues(strconv.Itoa(closeSessionOver.code)).Inc()
		c.writeClose(closeSessionOver)
		return errSessionOver
	}
	if err := c.write(websocket.PingMessage, nil); err != nil {
		return err
	}
	c.timer.Reset(c.nextTimer())
	return nil
}

// nextTimer is how long until the next tick: the next ping, or the end of the
// session if that comes first.
func (c *Client) nextTimer() time.Duration {
	return max(min(pingPeriod, c.user.Expires.Sub(c.app.now())), 0)
}

// write writes one message under the watchdog's eye.
func (c *Client) write(mt int, data []byte) error {
	c.writingSince.Store(time.Now().UnixNano())
	err := c.conn.WriteMessage(mt, data)
	c.writingSince.Store(0)
	return err
}

// writeClose writes a close frame with code (none: an empty close frame), with a
// deadline of its own: once the hub has let go of the connection, its watchdog no
// longer looks. The caller has counted the close.
func (c *Client) writeClose(f closeFrame) {
	c.conn.SetWriteDeadline(time.Now().Add(writeWait))
	if f.code == 0 {
		c.conn.WriteMessage(websocket.CloseMessage, []byte{})
		return
	}
	c.conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(f.code, f.reason))
}

// writeFrame writes first and then whatever else is already queued, in one frame. A
// close request met among the replies ends the coalescing (closePending). A lone event
// is written as it is; several are joined with newlines in a pooled buffer. Either way
// the write allocates nothing. queued says first came from send; the bytes of the
// events from send are taken off c.queued once the frame is written, so the count
// covers the copy being written as well.
func (c *Client) writeFrame(first []byte, queued bool) error {
	var taken int64
	if queued {
		taken = int64(len(first))
	}
	if c.frames++; c.frames == framesBatch {
		c.app.metrics.framesOut.Add(framesBatch)
		c.frames = 0
	}
	if len(c.replies) == 0 && len(c.send) == 0 {
		err := c.write(websocket.TextMessage, first)
		c.queued.Add(-taken)
		return err
	}
	bp := framePool.Get().(*[]byte)
	b := append((*bp)[:0], first...)
	for n := len(c.replies); n > 0 && !c.closePending; n-- {
		switch msg := <-c.replies; msg {
		case nil:
			c.closePending = true
		case timerTick:
			c.tickPending = true
		default:
			b = append(append(b, '\n'), *msg...)
		}
	}
	// Only drain what is queued now; a closed queue is left for the select above.
	for n := len(c.send); n > 0 && !c.closePending; n-- {
		msg, ok := <-c.send
		if !ok {
			break
		}
		taken += int64(len(*msg))
		b = append(append(b, '\n'), *msg...)
	}
	err := c.write(websocket.TextMessage, b)
	c.queued.Add(-taken)
	if cap(b) <= framePoolMax {
		*bp = b[:0]
		framePool.Put(bp)
	}
	return err
}

// serveWs handles the WebSocket handshake: handshake rate, Origin, session, caps, in
// that order, each refused with its own HTTP status before the upgrade.
func (app *App) serveWs(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	cfg := app.settings()
	ip := clientIP(r, cfg.TrustedProxies)
	if ref := app.admission.checkHandshake(ip); ref != nil {
		app.refuse(w, ref)
		return
	}
	if !app.originAllowed(r) {
		app.metrics.refused.WithLabelValues("origin").Inc()
		http.Error(w, "cross-origin WebSocket refused", http.StatusForbidden)
		return
	}
	if reason := app.clusterUnready(); reason != "" {
		// Cluster mode without Redis: no session opens against state that may be
		// stale (a revocation or ban this node has not heard of).
		app.metrics.refused.WithLabelValues("cluster").Inc()
		w.Header().Set("Retry-After", "2")
		http.Error(w, reason, http.StatusServiceUnavailable)
		return
	}
	user, err := app.sessions.fromRequest(r)
	if err != nil {
		app.metrics.refused.WithLabelValues("session").Inc()
		http.Error(w, "login required", http.StatusUnauthorized)
		return
	}
	tk, ref := app.admission.admit(ip, user.ID)
	if ref != nil {
		app.refuse(w, ref)
		return
	}
	if ref := app.clusterAdmit(tk, user.ID); ref != nil {
		tk.release()
		app.refuse(w, ref)
		return
	}
	if !app.trackConn() {
		tk.release()
		app.metrics.refused.WithLabelValues("shutting_down").Inc()
		w.Header().Set("Retry-After", "5")
		http.Error(w, "shutting down", http.StatusServiceUnavailable)
		return
	}
	conn, err := app.upgrader.Upgrade(steadyHijacker{w}, r, nil)
	if err != nil {
		// The upgrader has already answered with an HTTP error.
		tk.release()
		app.conns.Add(-2)
		app.metrics.refused.WithLabelValues("upgrade").Inc()
		return
	}
	app.metrics.accepted.Inc()
	app.metrics.handshakeSeconds.Observe(time.Since(start).Seconds())
	c := &Client{
		hub:       app.hub,
		conn:      conn,
		send:      make(chan *[]byte, cfg.SendQueue),
		replies:   make(chan *[]byte, replyQueue),
		closeSent: make(chan struct{}),
		user:      user,
		userJSON:  userJSON(user.ID, user.Name),
		limiter:   newConnLimiter(cfg, tk.userMsg, app.now),
		ticket:    tk,
		rooms:     make(map[string]*room),
		app:       app,
	}
	c.id = app.nextConnID()
	c.limiter.budget = app.clusterBudget(user.ID)
	c.fromTail = append(append([]byte(`"from":`), c.userJSON...), `,"text":`...)
	// Register before the pumps start, so the hub knows the client before its first
	// command or its unregister can arrive.
	select {
	case app.hub.register <- c:
	case <-app.hub.stopped:
		// Shutdown outlasted its grace and the hub is gone: nobody will serve this.
		conn.Close()
		tk.release()
		app.conns.Add(-2)
		return
	}
	go c.writePump()
	go c.readPump()
}

// refuse answers a handshake refused by admission control.
func (app *App) refuse(w http.ResponseWriter, ref *refusal) {
	app.metrics.refused.WithLabelValues(ref.reason).Inc()
	writeRefusal(w, ref)
}

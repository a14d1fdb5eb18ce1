package cluster

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"modified-chat/internal/crash"
)

// The room feed (SCALE-OUT.md §3.3): per room, Redis hands out the ids, keeps the
// entries in the room's Stream and fans them out over PUB/SUB, all in one Lua script;
// every node delivers a room's entries strictly in id order, fills gaps from the
// Stream and drops duplicates. PUB/SUB is at-most-once (a slow subscriber is cut off by
// Redis, a reconnect loses what was published meanwhile), so the Stream is the truth
// and PUB/SUB only the fast path: every subscription confirmation, every overflow of
// the inbox and a position check every second make a node catch up from the Stream.
//
// Three goroutines, none of them the hub's: the writer runs the scripts (batched), the
// subscriber reads PUB/SUB and never blocks (a full inbox drops the message and marks
// the feed for a catch-up), and the orderer owns every room's position, reads the
// Stream to fill gaps, checks health and hands events to the hub through Deliver.
// The hub talks to the feed only through Say, Open and Close, which never wait on Redis.

// Feed tunables.
const (
	// sayQueue bounds the messages waiting for the writer; a full queue is `busy`.
	sayQueue = 4096
	// sayBatch is the most scripts one pipeline carries (SCALE-OUT.md: ≤64).
	sayBatch = 64
	// inboxSize bounds the PUB/SUB messages waiting for the orderer. Beyond it the
	// subscriber drops and the orderer catches up from the Stream.
	inboxSize = 4096
	// healthEvery is how often the orderer pings Redis and compares the epoch.
	healthEvery = 250 * time.Millisecond
	// positionEvery is how often every open room's top id is compared with what was
	// delivered: it finds the tail a dead subscription lost.
	positionEvery = time.Second
	// unreadyAfter is how long Redis may fail before the node says it is not ready
	// (then /readyz and /ws answer 503): within 2 s of Redis going away.
	unreadyAfter = time.Second
	// callTimeout bounds one call to Redis.
	callTimeout = 2 * time.Second
	// resubscribeEvery is the pause before subscribing again after PUB/SUB broke.
	resubscribeEvery = 200 * time.Millisecond
)

// sayScript numbers, stores and publishes one entry atomically. KEYS: the room's meta
// hash and log stream, and for a room change its record, for a deletion its hash of
// deleted ids; ARGV: channel, stored envelope, published envelope ("" = the stored
// one), MAXLEN, then for a room change "room" and the revision it was computed from,
// for a deletion "delete" and the id it deletes. A room whose meta is new (never used,
// or lost with Redis's data) starts at Redis's time in ms × 1000 (≈1.8e15 < 2^53), so
// ids never go backwards even after a loss; `floor` remembers where this epoch of the
// room began. Ids are kept as strings: Lua numbers print with 14 digits.
//
// A room change (membership, roles, bans, invitations, the description, deletion) is
// an entry of the room's log like a message, so every node applies it at the same
// position among the messages. Its envelope is also kept as the room's record, and
// `rev` is the id of the change that wrote it: a change computed from an older
// revision than Redis has is refused (STALE), so two nodes changing one room at once
// cannot lose either change.
//
// A message sent "at" a revision (an E2EE room's application message, which is
// encrypted under the group state that revision holds) is refused STALE the same way
// when the room changed since, but changes no revision itself: messages sent at one
// revision do not refuse each other.
//
// A deletion is an entry too (every node tells its members at the same position); it
// removes the message's entry from the Stream (XDEL: its text or file is gone from
// Redis, not just hidden) and records the id as deleted, so readers of the Stream
// know the hole is a deletion, not a loss (fill, History). A message that is not in
// the Stream, or already deleted, is GONE. The deleted ids below the Stream's first
// entry are forgotten once there are more than MAXLEN of them.
const sayScript = `
local mode = ARGV[5]
if mode == 'room' or mode == 'at' then
  local rev = redis.call('HGET', KEYS[1], 'rev')
  if not rev then rev = '0' end
  if rev ~= ARGV[6] then return redis.error_reply('STALE ' .. rev) end
elseif mode == 'delete' then
  if redis.call('HEXISTS', KEYS[3], ARGV[6]) == 1 or #redis.call('XRANGE', KEYS[2], ARGV[6], ARGV[6]) == 0 then
    return redis.error_reply('GONE')
  end
end
local seq
if redis.call('HEXISTS', KEYS[1], 'seq') == 0 then
  local t = redis.call('TIME')
  seq = t[1] .. string.sub(string.format('%06d', tonumber(t[2])), 1, 3) .. '000'
  redis.call('HSET', KEYS[1], 'seq', seq, 'floor', seq)
else
  seq = string.format('%.0f', redis.call('HINCRBY', KEYS[1], 'seq', 1))
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'e', ARGV[2])
if mode == 'room' then
  redis.call('SET', KEYS[3], ARGV[2])
  redis.call('HSET', KEYS[1], 'rev', seq)
elseif mode == 'delete' then
  redis.call('XDEL', KEYS[2], ARGV[6] .. '-0')
  redis.call('HSET', KEYS[3], ARGV[6], seq)
  if redis.call('HLEN', KEYS[3]) > tonumber(ARGV[4]) then
    local head = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
    if #head > 0 then
      local low = tonumber((string.gsub(head[1][1], '-0$', '')))
      for _, id in ipairs(redis.call('HKEYS', KEYS[3])) do
        if tonumber(id) < low then redis.call('HDEL', KEYS[3], id) end
      end
    end
  end
end
local live = ARGV[3]
if live == '' then live = ARGV[2] end
redis.call('PUBLISH', ARGV[1], seq .. ' ' .. live)
return seq
`

// roomStateScript reads, in one step, a room's last id, its revision and its record
// (the envelope of the change that wrote it), so the three agree. KEYS: meta, record.
const roomStateScript = `
local m = redis.call('HMGET', KEYS[1], 'seq', 'rev')
local rec = redis.call('GET', KEYS[2])
return {m[1] or '', m[2] or '', rec or ''}
`

// roomStateLua runs roomStateScript (EVALSHA, loading it once).
var roomStateLua = rueidis.NewLuaScript(roomStateScript)

// ErrStale says a room change was computed from an older revision of the room than
// Redis has: another node changed the room first. Nothing was written.
var ErrStale = errors.New("cluster: the room changed on another node")

// ErrGone says a deletion found no such message in the room's Stream (trimmed, never
// there, or deleted already). Nothing was written.
var ErrGone = errors.New("cluster: no such message in the room's log")

// Kind says what an Event is.
type Kind int

// The events a feed hands to the hub.
const (
	// Entry is the next entry of an open room, in order (Room, Seq, Body, TS; Token
	// when it is this node's Say, which the hub acknowledges after delivering it).
	Entry Kind = iota
	// Stored acknowledges this node's Say whose room is not open here (Token, Seq).
	Stored
	// Failed says a Say did not reach Redis (Token, Err): nothing was stored.
	Failed
	// Opened says a room is open: entries after Seq will follow as Entry events, so
	// history up to Seq is the joiners' (Room, Seq). When State is set, Rev and Body
	// are the room's revision and record as of Seq (Body nil: Redis has none).
	Opened
	// Resync says a room's gap cannot be filled (trimmed, or larger than the resume
	// bound): the hub closes its local members, who resume from history (Room).
	Resync
	// Health reports readiness (Ready): Redis answers, PUB/SUB is subscribed and every
	// open room has caught up.
	Health
	// Lost says Redis's epoch changed: it lost its data. Final.
	Lost
)

// Event is one thing the feed tells the hub.
type Event struct {
	Kind  Kind
	Room  string
	Seq   uint64
	Body  []byte
	TS    int64
	Token any
	Err   error
	Ready bool
	// State, Rev: see Opened.
	State bool
	Rev   uint64
}

// RoomState is a room's position and record read in one step (Feed.RoomState).
type RoomState struct {
	// Top is the room's last id, Rev the id of the change that wrote its record.
	Top, Rev uint64
	// Body is the record's body (nil when Redis has no record of the room).
	Body []byte
}

// FeedConfig is what a feed needs.
type FeedConfig struct {
	Client rueidis.Client
	Keys   Keys
	Sealer *Sealer
	// Epoch is the cluster epoch the node joined (CheckEpoch).
	Epoch string
	// HistoryMax is the Stream's approximate MAXLEN per room.
	HistoryMax int
	// ResumeMax is the largest gap the feed fills; beyond it, Resync.
	ResumeMax int
	// Deliver hands an event to the hub, in order; it may wait for the hub (never the
	// other way round) and returns false once the hub has stopped.
	Deliver func(Event) bool
	Log     *slog.Logger
	Now     func() time.Time
}

// Counters are the feed's numbers, for metrics and tests.
type Counters struct {
	BadMAC, Replayed, Dropped, Filled, Resyncs atomic.Uint64
}

// sayReq is one message on its way to the writer.
type sayReq struct {
	room         string
	stored, live []byte
	token        any
	// change marks a room change; rev is the revision it was computed from. del,
	// when not 0, is the id a deletion deletes.
	change bool
	rev    uint64
	del    uint64
	// at marks a message checked against revision rev (SayAt).
	at bool
}

// reply is a script's answer, on its way to the orderer.
type reply struct {
	room  string
	seq   uint64
	env   []byte
	token any
}

// roomReq is an Open or Close from the hub.
type roomReq struct {
	room string
	open bool
}

// Feed is one node's room feed.
type Feed struct {
	cfg    FeedConfig
	script *rueidis.Lua
	says   chan sayReq
	inbox  chan rueidis.PubSubMessage
	// replies carry the writer's results to the orderer.
	replies chan reply
	// reqs are the hub's Opens and Closes, in order; wake tells the orderer.
	mu   sync.Mutex
	reqs []roomReq
	wake chan struct{}
	// overflow says the inbox dropped something; resubscribed that PUB/SUB was
	// (re)confirmed: either makes the orderer catch up every open room.
	overflow     atomic.Bool
	resubscribed atomic.Bool
	subscribed   atomic.Bool
	Counters     Counters

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// StartFeed starts a feed's goroutines; Stop ends them. A panic in any of them ends
// the process (crash.OnPanic): they own every room's order, replay filter and pending
// sends, which a restarted loop could not trust and a dead one would freeze (rooms that
// accept messages and never deliver them). A new process resyncs from the Streams.
func StartFeed(cfg FeedConfig) *Feed {
	ctx, cancel := context.WithCancel(context.Background())
	f := &Feed{
		cfg:     cfg,
		script:  rueidis.NewLuaScript(sayScript),
		says:    make(chan sayReq, sayQueue),
		inbox:   make(chan rueidis.PubSubMessage, inboxSize),
		replies: make(chan reply, sayQueue),
		wake:    make(chan struct{}, 1),
		ctx:     ctx,
		cancel:  cancel,
	}
	f.wg.Add(3)
	go f.runWriter()
	go f.runSubscriber()
	go f.runOrderer()
	return f
}

// Stop ends the feed and waits for its goroutines.
func (f *Feed) Stop() {
	f.cancel()
	f.wg.Wait()
}

// Say queues a message for room; stored is what the Stream keeps, live what PUB/SUB
// carries (nil: the same). false means the queue is full: nothing was queued and the
// token comes back never. Otherwise exactly one event comes back with the token:
// Entry (delivered here, then acknowledge), Stored, or Failed.
func (f *Feed) Say(room string, stored, live []byte, token any) bool {
	select {
	case f.says <- sayReq{room: room, stored: stored, live: live, token: token}:
		return true
	default:
		return false
	}
}

// Change queues a room change for room, computed from revision rev (0: a room Redis
// has no record of). Like Say: false means the queue is full; otherwise exactly one
// event comes back with the token: Entry, Stored, or Failed (Err ErrStale when
// another node changed the room first).
func (f *Feed) Change(room string, body []byte, rev uint64, token any) bool {
	select {
	case f.says <- sayReq{room: room, stored: body, token: token, change: true, rev: rev}:
		return true
	default:
		return false
	}
}

// SayAt is Say for a message that is valid only at revision rev of the room: when the
// room changed since (another node's or this node's change got there first), Redis
// refuses it and the token comes back Failed with ErrStale; nothing was stored. It
// changes no revision, so messages sent at one revision never refuse each other.
func (f *Feed) SayAt(room string, stored []byte, rev uint64, token any) bool {
	select {
	case f.says <- sayReq{room: room, stored: stored, token: token, at: true, rev: rev}:
		return true
	default:
		return false
	}
}

// Delete queues the deletion of message id of room; body is the deletion's entry.
// Like Say: false means the queue is full; otherwise exactly one event comes back with
// the token: Entry, Stored, or Failed (Err ErrGone when the Stream has no such
// message).
func (f *Feed) Delete(room string, id uint64, body []byte, token any) bool {
	select {
	case f.says <- sayReq{room: room, stored: body, token: token, del: id}:
		return true
	default:
		return false
	}
}

// Open asks for a room's entries: an Opened event answers, then its entries follow.
func (f *Feed) Open(room string) { f.request(roomReq{room, true}) }

// Close says nobody on this node is in room any more.
func (f *Feed) Close(room string) { f.request(roomReq{room, false}) }

// request queues an Open or Close for the orderer without waiting for it.
func (f *Feed) request(r roomReq) {
	f.mu.Lock()
	f.reqs = append(f.reqs, r)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// scope is the MAC scope of a room's entries.
func scope(room string) string { return "r:" + room }

// runWriter runs the scripts, up to sayBatch in one pipeline, in the order Say was
// called, so one node's entries reach each room in the order it sent them (the
// replay filter relies on it).
func (f *Feed) runWriter() {
	defer f.wg.Done()
	defer crash.OnPanic(f.cfg.Log, "cluster feed writer")
	crash.Hook("cluster feed writer")
	batch := make([]sayReq, 0, sayBatch)
	for {
		select {
		case <-f.ctx.Done():
			return
		case r := <-f.says:
			batch = append(batch[:0], r)
		}
	fill:
		for len(batch) < sayBatch {
			select {
			case r := <-f.says:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		f.write(batch)
	}
}

// write runs one batch of scripts and passes the results on.
func (f *Feed) write(batch []sayReq) {
	k := f.cfg.Keys
	execs := make([]rueidis.LuaExec, 0, len(batch))
	envs := make([][]byte, len(batch))
	maxLen := strconv.Itoa(f.cfg.HistoryMax)
	for i, r := range batch {
		meta, _ := k.RoomMeta(r.room)
		log, _ := k.RoomLog(r.room)
		ch, _ := k.RoomChannel(r.room)
		sc := scope(r.room)
		stored := f.cfg.Sealer.Seal(sc, r.stored)
		envs[i] = stored
		live := ""
		if r.live != nil {
			live = string(f.cfg.Sealer.Seal(sc, r.live))
			envs[i] = []byte(live)
		}
		ex := rueidis.LuaExec{Keys: []string{meta, log}, Args: []string{ch, string(stored), live, maxLen}}
		switch {
		case r.change:
			rec, _ := k.RoomInfo(r.room)
			ex.Keys = append(ex.Keys, rec)
			ex.Args = append(ex.Args, "room", strconv.FormatUint(r.rev, 10))
		case r.at:
			ex.Args = append(ex.Args, "at", strconv.FormatUint(r.rev, 10))
		case r.del != 0:
			gone, _ := k.RoomDeleted(r.room)
			ex.Keys = append(ex.Keys, gone)
			ex.Args = append(ex.Args, "delete", strconv.FormatUint(r.del, 10))
		}
		execs = append(execs, ex)
	}
	ctx, cancel := context.WithTimeout(f.ctx, callTimeout)
	results := f.script.ExecMulti(ctx, f.cfg.Client, execs...)
	cancel()
	for i, res := range results {
		r := batch[i]
		s, err := res.ToString()
		var seq uint64
		if err == nil {
			seq, err = strconv.ParseUint(s, 10, 64)
		}
		if err != nil {
			switch {
			case strings.HasPrefix(err.Error(), "STALE"):
				err = ErrStale
			case strings.HasPrefix(err.Error(), "GONE"):
				err = ErrGone
			}
			f.cfg.Deliver(Event{Kind: Failed, Room: r.room, Token: r.token, Err: err})
			continue
		}
		select {
		case f.replies <- reply{room: r.room, seq: seq, env: envs[i], token: r.token}:
		case <-f.ctx.Done():
			return
		}
	}
}

// runSubscriber keeps one pattern subscription to every room's channel. The callback
// never blocks the connection: a full inbox drops and marks the feed for a catch-up.
// Each confirmation, the first and every one after a reconnect, also asks for one,
// since messages published while unsubscribed are only in the Streams.
func (f *Feed) runSubscriber() {
	defer f.wg.Done()
	defer crash.OnPanic(f.cfg.Log, "cluster feed subscriber")
	crash.Hook("cluster feed subscriber")
	c := f.cfg.Client
	for f.ctx.Err() == nil {
		ctx := rueidis.WithOnSubscriptionHook(f.ctx, func(s rueidis.PubSubSubscription) {
			if s.Kind == "psubscribe" {
				f.subscribed.Store(true)
				f.resubscribed.Store(true)
			}
		})
		// A connection of its own: PUB/SUB must not share the one the scripts use
		// (RESP2 servers and miniredis refuse commands on a subscribed connection).
		dc, release := c.Dedicate()
		err := dc.Receive(ctx, dc.B().Psubscribe().Pattern(f.cfg.Keys.RoomPattern()).Build(), func(m rueidis.PubSubMessage) {
			select {
			case f.inbox <- m:
			default:
				f.Counters.Dropped.Add(1)
				f.overflow.Store(true)
			}
		})
		release()
		f.subscribed.Store(false)
		if f.ctx.Err() != nil {
			return
		}
		f.cfg.Log.Debug("redis subscription ended; subscribing again", "err", err)
		select {
		case <-f.ctx.Done():
			return
		case <-time.After(resubscribeEvery):
		}
	}
}

// held is an entry waiting for its turn.
type held struct {
	env   []byte
	token any
	// tomb marks a deleted message's id: passed over, nothing delivered.
	tomb bool
}

// feedRoom is the orderer's state of one open room.
type feedRoom struct {
	applied uint64
	held    map[uint64]held
}

// orderer is the orderer goroutine's state.
type orderer struct {
	f      *Feed
	rooms  map[string]*feedRoom
	replay *Replay
	// lastOK is when Redis last answered a health check; ready what the hub was told.
	lastOK time.Time
	ready  bool
	lost   bool
}

// runOrderer owns every open room's position.
func (f *Feed) runOrderer() {
	defer f.wg.Done()
	defer crash.OnPanic(f.cfg.Log, "cluster feed orderer")
	crash.Hook("cluster feed orderer")
	o := &orderer{f: f, rooms: map[string]*feedRoom{}, replay: NewReplay(f.cfg.Now), lastOK: time.Now()}
	health := time.NewTicker(healthEvery)
	defer health.Stop()
	position := time.NewTicker(positionEvery)
	defer position.Stop()
	for {
		select {
		case <-f.ctx.Done():
			return
		case m := <-f.inbox:
			o.onPublished(m)
		case r := <-f.replies:
			o.onReply(r)
		case <-f.wake:
			o.onRequests()
		case <-health.C:
			o.checkHealth()
		case <-position.C:
			o.catchUpAll()
		}
		if f.overflow.Swap(false) || f.resubscribed.Swap(false) {
			o.catchUpAll()
		}
		o.fillGaps()
	}
}

// onRequests applies the hub's Opens and Closes in order. An Open answers with the
// room's top id as the boundary between history and live entries.
func (o *orderer) onRequests() {
	f := o.f
	f.mu.Lock()
	reqs := f.reqs
	f.reqs = nil
	f.mu.Unlock()
	for _, r := range reqs {
		if !r.open {
			delete(o.rooms, r.room)
			o.replay.Forget(scope(r.room))
			continue
		}
		fr := o.rooms[r.room]
		ev := Event{Kind: Opened, Room: r.room}
		if fr == nil {
			ctx, cancel := context.WithTimeout(f.ctx, callTimeout)
			st, err := f.RoomState(ctx, r.room)
			cancel()
			if err != nil {
				// Redis is away: the room opens at 0 and catches up once Redis is back
				// (history then says what was there).
				f.cfg.Log.Warn("opening a room without redis", "room", r.room, "err", err)
			} else {
				ev.State, ev.Rev, ev.Body = true, st.Rev, st.Body
			}
			fr = &feedRoom{applied: st.Top, held: map[uint64]held{}}
			o.rooms[r.room] = fr
		}
		ev.Seq = fr.applied
		if !f.cfg.Deliver(ev) {
			return
		}
	}
}

// RoomState reads a room's last id, revision and record in one step. A record whose
// MAC fails counts as forged and reads as none. Called off the hub's loop.
func (f *Feed) RoomState(ctx context.Context, room string) (RoomState, error) {
	st, forged, err := ReadRoomState(ctx, f.cfg.Client, f.cfg.Keys, f.cfg.Sealer, room)
	if forged {
		f.Counters.BadMAC.Add(1)
		f.cfg.Log.Warn("dropped a room record", "room", room)
	}
	return st, err
}

// ReadRoomState is RoomState for a node whose feed has not started (start-up);
// forged says a record was there but failed its check (it reads as none).
func ReadRoomState(ctx context.Context, c rueidis.Client, k Keys, s *Sealer, room string) (st RoomState, forged bool, err error) {
	meta, err := k.RoomMeta(room)
	if err != nil {
		return RoomState{}, false, err
	}
	rec, _ := k.RoomInfo(room)
	vals, err := roomStateLua.Exec(ctx, c, []string{meta, rec}, nil).AsStrSlice()
	if err != nil {
		return RoomState{}, false, err
	}
	if len(vals) != 3 {
		return RoomState{}, false, errors.New("cluster: room state: bad answer")
	}
	num := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
	st.Top, st.Rev = num(vals[0]), num(vals[1])
	if vals[2] != "" {
		e, err := s.Open(scope(room), []byte(vals[2]))
		if err != nil {
			return st, true, nil
		}
		st.Body = e.Body
	}
	return st, false, nil
}

// onPublished takes one PUB/SUB message: "<seq> <envelope>" on a room's channel.
func (o *orderer) onPublished(m rueidis.PubSubMessage) {
	room, ok := o.f.cfg.Keys.RoomOfChannel(m.Channel)
	if !ok {
		return
	}
	fr := o.rooms[room]
	if fr == nil {
		return // nobody here is in the room
	}
	seqS, env, ok := strings.Cut(m.Message, " ")
	seq, err := strconv.ParseUint(seqS, 10, 64)
	if !ok || err != nil {
		o.f.Counters.BadMAC.Add(1)
		return
	}
	o.hold(room, fr, seq, []byte(env), nil)
}

// onReply takes the writer's result for this node's own message.
func (o *orderer) onReply(r reply) {
	fr := o.rooms[r.room]
	if fr == nil || r.seq <= fr.applied {
		// Not open here, or delivered already (PUB/SUB was faster): just the ack.
		o.f.cfg.Deliver(Event{Kind: Stored, Room: r.room, Seq: r.seq, Token: r.token})
		return
	}
	o.hold(r.room, fr, r.seq, r.env, r.token)
}

// hold puts an entry in line and delivers whatever is now next in order.
func (o *orderer) hold(room string, fr *feedRoom, seq uint64, env []byte, token any) {
	if seq <= fr.applied {
		return // a duplicate
	}
	if h, ok := fr.held[seq]; ok {
		if token != nil && h.token == nil {
			h.token = token
			fr.held[seq] = h
		}
		return
	}
	fr.held[seq] = held{env: env, token: token}
	o.drain(room, fr)
}

// drain delivers a room's held entries while the next one is there.
func (o *orderer) drain(room string, fr *feedRoom) {
	for {
		h, ok := fr.held[fr.applied+1]
		if !ok {
			// An epoch's first id jumps (the time floor): a room opened at 0 starts
			// at its floor, read from Redis, and fillGaps fetches what came before
			// the lowest held entry. Taking the lowest held entry as the first would
			// lose an earlier one still on its way (another node's, published after
			// this node's own reply came back).
			if fr.applied != 0 || len(fr.held) == 0 {
				return
			}
			low := uint64(0)
			for s := range fr.held {
				if low == 0 || s < low {
					low = s
				}
			}
			fr.applied = low - 1
			if floor := o.floor(room); floor > 0 && floor < low && low-floor <= uint64(o.f.cfg.ResumeMax) {
				fr.applied = floor - 1
				return // fillGaps reads (floor-1, low)
			}
			continue
		}
		delete(fr.held, fr.applied+1)
		fr.applied++
		if !h.tomb {
			o.deliver(room, fr.applied, h)
		}
	}
}

// deliver checks an entry's envelope and hands it to the hub. A forged or replayed one
// still used its id: it is counted and skipped, never delivered.
func (o *orderer) deliver(room string, seq uint64, h held) {
	sc := scope(room)
	e, err := o.f.cfg.Sealer.Open(sc, h.env)
	if err == nil {
		err = o.replay.Check(sc, e)
	}
	if err != nil {
		if errors.Is(err, ErrReplay) {
			o.f.Counters.Replayed.Add(1)
		} else {
			o.f.Counters.BadMAC.Add(1)
		}
		o.f.cfg.Log.Warn("dropped a cluster entry", "room", room, "seq", seq, "err", err)
		if h.token != nil {
			o.f.cfg.Deliver(Event{Kind: Stored, Room: room, Seq: seq, Token: h.token})
		}
		return
	}
	o.f.cfg.Deliver(Event{Kind: Entry, Room: room, Seq: seq, Body: e.Body, TS: e.TS, Token: h.token})
}

// floor reads the first id of a room's epoch (0 when Redis does not answer).
func (o *orderer) floor(room string) uint64 {
	c := o.f.cfg.Client
	meta, _ := o.f.cfg.Keys.RoomMeta(room)
	ctx, cancel := context.WithTimeout(o.f.ctx, callTimeout)
	defer cancel()
	s, err := c.Do(ctx, c.B().Hget().Key(meta).Field("floor").Build()).ToString()
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}

// fillGaps reads from the Stream what every room with held entries is missing.
func (o *orderer) fillGaps() {
	for room, fr := range o.rooms {
		if len(fr.held) == 0 || fr.applied == 0 {
			continue
		}
		low := uint64(0)
		for s := range fr.held {
			if low == 0 || s < low {
				low = s
			}
		}
		o.fill(room, fr, low-1)
	}
}

// catchUpAll compares every open room's top id with what was delivered and fills the
// difference: the tail PUB/SUB lost is found this way.
func (o *orderer) catchUpAll() {
	if len(o.rooms) == 0 {
		return
	}
	c := o.f.cfg.Client
	names := make([]string, 0, len(o.rooms))
	cmds := make(rueidis.Commands, 0, len(o.rooms))
	for room := range o.rooms {
		meta, _ := o.f.cfg.Keys.RoomMeta(room)
		names = append(names, room)
		cmds = append(cmds, c.B().Hget().Key(meta).Field("seq").Build())
	}
	ctx, cancel := context.WithTimeout(o.f.ctx, callTimeout)
	results := c.DoMulti(ctx, cmds...)
	cancel()
	for i, res := range results {
		s, err := res.ToString()
		if err != nil {
			continue
		}
		top, err := strconv.ParseUint(s, 10, 64)
		fr := o.rooms[names[i]]
		if err != nil || fr == nil || top <= fr.applied {
			continue
		}
		if fr.applied == 0 {
			// Opened while Redis was away: start from the room's first id of this
			// epoch (the clients resume from history).
			fr.applied = top
			continue
		}
		o.fill(names[i], fr, top)
	}
}

// fill reads the entries in (applied, upTo] from the Stream and delivers them. A gap
// that the Stream cannot fill (trimmed, or larger than ResumeMax) is a Resync.
func (o *orderer) fill(room string, fr *feedRoom, upTo uint64) {
	if upTo <= fr.applied {
		return
	}
	want := upTo - fr.applied
	if want > uint64(o.f.cfg.ResumeMax) {
		o.resync(room)
		return
	}
	c := o.f.cfg.Client
	log, _ := o.f.cfg.Keys.RoomLog(room)
	ctx, cancel := context.WithTimeout(o.f.ctx, callTimeout)
	entries, err := c.Do(ctx, c.B().Xrange().Key(log).Start(strconv.FormatUint(fr.applied+1, 10)).
		End(strconv.FormatUint(upTo, 10)).Count(int64(want)).Build()).AsXRange()
	cancel()
	if err != nil {
		return // Redis is away: the next check tries again
	}
	for _, e := range entries {
		seq, ok := entrySeq(e.ID)
		if !ok || seq <= fr.applied || seq > upTo {
			continue
		}
		if _, have := fr.held[seq]; !have {
			fr.held[seq] = held{env: []byte(e.FieldValues["e"])}
			o.f.Counters.Filled.Add(1)
		}
	}
	o.markDeleted(room, fr, upTo)
	o.drain(room, fr)
	if fr.applied < upTo {
		o.resync(room)
	}
}

// markDeleted finds which ids in (applied, upTo] still missing after a read of the
// Stream are deleted messages, and holds them as tombstones, so a deletion's hole is
// passed over rather than taken for a loss.
func (o *orderer) markDeleted(room string, fr *feedRoom, upTo uint64) {
	var missing []string
	for id := fr.applied + 1; id <= upTo; id++ {
		if _, ok := fr.held[id]; !ok {
			missing = append(missing, strconv.FormatUint(id, 10))
		}
	}
	if len(missing) == 0 {
		return
	}
	c := o.f.cfg.Client
	gone, _ := o.f.cfg.Keys.RoomDeleted(room)
	ctx, cancel := context.WithTimeout(o.f.ctx, callTimeout)
	vals, err := c.Do(ctx, c.B().Hmget().Key(gone).Field(missing...).Build()).ToArray()
	cancel()
	if err != nil {
		return
	}
	for i, v := range vals {
		if s, err := v.ToString(); err == nil && s != "" {
			id, _ := strconv.ParseUint(missing[i], 10, 64)
			fr.held[id] = held{tomb: true}
		}
	}
}

// resync gives up on a room: its local members start again from history.
func (o *orderer) resync(room string) {
	o.f.Counters.Resyncs.Add(1)
	fr := o.rooms[room]
	delete(o.rooms, room)
	o.replay.Forget(scope(room))
	o.f.cfg.Log.Warn("room gap cannot be filled; resync", "room", room)
	if fr != nil {
		for seq, h := range fr.held {
			if h.token != nil {
				o.f.cfg.Deliver(Event{Kind: Stored, Room: room, Seq: seq, Token: h.token})
			}
		}
	}
	o.f.cfg.Deliver(Event{Kind: Resync, Room: room})
}

// entrySeq reads the seq of a Stream id "<seq>-0".
func entrySeq(id string) (uint64, bool) {
	s, rest, ok := strings.Cut(id, "-")
	if !ok || rest != "0" {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil
}

// checkHealth pings Redis and compares the epoch. Failing for unreadyAfter makes the
// node unready; a different or missing epoch makes it Lost for good; coming back, it
// catches every open room up before it says it is ready again.
func (o *orderer) checkHealth() {
	if o.lost {
		return
	}
	f := o.f
	ctx, cancel := context.WithTimeout(f.ctx, healthEvery)
	same, err := SameEpoch(ctx, f.cfg.Client, f.cfg.Keys, f.cfg.Epoch)
	cancel()
	now := time.Now()
	switch {
	case err == nil && !same:
		o.lost = true
		f.cfg.Log.Error("redis lost its data: the cluster epoch is gone or different; not serving")
		f.cfg.Deliver(Event{Kind: Lost})
		return
	case err == nil:
		o.lastOK = now
	}
	ready := err == nil && f.subscribed.Load()
	if ready && !o.ready {
		o.catchUpAll()
	}
	if !ready && o.ready && now.Sub(o.lastOK) < unreadyAfter && err != nil {
		return // a blip: not yet
	}
	if ready != o.ready {
		o.ready = ready
		f.cfg.Log.Info("cluster readiness", "ready", ready)
		f.cfg.Deliver(Event{Kind: Health, Ready: ready})
	}
}

// leadingDeleted returns, as Items without a body, the deleted ids that come before
// the first of entries, from after+1 on (at most n, none past upTo).
func (f *Feed) leadingDeleted(ctx context.Context, room string, after, upTo uint64, n int, entries []rueidis.XRangeEntry) []Item {
	end := upTo
	if len(entries) > 0 {
		if s, ok := entrySeq(entries[0].ID); ok && s > 0 {
			end = min(end, s-1)
		}
	}
	end = min(end, after+uint64(n))
	if end <= after {
		return nil
	}
	var ids []string
	for id := after + 1; id <= end; id++ {
		ids = append(ids, strconv.FormatUint(id, 10))
	}
	c := f.cfg.Client
	gone, _ := f.cfg.Keys.RoomDeleted(room)
	vals, err := c.Do(ctx, c.B().Hmget().Key(gone).Field(ids...).Build()).ToArray()
	if err != nil {
		return nil
	}
	var out []Item
	for i, v := range vals {
		s, err := v.ToString()
		if err != nil || s == "" {
			break // the first id that is not deleted ends the leading run
		}
		id, _ := strconv.ParseUint(ids[i], 10, 64)
		out = append(out, Item{Seq: id})
	}
	return out
}

// Entry reads message id of a room's Stream (false when the Stream has no such entry:
// trimmed, deleted, never there, or its MAC fails). Called off the hub's loop.
func (f *Feed) Entry(ctx context.Context, room string, id uint64) (Item, bool, error) {
	log, err := f.cfg.Keys.RoomLog(room)
	if err != nil {
		return Item{}, false, err
	}
	c := f.cfg.Client
	s := strconv.FormatUint(id, 10)
	entries, err := c.Do(ctx, c.B().Xrange().Key(log).Start(s).End(s).Count(1).Build()).AsXRange()
	if err != nil || len(entries) == 0 {
		return Item{}, false, err
	}
	env, err := f.cfg.Sealer.Open(scope(room), []byte(entries[0].FieldValues["e"]))
	if err != nil {
		f.Counters.BadMAC.Add(1)
		return Item{}, false, nil
	}
	return Item{Seq: id, TS: env.TS, Body: env.Body}, true, nil
}

// Item is one entry of a room's Stream read for history. Body nil is a deleted
// message (History puts those first, so a hole after `after` can be told from a loss).
type Item struct {
	Seq  uint64
	TS   int64
	Body []byte
}

// History reads a room's Stream for history: entries with ids in (after, upTo],
// oldest first, at most n; with tail, the newest n of them. It also returns the room's
// floor (the first id of this epoch, 0 if none). Entries whose MAC fails are left out
// and counted; so are copies of an entry already in the answer (same node and node
// seq: a replay at a new id). Called from the hub's history goroutines, never its loop.
func (f *Feed) History(ctx context.Context, room string, after, upTo uint64, n int, tail bool) ([]Item, uint64, error) {
	if upTo <= after || n <= 0 {
		return nil, 0, nil
	}
	c := f.cfg.Client
	log, err := f.cfg.Keys.RoomLog(room)
	if err != nil {
		return nil, 0, err
	}
	meta, _ := f.cfg.Keys.RoomMeta(room)
	start, end := strconv.FormatUint(after+1, 10), strconv.FormatUint(upTo, 10)
	var rng rueidis.Completed
	if tail {
		rng = c.B().Xrevrange().Key(log).End(end).Start(start).Count(int64(n)).Build()
	} else {
		rng = c.B().Xrange().Key(log).Start(start).End(end).Count(int64(n)).Build()
	}
	res := c.DoMulti(ctx, rng, c.B().Hget().Key(meta).Field("floor").Build())
	entries, err := res[0].AsXRange()
	if err != nil {
		return nil, 0, err
	}
	var floor uint64
	if s, err := res[1].ToString(); err == nil {
		floor, _ = strconv.ParseUint(s, 10, 64)
	}
	if tail {
		for i, j := 0, len(entries)-1; i < j; i, j = i+1, j-1 {
			entries[i], entries[j] = entries[j], entries[i]
		}
	}
	type origin struct {
		node string
		seq  uint64
	}
	seen := map[origin]bool{}
	items := make([]Item, 0, len(entries))
	if !tail {
		items = append(items, f.leadingDeleted(ctx, room, after, upTo, n, entries)...)
	}
	sc := scope(room)
	for _, e := range entries {
		seq, ok := entrySeq(e.ID)
		if !ok {
			continue
		}
		env, err := f.cfg.Sealer.Open(sc, []byte(e.FieldValues["e"]))
		if err != nil {
			f.Counters.BadMAC.Add(1)
			continue
		}
		if o := (origin{env.Node, env.NodeSeq}); seen[o] {
			f.Counters.Replayed.Add(1)
			continue
		} else {
			seen[o] = true
		}
		items = append(items, Item{Seq: seq, TS: env.TS, Body: env.Body})
	}
	return items, floor, nil
}

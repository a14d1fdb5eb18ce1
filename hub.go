package main

import (
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

// Hub tunables.
const (
	// lobby is the room every connection joins on connect.
	lobby = "lobby"
	// presenceMaxMembers: above this many users a room stops announcing each join and
	// leave; in a crowd, presence events would outnumber the conversation.
	presenceMaxMembers = 500
	// membersListMax bounds the member list sent to a joiner, for the same reason.
	membersListMax = 500
	// roomsListMax bounds the answer to a `rooms` command.
	roomsListMax = 200
	// inboundQueue is the length of the hub's command queue shared by all readPumps.
	inboundQueue = 4096
)

// cmdKind names what a command asks of the hub.
type cmdKind uint8

const (
	cmdJoin cmdKind = iota + 1
	cmdLeave
	cmdSay
	cmdRooms
	// cmdQuery runs fn on the hub goroutine. It travels the same FIFO queue as client
	// commands, so it sees the effect of every command queued before it.
	cmdQuery
)

// command is one validated client request on its way to the hub. Everything that can
// be prepared without shared state is prepared by the readPump: for a say, body holds
// the JSON tail of the message (sender and cleaned text, already encoded) so the hub
// only stamps the id, room and time.
type command struct {
	client *Client
	kind   cmdKind
	room   string
	ref    string
	body   []byte
	fn     func()
}

// kick asks the hub to disconnect every connection matching a predicate with the
// given close code; used for logout, session expiry and bans.
type kick struct {
	match  func(*Client) bool
	code   int
	reason string
}

// member is one user in a room: their public identity and how many of their
// connections are in the room. Presence is per user, not per connection.
type member struct {
	info  []byte // pre-encoded {"id":..,"name":..}
	conns int
}

// room is the hub's view of one room.
type room struct {
	name    string
	clients map[*Client]struct{}
	members map[string]*member
}

// Hub owns all room state. Only the goroutine running Hub.run reads or writes rooms,
// clients, or any Client's rooms field; everyone else talks to it over channels. The
// loop does no blocking work: every send to a client is non-blocking, and a client
// whose queue is full is evicted rather than waited for.
type Hub struct {
	register   chan *Client
	unregister chan *Client
	inbound    chan command
	kicks      chan kick
	quit       chan chan struct{}

	clients map[*Client]struct{}
	rooms   map[string]*room
	// lastID is the last message id handed out. Ids are global, so they are unique
	// and increase within every room, even across a room being dropped and re-made.
	lastID uint64
	// slow collects clients found with a full queue during one event; they are
	// evicted after it, so no map is changed while it is being ranged over.
	slow    []*Client
	closing bool

	settings func() *Config
	metrics  *metrics
	log      *slog.Logger
	now      func() time.Time
}

// newHub builds a hub; call run in its own goroutine.
func newHub(settings func() *Config, m *metrics, log *slog.Logger, now func() time.Time) *Hub {
	return &Hub{
		register:   make(chan *Client),
		unregister: make(chan *Client),
		inbound:    make(chan command, inboundQueue),
		kicks:      make(chan kick),
		quit:       make(chan chan struct{}),
		clients:    make(map[*Client]struct{}),
		rooms:      make(map[string]*room),
		settings:   settings,
		metrics:    m,
		log:        log,
		now:        now,
	}
}

// run is the hub's loop. It never returns; the process ends around it.
func (h *Hub) run() {
	for {
		select {
		case c := <-h.register:
			h.addClient(c)
		case c := <-h.unregister:
			h.dropClient(c, 0, "")
		case cmd := <-h.inbound:
			if cmd.kind == cmdQuery {
				cmd.fn()
			} else if _, ok := h.clients[cmd.client]; ok {
				h.handle(cmd)
			}
		case k := <-h.kicks:
			for c := range h.clients {
				if k.match(c) && !c.doomed {
					c.doomed = true
					c.closeCode, c.closeReason = k.code, k.reason
					h.slow = append(h.slow, c)
				}
			}
		case done := <-h.quit:
			h.closing = true
			for c := range h.clients {
				h.dropClient(c, websocket.CloseGoingAway, "server shutting down")
			}
			close(done)
		}
		h.evictSlow()
	}
}

// shutdown closes every connection with 1001 and refuses new ones. It returns once the
// hub has queued the closes; the writePumps deliver them.
func (h *Hub) shutdown() {
	done := make(chan struct{})
	h.quit <- done
	<-done
}

// do runs f on the hub goroutine, after every command already queued, and waits for
// it. Tests and metrics use it to read hub state without a lock.
func (h *Hub) do(f func()) {
	done := make(chan struct{})
	h.inbound <- command{kind: cmdQuery, fn: func() { f(); close(done) }}
	<-done
}

// addClient registers a new connection and joins it to the lobby.
func (h *Hub) addClient(c *Client) {
	if h.closing {
		c.closeCode, c.closeReason = websocket.CloseGoingAway, "server shutting down"
		close(c.send)
		return
	}
	h.clients[c] = struct{}{}
	h.metrics.connections.Set(float64(len(h.clients)))
	h.join(c, lobby, "")
}

// dropClient removes a connection from every room and closes its queue, which tells its
// writePump to send the close frame (code, when non-zero) and stop.
func (h *Hub) dropClient(c *Client, code int, reason string) {
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	for name := range c.rooms {
		h.leave(c, name, false)
	}
	if code != 0 {
		c.closeCode, c.closeReason = code, reason
	}
	close(c.send)
	h.metrics.connections.Set(float64(len(h.clients)))
}

// evictSlow drops the clients collected in h.slow. Dropping one may announce presence
// to others and find more slow clients, so it loops until none are left.
func (h *Hub) evictSlow() {
	for len(h.slow) > 0 {
		c := h.slow[0]
		h.slow = h.slow[1:]
		if _, ok := h.clients[c]; !ok {
			continue
		}
		if c.closeCode == 0 {
			// A full queue: the client is dead or cannot keep up.
			h.metrics.evictions.Inc()
			h.log.Info("evicting slow consumer", "user", c.user.ID)
			c.closeCode, c.closeReason = websocket.ClosePolicyViolation, "too slow"
		}
		h.dropClient(c, c.closeCode, c.closeReason)
	}
	h.slow = h.slow[:0]
}

// deliver queues msg for c without blocking. A full queue marks c for eviction.
func (h *Hub) deliver(c *Client, msg []byte) {
	select {
	case c.send <- msg:
	default:
		if !c.doomed {
			c.doomed = true
			h.slow = append(h.slow, c)
		}
	}
}

// handle carries out one command.
func (h *Hub) handle(cmd command) {
	switch cmd.kind {
	case cmdJoin:
		h.join(cmd.client, cmd.room, cmd.ref)
	case cmdLeave:
		if _, ok := cmd.client.rooms[cmd.room]; !ok {
			h.deliver(cmd.client, errorEvent(codeNotInRoom, "you are not in this room", cmd.ref, cmd.room))
			return
		}
		h.leave(cmd.client, cmd.room, true)
	case cmdSay:
		h.say(cmd)
	case cmdRooms:
		h.deliver(cmd.client, h.roomsEvent())
	}
}

// join adds c to the named room, creating it when new, answers with the member list and
// announces the user to the others when this is their first connection in the room.
func (h *Hub) join(c *Client, name, ref string) {
	if _, ok := c.rooms[name]; ok {
		h.deliver(c, h.joinedEvent(c.rooms[name], ref))
		return
	}
	cfg := h.settings()
	if len(c.rooms) >= cfg.MaxRoomsPerClient {
		h.deliver(c, errorEvent(codeTooManyRooms, "you are in too many rooms; leave one first", ref, name))
		return
	}
	r := h.rooms[name]
	if r == nil {
		r = &room{name: name, clients: make(map[*Client]struct{}), members: make(map[string]*member)}
		h.rooms[name] = r
		h.metrics.rooms.Set(float64(len(h.rooms)))
	}
	if len(r.clients) >= cfg.MaxMembersPerRoom {
		h.deliver(c, errorEvent(codeRoomFull, "this room is full", ref, name))
		return
	}
	r.clients[c] = struct{}{}
	c.rooms[name] = r
	m := r.members[c.user.ID]
	if m == nil {
		m = &member{info: c.userJSON}
		r.members[c.user.ID] = m
		if len(r.members) <= presenceMaxMembers {
			h.broadcastExcept(r, c.user.ID, presenceEvent(name, "join", c.userJSON))
		}
	}
	m.conns++
	h.deliver(c, h.joinedEvent(r, ref))
}

// leave removes c from the named room; answer says whether to confirm to c. The room
// is dropped from memory when its last connection leaves.
func (h *Hub) leave(c *Client, name string, answer bool) {
	r := c.rooms[name]
	if r == nil {
		return
	}
	delete(c.rooms, name)
	delete(r.clients, c)
	if m := r.members[c.user.ID]; m != nil {
		if m.conns--; m.conns <= 0 {
			delete(r.members, c.user.ID)
			if len(r.members) < presenceMaxMembers {
				h.broadcastExcept(r, c.user.ID, presenceEvent(name, "leave", c.userJSON))
			}
		}
	}
	if len(r.clients) == 0 {
		delete(h.rooms, name)
		h.metrics.rooms.Set(float64(len(h.rooms)))
	}
	if answer {
		h.deliver(c, appendObject(nil, "left", name, func(b []byte) []byte { return b }))
	}
}

// say stamps a message and delivers it to the room's members only.
func (h *Hub) say(cmd command) {
	c := cmd.client
	r := c.rooms[cmd.room]
	if r == nil {
		h.deliver(c, errorEvent(codeNotInRoom, "join the room before speaking in it", cmd.ref, cmd.room))
		return
	}
	h.lastID++
	id := h.lastID
	msg := make([]byte, 0, 64+len(cmd.room)+len(cmd.body))
	msg = append(msg, `{"type":"message","room":"`...)
	msg = append(msg, cmd.room...)
	msg = append(msg, `","id":`...)
	msg = strconv.AppendUint(msg, id, 10)
	msg = append(msg, `,"ts":`...)
	msg = strconv.AppendInt(msg, h.now().UnixMilli(), 10)
	msg = append(msg, ',')
	msg = append(msg, cmd.body...)
	for m := range r.clients {
		h.deliver(m, msg)
	}
	h.metrics.messages.Inc()
	h.metrics.deliveries.Add(float64(len(r.clients)))
	if cmd.ref != "" {
		h.deliver(c, ackEvent(cmd.ref, cmd.room, id))
	}
}

// broadcastExcept sends msg to every connection in r not belonging to userID.
func (h *Hub) broadcastExcept(r *room, userID string, msg []byte) {
	for m := range r.clients {
		if m.user.ID != userID {
			h.deliver(m, msg)
		}
	}
}

// joinedEvent encodes the answer to a join: the room and up to membersListMax members.
func (h *Hub) joinedEvent(r *room, ref string) []byte {
	ids := make([]string, 0, len(r.members))
	for id := range r.members {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if len(ids) > membersListMax {
		ids = ids[:membersListMax]
	}
	return appendObject(nil, "joined", r.name, func(b []byte) []byte {
		b = append(b, `,"member_count":`...)
		b = strconv.AppendInt(b, int64(len(r.members)), 10)
		b = append(b, `,"members":[`...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, r.members[id].info...)
		}
		b = append(b, ']')
		if ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, ref)
		}
		return b
	})
}

// roomsEvent lists the rooms in memory, busiest first.
func (h *Hub) roomsEvent() []byte {
	rs := make([]*room, 0, len(h.rooms))
	for _, r := range h.rooms {
		rs = append(rs, r)
	}
	slices.SortFunc(rs, func(a, b *room) int {
		if d := len(b.members) - len(a.members); d != 0 {
			return d
		}
		return strings.Compare(a.name, b.name)
	})
	if len(rs) > roomsListMax {
		rs = rs[:roomsListMax]
	}
	b := []byte(`{"type":"rooms","rooms":[`)
	for i, r := range rs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":"`...)
		b = append(b, r.name...)
		b = append(b, `","members":`...)
		b = strconv.AppendInt(b, int64(len(r.members)), 10)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

package main

import (
	"encoding/json"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"modified-chat/internal/backplane"
	"modified-chat/internal/cluster"
	"modified-chat/internal/crash"
	"modified-chat/internal/store"
)

// Hub tunables.
const (
	// lobby is the public room every connection joins on connect.
	lobby = "lobby"
	// presenceMaxMembers: above this many users a room stops announcing each join and
	// leave; in a crowd, presence events would outnumber the conversation.
	presenceMaxMembers = 200
	// membersListMax bounds the member list sent to a joiner, for the same reason.
	// Above presenceMaxMembers no list is sent at all (only the count): it could not
	// be kept up to date, and encoding it for every joiner of a crowd is pure garbage.
	membersListMax = 200
	// roomsListMax bounds the answer to a `rooms` command.
	roomsListMax = 200
	// inboundQueue is the length of the hub's command queue shared by all readPumps.
	inboundQueue = 4096
	// completionQueue is the length of the queue of store commits coming back.
	completionQueue = 4096
	// auditMemory is how many recent audit entries the hub keeps to answer `audit`
	// without reading the disk.
	auditMemory = 200
	// backlogFlushEvery is how often backlogged clients' queues are topped up.
	backlogFlushEvery = 20 * time.Millisecond
	// watchdogEvery is how often the hub looks for writes stuck past writeWait.
	watchdogEvery = time.Second
	// publicListTTL is how long the sorted list of public rooms is reused.
	publicListTTL = time.Second
	// maxOwnedRooms bounds the rooms one user may own (DoS hardening: without it one
	// account could take every room the server may keep).
	maxOwnedRooms = 50
)

// command is one validated client request on its way to the hub, or (kind "query")
// a function to run on the hub goroutine. Everything that can be prepared without
// shared state is prepared by the readPump: for a say, body holds the JSON tail of
// the message (sender and cleaned text, already encoded).
type command struct {
	client *Client
	env    *envelope
	body   []byte
	// meta, for a file, is the length of body before the file's bytes (see fileBody).
	meta int
	fn   func()
	// reply, when set, receives the hub's verdict on a file announcement; the
	// readPump waits for it before it reads the file's bytes.
	reply chan *protoError
	// fresh, in cluster mode, says the room's record was just read from Redis for
	// this command (clusterrooms.go): it is dispatched on the mirror as it is.
	fresh bool
}

// kick asks the hub to disconnect every connection matching a predicate with the
// given close code; used for logout, session expiry and bans.
type kick struct {
	match func(*Client) bool
	close closeFrame
}

// member is one user in a live room: their identity and how many of their connections
// are in the room. Presence is per user, not per connection.
type member struct {
	user  identity
	conns int
}

// room is a room with connections in it. It exists only while someone is inside; the
// durable part (roomInfo) outlives it.
type room struct {
	info    *roomInfo
	clients map[*Client]struct{}
	members map[string]*member
}

// Hub owns all room state, role grants and bans. Only the goroutine running Hub.run
// reads or writes them, or any Client's hub-owned fields; everyone else talks to it
// over channels. The loop does no blocking work: sends to clients never block (a full
// queue evicts the client), and durable writes are handed to the store writer, whose
// commits come back on the completions channel.
type Hub struct {
	register    chan *Client
	unregister  chan *Client
	inbound     chan command
	kicks       chan kick
	quit        chan chan struct{}
	completions chan func()
	// stop ends run; stopped is closed when it has returned. Senders that may
	// outlive the loop (a readPump still draining at shutdown) select on stopped.
	stop    chan struct{}
	stopped chan struct{}

	clients map[*Client]struct{}
	// byUser and byEmail index the connected clients by user id and by lower-cased
	// email (see index.go).
	byUser  map[string]clientSet
	byEmail map[string]clientSet
	// privateOf indexes private rooms by "user:<id>" (members and invitations by id)
	// and "email:<address>" (invitations by email); privateAll holds every private
	// room, for admins (see index.go).
	privateOf  map[string]nameSet
	privateAll nameSet
	// known remembers users who have connected, for decisions about them while they
	// are offline (see users.go).
	known *userDirectory
	// inflight holds the records with a change waiting for the store (and the
	// commands waiting for them; waiting counts those), creating the rooms being
	// created (name -> owner), which count against the room caps until they settle
	// (see durable.go).
	inflight map[string]*flight
	waiting  int
	// mlsLater are the E2EE rooms whose reconcile waits for the room's change in
	// flight, in cluster mode (e2eecluster.go); sids numbers connections for it.
	mlsLater map[string]*pendingReconcile
	sids     uint64
	// mlsParked are the commands to dispatch again once the room's next entry is
	// applied here (mlsRetry).
	mlsParked map[string][]command
	// mlsTaking are the rooms waiting for KeyPackages from the cluster's directory,
	// mlsStash the ones taken and not yet in a proposal in the log, by room and
	// device (mlsStashed counts them).
	mlsTaking  map[string]bool
	mlsStash   map[string]map[string]*kpEntry
	mlsStashed int
	// mlsJoined are the devices, by room and devKey, that showed here they joined
	// the group (an mls_app of theirs is in the log) while the group still keeps
	// their Welcome's pointer (WelcomeAt): the next group change this node writes
	// drops it (clusterJoined).
	mlsJoined map[string]map[string]bool
	// rechecks counts the room revisions being read for recheckRoom (bounded like
	// refreshes).
	rechecks int
	creating map[string]string
	// creatingPeer is the other member of each conversation being created (dm.go).
	creatingPeer map[string]string
	// dmPrefs is whom each user takes direct messages from; dmLimiters their
	// buckets for opening conversations (dm.go).
	dmPrefs    map[string]*dmPrefs
	dmLimiters map[string]*rate.Limiter
	// dmAnnounced is when this node last told the other nodes of a message in each
	// conversation (clusterdm.go).
	dmAnnounced map[string]time.Time
	// rooms holds the live rooms; meta every durable room, live or not.
	rooms  map[string]*room
	meta   map[string]*roomInfo
	grants map[string]string
	bans   map[string]banInfo
	audit  []auditEntry
	// auditSeq is the key of the newest audit entry in the store.
	auditSeq uint64
	// slow collects clients found with a full queue during one event; they are
	// evicted after it, so no map is changed while it is being ranged over.
	slow    []*Client
	closing bool
	// backlogged holds the clients with a backlog (see enqueue).
	backlogged map[*Client]struct{}
	// leaving holds the connections dropped from clients whose writePump may still be
	// inside a write: a slow consumer is evicted while its writer is blocked on a peer
	// that stopped reading, and only the watchdog can end that write (see checkWrites).
	leaving map[*Client]struct{}
	// backlogTicking says the backlog ticker runs (tests read it through do).
	backlogTicking bool
	// writeWait is how long one write may take before the watchdog ends the
	// connection (the writeWait constant; tests shorten it).
	writeWait time.Duration
	// pages holds the history pages being read or read for sharing (see
	// startHistory).
	pages map[pageKey]*sharedPage
	// publicList caches the sorted public rooms for `rooms` (see roomsEvent).
	publicList   []*roomInfo
	publicListAt time.Time

	// mls is the Delivery Service state of the E2EE rooms (e2ee.go).
	mls *mlsState
	// hideE2EE is a test hook: welcome carries no e2ee, for page tests that bring
	// their own Delivery Service (testdata/mls). Only _test.go files set it.
	hideE2EE bool

	app *App
	// bp numbers messages and makes changes durable (internal/backplane); the
	// local one is a global id counter and the store writer.
	bp backplane.Backplane
	// feed, in cluster mode, numbers, keeps and fans out the rooms' messages through
	// Redis (hubcluster.go); feeds is the hub's state of each room it asked it for.
	// Both nil on a single node.
	feed  *cluster.Feed
	feeds map[string]*liveFeed
	// roomRev is, in cluster mode, the revision of each room record the hub holds;
	// refreshes the commands waiting for a room's record to be read (clusterrooms.go).
	roomRev   map[string]uint64
	refreshes map[string][]command
	metrics   *metrics
	log       *slog.Logger
	now       func() time.Time
}

// newHub builds a hub from the state loaded from the store; call run in its own
// goroutine.
func newHub(app *App, st *hubState, bp backplane.Backplane) *Hub {
	h := &Hub{
		register:     make(chan *Client),
		unregister:   make(chan *Client),
		inbound:      make(chan command, inboundQueue),
		kicks:        make(chan kick),
		quit:         make(chan chan struct{}),
		completions:  make(chan func(), completionQueue),
		stop:         make(chan struct{}),
		stopped:      make(chan struct{}),
		clients:      make(map[*Client]struct{}),
		rooms:        make(map[string]*room),
		backlogged:   make(map[*Client]struct{}),
		leaving:      make(map[*Client]struct{}),
		byUser:       make(map[string]clientSet),
		byEmail:      make(map[string]clientSet),
		privateOf:    make(map[string]nameSet),
		privateAll:   make(nameSet),
		known:        newUserDirectory(st.users, maxKnownUsers),
		inflight:     make(map[string]*flight),
		mlsLater:     make(map[string]*pendingReconcile),
		mlsParked:    make(map[string][]command),
		mlsTaking:    make(map[string]bool),
		mlsStash:     make(map[string]map[string]*kpEntry),
		mlsJoined:    make(map[string]map[string]bool),
		creating:     make(map[string]string),
		pages:        make(map[pageKey]*sharedPage),
		creatingPeer: make(map[string]string),
		dmPrefs:      st.dmPrefs,
		dmLimiters:   make(map[string]*rate.Limiter),
		dmAnnounced:  make(map[string]time.Time),
		writeWait:    writeWait,
		meta:         st.rooms,
		grants:       st.grants,
		bans:         st.bans,
		audit:        st.audit,
		auditSeq:     st.auditSeq,
		app:          app,
		bp:           bp,
		feeds:        make(map[string]*liveFeed),
		roomRev:      make(map[string]uint64),
		refreshes:    make(map[string][]command),
		metrics:      app.metrics,
		log:          app.log,
		now:          app.now,
		mls:          &mlsState{groups: st.mlsGroups, kps: st.kps, welcomes: st.welcomes},
	}
	for _, ri := range h.meta {
		h.indexRoom(ri)
	}
	if h.meta[lobby] == nil {
		h.meta[lobby] = newRoomInfo(lobby, "", false, h.now())
		h.persist(nil, "", []store.Write{h.meta[lobby].write()}, nil)
	}
	return h
}

// settings returns the live configuration.
func (h *Hub) settings() *Config { return h.app.settings() }

// run is the hub's loop. It returns once stop is closed (see halt); until then it
// owns all hub state.
//
// The backlog ticker runs only while some client has a backlog: an idle server has
// no timer waking it fifty times a second.
func (h *Hub) run() {
	defer close(h.stopped)
	// The loop owns the hub's state, which nothing else can rebuild: a panic outside a
	// command's handler (which dispatchGuarded recovers), in a completion or a cluster
	// delivery, ends the process for the supervisor to restart (internal/crash).
	defer crash.OnPanic(h.log, "hub loop")
	crash.Hook("hub loop")
	var tick *time.Ticker
	var tickC <-chan time.Time // nil while nobody is backlogged: never fires
	defer func() {
		if tick != nil {
			tick.Stop()
		}
	}()
	watch := time.NewTicker(watchdogEvery)
	defer watch.Stop()
	for {
		select {
		case <-tickC:
			h.flushBacklogs()
		case <-watch.C:
			h.checkWrites()
		case c := <-h.register:
			h.addClient(c)
		case c := <-h.unregister:
			h.dropClient(c, closeFrame{})
		case cmd := <-h.inbound:
			if cmd.fn != nil {
				cmd.fn()
			} else if _, ok := h.clients[cmd.client]; ok {
				h.dispatchGuarded(cmd)
			}
		case k := <-h.kicks:
			for c := range h.clients {
				if k.match(c) {
					h.doom(c, k.close)
				}
			}
		case f := <-h.completions:
			f()
		case done := <-h.quit:
			h.closing = true
			for c := range h.clients {
				h.dropClient(c, closeShutdown)
			}
			close(done)
		case <-h.stop:
			return
		}
		h.evictSlow()
		switch backlogged := len(h.backlogged) > 0; {
		case backlogged && tick == nil:
			tick = time.NewTicker(backlogFlushEvery)
			tickC = tick.C
		case !backlogged && tick != nil:
			tick.Stop()
			tick, tickC = nil, nil
		}
		h.backlogTicking = tick != nil
	}
}

// dispatchGuarded runs one client command. A bug that panics in a handler must cost
// that one connection, not the server and everyone on it: the panic is logged with its
// stack (never the command's fields, which may hold a message), counted, and the sender
// is closed with 1011. What the handler changed before it failed stays changed.
func (h *Hub) dispatchGuarded(cmd command) {
	defer func() {
		if v := recover(); v != nil {
			h.metrics.panics.Inc()
			kind, text := crash.Value(v)
			h.log.Error("command failed", "type", cmd.env.Type, "conn", cmd.client.id, "panic_type", kind, "panic", text, "stack", string(debug.Stack()))
			h.doom(cmd.client, closeInternal)
		}
	}()
	h.dispatch(cmd)
}

// halt ends the loop and waits for it to return. The app calls it last, after the
// connections are gone and the store writer has delivered its completions.
func (h *Hub) halt() {
	close(h.stop)
	<-h.stopped
}

// shutdown closes every connection with 1001 and refuses new ones. It returns once the
// hub has queued the closes; the writePumps deliver them.
func (h *Hub) shutdown() {
	done := make(chan struct{})
	h.quit <- done
	<-done
}

// post hands a command to the hub's loop; once the loop has stopped (shutdown) the
// command is dropped instead of blocking its sender for ever.
func (h *Hub) post(cmd command) {
	select {
	case h.inbound <- cmd:
	case <-h.stopped:
	}
}

// endConnections asks the hub to close every connection k matches. Like post it gives
// up once the hub has stopped: a logout racing a shutdown must not block its handler
// (and with it the server's Close) on a loop that no longer reads.
func (h *Hub) endConnections(k kick) {
	select {
	case h.kicks <- k:
	case <-h.stopped:
	}
}

// do runs f on the hub goroutine, after every command already queued, and waits for
// it. Tests and metrics use it to read hub state without a lock.
func (h *Hub) do(f func()) {
	done := make(chan struct{})
	h.inbound <- command{fn: func() { f(); close(done) }}
	<-done
}

// persist hands writes to the store writer. When they are durable, c (if still
// connected) gets an ack for ref; if they fail, an error. It is for writes whose
// effect in memory is no security state and is not undone by a failure: messages
// (already delivered), the lobby's record, the directory of known users. A ban, a
// role, a room's rules or the settings go through commit (durable.go) instead, which
// applies them only once they are durable.
func (h *Hub) persist(c *Client, ref string, writes []store.Write, audit *auditEntry) {
	var ack []byte
	if ref != "" {
		ack = ackOnly(ref)
	}
	h.persistAck(c, ref, ack, writes, audit)
}

// persistAck is persist with a prepared ack (nil for none).
func (h *Hub) persistAck(c *Client, ref string, ack []byte, writes []store.Write, audit *auditEntry) {
	if audit != nil {
		h.rememberAudit(*audit)
		writes = append(writes, h.auditWrite(audit))
	}
	done := func(err error) {
		// Called on the writer's goroutine: hand the result back to the hub. The hub
		// drains completions in its loop, so this cannot deadlock.
		h.completions <- func() {
			if err != nil {
				h.log.Error("store write failed", "err", err)
			}
			if c == nil {
				return
			}
			if _, ok := h.clients[c]; !ok {
				return
			}
			if err != nil {
				h.deliver(c, errorEvent(codeStoreFailed, "the change could not be saved", ref, ""))
			} else if ack != nil {
				h.deliver(c, ack)
			}
		}
	}
	if !h.bp.Submit(writes, done) {
		h.log.Error("store queue full; change kept in memory only")
		if c != nil {
			h.deliver(c, errorEvent(codeBusy, "the server is busy; try again", ref, ""))
		}
	}
}

// auditWrite is the store write of an audit entry, under the next audit key.
func (h *Hub) auditWrite(audit *auditEntry) store.Write {
	b, _ := json.Marshal(audit)
	// Keys increase even if the clock steps back, so the log stays in order.
	h.auditSeq = max(h.auditSeq+1, uint64(h.now().UnixNano()))
	return store.Write{Bucket: bucketAudit, Key: store.SeqKey(h.auditSeq), Value: b}
}

// rememberAudit keeps an audit entry among the recent ones `audit` answers from.
func (h *Hub) rememberAudit(audit auditEntry) {
	h.app.ctl.appendAudit(audit) // cluster mode: the cluster's audit log too
	h.audit = append(h.audit, audit)
	if len(h.audit) > auditMemory {
		h.audit = slices.Clone(h.audit[len(h.audit)-auditMemory:])
	}
}

// addClient registers a new connection, greets it and joins it to the lobby.
func (h *Hub) addClient(c *Client) {
	if h.closing {
		c.hubClose = closeShutdown
		close(c.send)
		return
	}
	if _, banned := h.bans[c.user.ID]; banned {
		c.hubClose = closeBanned
		close(c.send)
		return
	}
	h.clients[c] = struct{}{}
	h.indexClient(c)
	if writes := h.known.see(c.user, h.now()); len(writes) > 0 {
		h.persist(nil, "", writes, nil)
	}
	h.metrics.connections.Set(float64(len(h.clients)))
	h.deliver(c, h.welcomeEvent(c))
	h.join(c, &envelope{Type: "join", Room: lobby})
}

// dropClient removes a connection from every room and closes its queue, which tells its
// writePump to send the close frame (code, when non-zero) and stop.
func (h *Hub) dropClient(c *Client, f closeFrame) {
	if _, ok := h.clients[c]; !ok {
		return
	}
	delete(h.clients, c)
	h.leaving[c] = struct{}{}
	h.unindexClient(c)
	delete(h.backlogged, c)
	c.backlog = nil
	for name := range c.rooms {
		h.leaveRoom(c, name)
	}
	if f.code != 0 {
		c.hubClose = f
	}
	close(c.send)
	h.metrics.connections.Set(float64(len(h.clients)))
}

// doom marks c to be closed with code after the current event.
func (h *Hub) doom(c *Client, f closeFrame) {
	if !c.doomed {
		c.doomed = true
		c.hubClose = f
		h.slow = append(h.slow, c)
	}
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
		if c.hubClose.code == 0 {
			// A full queue: the client is dead or cannot keep up.
			h.metrics.evictions.Inc()
			h.log.Info("evicting slow consumer", "conn", c.id)
			c.hubClose = closeTooSlow
		}
		h.dropClient(c, c.hubClose)
	}
	h.slow = h.slow[:0]
}

// deliver queues msg for c without blocking. A full queue marks c for eviction.
func (h *Hub) deliver(c *Client, msg []byte) { h.enqueue(c, &msg) }

// enqueue is deliver for an event shared by many recipients: one pointer, many queues.
//
// A client whose queue is full is not evicted at once: a reader that is alive but
// briefly behind (a busy machine, a slow link) gets a backlog, hub-owned and costing
// nothing until used, that is moved into its queue as soon as there is room. Only a
// backlog beyond SendBacklog events marks the client as dead or stuck, and evicts it.
// Order is kept: while a backlog exists, new events join its end.
//
// DoS hardening: the events waiting for c are bounded in bytes too (SendQueueBytes),
// counted in c.queued. The whole length of an event counts against every client
// holding it, although the queues share one copy: a slow reader is what keeps that
// copy alive, so what one client can pin is what its own queue holds, and a bound per
// client is what stops one reader from pinning gigabytes of file events. (Many slow
// readers of the same event over-count; they are evicted a little early, never late.)
func (h *Hub) enqueue(c *Client, msg *[]byte) {
	size := int64(len(*msg))
	if c.queued.Load()+size > h.settings().SendQueueBytes {
		h.doom(c, closeFrame{})
		return
	}
	if len(c.backlog) > 0 {
		h.flushBacklog(c)
	}
	if len(c.backlog) == 0 {
		select {
		case c.send <- msg:
			c.queued.Add(size)
			return
		default:
		}
	}
	if c.doomed {
		return
	}
	if len(c.backlog) >= h.settings().SendBacklog {
		h.doom(c, closeFrame{})
		return
	}
	if c.backlog == nil {
		h.backlogged[c] = struct{}{}
	}
	c.backlog = append(c.backlog, msg)
	c.queued.Add(size)
}

// flushBacklog moves as much of c's backlog into its queue as fits now.
func (h *Hub) flushBacklog(c *Client) {
	n := 0
moving:
	for ; n < len(c.backlog); n++ {
		select {
		case c.send <- c.backlog[n]:
		default:
			break moving
		}
	}
	if n == len(c.backlog) {
		c.backlog = nil
		delete(h.backlogged, c)
		return
	}
	c.backlog = c.backlog[n:]
}

// flushBacklogs gives every backlogged client what now fits in its queue. It runs on
// a short tick, so a client that has caught up gets the rest without waiting for the
// next event in its rooms.
func (h *Hub) flushBacklogs() {
	for c := range h.backlogged {
		h.flushBacklog(c)
	}
}

// checkWrites is the write watchdog: a connection whose writePump has been inside one
// write for longer than writeWait has a peer that stopped reading with the network
// buffers full. Closing the socket fails that write and ends the connection; it
// counts as a slow-consumer eviction. One pass a second over the clients replaces a
// write deadline per frame (see writePump).
func (h *Hub) checkWrites() {
	limit := time.Now().Add(-h.writeWait).UnixNano()
	for c := range h.clients {
		if since := c.writingSince.Load(); since != 0 && since < limit {
			c.writingSince.Store(0) // once is enough
			h.metrics.evictions.Inc()
			h.log.Info("closing connection stuck in a write", "conn", c.id)
			c.conn.Close()
		}
	}
	// A dropped connection's queue is closed, but a write it was already in has no
	// deadline: without this its peer could hold the socket, both goroutines and its
	// connection slot for ever by never reading again. Its eviction was counted when
	// it was dropped.
	for c := range h.leaving {
		select {
		case <-c.closeSent: // writePump writes nothing more
			delete(h.leaving, c)
			continue
		default:
		}
		if since := c.writingSince.Load(); since != 0 && since < limit {
			c.writingSince.Store(0)
			h.log.Info("closing dropped connection stuck in a write", "conn", c.id)
			c.conn.Close()
		}
	}
}

// deliverUser sends msg to every connection of a user.
func (h *Hub) deliverUser(userID string, msg []byte) {
	for c := range h.clientsOf(userID) {
		h.deliver(c, msg)
	}
}

// globalRole is a user's global role: a run-time grant, else the policy, else member.
func (h *Hub) globalRole(id identity) string {
	if r, ok := h.grants[id.ID]; ok {
		return r
	}
	if r, ok := h.app.policy().roleFor(id); ok {
		return r
	}
	return roleMember
}

// roomRole is a user's role in a room ("" when none).
func (h *Hub) roomRole(ri *roomInfo, userID string) string {
	if ri == nil {
		return ""
	}
	return ri.Roles[userID]
}

// perms is what a user may do in a room (or globally, for ri nil).
func (h *Hub) perms(id identity, ri *roomInfo) perm {
	return effectivePerms(h.globalRole(id), h.roomRole(ri, id.ID))
}

// displayRole is the role shown beside a user's name in a room: the strongest of
// their global and room roles.
func (h *Hub) displayRole(id identity, ri *roomInfo) string {
	g := h.globalRole(id)
	switch {
	case g == roleAdmin || g == roleReadOnly:
		return g
	case ri != nil && ri.Roles[id.ID] == roomOwner:
		return roomOwner
	case g == roleModerator || (ri != nil && ri.Roles[id.ID] == roomModerator):
		return roleModerator
	}
	return roleMember
}

// rank orders users for expel decisions: one may only expel a user of lower rank.
func (h *Hub) rank(id identity, ri *roomInfo) int {
	p := h.perms(id, ri)
	switch {
	case p&permAdmin != 0:
		return 3
	case p&permManage != 0:
		return 2
	case p&permExpel != 0:
		return 1
	}
	return 0
}

// visible returns a room's record if the user may know it exists: public rooms, and
// private rooms they belong to, are invited to, or administer. Anything else looks
// exactly like a room that does not exist.
func (h *Hub) visible(id identity, name string) *roomInfo {
	ri := h.meta[name]
	if ri == nil {
		return nil
	}
	if ri.DM {
		// A conversation is its two members' only: not even admins see it.
		if ri.isMember(id.ID) {
			return ri
		}
		return nil
	}
	if !ri.Private || ri.isMember(id.ID) || h.globalRole(id) == roleAdmin {
		return ri
	}
	if _, ok := ri.invitation(id, h.now()); ok {
		return ri
	}
	return nil
}

// memberJSON encodes a member as {"id","name","role"} for a room.
func (h *Hub) memberJSON(id identity, ri *roomInfo) []byte {
	return h.appendMember(nil, id, ri)
}

// appendMember appends memberJSON's encoding to b (joinedEvent lists up to
// membersListMax of them, without an allocation each).
func (h *Hub) appendMember(b []byte, id identity, ri *roomInfo) []byte {
	b = appendUserFields(b, id.ID, id.Name)
	b = append(b, `,"role":"`...)
	b = append(b, h.displayRole(id, ri)...)
	return append(b, `"}`...)
}

// limits are the settings a client needs to check its input before sending it.
type limits struct {
	TextMaxChars   int      `json:"text_max_chars"`
	ReadLimitBytes int64    `json:"read_limit_bytes"`
	MsgRate        float64  `json:"msg_rate"`
	MsgBurst       int      `json:"msg_burst"`
	FileMaxBytes   int64    `json:"file_max_bytes"`
	FileTypes      []string `json:"file_types"`
}

// currentLimits reads the limits from the live settings.
func (h *Hub) currentLimits() limits {
	cfg := h.settings()
	return limits{cfg.TextMaxChars, cfg.ReadLimit, cfg.MsgRate, cfg.MsgBurst, cfg.FileMaxBytes, cfg.FileTypes}
}

// limitsEvent tells clients the limits changed (an admin's set_settings).
func (h *Hub) limitsEvent() []byte {
	b, _ := json.Marshal(struct {
		Type   string `json:"type"`
		Limits limits `json:"limits"`
	}{"limits", h.currentLimits()})
	return b
}

// welcomeEvent is the first event on every connection: who you are, your role and
// permissions, and the limits.
func (h *Hub) welcomeEvent(c *Client) []byte {
	cfg := h.settings()
	role := h.globalRole(c.user)
	b, _ := json.Marshal(struct {
		Type   string          `json:"type"`
		You    json.RawMessage `json:"you"`
		Role   string          `json:"role"`
		Perms  []string        `json:"perms"`
		Dev    bool            `json:"dev"`
		Limits limits          `json:"limits"`
		MOTD   string          `json:"motd"`
		E2EE   *e2eeEvent      `json:"e2ee,omitempty"`
	}{"welcome", c.userJSON, role, effectivePerms(role, "").names(), c.user.Dev,
		h.currentLimits(), cfg.MOTD, h.welcomeE2EE()})
	return b
}

// youEvent tells a user's connections their global role changed.
func (h *Hub) youEvent(id identity) []byte {
	role := h.globalRole(id)
	b, _ := json.Marshal(struct {
		Type  string   `json:"type"`
		Role  string   `json:"role"`
		Perms []string `json:"perms"`
	}{"you", role, effectivePerms(role, "").names()})
	return b
}

// enter adds c to the live room for ri, creating it when nobody is inside, answers
// with the member list and announces the user to the others when this is their first
// connection in the room.
func (h *Hub) enter(c *Client, ri *roomInfo, ref string) {
	r := h.rooms[ri.Name]
	if r == nil {
		r = &room{info: ri, clients: make(map[*Client]struct{}), members: make(map[string]*member)}
		h.rooms[ri.Name] = r
		h.metrics.rooms.Set(float64(len(h.rooms)))
		h.openFeed(ri.Name)
	}
	r.clients[c] = struct{}{}
	c.rooms[ri.Name] = r
	m := r.members[c.user.ID]
	if m == nil {
		m = &member{user: c.user}
		r.members[c.user.ID] = m
		if len(r.members) <= presenceMaxMembers {
			h.broadcastExcept(r, c.user.ID, presenceEvent(ri.Name, "join", h.memberJSON(c.user, ri)))
		}
	}
	m.conns++
	h.deliverReply(c, h.joinedEvent(c, r, ref))
}

// leaveRoom removes c from a live room. The live room is dropped from memory when its
// last connection leaves; its durable record stays.
func (h *Hub) leaveRoom(c *Client, name string) {
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
				h.broadcastExcept(r, c.user.ID, presenceEvent(name, "leave", h.memberJSON(c.user, r.info)))
			}
		}
	}
	if len(r.clients) == 0 {
		delete(h.rooms, name)
		h.metrics.rooms.Set(float64(len(h.rooms)))
		h.closeFeed(name)
	}
}

// removeUser takes every connection of a user out of a room, telling them why with
// event (for example a `kicked` event).
func (h *Hub) removeUser(r *room, userID string, event []byte) {
	for c := range r.clients {
		if c.user.ID == userID {
			h.deliver(c, event)
			h.leaveRoom(c, r.info.Name)
		}
	}
}

// broadcast sends msg to every connection in r.
func (h *Hub) broadcast(r *room, msg []byte) {
	shared := &msg
	for m := range r.clients {
		h.enqueue(m, shared)
	}
}

// broadcastExcept sends msg to every connection in r not belonging to userID.
func (h *Hub) broadcastExcept(r *room, userID string, msg []byte) {
	shared := &msg
	for m := range r.clients {
		if m.user.ID != userID {
			h.enqueue(m, shared)
		}
	}
}

// joinedEvent encodes the answer to a join: the room, c's role and permissions in it,
// and up to membersListMax members with their roles.
func (h *Hub) joinedEvent(c *Client, r *room, ref string) []byte {
	// In a crowd no list is sent (and nothing is allocated for one: this runs on the
	// hub's loop for every join); otherwise at most membersListMax members, sorted.
	var ids []string
	if len(r.members) <= presenceMaxMembers {
		ids = make([]string, 0, min(len(r.members), membersListMax))
		for id := range r.members {
			if len(ids) == membersListMax {
				break
			}
			ids = append(ids, id)
		}
		slices.Sort(ids)
	}
	return roomEvent("joined", r.info, len(r.members), func(b []byte) []byte {
		b = h.appendKind(b, r.info, c.user.ID)
		b = append(b, `,"my_role":"`...)
		b = append(b, h.displayRole(c.user, r.info)...)
		b = append(b, `","my_perms":`...)
		perms, _ := json.Marshal(h.perms(c.user, r.info).names())
		b = append(b, perms...)
		b = append(b, `,"member_count":`...)
		b = strconv.AppendInt(b, int64(len(r.members)), 10)
		b = append(b, `,"members":[`...)
		for i, id := range ids {
			if i > 0 {
				b = append(b, ',')
			}
			b = h.appendMember(b, r.members[id].user, r.info)
		}
		b = append(b, ']')
		b = h.appendE2EE(b, r.info)
		if ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, ref)
		}
		return b
	})
}

// roomsEvent lists the rooms c may see: public ones and the private ones it belongs
// to or is invited to, busiest first. DoS hardening: the sorted public list is cached
// for publicListTTL, so clients asking again and again cannot make the hub sort every
// room each time; the private rooms come from the per-user index, so a request costs
// what it returns, not a walk over every room.
func (h *Hub) roomsEvent(c *Client) []byte {
	now := h.now()
	if h.publicList == nil || now.Sub(h.publicListAt) > publicListTTL {
		h.publicList = h.publicList[:0]
		for _, ri := range h.meta {
			if !ri.Private {
				h.publicList = append(h.publicList, ri)
			}
		}
		h.sortRooms(h.publicList)
		if len(h.publicList) > roomsListMax {
			h.publicList = h.publicList[:roomsListMax]
		}
		h.publicListAt = now
	}
	infos := h.privateRoomsOf(c.user, roomsListMax)
	for _, ri := range h.publicList {
		if h.meta[ri.Name] == ri { // not deleted since the list was made
			infos = append(infos, ri)
		}
	}
	online := h.online
	h.sortRooms(infos)
	if len(infos) > roomsListMax {
		infos = infos[:roomsListMax]
	}
	b := []byte(`{"type":"rooms","rooms":[`)
	for i, ri := range infos {
		if i > 0 {
			b = append(b, ',')
		}
		ev := roomEvent("room", ri, online(ri), func(b []byte) []byte {
			b = append(b, `,"name":`...)
			b = appendJSONString(b, ri.Name)
			b = append(b, `,"members":`...)
			b = strconv.AppendInt(b, int64(online(ri)), 10)
			return h.appendKind(b, ri, c.user.ID)
		})
		b = append(b, ev...)
	}
	return append(b, "]}"...)
}

// online counts the users in a room now.
func (h *Hub) online(ri *roomInfo) int {
	if r := h.rooms[ri.Name]; r != nil {
		return len(r.members)
	}
	return 0
}

// sortRooms orders rooms busiest first, then by name.
func (h *Hub) sortRooms(infos []*roomInfo) {
	online := h.online
	slices.SortFunc(infos, func(a, b *roomInfo) int {
		if d := online(b) - online(a); d != 0 {
			return d
		}
		return strings.Compare(a.Name, b.Name)
	})
}

// notifyRoom sends the current description of a room to everyone inside it.
func (h *Hub) notifyRoom(ri *roomInfo) {
	if r := h.rooms[ri.Name]; r != nil {
		h.broadcast(r, roomEvent("room", ri, len(r.members), nil))
	}
}

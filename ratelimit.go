package main

import (
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"modified-chat/internal/cluster"
)

// Admission tunables that are not worth a flag.
const (
	// sweepEvery is how often idle per-IP entries are looked for. An entry is idle
	// when it holds no connection and its handshake bucket has refilled, so dropping
	// it forgets nothing an attacker could use.
	sweepEvery = time.Minute
	// catchupRate and catchupBurst bound the catch-up requests of one connection for
	// rooms it is already in (`history`, and `join` with `after` of a joined room): a
	// reconnect asks once per room and then a few pages, a flood asks for ever.
	catchupRate  = 1
	catchupBurst = 10
	// ipv6PrefixBits groups IPv6 clients: one subscriber usually owns a whole /64, so
	// counting single addresses would let one host take 2^64 identities.
	ipv6PrefixBits = 64
)

// Refusal reasons, used for metrics labels and logs. They never contain identities.
const (
	refuseHandshakeRate = "handshake_rate"
	refuseIPConns       = "ip_conns"
	refuseUserConns     = "user_conns"
	refuseGlobalConns   = "global_conns"
	refuseIPTableFull   = "ip_table_full"
	refuseLoginRate     = "login_rate"
)

// refusal says why a handshake was refused, with the HTTP status to answer and how
// long the client should wait before trying again.
type refusal struct {
	reason     string
	status     int
	retryAfter time.Duration
}

// ipEntry is the per-IP (or per-/64) admission state.
type ipEntry struct {
	handshakes *rate.Limiter
	// logins is the bucket of the login routes, made on the first login request, so
	// that WebSocket-only clients do not carry one.
	logins   *rate.Limiter
	conns    int
	lastSeen time.Time
}

// userEntry is the per-user state shared by all of a user's connections: the count of
// open connections and the message bucket they draw from together.
type userEntry struct {
	conns int
	msgs  *rate.Limiter
}

// admission decides, before the WebSocket upgrade, whether a connection may open. It
// is called from HTTP handler goroutines, before any Client exists, so it guards its
// maps with a mutex instead of living in the hub: a round trip through the hub's loop
// for every handshake would put handshake floods in front of chat traffic.
type admission struct {
	mu    sync.Mutex
	ips   map[netip.Prefix]*ipEntry
	users map[string]*userEntry
	total int

	lastSweep time.Time
	settings  func() *Config
	now       func() time.Time
}

// newAdmission builds the admission state. settings is read on every call so that
// limits changed at run time apply at once.
func newAdmission(settings func() *Config, now func() time.Time) *admission {
	return &admission{
		ips:      make(map[netip.Prefix]*ipEntry),
		users:    make(map[string]*userEntry),
		settings: settings,
		now:      now,
	}
}

// ticket is a granted connection slot. release gives it back exactly once.
type ticket struct {
	a       *admission
	ip      netip.Prefix
	user    string
	userMsg *rate.Limiter
	// slot is the cluster-wide connection slot (cluster mode), given back with the
	// ticket.
	slot *cluster.Slot
	once sync.Once
}

// ipKey maps an address to the unit that limits count: the address itself for IPv4,
// its /64 for IPv6. IPv4-mapped IPv6 addresses count as IPv4.
func ipKey(a netip.Addr) netip.Prefix {
	a = a.Unmap()
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(ipv6PrefixBits)
	return p
}

// checkHandshake spends one handshake token for ip. It is called before the session
// is checked, so that guessing cookies or hammering /ws unauthenticated is limited too.
func (a *admission) checkHandshake(ip netip.Addr) *refusal {
	return a.spend(ip, refuseHandshakeRate, func(e *ipEntry, _ *Config) *rate.Limiter { return e.handshakes })
}

// checkLogin spends one token of ip's login bucket, shared by /login, /login/dev,
// /auth/callback and /logout. DoS hardening: each of them costs the server a sealed
// cookie, a provider round trip or a store write, and nothing else bounds how often
// one client asks. It lives in the same per-IP table as the handshakes, so the
// table's bound and sweep cover it too.
func (a *admission) checkLogin(ip netip.Addr) *refusal {
	return a.spend(ip, refuseLoginRate, func(e *ipEntry, cfg *Config) *rate.Limiter {
		if e.logins == nil {
			e.logins = rate.NewLimiter(rate.Limit(cfg.LoginRate), cfg.LoginBurst)
		}
		return e.logins
	})
}

// spend takes one token from the bucket that pick chooses in ip's entry, or says why
// not: reason and 429 with the wait, or the table's own refusal when it is full.
func (a *admission) spend(ip netip.Addr, reason string, pick func(*ipEntry, *Config) *rate.Limiter) *refusal {
	cfg := a.settings()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	e, ref := a.ipEntryLocked(ipKey(ip), cfg, now)
	if ref != nil {
		return ref
	}
	r := pick(e, cfg).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return &refusal{reason: reason, status: http.StatusTooManyRequests, retryAfter: d}
	}
	return nil
}

// loginLimited puts a login route behind the per-IP login bucket (checkLogin).
func (app *App) loginLimited(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ref := app.admission.checkLogin(clientIP(r, app.settings().TrustedProxies)); ref != nil {
			app.metrics.httpRefused.WithLabelValues(ref.reason).Inc()
			writeRefusal(w, ref)
			return
		}
		next(w, r)
	})
}

// writeRefusal answers a request refused by admission control with its status and a
// Retry-After in whole seconds, rounded up and at least 1.
func writeRefusal(w http.ResponseWriter, ref *refusal) {
	secs := int((ref.retryAfter + time.Second - 1) / time.Second)
	w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
	http.Error(w, http.StatusText(ref.status), ref.status)
}

// admit takes a connection slot for (ip, user), or says why not.
func (a *admission) admit(ip netip.Addr, user string) (*ticket, *refusal) {
	cfg := a.settings()
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	key := ipKey(ip)
	e, ref := a.ipEntryLocked(key, cfg, now)
	if ref != nil {
		return nil, ref
	}
	if a.total >= cfg.MaxConns {
		return nil, &refusal{reason: refuseGlobalConns, status: http.StatusServiceUnavailable, retryAfter: 30 * time.Second}
	}
	if e.conns >= cfg.MaxConnsPerIP {
		return nil, &refusal{reason: refuseIPConns, status: http.StatusTooManyRequests, retryAfter: 30 * time.Second}
	}
	u := a.users[user]
	if u != nil && u.conns >= cfg.MaxConnsPerUser {
		return nil, &refusal{reason: refuseUserConns, status: http.StatusTooManyRequests, retryAfter: 30 * time.Second}
	}
	if u == nil {
		u = &userEntry{msgs: rate.NewLimiter(rate.Limit(cfg.UserMsgRate), cfg.UserMsgBurst)}
		a.users[user] = u
	}
	u.conns++
	e.conns++
	a.total++
	return &ticket{a: a, ip: key, user: user, userMsg: u.msgs}, nil
}

// ipEntryLocked finds or creates the entry for key, sweeping idle entries first when
// it is time or when the table is full. DoS hardening: the table never exceeds
// MaxTrackedIPs, so rotating source addresses cannot grow memory without bound; when
// it is full of live entries, new addresses are refused until some go idle.
func (a *admission) ipEntryLocked(key netip.Prefix, cfg *Config, now time.Time) (*ipEntry, *refusal) {
	if e := a.ips[key]; e != nil {
		e.lastSeen = now
		return e, nil
	}
	if now.Sub(a.lastSweep) >= sweepEvery || len(a.ips) >= cfg.MaxTrackedIPs {
		a.sweepLocked(cfg, now)
	}
	if len(a.ips) >= cfg.MaxTrackedIPs {
		return nil, &refusal{reason: refuseIPTableFull, status: http.StatusServiceUnavailable, retryAfter: sweepEvery}
	}
	e := &ipEntry{handshakes: rate.NewLimiter(rate.Limit(cfg.IPHandshakeRate), cfg.IPHandshakeBurst), lastSeen: now}
	a.ips[key] = e
	return e, nil
}

// sweepLocked drops entries with no connection whose buckets are full again.
func (a *admission) sweepLocked(cfg *Config, now time.Time) {
	a.lastSweep = now
	refill := time.Duration(float64(cfg.IPHandshakeBurst) / cfg.IPHandshakeRate * float64(time.Second))
	loginRefill := time.Duration(float64(cfg.LoginBurst) / cfg.LoginRate * float64(time.Second))
	for k, e := range a.ips {
		idle := refill
		if e.logins != nil {
			idle = max(idle, loginRefill)
		}
		if e.conns == 0 && now.Sub(e.lastSeen) >= idle {
			delete(a.ips, k)
		}
	}
}

// trackedIPs reports the size of the per-IP table, for tests and metrics.
func (a *admission) trackedIPs() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.ips)
}

// release returns the slot. Safe to call more than once.
func (t *ticket) release() {
	t.once.Do(func() {
		if t.slot != nil {
			t.slot.Release()
		}
		a := t.a
		a.mu.Lock()
		defer a.mu.Unlock()
		a.total--
		if e := a.ips[t.ip]; e != nil {
			e.conns--
			e.lastSeen = a.now()
		}
		if u := a.users[t.user]; u != nil {
			if u.conns--; u.conns <= 0 {
				delete(a.users, t.user)
			}
		}
	})
}

// connLimiter holds one connection's token buckets. It is used only by that
// connection's readPump, so it needs no lock of its own (rate.Limiter locks itself,
// and the user bucket is shared with the user's other connections). The exceptions are
// the buckets for what the server sends in answer (files, reply, catchups): the hub
// and its history readers spend from them, through methods that touch nothing else.
type connLimiter struct {
	msgs  *rate.Limiter
	bytes *rate.Limiter
	files *rate.Limiter
	user  *rate.Limiter
	// budget, in cluster mode, spends from the user's cluster-wide message budget in
	// Redis; when Redis does not answer (an error), user stands in. nil on one node.
	budget func() (bool, time.Duration, error)
	// reply pays for the bytes of answers to this connection's requests (history
	// pages, member lists in joined, rooms, audit): charged after the answer is built,
	// so it may run into debt, and while in debt such requests are refused.
	reply *rate.Limiter
	// catchups counts catch-up requests for rooms already joined.
	catchups *rate.Limiter
	// drops holds the times of recent rate-limited messages, oldest first, at most
	// abuseDrops of them: enough to tell sustained abuse from a burst.
	drops []time.Time
	now   func() time.Time
	cfg   *Config
}

// newConnLimiter builds the buckets for one connection.
func newConnLimiter(cfg *Config, user *rate.Limiter, now func() time.Time) *connLimiter {
	return &connLimiter{
		msgs:  rate.NewLimiter(rate.Limit(cfg.MsgRate), cfg.MsgBurst),
		bytes: rate.NewLimiter(rate.Limit(cfg.ByteRate), cfg.ByteBurst),
		files: rate.NewLimiter(rate.Limit(cfg.FileRate), cfg.FileBurst),
		user:  user,
		reply: rate.NewLimiter(rate.Limit(cfg.ReplyByteRate), cfg.ReplyByteBurst),

		catchups: rate.NewLimiter(catchupRate, catchupBurst),
		now:      now,
		cfg:      cfg,
	}
}

// setConfig applies changed limits to a live connection.
func (l *connLimiter) setConfig(cfg *Config) {
	now := l.now()
	l.msgs.SetLimitAt(now, rate.Limit(cfg.MsgRate))
	l.msgs.SetBurstAt(now, cfg.MsgBurst)
	l.bytes.SetLimitAt(now, rate.Limit(cfg.ByteRate))
	l.bytes.SetBurstAt(now, cfg.ByteBurst)
	l.files.SetLimitAt(now, rate.Limit(cfg.FileRate))
	l.files.SetBurstAt(now, cfg.FileBurst)
	if l.user != nil {
		// Shared by the user's connections; each applies the same value.
		l.user.SetLimitAt(now, rate.Limit(cfg.UserMsgRate))
		l.user.SetBurstAt(now, cfg.UserMsgBurst)
	}
	l.cfg = cfg
}

// allow spends one message and size bytes from the connection's buckets and one message
// from the user's. It is all or nothing: when any bucket says no, the tokens taken from
// the others are put back. It returns how long to wait when refused, and whether the
// refusals have become sustained abuse.
func (l *connLimiter) allow(size int) (ok bool, retry time.Duration, abusive bool) {
	now := l.now()
	rs := make([]*rate.Reservation, 0, 3)
	take := func(lim *rate.Limiter, n int) bool {
		if lim == nil {
			return true
		}
		r := lim.ReserveN(now, n)
		rs = append(rs, r)
		if !r.OK() {
			retry = time.Duration(math.MaxInt64)
			return false
		}
		if d := r.DelayFrom(now); d > 0 {
			retry = max(retry, d)
			return false
		}
		return true
	}
	ok = take(l.msgs, 1)
	ok = take(l.bytes, size) && ok
	if ok && l.budget != nil {
		// The user's budget last, so a refusal by the local buckets never reaches
		// Redis (floods stay local) and a refusal by Redis has spent nothing there.
		allowed, wait, err := l.budget()
		if err == nil {
			if allowed {
				return true, 0, false
			}
			for _, r := range rs {
				r.CancelAt(now)
			}
			return false, wait, l.noteDrop(now)
		}
	}
	ok = take(l.user, 1) && ok
	if ok {
		return true, 0, false
	}
	for _, r := range rs {
		r.CancelAt(now)
	}
	return false, retry, l.noteDrop(now)
}

// allowFile spends size bytes from the file bucket, separate from the text buckets so
// that files neither starve chat nor ride on its budget.
func (l *connLimiter) allowFile(size int) (bool, time.Duration) {
	now := l.now()
	r := l.files.ReserveN(now, size)
	if !r.OK() {
		return false, time.Duration(math.MaxInt64)
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// allowFileOut spends size bytes of the file bucket for a file the server sends on
// request (fetch_file): fetching costs what sending costs. Safe from any goroutine.
func (l *connLimiter) allowFileOut(size int) (time.Duration, bool) {
	ok, retry := l.allowFile(max(size, 1))
	return retry, ok
}

// replyAllowed reports whether the reply budget is out of debt; when not, how long
// until it is. Safe from any goroutine.
func (l *connLimiter) replyAllowed() (time.Duration, bool) {
	now := l.now()
	t := l.reply.TokensAt(now)
	if t >= 1 {
		return 0, true
	}
	return time.Duration((1 - t) / float64(l.reply.Limit()) * float64(time.Second)), false
}

// chargeReply charges n bytes sent in answer to the reply budget, running into debt
// if need be (the answer is already made). One charge is at most the burst, the most
// the bucket can owe. Safe from any goroutine.
func (l *connLimiter) chargeReply(n int) {
	l.reply.ReserveN(l.now(), min(n, l.reply.Burst()))
}

// allowCatchup spends one catch-up request, or says how long to wait.
func (l *connLimiter) allowCatchup() (time.Duration, bool) {
	now := l.now()
	r := l.catchups.ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return d, false
	}
	return 0, true
}

// noteDrop records a refused message and reports whether AbuseDrops refusals fell
// within AbuseWindow.
func (l *connLimiter) noteDrop(now time.Time) bool {
	limit := l.cfg.AbuseDrops
	l.drops = append(l.drops, now)
	if len(l.drops) > limit {
		l.drops = l.drops[len(l.drops)-limit:]
	}
	return len(l.drops) >= limit && now.Sub(l.drops[0]) <= l.cfg.AbuseWindow
}

// clientIP finds the address that limits count against. X-Forwarded-For is believed
// only when the direct peer is a trusted proxy, and then the rightmost address that is
// not itself a trusted proxy is taken: entries further left are client-controlled.
func clientIP(r *http.Request, trusted []netip.Prefix) netip.Addr {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	peer, err := netip.ParseAddr(host)
	if err != nil {
		return netip.IPv4Unspecified()
	}
	peer = peer.Unmap()
	if !isTrusted(peer, trusted) {
		return peer
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			// A garbled hop: stop believing the chain and use the last good address.
			return peer
		}
		a = a.Unmap()
		if !isTrusted(a, trusted) {
			return a
		}
		peer = a
	}
	return peer
}

// isTrusted reports whether a is inside one of the trusted proxy prefixes.
func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

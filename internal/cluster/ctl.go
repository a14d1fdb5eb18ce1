package cluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"modified-chat/internal/crash"
)

// The global control log (SCALE-OUT.md §3.4): global bans, roles, settings and logouts
// reach every node through one Redis stream, <prefix>:{g}:ctl. One script writes the
// state, appends the sealed entry and publishes a wake-up on the channel of the same
// name; every node reads the stream in order from where it last stopped. PUB/SUB is
// only the wake-up: a position check every CtlPollEvery reads the stream anyway, so an
// entry reaches every node within about a second even when its subscription died
// without a word (Redis killed it, a failover left it behind).

// Control-log tunables.
const (
	// CtlPollEvery is the position check: the bound on how late an entry can be
	// applied when PUB/SUB is silently dead.
	CtlPollEvery = time.Second
	// ctlMaxLen bounds the stream (approximately): far more than any node falls behind
	// between two position checks; a node that starts reads state, not the log.
	ctlMaxLen = 100_000
	// ctlReadBatch is how many entries one read takes; a longer backlog takes turns.
	ctlReadBatch = 256
	// ctlTimeout bounds one append or one read.
	ctlTimeout = 2 * time.Second
	// ctlResubscribeEvery spaces attempts to subscribe again after the subscription ended.
	ctlResubscribeEvery = 250 * time.Millisecond
	// MaxRevoked bounds the revoked sessions kept in Redis (DoS hardening: every login
	// followed by a logout adds one until its cookie expires). At the cap a logout ends
	// all of its user's sessions instead (a cutoff), as the single-node store does.
	MaxRevoked = 100_000
)

var (
	//go:embed lua/ctl.lua
	ctlSource string
	ctlScript = rueidis.NewLuaScript(ctlSource)
)

// ErrRevokedFull says the revoked-session set is at MaxRevoked; Revoke then writes a
// cutoff instead.
var ErrRevokedFull = errors.New("cluster: revoked sessions at the cap")

// Control entry kinds.
const (
	OpBan      = "ban"      // User banned (Value: the ban record), sessions up to At dead
	OpUnban    = "unban"    // User's ban lifted (the cutoff stays)
	OpRole     = "role"     // User's run-time global role is Role
	OpSettings = "settings" // the run-time settings are Value
	OpRevoke   = "revoke"   // session SID of User logged out; its cookie ends at Exp (Unix s)
	OpCutoff   = "cutoff"   // every session of User issued up to At (Unix ms) is dead; SID logged out
)

// CtlEntry is the body of one control-log entry, sealed with the cluster key. The
// same sealed bytes are what the state keys hold, so state read at start-up is checked
// exactly like the log.
type CtlEntry struct {
	Op    string          `json:"op"`
	User  string          `json:"user,omitempty"`
	Role  string          `json:"role,omitempty"`
	SID   string          `json:"sid,omitempty"`
	Exp   int64           `json:"exp,omitempty"`
	At    int64           `json:"at,omitempty"`
	Value json.RawMessage `json:"value,omitempty"`
	// Room names the room of an OpRoom entry (roomindex.go).
	Room string `json:"room,omitempty"`
	// Rev is the revision of a per-user record an OpDevices or OpDMPrefs entry
	// carries (devices.go): every node keeps the highest.
	Rev uint64 `json:"rev,omitempty"`
}

// Cutoffs is the HASH of user id -> sealed entry whose At ends every session of the
// user issued until then (set by a global ban, and by a logout at MaxRevoked).
func (k Keys) Cutoffs() string { return k.global() + ":cutoffs" }

// stateOp is one state write of ctl.lua: its name, the key, the argument.
type stateOp struct{ name, key, arg string }

// Ctl writes to the control log and reads the state it keeps. Safe for concurrent use.
type Ctl struct {
	client rueidis.Client
	keys   Keys
	sealer *Sealer
	// maxRevoked is MaxRevoked (tests lower it).
	maxRevoked int
	// bad counts entries and stored values dropped for a bad envelope (MAC, key,
	// format), replayed those dropped as copies of earlier entries.
	bad, replayed atomic.Uint64
}

// NewCtl builds the control log over client.
func NewCtl(client rueidis.Client, keys Keys, sealer *Sealer) *Ctl {
	return &Ctl{client: client, keys: keys, sealer: sealer, maxRevoked: MaxRevoked}
}

// Dropped reports how many entries were dropped as forged or malformed, and how many
// as replays, for metrics and tests.
func (c *Ctl) Dropped() (bad, replayed uint64) { return c.bad.Load(), c.replayed.Load() }

// append seals e and runs ctl.lua with ops; it returns the entry's stream id.
func (c *Ctl) append(ctx context.Context, e CtlEntry, ops ...stateOp) (string, error) {
	return c.appendCapped(ctx, c.maxRevoked, ErrRevokedFull, e, ops...)
}

// appendCapped is append with the cap of its zadd or hsetcap op, and the error that
// says the set was at it.
func (c *Ctl) appendCapped(ctx context.Context, max int, full error, e CtlEntry, ops ...stateOp) (string, error) {
	body, err := json.Marshal(e)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	keys := []string{c.keys.Ctl()}
	args := []string{string(c.sealer.Seal(c.keys.Ctl(), body)), strconv.Itoa(ctlMaxLen), strconv.Itoa(max)}
	for _, op := range ops {
		keys = append(keys, op.key)
		args = append(args, op.name, strconv.Itoa(len(keys)), op.arg)
	}
	id, err := ctlScript.Exec(ctx, c.client, keys, args).ToString()
	if err != nil {
		if strings.HasPrefix(err.Error(), "FULL") {
			return "", full
		}
		if strings.HasPrefix(err.Error(), "STALE") {
			return "", ErrRecordStale
		}
		return "", fmt.Errorf("cluster: control log: %w", err)
	}
	return id, nil
}

// Ban bans user (ban is the ban record as JSON) and kills their sessions issued up to
// at, in the log and in state.
func (c *Ctl) Ban(ctx context.Context, user string, ban json.RawMessage, at time.Time) (string, error) {
	return c.append(ctx, CtlEntry{Op: OpBan, User: user, Value: ban, At: at.UnixMilli()},
		stateOp{"hset", c.keys.Bans(), user}, stateOp{"hset", c.keys.Cutoffs(), user})
}

// Unban lifts user's ban.
func (c *Ctl) Unban(ctx context.Context, user string) (string, error) {
	return c.append(ctx, CtlEntry{Op: OpUnban, User: user}, stateOp{"hdel", c.keys.Bans(), user})
}

// SetRole gives user the run-time global role.
func (c *Ctl) SetRole(ctx context.Context, user, role string) (string, error) {
	return c.append(ctx, CtlEntry{Op: OpRole, User: user, Role: role}, stateOp{"hset", c.keys.Grants(), user})
}

// SetSettings replaces the run-time settings (settings as JSON).
func (c *Ctl) SetSettings(ctx context.Context, settings json.RawMessage) (string, error) {
	return c.append(ctx, CtlEntry{Op: OpSettings, Value: settings}, stateOp{"set", c.keys.Settings(), "-"})
}

// Revoke logs out session sid of user, whose cookie ends at exp. The set of revoked
// sessions is swept of expired ones on every logout; at MaxRevoked even after that,
// the user's cutoff moves to now instead (every session of theirs dies), as the
// single-node store does. cutoff reports which happened.
func (c *Ctl) Revoke(ctx context.Context, user, sid string, exp, now time.Time) (id string, cutoff bool, err error) {
	id, err = c.append(ctx, CtlEntry{Op: OpRevoke, User: user, SID: sid, Exp: exp.Unix()},
		stateOp{"zadd", c.keys.Revoked(), strconv.FormatInt(exp.UnixMilli(), 10)})
	if !errors.Is(err, ErrRevokedFull) {
		return id, false, err
	}
	id, err = c.append(ctx, CtlEntry{Op: OpCutoff, User: user, SID: sid, At: now.UnixMilli()},
		stateOp{"hset", c.keys.Cutoffs(), user})
	return id, true, err
}

// open checks one sealed entry of the control log or of the state it keeps.
func (c *Ctl) open(raw string) (Envelope, CtlEntry, error) {
	env, err := c.sealer.Open(c.keys.Ctl(), []byte(raw))
	if err != nil {
		c.bad.Add(1)
		return Envelope{}, CtlEntry{}, err
	}
	var e CtlEntry
	if err := json.Unmarshal(env.Body, &e); err != nil || e.Op == "" {
		c.bad.Add(1)
		return Envelope{}, CtlEntry{}, ErrMalformed
	}
	return env, e, nil
}

// CtlState is the state the control log keeps, as read at start-up: every value
// checked, and each filed under the user it names (a sealed value copied under
// another user's field is dropped).
type CtlState struct {
	// Top is the log's newest id when the state was read: a node applies the log
	// from there on (entries in between are applied twice, which changes nothing).
	Top      string
	Bans     map[string]CtlEntry
	Grants   map[string]string
	Cutoffs  map[string]int64 // user id -> Unix ms
	Revoked  map[string]int64 // session id -> cookie expiry, Unix s
	Settings json.RawMessage  // nil: never set
}

// Load reads the log's top and then the state. A value that fails its check is left
// out and counted; log explains which.
func (c *Ctl) Load(ctx context.Context, now time.Time, log *slog.Logger) (*CtlState, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*ctlTimeout)
	defer cancel()
	top, err := c.top(ctx)
	if err != nil {
		return nil, err
	}
	st := &CtlState{Top: top, Bans: map[string]CtlEntry{}, Grants: map[string]string{}, Cutoffs: map[string]int64{}, Revoked: map[string]int64{}}
	hash := func(key, op string, put func(field string, e CtlEntry)) error {
		m, err := c.client.Do(ctx, c.client.B().Hgetall().Key(key).Build()).AsStrMap()
		if err != nil {
			return fmt.Errorf("cluster: reading %s: %w", key, err)
		}
		for field, raw := range m {
			_, e, err := c.open(raw)
			if err == nil && e.User != field {
				c.bad.Add(1)
				err = errors.New("filed under another user")
			}
			if err != nil || (op != "" && e.Op != op) {
				log.Warn("control state value dropped", "key", key, "err", err)
				continue
			}
			put(field, e)
		}
		return nil
	}
	if err := hash(c.keys.Bans(), OpBan, func(f string, e CtlEntry) { st.Bans[f] = e }); err != nil {
		return nil, err
	}
	if err := hash(c.keys.Grants(), OpRole, func(f string, e CtlEntry) { st.Grants[f] = e.Role }); err != nil {
		return nil, err
	}
	if err := hash(c.keys.Cutoffs(), "", func(f string, e CtlEntry) {
		if e.Op == OpBan || e.Op == OpCutoff {
			st.Cutoffs[f] = e.At
		}
	}); err != nil {
		return nil, err
	}
	members, err := c.client.Do(ctx, c.client.B().Zrangebyscore().Key(c.keys.Revoked()).
		Min(strconv.FormatInt(now.UnixMilli(), 10)).Max("+inf").Build()).AsStrSlice()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading revoked sessions: %w", err)
	}
	for _, raw := range members {
		if _, e, err := c.open(raw); err != nil || e.Op != OpRevoke || e.SID == "" {
			log.Warn("revoked session dropped", "err", err)
		} else {
			st.Revoked[e.SID] = e.Exp
		}
	}
	raw, err := c.client.Do(ctx, c.client.B().Get().Key(c.keys.Settings()).Build()).ToString()
	switch {
	case rueidis.IsRedisNil(err):
	case err != nil:
		return nil, fmt.Errorf("cluster: reading settings: %w", err)
	default:
		if _, e, err := c.open(raw); err != nil || e.Op != OpSettings {
			log.Warn("stored settings dropped", "err", err)
		} else {
			st.Settings = e.Value
		}
	}
	return st, nil
}

// top is the newest id of the log, or "0-0" when it is empty.
func (c *Ctl) top(ctx context.Context) (string, error) {
	es, err := c.client.Do(ctx, c.client.B().Xrevrange().Key(c.keys.Ctl()).End("+").Start("-").Count(1).Build()).AsXRange()
	if err != nil {
		return "", fmt.Errorf("cluster: control log top: %w", err)
	}
	if len(es) == 0 {
		return "0-0", nil
	}
	return es[0].ID, nil
}

// CtlFeed applies the control log on one node, in order, from a position on.
type CtlFeed struct {
	ctl   *Ctl
	log   *slog.Logger
	apply func(id string, from string, e CtlEntry)
	// replay drops copies of earlier entries; only the feed goroutine touches it.
	replay *Replay
	last   string
	poke   chan struct{}
	// subscribe is false only in tests that show the position check alone suffices.
	subscribe bool

	mu       sync.Mutex
	lastErr  time.Time
	position atomic.Pointer[string]
}

// NewCtlFeed makes a feed that applies entries after position from (a CtlState's Top).
// apply runs on the feed's goroutine, one entry at a time in log order, with the id
// of the node that wrote it; it must not block for long (hand work to the hub).
func (c *Ctl) NewCtlFeed(from string, now func() time.Time, log *slog.Logger, apply func(id, node string, e CtlEntry)) *CtlFeed {
	f := &CtlFeed{ctl: c, log: log, apply: apply, replay: NewReplay(now), last: from, poke: make(chan struct{}, 1), subscribe: true}
	f.position.Store(&from)
	return f
}

// Position is the id of the last entry the feed read.
func (f *CtlFeed) Position() string { return *f.position.Load() }

// Run applies the log until stop is closed: on every wake-up from the channel, every
// (re)subscription and every CtlPollEvery. It returns once its goroutines are done.
// A panic ends the process (crash.OnPanic): the feed's position and replay filter may
// be half updated, and a node that stopped applying kicks, bans and logouts would go on
// serving users the others have shut out.
func (f *CtlFeed) Run(stop <-chan struct{}) {
	defer crash.OnPanic(f.log, "control log feed")
	crash.Hook("control log feed")
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	if f.subscribe {
		wg.Add(1)
		go func() { defer wg.Done(); defer crash.OnPanic(f.log, "control log listener"); f.listen(ctx) }()
	}
	t := time.NewTicker(CtlPollEvery)
	defer func() { t.Stop(); cancel(); wg.Wait() }()
	f.catchUp()
	for {
		select {
		case <-stop:
			return
		case <-f.poke:
		case <-t.C:
		}
		f.catchUp()
	}
}

// wake asks the feed to read the log now, without ever blocking the caller.
func (f *CtlFeed) wake() {
	select {
	case f.poke <- struct{}{}:
	default:
	}
}

// listen keeps a subscription to the log's channel, subscribing again whenever it
// ends. Every confirmed (re)subscription wakes the feed too: whatever was published
// while there was none is read then.
func (f *CtlFeed) listen(ctx context.Context) {
	c := f.ctl.client
	hook := rueidis.WithOnSubscriptionHook(ctx, func(s rueidis.PubSubSubscription) {
		if s.Kind == "subscribe" {
			f.wake()
		}
	})
	for ctx.Err() == nil {
		// A connection of its own: a subscribed connection takes no other commands on
		// some servers, and killing it (CLIENT KILL TYPE pubsub) must cost nothing else.
		dc, release := c.Dedicate()
		err := dc.Receive(hook, dc.B().Subscribe().Channel(f.ctl.keys.Ctl()).Build(), func(rueidis.PubSubMessage) { f.wake() })
		release()
		if ctx.Err() != nil {
			return
		}
		f.noteErr("control log subscription ended", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(ctlResubscribeEvery):
		}
	}
}

// catchUp reads and applies every entry after the last one, in batches.
func (f *CtlFeed) catchUp() {
	c := f.ctl
	for {
		ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
		es, err := c.client.Do(ctx, c.client.B().Xrange().Key(c.keys.Ctl()).Start("("+f.last).End("+").Count(ctlReadBatch).Build()).AsXRange()
		cancel()
		if err != nil {
			f.noteErr("reading the control log", err)
			return
		}
		for _, x := range es {
			f.last = x.ID
			env, e, err := c.open(x.FieldValues["e"])
			if err != nil {
				f.log.Warn("control entry dropped", "id", x.ID, "err", err)
				continue
			}
			if err := f.replay.Check(c.keys.Ctl(), env); err != nil {
				c.replayed.Add(1)
				f.log.Warn("control entry dropped", "id", x.ID, "err", err)
				continue
			}
			f.apply(x.ID, env.Node, e)
		}
		last := f.last
		f.position.Store(&last)
		if len(es) < ctlReadBatch {
			return
		}
	}
}

// noteErr logs a Redis failure at most once a second: while Redis is down every poll
// fails, and one line a poll would flood the log.
func (f *CtlFeed) noteErr(msg string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.lastErr) >= time.Second {
		f.lastErr = time.Now()
		f.log.Warn(msg, "err", err)
	}
}

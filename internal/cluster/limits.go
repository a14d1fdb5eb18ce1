package cluster

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// Cluster-wide per-user limits: tunables.
const (
	// SlotLease is how long a connection slot lives without renewal: a killed node's
	// slots are free again at most this long after its last renewal.
	SlotLease = 30 * time.Second
	// SlotRenewEvery is how often a node renews the slots it holds: three renewals per
	// lease, so one lost or late round trip costs nothing.
	SlotRenewEvery = 10 * time.Second
	// limitTimeout bounds one limit check. The checks run on readPump and handshake
	// goroutines, never on the hub's; past this the caller falls back to its local
	// limit rather than stall a connection on a slow Redis.
	limitTimeout = 500 * time.Millisecond
)

var (
	//go:embed lua/gcra.lua
	gcraSource string
	//go:embed lua/conns.lua
	connsSource string
	//go:embed lua/renew.lua
	renewSource string

	gcraScript  = rueidis.NewLuaScript(gcraSource)
	connsScript = rueidis.NewLuaScript(connsSource)
	renewScript = rueidis.NewLuaScript(renewSource)
)

// UserKeys names a user's limit keys. It is the key builder's job (validated parts,
// the raw user id never in a key); Limits only asks.
type UserKeys interface {
	// UserRate is the key of the user's message budget (GCRA arrival time).
	UserRate(userID string) (string, error)
	// UserConns is the key of the user's connection slots.
	UserConns(userID string) (string, error)
}

// Limits runs the two per-user limits that must hold across nodes: the message budget
// (GCRA on Redis's clock, so no node's clock matters) and the connection cap (slots
// that expire unless renewed, so a killed node's slots free themselves). It is safe
// for concurrent use: readPumps and handshake handlers call it directly.
type Limits struct {
	client rueidis.Client
	keys   UserKeys
	// slotPrefix names this process's slots: the node id and a random boot id, so a
	// restarted node never takes over or removes the slots of its previous run.
	slotPrefix string
	seq        uint64

	mu sync.Mutex
	// held maps a conns key to the slots this process holds in it, for renewal.
	held map[string]map[string]struct{}
}

// NewLimits builds the limits for node over client.
func NewLimits(client rueidis.Client, keys UserKeys, node string) (*Limits, error) {
	var boot [6]byte
	if _, err := rand.Read(boot[:]); err != nil {
		return nil, err
	}
	return &Limits{
		client:     client,
		keys:       keys,
		slotPrefix: node + ":" + hex.EncodeToString(boot[:]) + ":",
		held:       map[string]map[string]struct{}{},
	}, nil
}

// AllowMessage spends one message of userID's cluster-wide budget: rate messages a
// second, burst at once. Refused, it says how long to wait. An error means Redis did
// not answer; the caller falls back to its local per-user bucket.
func (l *Limits) AllowMessage(ctx context.Context, userID string, rate float64, burst int) (bool, time.Duration, error) {
	if rate <= 0 || burst < 1 {
		return false, 0, errors.New("cluster: bad message rate")
	}
	ctx, cancel := context.WithTimeout(ctx, limitTimeout)
	defer cancel()
	interval := int64(1e6 / rate)
	key, err := l.keys.UserRate(userID)
	if err != nil {
		return false, 0, err
	}
	res := gcraScript.Exec(ctx, l.client, []string{key},
		[]string{strconv.FormatInt(max(interval, 1), 10), strconv.Itoa(burst)})
	ok, wait, err := pair(res)
	if err != nil {
		return false, 0, fmt.Errorf("cluster: message budget: %w", err)
	}
	return ok, time.Duration(wait) * time.Microsecond, nil
}

// Slot is one connection slot held in Redis. Release gives it back.
type Slot struct {
	l    *Limits
	key  string
	name string
	once sync.Once
}

// TakeSlot takes one of userID's cap connection slots. Refused, it says when the
// earliest slot expires (an upper bound on the wait). An error means Redis did not
// answer.
func (l *Limits) TakeSlot(ctx context.Context, userID string, cap int) (*Slot, time.Duration, error) {
	if cap < 1 {
		return nil, 0, errors.New("cluster: bad connection cap")
	}
	ctx, cancel := context.WithTimeout(ctx, limitTimeout)
	defer cancel()
	key, err := l.keys.UserConns(userID)
	if err != nil {
		return nil, 0, err
	}
	l.mu.Lock()
	l.seq++
	name := l.slotPrefix + strconv.FormatUint(l.seq, 10)
	l.mu.Unlock()
	res := connsScript.Exec(ctx, l.client, []string{key},
		[]string{name, strconv.Itoa(cap), strconv.FormatInt(SlotLease.Milliseconds(), 10)})
	ok, wait, err := pair(res)
	if err != nil {
		return nil, 0, fmt.Errorf("cluster: connection slots: %w", err)
	}
	if !ok {
		return nil, time.Duration(wait) * time.Millisecond, nil
	}
	l.mu.Lock()
	if l.held[key] == nil {
		l.held[key] = map[string]struct{}{}
	}
	l.held[key][name] = struct{}{}
	l.mu.Unlock()
	return &Slot{l: l, key: key, name: name}, 0, nil
}

// Release gives the slot back at once (best effort: if Redis does not answer, the
// slot expires within SlotLease since nobody renews it any more). Safe to call more
// than once.
func (s *Slot) Release() {
	s.once.Do(func() {
		l := s.l
		l.mu.Lock()
		if m := l.held[s.key]; m != nil {
			delete(m, s.name)
			if len(m) == 0 {
				delete(l.held, s.key)
			}
		}
		l.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), limitTimeout)
		defer cancel()
		l.client.Do(ctx, l.client.B().Zrem().Key(s.key).Member(s.name).Build())
	})
}

// Connected reports whether userID holds a connection slot on any node whose lease
// has not run out by now (now is this node's clock; a slot of a killed node counts
// until its lease ends). It is how a node learns that a user it has never seen is a
// user of the cluster (a conversation may be opened with them).
func (l *Limits) Connected(ctx context.Context, userID string, now time.Time) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, limitTimeout)
	defer cancel()
	key, err := l.keys.UserConns(userID)
	if err != nil {
		return false, err
	}
	n, err := l.client.Do(ctx, l.client.B().Zcount().Key(key).Min("("+strconv.FormatInt(now.UnixMilli(), 10)).Max("+inf").Build()).AsInt64()
	if err != nil {
		return false, fmt.Errorf("cluster: connection slots: %w", err)
	}
	return n > 0, nil
}

// Held reports how many slots this process holds, for tests and metrics.
func (l *Limits) Held() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.held {
		n += len(m)
	}
	return n
}

// Renew extends the lease of every slot this process holds, one script call per user,
// pipelined. It returns the first error; the slots it could not renew still have the
// rest of their lease.
func (l *Limits) Renew(ctx context.Context) error {
	l.mu.Lock()
	execs := make([]rueidis.LuaExec, 0, len(l.held))
	lease := strconv.FormatInt(SlotLease.Milliseconds(), 10)
	for key, m := range l.held {
		args := make([]string, 0, len(m)+1)
		args = append(args, lease)
		for name := range m {
			args = append(args, name)
		}
		execs = append(execs, rueidis.LuaExec{Keys: []string{key}, Args: args})
	}
	l.mu.Unlock()
	if len(execs) == 0 {
		return nil
	}
	for _, r := range renewScript.ExecMulti(ctx, l.client, execs...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("cluster: renewing slots: %w", err)
		}
	}
	return nil
}

// RunRenewals renews the held slots every SlotRenewEvery until stop is closed. Errors
// go to onErr (a log line); the next round tries again.
func (l *Limits) RunRenewals(stop <-chan struct{}, onErr func(error)) {
	t := time.NewTicker(SlotRenewEvery)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), SlotRenewEvery/2)
			if err := l.Renew(ctx); err != nil && onErr != nil {
				onErr(err)
			}
			cancel()
		}
	}
}

// pair reads a script's {flag, number} reply.
func pair(res rueidis.RedisResult) (bool, int64, error) {
	v, err := res.AsIntSlice()
	if err != nil {
		return false, 0, err
	}
	if len(v) != 2 {
		return false, 0, fmt.Errorf("unexpected reply of %d values", len(v))
	}
	return v[0] == 1, v[1], nil
}

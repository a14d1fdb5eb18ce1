package cluster

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/redis/rueidis"
)

// Per-user records of the control log: each user's key-directory record (root key and
// devices) and their direct-message preferences. Both live in {g} hashes as sealed
// control entries, exactly like bans and grants, so a record read at start-up is
// checked like the log; a per-user revision beside them lets ctl.lua refuse a change
// computed from an old record (two nodes changing one user at once: one wins, the
// other is told ErrRecordStale and nothing changed). The devices' message counters, which
// change with every signed message, are not in the log: one small script per message
// keeps each device's highest counter under the user's own key.

// Per-user record entry kinds.
const (
	OpDevices = "devices"  // User's key-directory record is Value (JSON), revision Rev
	OpDMPrefs = "dm_prefs" // User's DM preferences are Value (JSON), revision Rev
	OpLink    = "link"     // a new device of User asks to be linked (Value: the request); no state
)

// seenTimeout bounds one counter check; it runs on the sender's readPump.
const seenTimeout = 500 * time.Millisecond

var (
	//go:embed lua/seen.lua
	seenSource string
	seenScript = rueidis.NewLuaScript(seenSource)
)

// ErrRecordStale says a per-user record changed in Redis since the revision a change
// was computed from (another node changed it first): nothing was written.
var ErrRecordStale = errors.New("cluster: the record changed on another node")

// KeyDir is the HASH of user id -> sealed OpDevices entry.
func (k Keys) KeyDir() string { return k.global() + ":keydir" }

// DMPrefs is the HASH of user id -> sealed OpDMPrefs entry.
func (k Keys) DMPrefs() string { return k.global() + ":dmprefs" }

// RecordRevs is the HASH of "<op>:<user id>" -> revision of that per-user record.
func (k Keys) RecordRevs() string { return k.global() + ":revs" }

// UserSeen is a user's HASH of device id -> highest accepted message counter.
func (k Keys) UserSeen(id string) (string, error) { return k.userKey(id, ":seen") }

// recordKey is the hash of op's records.
func (c *Ctl) recordKey(op string) string {
	if op == OpDMPrefs {
		return c.keys.DMPrefs()
	}
	return c.keys.KeyDir()
}

// PutRecord writes user's record of kind op (OpDevices or OpDMPrefs) as value, computed
// from revision rev; it is rev+1 once written. ErrRecordStale: another node wrote first.
func (c *Ctl) PutRecord(ctx context.Context, op, user string, value json.RawMessage, rev uint64) (string, error) {
	if op != OpDevices && op != OpDMPrefs {
		return "", errors.New("cluster: not a per-user record")
	}
	return c.append(ctx, CtlEntry{Op: op, User: user, Rev: rev + 1, Value: value},
		stateOp{"rev", c.keys.RecordRevs(), strconv.FormatUint(rev, 10) + " " + op + ":" + user},
		stateOp{"hset", c.recordKey(op), user})
}

// LoadRecords reads every record of kind op: each checked (seal, kind, filed under
// the user it names, the revision Redis holds for it, and valid: the caller's check of
// the value), the others left out, logged and counted as forged.
func (c *Ctl) LoadRecords(ctx context.Context, op string, log *slog.Logger, valid func(CtlEntry) bool) (map[string]CtlEntry, error) {
	ctx, cancel := context.WithTimeout(ctx, 4*ctlTimeout)
	defer cancel()
	key := c.recordKey(op)
	m, err := c.client.Do(ctx, c.client.B().Hgetall().Key(key).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading %s: %w", key, err)
	}
	revs, err := c.client.Do(ctx, c.client.B().Hgetall().Key(c.keys.RecordRevs()).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading record revisions: %w", err)
	}
	out := make(map[string]CtlEntry, len(m))
	for field, raw := range m {
		_, e, err := c.open(raw)
		switch {
		case err != nil:
		case e.Op != op || e.User != field:
			c.bad.Add(1)
			err = errors.New("filed under another user or kind")
		case strconv.FormatUint(e.Rev, 10) != revs[op+":"+field]:
			// A genuine but older record put back: the revision says which is current.
			c.bad.Add(1)
			err = errors.New("not the record's current revision")
		case !valid(e):
			c.bad.Add(1)
			err = errors.New("malformed record")
		}
		if err != nil {
			log.Warn("per-user record dropped", "key", key, "err", err)
			continue
		}
		out[field] = e
	}
	return out, nil
}

// Link tells every node of a link request of user's (link is the request as JSON). It
// keeps no state: a request lives in memory and lapses.
func (c *Ctl) Link(ctx context.Context, user string, link json.RawMessage) (string, error) {
	return c.append(ctx, CtlEntry{Op: OpLink, User: user, Value: link})
}

// ReadRecord reads user's current record of kind op, checked as LoadRecords checks
// (valid aside); ok is false when there is none or it fails its check (counted).
func (c *Ctl) ReadRecord(ctx context.Context, op, user string) (e CtlEntry, ok bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	raw, err := c.client.Do(ctx, c.client.B().Hget().Key(c.recordKey(op)).Field(user).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return CtlEntry{}, false, nil
	}
	if err != nil {
		return CtlEntry{}, false, fmt.Errorf("cluster: reading a record: %w", err)
	}
	if _, e, err = c.open(raw); err != nil {
		return CtlEntry{}, false, nil
	}
	if e.Op != op || e.User != user {
		c.bad.Add(1)
		return CtlEntry{}, false, nil
	}
	return e, true, nil
}

// UseCounter records counter as device's newest signed message of user, across every
// node: false when a message with this counter or a higher one was accepted before
// (anywhere). An error means Redis did not answer in time.
func (c *Ctl) UseCounter(ctx context.Context, user, device string, counter uint64) (bool, error) {
	key, err := c.keys.UserSeen(user)
	if err != nil {
		return false, err
	}
	ctx, cancel := context.WithTimeout(ctx, seenTimeout)
	defer cancel()
	n, err := seenScript.Exec(ctx, c.client, []string{key}, []string{device, strconv.FormatUint(counter, 10)}).AsInt64()
	if err != nil {
		return false, fmt.Errorf("cluster: device counter: %w", err)
	}
	return n == 1, nil
}

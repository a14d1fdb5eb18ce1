package cluster

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Writes for moving a single node's state into an empty cluster (the server's
// migrate-redis subcommand): what a running node writes through its feed and control
// log, written once, directly.

// sayLua runs sayScript outside a feed.
var sayLua = rueidis.NewLuaScript(sayScript)

// WriteRoomRecord writes a room's first record, body, as the first change of its log
// (revision 0: it fails with ErrStale when Redis has a record of the room already) and
// returns its id.
func WriteRoomRecord(ctx context.Context, c rueidis.Client, k Keys, s *Sealer, room string, body []byte, maxLen int) (uint64, error) {
	meta, err := k.RoomMeta(room)
	if err != nil {
		return 0, err
	}
	log, _ := k.RoomLog(room)
	rec, _ := k.RoomInfo(room)
	ch, _ := k.RoomChannel(room)
	env := s.Seal(scope(room), body)
	seq, err := sayLua.Exec(ctx, c, []string{meta, log, rec},
		[]string{ch, string(env), "", strconv.Itoa(maxLen), "room", "0"}).ToString()
	if err != nil {
		if len(err.Error()) >= 5 && err.Error()[:5] == "STALE" {
			return 0, ErrStale
		}
		return 0, err
	}
	return strconv.ParseUint(seq, 10, 64)
}

// Cutoff ends every session of user issued up to at, as a logout at MaxRevoked does.
func (c *Ctl) Cutoff(ctx context.Context, user string, at time.Time) (string, error) {
	return c.append(ctx, CtlEntry{Op: OpCutoff, User: user, At: at.UnixMilli()},
		stateOp{"hset", c.keys.Cutoffs(), user})
}

// ErrLive says a room's Stream already holds entries a migration did not write: the
// room has been used in the cluster, and its history is not overwritten.
var ErrLive = errors.New("cluster: the room's log already holds live entries")

// HistoryEntry is one stored message for WriteHistory: its id and its body in the
// form the feed reads (see clusterBody in the server).
type HistoryEntry struct {
	Seq  uint64
	Body []byte
}

// historyScript writes a migrated room's first record and its history with their
// own ids, in one step. KEYS: the room's meta hash, log stream, record. ARGV: MAXLEN,
// the record's id, its envelope, then id and envelope of each message, ascending.
// The record's id becomes the room's floor and revision (where its history begins),
// the last message's id its seq, so the cluster goes on numbering after it. A room
// with a meta already is refused (LIVE), unless it is exactly what an earlier run of
// this script left (meta's `migrated` is this last id and seq has not moved): then
// nothing is written (DONE), so a migration can be run again.
const historyScript = `
local last = ARGV[#ARGV - 1]
if redis.call('HEXISTS', KEYS[1], 'seq') == 1 then
  local m = redis.call('HMGET', KEYS[1], 'seq', 'migrated')
  if m[2] == last and m[1] == last then return 'DONE' end
  return redis.error_reply('LIVE')
end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], ARGV[2] .. '-0', 'e', ARGV[3])
redis.call('SET', KEYS[3], ARGV[3])
for i = 4, #ARGV, 2 do
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], ARGV[i] .. '-0', 'e', ARGV[i + 1])
end
redis.call('HSET', KEYS[1], 'seq', last, 'floor', ARGV[2], 'rev', ARGV[2], 'migrated', last)
return 'OK'
`

// historyLua runs historyScript.
var historyLua = rueidis.NewLuaScript(historyScript)

// WriteHistory writes a room's first record, body, with id first (the room's history
// begins after it), and then its messages with their own ids, all above first and
// ascending, sealed as the feed expects. It replaces WriteRoomRecord for a room that
// has history to keep. written is false when an earlier run already wrote exactly
// this; ErrLive when the room's log holds anything else.
func WriteHistory(ctx context.Context, c rueidis.Client, k Keys, s *Sealer, room string, first uint64, body []byte, entries []HistoryEntry, maxLen int) (written bool, err error) {
	if len(entries) == 0 || first == 0 || entries[0].Seq <= first {
		return false, errors.New("cluster: history needs messages after a record id above 0")
	}
	meta, err := k.RoomMeta(room)
	if err != nil {
		return false, err
	}
	log, _ := k.RoomLog(room)
	rec, _ := k.RoomInfo(room)
	sc := scope(room)
	args := []string{strconv.Itoa(maxLen), strconv.FormatUint(first, 10), string(s.Seal(sc, body))}
	prev := first
	for _, e := range entries {
		if e.Seq <= prev {
			return false, errors.New("cluster: history ids must ascend")
		}
		prev = e.Seq
		args = append(args, strconv.FormatUint(e.Seq, 10), string(s.Seal(sc, e.Body)))
	}
	res, err := historyLua.Exec(ctx, c, []string{meta, log, rec}, args).ToString()
	if err != nil {
		if strings.HasPrefix(err.Error(), "LIVE") {
			return false, ErrLive
		}
		return false, err
	}
	return res == "OK", nil
}

package cluster

import (
	"context"
	"strconv"
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

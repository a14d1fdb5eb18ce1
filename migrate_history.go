package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/store"
)

// migrate-redis moves each room's durable history too (migrateHistory): the messages and
// files a node keeps, up to -history-max a room and not older than -history-max-age, go
// into the room's Stream with the ids they had, so a client's `after` from before the
// move still finds its place. The room's first record goes just below its oldest message
// (the room's history begins after it); the cluster numbers the room's next message
// after its newest. Ids in one node's store are shared by all its rooms, so a room's ids
// have holes: a resume across one answers `gap: true`, which only makes a client look.

// migratedHistory is what migrateHistory did, for the log line.
type migratedHistory struct {
	rooms, messages, skipped int
}

// migrateHistory writes, for every room and conversation that has history to keep,
// its first record and that history in one step (cluster.WriteHistory), and returns the
// rooms it wrote, which migrateRooms must then not write again. A room whose Stream
// already holds entries is refused (cluster.ErrLive); one written by an earlier run of
// this function is left as it is.
func migrateHistory(ctx context.Context, cn *clusterNode, st store.Store, state *hubState, cfg *Config) (map[string]bool, migratedHistory, error) {
	var done migratedHistory
	written := map[string]bool{}
	cutoff := time.Now().Add(-cfg.HistoryMaxAge).UnixMilli()
	for name, ri := range state.rooms {
		entries, skipped, err := roomHistoryEntries(st, name, ri.FirstID, cutoff, cfg.HistoryMax)
		if err != nil {
			return nil, done, fmt.Errorf("history of %q: %w", name, err)
		}
		done.skipped += skipped
		if len(entries) == 0 {
			continue
		}
		next := ri.clone()
		next.FirstID = 0 // the record's id is where the room's history begins
		e := &roomEntry{Name: name, Info: next, Created: true, MLS: migratedGroup(state, next)}
		if _, err := cluster.WriteHistory(ctx, cn.client, cn.keys, cn.sealer, name, entries[0].Seq-1, roomBody(time.Now().UnixMilli(), e), entries, cfg.HistoryMax); err != nil {
			return nil, done, fmt.Errorf("history of %q: %w", name, err)
		}
		written[name] = true
		done.rooms++
		done.messages += len(entries)
	}
	return written, done, nil
}

// roomHistoryEntries reads the newest max messages and files of room stored after
// first and not before cutoff (ms), as Stream bodies. Entries a Stream cannot hold the
// same way are skipped and counted: other event types (MLS), unreadable ones, and id 1
// (no id below it is left for the room's record).
func roomHistoryEntries(st store.Store, room string, first uint64, cutoff int64, max int) ([]cluster.HistoryEntry, int, error) {
	var entries []cluster.HistoryEntry
	skipped := 0
	err := st.After(historyBucket(room), store.SeqKey(first), 1<<30, func(k, v []byte) error {
		id := store.KeySeq(k)
		if storedTime(v) < cutoff {
			return nil // past the age limit: the server would not show it either
		}
		body, ok := streamBody(st, room, id, v)
		if !ok || id < 2 {
			skipped++
			return nil
		}
		entries = append(entries, cluster.HistoryEntry{Seq: id, Body: body})
		if len(entries) > max {
			entries = entries[1:]
			skipped++
		}
		return nil
	})
	return entries, skipped, err
}

// streamBody turns a stored history entry of room into the body a Stream entry holds
// (clusterBody: type, time, the event's fields after "ts"), with a file's bytes put back
// from the files bucket, as a cluster node keeps them. ok is false for anything else.
func streamBody(st store.Store, room string, id uint64, v []byte) ([]byte, bool) {
	var typ string
	switch {
	case bytes.HasPrefix(v, []byte(`{"type":"message"`)):
		typ = "message"
	case bytes.HasPrefix(v, []byte(`{"type":"file"`)):
		typ = "file"
	default:
		return nil, false
	}
	prefix := `{"type":"` + typ + `","room":"` + room + `","id":` + strconv.FormatUint(id, 10) + `,"ts":`
	rest, ok := bytes.CutPrefix(v, []byte(prefix))
	if !ok {
		return nil, false
	}
	tsDigits, tail, ok := bytes.Cut(rest, []byte{','})
	ts, err := strconv.ParseInt(string(tsDigits), 10, 64)
	if !ok || err != nil || len(tail) == 0 {
		return nil, false
	}
	if typ == "file" {
		if _, inline := splitFileEntry(v); inline == nil {
			tail = withFileData(st, room, id, tail)
		}
	}
	return clusterBody(typ, ts, tail), true
}

// withFileData puts a file's bytes, kept in its own bucket, back at the end of the
// entry's fields as the live event carries them; without them it returns tail as is
// (a file too large for history is kept as metadata only).
func withFileData(st store.Store, room string, id uint64, tail []byte) []byte {
	var data []byte
	st.After(filesBucket(room), store.SeqKey(id-1), 1, func(k, v []byte) error {
		if store.KeySeq(k) == id {
			data = bytes.Clone(v)
		}
		return nil
	})
	if data == nil || len(tail) == 0 || tail[len(tail)-1] != '}' {
		return tail
	}
	out := make([]byte, 0, len(tail)+len(dataField)+len(data)+2)
	out = append(out, tail[:len(tail)-1]...)
	out = append(out, dataField...)
	out = append(out, data...)
	return append(out, '"', '}')
}

// logMigratedHistory reports what migrateHistory did.
func logMigratedHistory(log *slog.Logger, h migratedHistory) {
	log.Info("history moved", "rooms", h.rooms, "messages", h.messages, "skipped", h.skipped)
}

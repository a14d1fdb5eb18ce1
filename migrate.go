package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"modified-chat/internal/cluster"
	"modified-chat/internal/store"
)

// migrate-redis moves a single node's security state from its bbolt file into an empty
// cluster: rooms (with their owners, roles, bans and invitations) and the rooms index,
// global bans and roles, the run-time settings, and the revoked sessions and cutoffs, so
// that nothing a moderator or a logout decided is forgotten when the node joins a
// cluster. It takes the server's own flags (-data-dir, -redis-url, -cluster-key-file,
// -redis-prefix, ...) and runs with the server stopped (the data file is locked
// otherwise). Each room's history goes too, with its ids (migrate_history.go).
// Conversations (dm:<hash>) are moved like rooms, records, index and history: in
// cluster mode they are the cluster's too.

// migrateTimeout bounds the whole migration's Redis work.
const migrateTimeout = 5 * time.Minute

// errNotEmpty refuses to migrate into a cluster that already has rooms or bans: merging
// two sources of truth is not something a script should guess at.
var errNotEmpty = errors.New("the cluster in Redis already holds rooms or bans; migrate only into an empty cluster")

// migrateRedisCommand is the migrate-redis subcommand.
func migrateRedisCommand(args []string, getenv func(string) string) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	if cfg.RedisURL == "" {
		return errors.New("-redis-url is required")
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	st, err := openStore(cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	state, err := loadHubState(st)
	if err != nil {
		return fmt.Errorf("reading %s: %w", cfg.DataDir, err)
	}
	cn, err := connectCluster(cfg, log, time.Now)
	if err != nil {
		return err
	}
	defer cn.close()
	ctx, cancel := context.WithTimeout(context.Background(), migrateTimeout)
	defer cancel()
	ctl := cluster.NewCtl(cn.client, cn.keys, cn.sealer)
	if err := migrateCheckEmpty(ctx, ctl, log); err != nil {
		return err
	}
	withHistory, moved, err := migrateHistory(ctx, cn, st, state, cfg)
	if err != nil {
		return err
	}
	logMigratedHistory(log, moved)
	n, err := migrateRooms(ctx, cn, ctl, state, cfg.HistoryMax, withHistory)
	if err != nil {
		return err
	}
	log.Info("rooms moved", "count", n)
	for user, ban := range state.bans {
		b, _ := json.Marshal(ban)
		if _, err := ctl.Ban(ctx, user, b, time.Now()); err != nil {
			return fmt.Errorf("ban of %q: %w", user, err)
		}
	}
	for user, role := range state.grants {
		if _, err := ctl.SetRole(ctx, user, role); err != nil {
			return fmt.Errorf("role of %q: %w", user, err)
		}
	}
	if state.settings != nil {
		b, _ := json.Marshal(state.settings)
		if _, err := ctl.SetSettings(ctx, b); err != nil {
			return fmt.Errorf("settings: %w", err)
		}
	}
	revoked, err := migrateSessions(ctx, ctl, st)
	if err != nil {
		return err
	}
	users, prefs, counters, err := migrateKeys(ctx, ctl, st, state) // clusterkeys.go
	if err != nil {
		return err
	}
	// The E2EE groups moved above list this node's external sender: it becomes the
	// cluster's.
	key, err := loadExternalSender(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("MLS external-sender key: %w", err)
	}
	if err := cluster.PutExternalSenderSeed(ctx, cn.client, cn.keys, cn.ring, key.Seed()); err != nil {
		return fmt.Errorf("MLS external-sender key: %w", err)
	}
	log.Info("state moved", "bans", len(state.bans), "roles", len(state.grants),
		"settings", state.settings != nil, "revoked_sessions", revoked,
		"key_directory_users", users, "dm_prefs", prefs, "device_counters", counters)
	return nil
}

// migrateCheckEmpty refuses a cluster that has rooms or global bans already.
func migrateCheckEmpty(ctx context.Context, ctl *cluster.Ctl, log *slog.Logger) error {
	rooms, err := ctl.LoadRooms(ctx, log)
	if err != nil {
		return err
	}
	cs, err := ctl.Load(ctx, time.Now(), log)
	if err != nil {
		return err
	}
	if len(rooms) > 0 || len(cs.Bans) > 0 {
		return errNotEmpty
	}
	return nil
}

// migrateRooms writes every room and conversation as the first change of its log, and
// lists it in the rooms index; the lobby's record goes too when it differs from a new
// lobby's (locked, a topic), so nothing it was given is lost. Rooms in withHistory
// have their record written already, with their history (migrateHistory).
func migrateRooms(ctx context.Context, cn *clusterNode, ctl *cluster.Ctl, state *hubState, maxLen int, withHistory map[string]bool) (int, error) {
	n := 0
	for name, ri := range state.rooms {
		next := ri.clone()
		next.FirstID = 0 // the cluster's ids start afresh: the first record's id
		e := &roomEntry{Name: name, Info: next, Created: true, MLS: migratedGroup(state, next)}
		if !withHistory[name] {
			if _, err := cluster.WriteRoomRecord(ctx, cn.client, cn.keys, cn.sealer, name, roomBody(time.Now().UnixMilli(), e), maxLen); err != nil {
				if errors.Is(err, cluster.ErrStale) {
					return n, fmt.Errorf("room %q: %w", name, errNotEmpty)
				}
				return n, fmt.Errorf("room %q: %w", name, err)
			}
		}
		if name != lobby {
			if _, err := ctl.IndexRoom(ctx, name, true); err != nil {
				return n, fmt.Errorf("rooms index, %q: %w", name, err)
			}
		}
		n++
	}
	return n, nil
}

// migrateSessions writes the revoked sessions still alive and the cutoffs.
func migrateSessions(ctx context.Context, ctl *cluster.Ctl, st store.Store) (int, error) {
	now := time.Now()
	type revoked struct {
		sid string
		exp int64
	}
	var sids []revoked
	cutoffs := map[string]int64{}
	if err := st.Scan(bucketRevoked, func(k, v []byte) error {
		if len(v) == 8 && int64(store.KeySeq(v)) > now.Unix() {
			sids = append(sids, revoked{string(k), int64(store.KeySeq(v))})
		}
		return nil
	}); err != nil {
		return 0, err
	}
	if err := st.Scan(bucketSessionCutoffs, func(k, v []byte) error {
		if len(v) == 8 {
			cutoffs[string(k)] = int64(store.KeySeq(v))
		}
		return nil
	}); err != nil {
		return 0, err
	}
	for _, r := range sids {
		if _, _, err := ctl.Revoke(ctx, "", r.sid, time.Unix(r.exp, 0), now); err != nil {
			return 0, fmt.Errorf("revoked session: %w", err)
		}
	}
	for user, ms := range cutoffs {
		if _, err := ctl.Cutoff(ctx, user, time.UnixMilli(ms)); err != nil {
			return 0, fmt.Errorf("cutoff of %q: %w", user, err)
		}
	}
	return len(sids), nil
}

// Package cluster is what several modified-chat nodes behind a load balancer share
// through Redis (SCALE-OUT.md): the connection to Redis, the names of every key, the
// authenticated envelopes, the cluster epoch and the room feed that numbers, keeps and
// fans out every room's messages. Nothing here runs unless -redis-url is set: the
// single-node server never imports a connection to Redis into its life.
package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/redis/rueidis"
)

// Connection tunables.
const (
	// dialTimeout bounds one attempt to reach Redis; the wait (-redis-wait) bounds all.
	dialTimeout = 2 * time.Second
	// retryEvery is the pause between attempts while Redis is not there yet.
	retryEvery = 250 * time.Millisecond
	// epochFile is the copy of the cluster epoch in each node's data directory.
	epochFile = "cluster.epoch"
)

// ErrEpochMismatch says Redis's epoch is not the one this node last saw: Redis lost
// its data (no AOF, a bad failover) or is another deployment's. The node stops
// serving rather than forget bans and revocations; SCALE-OUT.md §3.5.
var ErrEpochMismatch = errors.New("cluster: the Redis epoch differs from this node's copy (Redis lost its data, or is another deployment's)")

// Connect reaches the Redis at url, retrying for up to wait, and returns a client set
// up as SCALE-OUT.md §2 says: no client-side cache (not every Redis has CLIENT
// TRACKING), no retries (a failure must reach the caller at once, as the same error
// for reads and writes), and the single-instance client (the guessing of the cluster
// client picks wrong against some servers). The error names the address, never the
// URL, which may hold a password.
func Connect(ctx context.Context, url string, wait time.Duration, log *slog.Logger) (rueidis.Client, error) {
	opt, err := rueidis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("-redis-url: %w", err)
	}
	opt.DisableCache = true
	opt.DisableRetry = true
	opt.ForceSingleClient = true
	opt.Dialer.Timeout = dialTimeout
	opt.ConnWriteTimeout = dialTimeout
	opt.ClientName = "modified-chat"
	addr := strings.Join(opt.InitAddress, ",")
	deadline := time.Now().Add(wait)
	for attempt := 1; ; attempt++ {
		c, err := rueidis.NewClient(opt)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, dialTimeout)
			err = c.Do(pctx, c.B().Ping().Build()).Error()
			cancel()
			if err == nil {
				log.Info("connected to redis", "addr", addr, "attempts", attempt)
				return c, nil
			}
			c.Close()
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, fmt.Errorf("redis at %s unreachable after %v (-redis-wait): %w", addr, wait, err)
		}
		if attempt == 1 {
			log.Warn("waiting for redis", "addr", addr, "wait", wait, "err", err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(min(retryEvery, left)):
		}
	}
}

// NewNodeID makes the random id a node writes as for this run. A new one each start
// means a restarted node's sequence numbers, starting again at 1, are never taken for
// replays of its earlier ones.
func NewNodeID() string {
	b := make([]byte, 8)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// CheckEpoch compares the cluster epoch in Redis with the copy in dataDir, making the
// epoch when neither exists (a new deployment) and taking Redis's when only the copy
// is missing (a node joining). Redis without an epoch while the copy exists, or the
// two differing, is ErrEpochMismatch. The epoch is returned for later checks.
func CheckEpoch(ctx context.Context, c rueidis.Client, k Keys, dataDir string) (string, error) {
	path := filepath.Join(dataDir, epochFile)
	local, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("cluster epoch: %w", err)
	}
	mine := strings.TrimSpace(string(local))
	theirs, err := c.Do(ctx, c.B().Get().Key(k.Epoch()).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		if mine != "" {
			return "", ErrEpochMismatch
		}
		fresh := NewNodeID() + NewNodeID()
		if err := c.Do(ctx, c.B().Set().Key(k.Epoch()).Value(fresh).Nx().Build()).Error(); err != nil && !rueidis.IsRedisNil(err) {
			return "", fmt.Errorf("cluster epoch: %w", err)
		}
		// Another node may have set it first: Redis's value is the epoch.
		if theirs, err = c.Do(ctx, c.B().Get().Key(k.Epoch()).Build()).ToString(); err != nil {
			return "", fmt.Errorf("cluster epoch: %w", err)
		}
	} else if err != nil {
		return "", fmt.Errorf("cluster epoch: %w", err)
	}
	if mine != "" && mine != theirs {
		return "", ErrEpochMismatch
	}
	if mine == "" {
		if err := os.MkdirAll(dataDir, 0o700); err != nil {
			return "", err
		}
		if err := os.WriteFile(path, []byte(theirs+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("cluster epoch: %w", err)
		}
	}
	return theirs, nil
}

// SameEpoch reports whether Redis still holds epoch (false, nil when it has none or
// another: the data is gone).
func SameEpoch(ctx context.Context, c rueidis.Client, k Keys, epoch string) (bool, error) {
	v, err := c.Do(ctx, c.B().Get().Key(k.Epoch()).Build()).ToString()
	if rueidis.IsRedisNil(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return v == epoch, nil
}

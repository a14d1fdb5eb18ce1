package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/redis/rueidis"

	"modified-chat/internal/cluster"
)

// Cluster mode (-redis-url): several nodes behind a load balancer share rooms through
// Redis (SCALE-OUT.md). Without -redis-url none of this exists: app.cluster stays nil,
// nothing dials Redis and the hub's single-node paths run as before.

// clusterNode is a node's link to the cluster: the Redis client, the key names, its
// sealer (the cluster key and this run's node id) and the epoch it joined.
type clusterNode struct {
	client rueidis.Client
	keys   cluster.Keys
	sealer *cluster.Sealer
	epoch  string
	// ring is the cluster key file's keys, for what is encrypted rather than sealed
	// (the MLS external-sender seed).
	ring [][]byte
}

// epochCheckTimeout bounds the start-up epoch check once Redis answers.
const epochCheckTimeout = 5 * time.Second

// connectCluster reaches Redis within -redis-wait, checks the cluster epoch against
// the copy in the data directory and loads the cluster key. Any failure is fatal to
// start-up: a node that cannot reach the shared state must not serve from its own.
func connectCluster(cfg *Config, log *slog.Logger, now func() time.Time) (*clusterNode, error) {
	keys, err := cluster.NewKeys(cfg.RedisPrefix)
	if err != nil {
		return nil, err
	}
	ring, err := cluster.LoadKeyFile(cfg.ClusterKeyFile)
	if err != nil {
		return nil, err
	}
	node := cluster.NewNodeID()
	sealer, err := cluster.NewSealer(ring, node, now)
	if err != nil {
		return nil, err
	}
	client, err := cluster.Connect(context.Background(), cfg.RedisURL, cfg.RedisWait, log)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), epochCheckTimeout)
	defer cancel()
	epoch, err := cluster.CheckEpoch(ctx, client, keys, cfg.DataDir)
	if err != nil {
		client.Close()
		return nil, fmt.Errorf("%w; restore Redis's data, or re-initialise the cluster by removing <data-dir>/cluster.epoch on every node", err)
	}
	log.Info("cluster mode", "node", node, "prefix", cfg.RedisPrefix)
	return &clusterNode{client: client, keys: keys, sealer: sealer, epoch: epoch, ring: ring}, nil
}

// close ends the link at shutdown.
func (cn *clusterNode) close() {
	if cn != nil {
		cn.client.Close()
	}
}

// startFeed starts the room feed over the cluster link; its events run on the hub.
func (app *App) startFeed(cfg *Config) *cluster.Feed {
	h := app.hub
	feed := cluster.StartFeed(cluster.FeedConfig{
		Client:     app.cluster.client,
		Keys:       app.cluster.keys,
		Sealer:     app.cluster.sealer,
		Epoch:      app.cluster.epoch,
		HistoryMax: cfg.HistoryMax,
		ResumeMax:  cfg.HistoryResumeMax,
		Log:        app.log,
		Now:        app.now,
		Deliver: func(ev cluster.Event) bool {
			select {
			case h.completions <- func() { h.onFeed(ev) }:
				return true
			case <-h.stopped:
				return false
			}
		},
	})
	app.metrics.registerCluster(&feed.Counters)
	return feed
}

// readyPoll is how often start-up looks whether the feed is ready.
const readyPoll = 10 * time.Millisecond

// waitClusterReady waits, at most wait, until the feed says Redis answers and PUB/SUB
// is subscribed, so the node says it listens only once it can serve.
func (app *App) waitClusterReady(wait time.Duration) bool {
	deadline := time.Now().Add(wait)
	for !app.clusterReady.Load() {
		if app.clusterLost.Load() || time.Now().After(deadline) {
			return false
		}
		time.Sleep(readyPoll)
	}
	return true
}

// clusterUnready says why a cluster node does not serve now ("" when it does, and
// always on a single node).
func (app *App) clusterUnready() string {
	switch {
	case app.feed == nil:
		return ""
	case app.clusterLost.Load():
		return "cluster state lost (Redis epoch changed); an operator must restore or re-initialise"
	case !app.clusterReady.Load():
		return "the cluster store (Redis) cannot be reached"
	}
	return ""
}

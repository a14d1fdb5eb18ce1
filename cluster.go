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
	return &clusterNode{client: client, keys: keys, sealer: sealer, epoch: epoch}, nil
}

// close ends the link at shutdown.
func (cn *clusterNode) close() {
	if cn != nil {
		cn.client.Close()
	}
}

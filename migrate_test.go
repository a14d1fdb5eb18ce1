package main

import (
	"errors"
	"net/http"
	"testing"

	"modified-chat/internal/cluster/redistest"
)

// TestMigrateRedis: a single node's security state survives its move into a cluster.
// On one node (bbolt): alice makes den with a topic and bans bob from it, root makes
// carol a moderator and bans mallory, dave logs out. After migrate-redis (the server
// stopped) two fresh cluster nodes know all of it: den with its owner and topic, bob
// banned from it, carol a moderator, mallory's and dave's old cookies refused (401);
// migrating again into the now full cluster is refused.
func TestMigrateRedis(t *testing.T) {
	files := newClusterFiles(t)
	dir, port := t.TempDir(), freePort(t)
	single := startChild(t, dir, port, "CHAT_SESSION_KEY_FILE="+files.sessionKey)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	alice, root := ts.user(t, "alice"), ts.user(t, "root")
	alice.mustAck(map[string]any{"type": "create", "room": "den", "topic": "old friends"})
	bob := ts.user(t, "bob")
	bob.mustAck(map[string]any{"type": "join", "room": "den"})
	alice.mustAck(map[string]any{"type": "ban", "room": "den", "user": "dev:bob"})
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:carol", "role": "moderator"})
	mallory := devLogin(t, ts.URL, "mallory")
	root.mustAck(map[string]any{"type": "global_ban", "user": "dev:mallory"})
	dave := devLogin(t, ts.URL, "dave")
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/logout", nil)
	req.Header.Set("Origin", ts.URL)
	req.AddCookie(dave)
	if resp, err := noRedirect.Do(req); err != nil || resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %v %v", resp, err)
	}
	single.Process.Kill()
	single.Wait()

	rs := redistest.Start(t)
	env := map[string]string{"CHAT_DATA_DIR": dir, "CHAT_REDIS_URL": rs.URL(), "CHAT_CLUSTER_KEY_FILE": files.clusterKey,
		"CHAT_SESSION_KEY_FILE": files.sessionKey, "CHAT_REDIS_WAIT": "5s"}
	getenv := func(k string) string { return env[k] }
	if err := migrateRedisCommand(nil, getenv); err != nil {
		t.Fatalf("migrate-redis: %v", err)
	}

	nodes := startNodes(t, 2, rs, files)
	n2 := nodes[1].ts
	j := ready(n2.user(t, "erin")).cmd(map[string]any{"type": "join", "room": "den"})
	if j["type"] != "joined" || j["owner"] != "dev:alice" || j["topic"] != "old friends" {
		t.Fatalf("den on a cluster node after the move: %v", j)
	}
	ready(n2.user(t, "bob")).mustRefuse(map[string]any{"type": "join", "room": "den"}, codeBanned)
	if j := n2.user(t, "carol").cmd(map[string]any{"type": "join", "room": lobby}); j["my_role"] != roleModerator {
		t.Fatalf("carol in the lobby on the cluster: %v, want my_role moderator", j)
	}
	for who, cookie := range map[string]*http.Cookie{"mallory (banned)": mallory, "dave (logged out)": dave} {
		if got := dialStatus(t, n2, cookie); got != http.StatusUnauthorized {
			t.Fatalf("%s's old cookie on the cluster: %d, want 401", who, got)
		}
	}
	if err := migrateRedisCommand(nil, getenv); !errors.Is(err, errNotEmpty) {
		t.Fatalf("second migrate-redis: %v, want %v", err, errNotEmpty)
	}
}

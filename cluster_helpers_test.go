package main

import (
	"bytes"
	"encoding/hex"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
)

// clusterFiles are the files every node of a test cluster shares: one session key (a
// cookie from one node works on all) and one cluster key.
type clusterFiles struct {
	sessionKey, clusterKey string
}

// newClusterFiles writes a fresh session key and cluster key, mode 0600.
func newClusterFiles(t *testing.T) clusterFiles {
	t.Helper()
	dir := t.TempDir()
	f := clusterFiles{sessionKey: filepath.Join(dir, "session.key"), clusterKey: filepath.Join(dir, "cluster.key")}
	for _, p := range []string{f.sessionKey, f.clusterKey} {
		key := make([]byte, 32)
		for i := range key {
			key[i] = byte(len(p) + i) // fixed, distinct per file
		}
		if p == f.clusterKey {
			key = bytes.Repeat([]byte{0x5a}, 32)
		}
		if err := os.WriteFile(p, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// node is one server process of a test cluster.
type node struct {
	*childServer
	ts   *testServer
	dir  string
	port string
	env  []string
}

// startNodes starts n server processes (the test binary re-executed as the server,
// built once by `go test`) on their own ports and data directories, sharing rs and the
// keys in f; extra settings go to every node.
func startNodes(t *testing.T, n int, rs *redistest.Server, f clusterFiles, extra ...string) []*node {
	t.Helper()
	var nodes []*node
	for range n {
		nd := &node{dir: t.TempDir(), port: freePort(t)}
		nd.env = append([]string{"CHAT_REDIS_URL=" + rs.URL(), "CHAT_REDIS_WAIT=5s",
			"CHAT_SESSION_KEY_FILE=" + f.sessionKey, "CHAT_CLUSTER_KEY_FILE=" + f.clusterKey}, extra...)
		nd.childServer = startChild(t, nd.dir, nd.port, nd.env...)
		nd.ts = &testServer{URL: "http://127.0.0.1:" + nd.port}
		nodes = append(nodes, nd)
	}
	return nodes
}

// restart starts a node again after it was killed, on the same port and data.
func (nd *node) restart(t *testing.T) {
	t.Helper()
	nd.childServer = startChild(t, nd.dir, nd.port, nd.env...)
}

// runToExit runs the server as a child with the given settings until it exits by
// itself, and returns its exit code, its log and how long it ran (at most limit).
func runToExit(t *testing.T, limit time.Duration, env ...string) (int, string, time.Duration) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(os.Environ(), childEnv+"=1", "CHAT_ADDR=127.0.0.1:"+freePort(t),
		"CHAT_DATA_DIR="+t.TempDir(), "CHAT_METRICS_ADDR="), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	timer := time.AfterFunc(limit, func() { cmd.Process.Kill() })
	defer timer.Stop()
	start := time.Now()
	err := cmd.Run()
	took := time.Since(start)
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return code, out.String(), took
}

// startPair starts a redis-server and two nodes on it sharing fresh keys, the setup
// most control-side tests share; extra settings go to both nodes.
func startPair(t *testing.T, extra ...string) (*redistest.Server, []*node) {
	t.Helper()
	rs := redistest.Start(t)
	return rs, startNodes(t, 2, rs, newClusterFiles(t), extra...)
}

// dialAs logs name in on nd (dev login) and opens a socket there.
func (nd *node) dialAs(t *testing.T, name string) *wsClient {
	t.Helper()
	return nd.ts.dial(t, devLogin(t, nd.ts.URL, name))
}

// logout posts the logout form for cookie to ts, as the page does, and fails unless
// it is answered with the redirect (303).
func logout(t *testing.T, ts *testServer, cookie *http.Cookie, what string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, ts.URL+"/logout", nil)
	req.Header.Set("Origin", ts.URL)
	req.AddCookie(cookie)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("%s: %d, want 303", what, resp.StatusCode)
	}
}

// singleForMigration runs a single node (bbolt) in a child on a fresh data directory,
// with the session key of files and any extra settings, for a test to fill before
// migrate-redis moves it.
func singleForMigration(t *testing.T, files clusterFiles, extra ...string) (*childServer, *testServer, string) {
	t.Helper()
	dir, port := t.TempDir(), freePort(t)
	single := startChild(t, dir, port, append([]string{"CHAT_SESSION_KEY_FILE=" + files.sessionKey}, extra...)...)
	return single, &testServer{URL: "http://127.0.0.1:" + port}, dir
}

// migrationEnv is the environment migrate-redis runs with to move dir onto rs with
// the keys in files.
func migrationEnv(dir string, rs *redistest.Server, files clusterFiles) func(string) string {
	env := map[string]string{"CHAT_DATA_DIR": dir, "CHAT_REDIS_URL": rs.URL(), "CHAT_CLUSTER_KEY_FILE": files.clusterKey,
		"CHAT_SESSION_KEY_FILE": files.sessionKey, "CHAT_REDIS_WAIT": "5s"}
	return func(k string) string { return env[k] }
}

// roleReaches has admin give user role and fails unless the socket x (user's, on
// another node) is told so with `you` within d.
func roleReaches(t *testing.T, admin, x *wsClient, user, role string, d time.Duration) {
	t.Helper()
	admin.mustAck(map[string]any{"type": "set_role", "user": user, "role": role})
	if you := x.expectWithin(d, "you"); you["role"] != role {
		t.Fatalf("you: %v, want role %s", you, role)
	}
}

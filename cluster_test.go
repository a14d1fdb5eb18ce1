package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
)

// TestClusterRedisUnreachableExits (acceptance 17): with -redis-url naming a closed
// port the server waits -redis-wait, then exits 1 with a message naming the address;
// it never starts serving from its own store.
func TestClusterRedisUnreachableExits(t *testing.T) {
	f := newClusterFiles(t)
	addr := "127.0.0.1:" + freePort(t)
	const wait = time.Second
	code, out, took := runToExit(t, wait+20*time.Second, "CHAT_REDIS_URL=redis://"+addr, "CHAT_REDIS_WAIT="+wait.String(),
		"CHAT_CLUSTER_KEY_FILE="+f.clusterKey, "CHAT_STORE=bolt")
	if code != 1 {
		t.Fatalf("exit code %d, want 1; log:\n%s", code, out)
	}
	if !strings.Contains(out, addr) || !strings.Contains(out, "unreachable") {
		t.Errorf("the message does not name the address %s:\n%s", addr, out)
	}
	if strings.Contains(out, "msg=listening") {
		t.Errorf("the server listened without Redis:\n%s", out)
	}
	if took < wait || took > wait+5*time.Second {
		t.Errorf("exited after %v, want between -redis-wait (%v) and 5 s more", took, wait)
	}
}

// TestClusterFlagsNeedTheKey: -redis-url without -cluster-key-file is refused at once
// (exit 2), since without the key any Redis client could write as a node.
func TestClusterFlagsNeedTheKey(t *testing.T) {
	code, out, _ := runToExit(t, 20*time.Second, "CHAT_REDIS_URL=redis://127.0.0.1:1")
	if code != 2 || !strings.Contains(out, "-cluster-key-file") {
		t.Fatalf("exit %d, log:\n%s", code, out)
	}
}

// TestNoRedisURLNoDial (acceptance 18): without -redis-url the server touches no Redis:
// listeners on the default Redis port (when free) and on the address in REDIS_URL (which
// some clients read by themselves) see no connection while users log in and chat, and
// the state goes to the bbolt file.
func TestNoRedisURLNoDial(t *testing.T) {
	var dialed atomic.Int32
	listen := func(addr string) net.Listener {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				dialed.Add(1)
				c.Close()
			}
		}()
		t.Cleanup(func() { ln.Close() })
		return ln
	}
	lns := []net.Listener{listen("127.0.0.1:0")}
	if ln := listen("127.0.0.1:6379"); ln != nil {
		lns = append(lns, ln)
	} else {
		t.Log("127.0.0.1:6379 is taken; watching the REDIS_URL address only")
	}
	t.Setenv("REDIS_URL", "redis://"+lns[0].Addr().String())
	dir, port := t.TempDir(), freePort(t)
	startChild(t, dir, port)
	ts := &testServer{URL: "http://127.0.0.1:" + port}
	a, b := ts.user(t, "alice"), ts.user(t, "bob")
	a.mustAck(map[string]any{"type": "say", "room": lobby, "text": "hello"})
	if m := b.expect("message"); m["text"] != "hello" {
		t.Fatalf("bob got %v", m)
	}
	if _, err := os.Stat(filepath.Join(dir, storeFileName)); err != nil {
		t.Errorf("no bbolt file in the data directory: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cluster.epoch")); !os.IsNotExist(err) {
		t.Errorf("a single node wrote a cluster epoch: %v", err)
	}
	if n := dialed.Load(); n != 0 {
		t.Fatalf("%d connections reached a Redis port without -redis-url", n)
	}
}

// TestClusterNodesShareSessionsAndEpoch: two nodes on one Redis with the same key files
// both start, join the same epoch, and a cookie issued by one opens a socket on the
// other.
func TestClusterNodesShareSessionsAndEpoch(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	nodes[1].ts.dial(t, cookie)
	e1, err1 := os.ReadFile(filepath.Join(nodes[0].dir, "cluster.epoch"))
	e2, err2 := os.ReadFile(filepath.Join(nodes[1].dir, "cluster.epoch"))
	if err1 != nil || err2 != nil || len(e1) < 16 || string(e1) != string(e2) {
		t.Fatalf("epochs %q (%v), %q (%v)", e1, err1, e2, err2)
	}
}

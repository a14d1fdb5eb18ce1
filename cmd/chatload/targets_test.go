package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRunSeveralTargets: two servers in front of one fake hub stand for two nodes of
// a cluster; -target lists both, the clients are spread over them round-robin (3 and
// 2 of 5), and every message is counted delivered exactly once to every client,
// whichever node it was sent on.
func TestRunSeveralTargets(t *testing.T) {
	f := &fakeModified{rooms: map[string]map[*fakeClient]bool{}}
	var urls []string
	var dials [2]atomic.Int64
	for i := range 2 {
		mux := http.NewServeMux()
		mux.HandleFunc("/login/dev", f.login)
		mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
			dials[i].Add(1)
			f.serveWS(w, r)
		})
		srv := httptest.NewServer(mux)
		defer srv.Close()
		urls = append(urls, srv.URL)
	}
	rep := runBounded(t, Config{
		Target: strings.Join(urls, ","), Proto: protoModified, Clients: 5, Senders: 3, Rate: 20, Size: 80,
		Duration: time.Second, Room: "bench", ConnectRate: 200, Settle: 20 * time.Second,
	})
	checkExactlyOnce(t, rep, 5)
	if dials[0].Load() != 3 || dials[1].Load() != 2 {
		t.Errorf("dials per target %d and %d, want 3 and 2", dials[0].Load(), dials[1].Load())
	}
	if rep.Target != strings.Join(urls, ",") {
		t.Errorf("report target %q", rep.Target)
	}
}

// TestTargetsChecked: every target of the list must pass the loopback rule, none
// twice, not ::1 mixed with IPv4, at most maxTargets.
func TestTargetsChecked(t *testing.T) {
	if ts, err := parseTargets("http://127.0.0.1:1, http://127.0.0.1:2"); err != nil || len(ts) != 2 {
		t.Fatalf("two targets: %v %v", ts, err)
	}
	many := strings.TrimSuffix(strings.Repeat("http://127.0.0.1:1,", maxTargets+1), ",")
	for _, bad := range []string{
		"http://127.0.0.1:1,http://10.0.0.1:2", "http://127.0.0.1:1,http://127.0.0.1:1",
		"http://127.0.0.1:1,http://[::1]:2", "http://127.0.0.1:1,", many,
	} {
		if _, err := parseTargets(bad); err == nil {
			t.Errorf("%.60s accepted", bad)
		}
	}
}

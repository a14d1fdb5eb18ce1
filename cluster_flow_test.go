package main

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"modified-chat/internal/cluster/redistest"
)

// ready waits for a new connection's lobby history: from then on the node has the
// lobby open and delivers its messages live (before, a message may come in that
// history instead).
func ready(c *wsClient) *wsClient {
	c.t.Helper()
	c.expect("history")
	return c
}

// idOf reads an event's id.
func idOf(ev map[string]any) uint64 {
	f, _ := ev["id"].(float64)
	return uint64(f)
}

// messagesUntil reads c's events until n messages arrived, failing after d.
func (c *wsClient) messagesUntil(n int, d time.Duration) []map[string]any {
	c.t.Helper()
	var got []map[string]any
	deadline := time.Now().Add(d)
	for len(got) < n {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("after %d of %d messages: %v", len(got), n, err)
		}
		if ev["type"] == "message" {
			got = append(got, ev)
		}
	}
	return got
}

// TestClusterMessageAcrossNodes (acceptance 1): A on node 1 says x with a ref; B on
// node 2 gets exactly one message x with the id of A's ack, and so does A, before its
// ack.
func TestClusterMessageAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	a, b := ready(nodes[0].ts.user(t, "alice")), ready(nodes[1].ts.user(t, "bob"))
	a.send(map[string]any{"type": "say", "room": lobby, "text": "x", "ref": "r1"})
	var own []map[string]any
	ack := a.expectWithin(5*time.Second, "ack", "message")
	for ; ack["type"] == "message"; ack = a.expectWithin(5*time.Second, "ack", "message") {
		own = append(own, ack)
	}
	if ack["ref"] != "r1" || idOf(ack) == 0 {
		t.Fatalf("say answered %v", ack)
	}
	own = append(own, noMessages(t, a)...)
	got := append(b.messagesUntil(1, 5*time.Second), noMessages(t, b)...)
	for who, msgs := range map[string][]map[string]any{"bob on node 2": got, "alice on node 1": own} {
		if len(msgs) != 1 || msgs[0]["text"] != "x" || idOf(msgs[0]) != idOf(ack) {
			t.Fatalf("%s got %v, want one message x with id %d", who, msgs, idOf(ack))
		}
	}
}

// noMessages returns the messages that arrive before a barrier.
func noMessages(t *testing.T, c *wsClient) []map[string]any {
	var out []map[string]any
	for _, ev := range c.barrier() {
		if ev["type"] == "message" {
			out = append(out, ev)
		}
	}
	return out
}

// TestClusterOrderAcrossNodes (acceptance 2): two senders on two nodes send 500
// messages each at full rate; a receiver on each node sees the same 1000 ids, strictly
// increasing, none twice, none missing, and every ack's id among them.
func TestClusterOrderAcrossNodes(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	s1, s2 := ready(nodes[0].ts.user(t, "s1")), ready(nodes[1].ts.user(t, "s2"))
	r1, r2 := ready(nodes[0].ts.user(t, "r1")), ready(nodes[1].ts.user(t, "r2"))
	const each = 500
	done := make(chan map[uint64]bool, 2)
	for _, s := range []*wsClient{s1, s2} {
		go func() {
			for i := range each {
				s.conn.WriteJSON(map[string]any{"type": "say", "room": lobby, "text": "m" + strconv.Itoa(i), "ref": strconv.Itoa(i)})
			}
			acked := map[uint64]bool{}
			deadline := time.Now().Add(30 * time.Second)
			for len(acked) < each && time.Now().Before(deadline) {
				ev, err := s.next(time.Until(deadline))
				if err != nil {
					break
				}
				if ev["type"] == "ack" {
					acked[idOf(ev)] = true
				}
			}
			done <- acked
		}()
	}
	var seqs [][]uint64
	for _, r := range []*wsClient{r1, r2} {
		var ids []uint64
		for _, m := range r.messagesUntil(2*each, 30*time.Second) {
			ids = append(ids, idOf(m))
		}
		seqs = append(seqs, ids)
	}
	acks := []map[uint64]bool{<-done, <-done}
	for i, ids := range seqs {
		for j := 1; j < len(ids); j++ {
			if ids[j] != ids[j-1]+1 {
				t.Fatalf("receiver %d: id %d follows %d (want consecutive, increasing)", i+1, ids[j], ids[j-1])
			}
		}
		if fmt.Sprint(ids) != fmt.Sprint(seqs[0]) {
			t.Fatalf("receivers saw different sequences")
		}
		if extra := noMessages(t, []*wsClient{r1, r2}[i]); len(extra) != 0 {
			t.Fatalf("receiver %d got %d messages more than were sent", i+1, len(extra))
		}
	}
	got := map[uint64]bool{}
	for _, id := range seqs[0] {
		got[id] = true
	}
	for i, a := range acks {
		if len(a) != each {
			t.Fatalf("sender %d got %d acks, want %d", i+1, len(a), each)
		}
		for id := range a {
			if !got[id] {
				t.Fatalf("acked id %d was never delivered", id)
			}
		}
	}
}

// TestClusterResumeOnAnotherNode (acceptance 3): B leaves node 2, A says 10 messages,
// B joins on node 1 with `after`: the history holds exactly those 10, gap false.
func TestClusterResumeOnAnotherNode(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	a := ready(nodes[0].ts.user(t, "alice"))
	cookie := devLogin(t, nodes[1].ts.URL, "bob")
	b := ready(nodes[1].ts.dial(t, cookie))
	first := a.cmd(map[string]any{"type": "say", "room": lobby, "text": "before"})
	last := idOf(b.messagesUntil(1, 5*time.Second)[0])
	if last != idOf(first) {
		t.Fatalf("bob saw id %d, alice's ack said %d", last, idOf(first))
	}
	b.conn.Close()
	var want []uint64
	for i := range 10 {
		want = append(want, idOf(a.cmd(map[string]any{"type": "say", "room": lobby, "text": "while away " + strconv.Itoa(i)})))
	}
	b = ready(nodes[0].ts.dial(t, cookie))
	b.send(map[string]any{"type": "join", "room": lobby, "after": last})
	checkHistory(t, b.expect("history"), want, false)
}

// checkHistory asserts a history event holds exactly the ids want, with gap as given.
func checkHistory(t *testing.T, h map[string]any, want []uint64, gap bool) {
	t.Helper()
	msgs, _ := h["messages"].([]any)
	var got []uint64
	for _, m := range msgs {
		got = append(got, idOf(m.(map[string]any)))
	}
	if fmt.Sprint(got) != fmt.Sprint(want) || h["gap"] != gap {
		t.Fatalf("history ids %v gap %v, want %v gap %v", got, h["gap"], want, gap)
	}
}

// readyz asks a node's /readyz.
func readyz(ts *testServer) int {
	resp, err := noRedirect.Get(ts.URL + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// wsStatus is the status a new WebSocket handshake gets on a node.
func wsStatus(t *testing.T, ts *testServer, cookie *http.Cookie) int {
	conn, resp, err := ts.tryDial(cookie, nil)
	if err == nil {
		conn.Close()
		return http.StatusSwitchingProtocols
	}
	if resp != nil {
		return resp.StatusCode
	}
	return 0
}

// TestClusterNodeKilled (acceptance 4): node 2 is killed with SIGKILL while its user
// sends; its clients reconnect to node 1 and resume with `after`: every message acked
// before the kill is shown exactly once, in id order, and the resume has no gap.
func TestClusterNodeKilled(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[1].ts.URL, "reader")
	sender, reader := ready(nodes[1].ts.user(t, "sender")), ready(nodes[1].ts.dial(t, cookie))
	const total = 300
	go func() {
		for i := range total {
			if sender.conn.WriteJSON(map[string]any{"type": "say", "room": lobby, "text": "m" + strconv.Itoa(i), "ref": strconv.Itoa(i)}) != nil {
				return
			}
		}
	}()
	var acked []uint64
	for len(acked) < 50 {
		ev, err := sender.next(5 * time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if ev["type"] == "ack" {
			acked = append(acked, idOf(ev))
		}
	}
	nodes[1].Process.Kill()
	nodes[1].Wait()
	// Whatever else the sender read before its socket died was acked too.
	for {
		ev, err := sender.next(2 * time.Second)
		if err != nil {
			break
		}
		if ev["type"] == "ack" {
			acked = append(acked, idOf(ev))
		}
	}
	var shown []uint64
	for {
		ev, err := reader.next(2 * time.Second)
		if err != nil {
			break
		}
		if ev["type"] == "message" {
			shown = append(shown, idOf(ev))
		}
	}
	if len(shown) == 0 {
		t.Fatal("the reader saw nothing before the kill")
	}
	reader = ready(nodes[0].ts.dial(t, cookie))
	reader.send(map[string]any{"type": "join", "room": lobby, "after": shown[len(shown)-1]})
	for {
		h := reader.expectWithin(10*time.Second, "history")
		if h["gap"] != false {
			t.Fatalf("resume after %d: gap %v", shown[len(shown)-1], h["gap"])
		}
		msgs, _ := h["messages"].([]any)
		for _, m := range msgs {
			shown = append(shown, idOf(m.(map[string]any)))
		}
		if h["more"] != true {
			break
		}
		reader.send(map[string]any{"type": "history", "room": lobby, "after": shown[len(shown)-1]})
	}
	count := map[uint64]int{}
	for i, id := range shown {
		count[id]++
		if i > 0 && id <= shown[i-1] {
			t.Fatalf("id %d shown after %d", id, shown[i-1])
		}
	}
	for _, id := range acked {
		if count[id] != 1 {
			t.Fatalf("acked id %d shown %d times (acked %d, shown %d)", id, count[id], len(acked), len(shown))
		}
	}
}

// waitStatus polls f until it returns want, failing after d; it returns how long it took.
func waitStatus(t *testing.T, what string, d time.Duration, want int, f func() int) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := f()
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: still %d after %v, want %d", what, got, d, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestClusterRedisDownAndBack (acceptance 5): with Redis killed, says get `unavailable`
// with retry_after_ms and no ack, no socket closes, and /readyz and new sockets get 503
// within 2 s. Redis back on its AOF: ready within 5 s, on the same sockets; the next id
// is above every acked one and every acked message is in history.
func TestClusterRedisDownAndBack(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	a, b := ready(nodes[0].ts.dial(t, cookie)), ready(nodes[1].ts.user(t, "bob"))
	var acked []uint64
	for i := range 5 {
		acked = append(acked, idOf(a.cmd(map[string]any{"type": "say", "room": lobby, "text": "up " + strconv.Itoa(i)})))
	}
	rs.Kill()
	killed := time.Now()
	for _, nd := range nodes {
		waitStatus(t, "/readyz with redis down", 2*time.Second-time.Since(killed), http.StatusServiceUnavailable, func() int { return readyz(nd.ts) })
		waitStatus(t, "/ws with redis down", 2*time.Second-time.Since(killed), http.StatusServiceUnavailable, func() int { return wsStatus(t, nd.ts, cookie) })
	}
	for _, c := range []*wsClient{a, b} {
		ev := c.cmd(map[string]any{"type": "say", "room": lobby, "text": "down"})
		if ev["type"] != "error" || ev["code"] != codeUnavailable || ev["retry_after_ms"] == nil {
			t.Fatalf("say with redis down answered %v, want unavailable with retry_after_ms", ev)
		}
	}
	rs.Restart()
	back := time.Now()
	for _, nd := range nodes {
		waitStatus(t, "/readyz with redis back", 5*time.Second-time.Since(back), http.StatusOK, func() int { return readyz(nd.ts) })
	}
	// The same sockets work: none was closed.
	next := a.cmd(map[string]any{"type": "say", "room": lobby, "text": "back"})
	if next["type"] != "ack" || idOf(next) <= acked[len(acked)-1] {
		t.Fatalf("say after redis came back: %v (last acked id %d)", next, acked[len(acked)-1])
	}
	if ev := b.cmd(map[string]any{"type": "say", "room": lobby, "text": "back too"}); ev["type"] != "ack" {
		t.Fatalf("bob's socket on node 2 after redis came back: %v", ev)
	}
	fresh := ready(nodes[1].ts.dial(t, cookie))
	fresh.send(map[string]any{"type": "history", "room": lobby, "after": acked[0] - 1})
	h := fresh.expect("history")
	for h["ref"] != nil || len(h["messages"].([]any)) < len(acked) {
		h = fresh.expect("history")
	}
	checkHistory(t, h, append(append(acked, idOf(next)), idOf(next)+1), false)
}

// TestClusterRedisLostData (acceptance 6): Redis comes back with an empty data
// directory: every node sees the epoch change, closes its clients with 1012 and answers
// 503. Re-initialised (the epoch copies removed, the nodes restarted), new ids are above
// every earlier one and a resume from an old id gets gap: true.
func TestClusterRedisLostData(t *testing.T) {
	rs := redistest.Start(t)
	nodes := startNodes(t, 2, rs, newClusterFiles(t))
	cookie := devLogin(t, nodes[0].ts.URL, "alice")
	a, b := ready(nodes[0].ts.dial(t, cookie)), ready(nodes[1].ts.user(t, "bob"))
	old := idOf(a.cmd(map[string]any{"type": "say", "room": lobby, "text": "before the loss"}))
	rs.Kill()
	rs.RestartEmpty()
	a.expectClose(1012)
	b.expectClose(1012)
	for _, nd := range nodes {
		waitStatus(t, "/readyz after the loss", 3*time.Second, http.StatusServiceUnavailable, func() int { return readyz(nd.ts) })
		if s := wsStatus(t, nd.ts, cookie); s != http.StatusServiceUnavailable {
			t.Fatalf("/ws after the loss: %d", s)
		}
	}
	for _, nd := range nodes {
		nd.Process.Kill()
		nd.Wait()
		if err := os.Remove(filepath.Join(nd.dir, "cluster.epoch")); err != nil {
			t.Fatal(err)
		}
		nd.restart(t)
	}
	a = ready(nodes[0].ts.dial(t, cookie))
	if id := idOf(a.cmd(map[string]any{"type": "say", "room": lobby, "text": "after"})); id <= old {
		t.Fatalf("new id %d is not above the old %d", id, old)
	}
	a.send(map[string]any{"type": "join", "room": lobby, "after": old})
	if h := a.expect("history"); h["gap"] != true {
		t.Fatalf("resume from the old id %d: %v, want gap true", old, h)
	}
}

package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// bigHistoryServer keeps long messages, so that a few hundred of them make a history
// of several pages.
func bigHistoryServer(t *testing.T, mutate func(*Config)) *testServer {
	return startServer(t, func(c *Config) {
		generousLimits(c)
		c.TextMaxChars, c.ReadLimit = 7000, 16<<10
		c.ByteRate, c.ByteBurst = 8<<20, 8<<20
		if mutate != nil {
			mutate(c)
		}
	})
}

// fillHistory has c say n messages of size characters in room, and waits until the
// last one is stored (the store keeps them in order).
func fillHistory(t *testing.T, c *wsClient, room string, n, size int) {
	t.Helper()
	for i := 0; i < n; i++ {
		msg := map[string]any{"type": "say", "room": room, "text": fmt.Sprintf("%04d", i) + strings.Repeat("x", size-4)}
		if i == n-1 {
			msg["ref"] = "last"
		}
		c.send(msg)
	}
	for {
		// The last ack waits for every message before it to be stored.
		if ev := c.expectWithin(30*time.Second, "ack"); ev["ref"] == "last" {
			return
		}
	}
}

// pageIDs checks a history page: oldest first, every id after after; it returns the ids.
func pageIDs(t *testing.T, ev map[string]any, after uint64) []uint64 {
	t.Helper()
	ids, _ := historyIDs(ev)
	for _, id := range ids {
		if id <= after {
			t.Fatalf("page has id %d, not after %d (ids %v)", id, after, ids)
		}
		after = id
	}
	return ids
}

// TestHistoryPagesBounded: the attack is one 40-byte join, for a room the client is
// already in, asking for everything (after 0) in a room of 2 MB of history. The answer
// is one page of at most historyPageBytes with more: true; `history` with after the
// page's last id gives the next page, each bounded the same way, until more is false;
// together they hold every message once, oldest first.
func TestHistoryPagesBounded(t *testing.T) {
	ts := bigHistoryServer(t, nil)
	a := ts.user(t, "alice")
	const n = 300
	fillHistory(t, a, lobby, n, 7000)
	a.send(map[string]any{"type": "join", "room": lobby, "after": 0})
	ev := a.expectHistory(lobby)
	var all []uint64
	for page := 1; ; page++ {
		if a.lastLen > historyPageBytes+1024 {
			t.Fatalf("page %d is %d bytes; the bound is %d", page, a.lastLen, historyPageBytes)
		}
		last := uint64(0)
		if len(all) > 0 {
			last = all[len(all)-1]
		}
		ids := pageIDs(t, ev, last)
		if len(ids) == 0 {
			t.Fatalf("page %d is empty", page)
		}
		all = append(all, ids...)
		if ev["more"] != true {
			break
		}
		if page > 10 {
			t.Fatal("more than 10 pages for 2 MB")
		}
		ref := fmt.Sprint("p", page)
		a.send(map[string]any{"type": "history", "room": lobby, "after": all[len(all)-1], "ref": ref})
		ev = a.expectHistory(lobby)
		if ev["ref"] != ref {
			t.Fatalf("page answered with ref %v, want %s", ev["ref"], ref)
		}
	}
	if len(all) != n {
		t.Fatalf("pages held %d messages, want %d", len(all), n)
	}
	if len(all) < 3 {
		t.Fatal("2 MB came in fewer than 3 pages")
	}
}

// TestJoinFloodBoundedAndRefused: a flood of joins with after 0 for a room the client
// is in, each asking for 2 MB of history. The first is answered (one page); the rest
// are refused with rate_limited (naming their ref and room, with a retry hint) because
// the reply budget is in debt, and counted. Stated bound: the bytes sent are at most
// the reply burst, plus one page, plus the reply rate times the flood's duration, plus
// 256 bytes per request; the ratio of bytes out to bytes in is logged.
func TestJoinFloodBoundedAndRefused(t *testing.T) {
	const replyRate = 16 << 10
	ts := bigHistoryServer(t, func(c *Config) { c.ReplyByteRate, c.ReplyByteBurst = replyRate, historyPageBytes })
	a := ts.user(t, "alice")
	fillHistory(t, a, lobby, 300, 7000)
	a.read = 0
	start := time.Now()
	const n = 200
	in := 0
	for i := 0; i < n; i++ {
		line := fmt.Sprintf(`{"type":"join","room":"lobby","after":0,"ref":"j%d"}`, i)
		in += len(line)
		a.sendRaw(websocket.TextMessage, []byte(line))
	}
	answered, refused, pages, late := 0, 0, 0, 0
	for answered+refused < n || pages+late < answered {
		ev, err := a.next(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d answers, %d refusals, %d pages: %v", answered, refused, pages, err)
		}
		switch {
		case ev["type"] == "joined" && strings.HasPrefix(fmt.Sprint(ev["ref"]), "j"):
			answered++
		case ev["type"] == "error" && ev["ref"] != nil:
			if ev["code"] != codeRateLimited || ev["room"] != lobby || ev["retry_after_ms"].(float64) <= 0 {
				t.Fatalf("refusal %v", ev)
			}
			refused++
		case ev["type"] == "error":
			// A join answered, whose history was then refused: the budget was spent.
			if ev["code"] != codeRateLimited || ev["room"] != lobby {
				t.Fatalf("history refusal %v", ev)
			}
			late++
		case ev["type"] == "history":
			pages++
		}
	}
	elapsed := time.Since(start)
	bound := historyPageBytes + historyPageBytes + 4096 + int(replyRate*elapsed.Seconds()) + 256*n
	t.Logf("%d requests (%d bytes) answered with %d bytes in %v: %d joins, %d pages, %d refused, ratio %.0f",
		n, in, a.read, elapsed, answered, pages, refused+late, float64(a.read)/float64(in))
	if a.read > bound {
		t.Fatalf("%d bytes out for %d in; the bound is %d", a.read, in, bound)
	}
	if refused < n-catchupBurst {
		t.Fatalf("only %d of %d refused", refused, n)
	}
	if got := testutil.ToFloat64(ts.App.metrics.rateLimited); got < float64(refused) {
		t.Fatalf("rate_limited counted %v times, %d refusals", got, refused)
	}
}

// TestCatchupRequestsCounted: repeated catch-up requests for a joined room (`history`)
// are refused with rate_limited beyond their budget even when each answer is small, so
// a flood of them cannot keep the store reading. At most catchupBurst are answered,
// plus what the rate refills while the flood runs.
func TestCatchupRequestsCounted(t *testing.T) {
	ts := startServer(t, generousLimits)
	a := ts.user(t, "alice")
	a.mustAck(map[string]any{"type": "say", "room": lobby, "text": "hello", "ref": "s"})
	start := time.Now()
	const n = 40
	for i := 0; i < n; i++ {
		a.send(map[string]any{"type": "history", "room": lobby, "after": 0, "ref": fmt.Sprint("h", i)})
	}
	answered, refused := 0, 0
	for answered+refused < n {
		ev := a.expect2("history", "error")
		if ev["type"] == "error" {
			if ev["code"] != codeRateLimited || ev["room"] != lobby || !strings.HasPrefix(fmt.Sprint(ev["ref"]), "h") {
				t.Fatalf("refusal %v", ev)
			}
			refused++
		} else {
			answered++
		}
	}
	refill := int(time.Since(start).Seconds()*catchupRate) + 1
	if answered > catchupBurst+refill {
		t.Fatalf("%d of %d catch-ups answered; the budget is %d (+%d refilled)", answered, n, catchupBurst, refill)
	}
	a.mustRefuse(map[string]any{"type": "history", "room": "elsewhere"}, codeNoSuchRoom)
}

// expect2 skips events until one of type a or b arrives, failing after 5 s.
func (c *wsClient) expect2(a, b string) map[string]any {
	c.t.Helper()
	return c.expectWithin(5*time.Second, a, b)
}

// historyFile finds the file entry of a history event.
func historyFile(t *testing.T, ev map[string]any) map[string]any {
	t.Helper()
	for _, m := range ev["messages"].([]any) {
		if msg := m.(map[string]any); msg["type"] == "file" {
			return msg
		}
	}
	t.Fatalf("no file in history %v", ev)
	return nil
}

// TestHistoryFileIsMetadata: a file in history carries its metadata and no bytes;
// fetch_file sends them, exactly, charged to the requester's file bucket: a second
// fetch the bucket cannot pay for is refused with rate_limited and a retry hint.
// Fetching a message that is not a file answers no_such_file.
func TestHistoryFileIsMetadata(t *testing.T) {
	ts := fileServer(t, func(c *Config) {
		c.FileMaxBytes, c.FileBurst, c.FileRate, c.HistoryFileMax = 64<<10, 64<<10, 1, 64<<10
	})
	mod := ts.user(t, "mod")
	png := append(testPNG(t), make([]byte, 40<<10)...)
	mod.sendFile(lobby, "big.png", "image/png", png, "f1")
	mod.expect("ack")
	mod.mustAck(map[string]any{"type": "say", "room": lobby, "text": "not a file", "ref": "s"})
	bob := ts.user(t, "bob")
	hist := bob.expectHistory(lobby)
	f := historyFile(t, hist)
	if _, ok := f["data"]; ok {
		t.Fatal("history carries the file's bytes")
	}
	if f["name"] != "big.png" || f["mime"] != "image/png" || f["size"].(float64) != float64(len(png)) {
		t.Fatalf("file metadata %v", f)
	}
	if bob.lastLen > 2048 {
		t.Fatalf("history with one file is %d bytes", bob.lastLen)
	}
	ids, _ := historyIDs(hist)
	id := f["id"].(float64)
	bob.send(map[string]any{"type": "fetch_file", "room": lobby, "id": id, "ref": "g1"})
	got := bob.expect("file")
	data, err := base64.StdEncoding.DecodeString(fmt.Sprint(got["data"]))
	if err != nil || !bytes.Equal(data, png) || got["ref"] != "g1" || got["id"] != id || got["name"] != "big.png" {
		t.Fatalf("fetched file: ref %v id %v, %d bytes (err %v)", got["ref"], got["id"], len(data), err)
	}
	bob.send(map[string]any{"type": "fetch_file", "room": lobby, "id": id, "ref": "g2"})
	e := bob.expectError(codeRateLimited)
	if e["ref"] != "g2" || e["room"] != lobby || e["retry_after_ms"].(float64) <= 0 {
		t.Fatalf("second fetch: %v", e)
	}
	bob.mustRefuse(map[string]any{"type": "fetch_file", "room": lobby, "id": ids[len(ids)-1]}, codeNoSuchFile)
	bob.mustRefuse(map[string]any{"type": "fetch_file", "room": "nowhere", "id": id}, codeNoSuchRoom)
}

// TestFetchFileOneAtATime: a second fetch_file while the first is still being
// answered is refused with fetch_pending; the first is answered. The store writer is
// held, so the first fetch stays in flight for as long as the test needs.
func TestFetchFileOneAtATime(t *testing.T) {
	ts := fileServer(t, nil)
	mod := ts.user(t, "mod")
	mod.sendFile(lobby, "a.png", "image/png", testPNG(t), "f1")
	mod.expect("ack")
	bob := ts.user(t, "bob")
	id := historyFile(t, bob.expectHistory(lobby))["id"]
	hold := make(chan struct{})
	released := false
	release := func() {
		if !released {
			released = true
			close(hold)
		}
	}
	t.Cleanup(release)
	ts.App.hub.bp.Submit(nil, func(error) { <-hold })
	two := fmt.Sprintf(`{"type":"fetch_file","room":"lobby","id":%v,"ref":"g1"}`+"\n"+`{"type":"fetch_file","room":"lobby","id":%v,"ref":"g2"}`, id, id)
	bob.sendRaw(websocket.TextMessage, []byte(two))
	if e := bob.expectError(codeFetchPending); e["ref"] != "g2" {
		t.Fatalf("refusal %v", e)
	}
	release()
	if f := bob.expect("file"); f["ref"] != "g1" || f["data"] == nil {
		t.Fatalf("first fetch answered with %v", f["ref"])
	}
}

// TestHistoryPageShared: a crowd joining a room with a full page of history shares
// one read and one copy of it, as a broadcast shares a message: every joiner's history
// event is the same bytes (one pointer), and the live heap grows by far less than the
// crowd times a page.
func TestHistoryPageShared(t *testing.T) {
	const crowd, bound = 100, 16 << 20
	h := newTestHub(t, func(c *Config) { c.HistoryOnJoin = 200 })
	sender := fakeClient("sender", 1024)
	h.register <- sender
	h.inbound <- command{client: sender, env: &envelope{Type: "join", Room: "big"}}
	for i := 0; i < 160; i++ {
		h.inbound <- sayCmd(sender, "big", fmt.Sprintf("%04d", i)+strings.Repeat("x", 7000))
	}
	clients := make([]*Client, crowd)
	for i := range clients {
		clients[i] = fakeClient(fmt.Sprint("u", i), 4096)
		h.register <- clients[i]
	}
	drain(t, h, sender)
	runtime.GC()
	base := liveHeap()
	for _, c := range clients {
		h.inbound <- command{client: c, env: &envelope{Type: "join", Room: "big"}}
	}
	pages := make([]*[]byte, crowd)
	for i, c := range clients {
		deadline := time.After(10 * time.Second)
		for pages[i] == nil {
			select {
			case b := <-c.send:
				if bytes.HasPrefix(*b, []byte(`{"type":"history","room":"big"`)) {
					pages[i] = b
				}
			case <-deadline:
				t.Fatalf("joiner %d got no history", i)
			}
		}
	}
	runtime.GC()
	grown := int64(liveHeap()) - int64(base)
	t.Logf("%d joiners, a page of %d bytes: live heap grew by %d kB", crowd, len(*pages[0]), grown>>10)
	if len(*pages[0]) < historyPageBytes/2 {
		t.Fatalf("the page is only %d bytes", len(*pages[0]))
	}
	for i, p := range pages {
		if p != pages[0] {
			t.Fatalf("joiner %d got its own copy of the page", i)
		}
	}
	if grown > bound {
		t.Fatalf("live heap grew by %d MB for %d joiners; the bound is %d MB", grown>>20, crowd, bound>>20)
	}
	runtime.KeepAlive(pages)
}

// TestSplitFileEntry: a file entry stored with its bytes inline (before they had their
// own bucket), with or without a signature after them, loses exactly the bytes.
func TestSplitFileEntry(t *testing.T) {
	for _, tc := range []struct{ in, meta, data string }{
		{`{"type":"file","room":"r","id":1,"size":3,"data":"QUJD"}`, `{"type":"file","room":"r","id":1,"size":3}`, "QUJD"},
		{`{"type":"file","room":"r","id":1,"size":3,"data":"QUJD","sig":{"device":"d"}}`, `{"type":"file","room":"r","id":1,"size":3,"sig":{"device":"d"}}`, "QUJD"},
		{`{"type":"file","room":"r","id":1,"size":3,"sig":{"device":"d"}}`, `{"type":"file","room":"r","id":1,"size":3,"sig":{"device":"d"}}`, ""},
		{`{"type":"message","room":"r","text":"\",\"data\":\"x"}`, `{"type":"message","room":"r","text":"\",\"data\":\"x"}`, ""},
	} {
		meta, data := splitFileEntry([]byte(tc.in))
		if string(meta) != tc.meta || string(data) != tc.data {
			t.Errorf("%s: meta %s, data %q", tc.in, meta, data)
		}
	}
}

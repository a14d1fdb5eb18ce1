package main

import (
	"errors"
	"fmt"
	"runtime"
	rtmetrics "runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// liveHeap reads the live heap as of the last garbage collection.
func liveHeap() uint64 {
	s := []rtmetrics.Sample{{Name: "/gc/heap/live:bytes"}}
	rtmetrics.Read(s)
	return s[0].Value.Uint64()
}

// drainFiles reads c's connection on its own goroutine, counting the file events it
// receives in files, until it sees a message with text stop, which it reports on done.
func drainFiles(c *wsClient, files *atomic.Int64, stop string, done chan<- struct{}) {
	go func() {
		for {
			ev, err := c.next(time.Minute)
			if err != nil {
				return
			}
			if ev["type"] == "file" {
				files.Add(1)
			}
			if ev["type"] == "message" && ev["text"] == stop {
				close(done)
				return
			}
		}
	}()
}

// TestSlowReaderEvictedByBytes: a client that never reads sits in a room flooded with
// file events of 350 KB each. Its waiting events are bounded in bytes (-send-queue-bytes),
// far below what its 32 + 4096 events would hold, so it is evicted with 1008 "too
// slow", counted; the live heap stays within 48 MiB of where it started (the flood is
// 300 files, 100 MB of events per reader: without the bound the stuck reader pins them
// all); and the others, who kept reading, go on chatting.
func TestSlowReaderEvictedByBytes(t *testing.T) {
	const files, heapBound = 300, 48 << 20
	ts := fileServer(t, func(c *Config) {
		c.FileMaxBytes, c.FileBurst, c.FileRate = 256<<10, 64<<20, 64<<20
		c.HistoryFileMax = 1 // files are delivered live only
		c.SendQueueBytes = 2 * maxEventBytes(c)
	})
	ts.App.hub.do(func() { ts.App.hub.writeWait = time.Hour }) // only the byte bound may act
	mod, carol := ts.user(t, "mod"), ts.user(t, "carol")
	stuck, _, err := ts.tryDial(devLogin(t, ts.URL, "stuck"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer stuck.Close()
	// The stuck client is in the lobby once carol sees it arrive.
	for ev := carol.expect("presence"); ev["user"].(map[string]any)["id"] != "dev:stuck"; ev = carol.expect("presence") {
	}
	var modGot, carolGot atomic.Int64
	modDone, carolDone := make(chan struct{}), make(chan struct{})
	drainFiles(mod, &modGot, "after the flood", modDone)
	drainFiles(carol, &carolGot, "after the flood", carolDone)

	runtime.GC()
	base, peak := liveHeap(), uint64(0)
	png := append(testPNG(t), make([]byte, 256<<10-len(testPNG(t)))...)
	sent := 0
	for ; sent < files && testutil.ToFloat64(ts.App.metrics.evictions) == 0; sent++ {
		mod.send(map[string]any{"type": "file", "room": lobby, "name": "f.png", "mime": "image/png", "size": len(png)})
		mod.conn.WriteMessage(websocket.BinaryMessage, png)
		// Pace the flood by the readers that keep up, so only the stuck one lags.
		waitFor(t, fmt.Sprint("file ", sent, " delivered"), func() bool {
			return modGot.Load() > int64(sent) && carolGot.Load() > int64(sent)
		})
		if sent%8 == 0 {
			runtime.GC()
			peak = max(peak, liveHeap())
		}
	}
	runtime.GC()
	peak = max(peak, liveHeap())
	t.Logf("flood stopped after %d files; live heap %d MB at start, peak %d MB", sent, base>>20, peak>>20)
	if n := testutil.ToFloat64(ts.App.metrics.evictions); n != 1 {
		t.Fatalf("%v evictions after %d files, want 1", n, sent)
	}
	if peak > base+heapBound {
		t.Fatalf("live heap grew by %d MB; the bound is %d MB", (peak-base)>>20, heapBound>>20)
	}
	// Reading now, the stuck client finds what was already on its way, then the close.
	stuck.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, _, err = stuck.ReadMessage(); err != nil {
			break
		}
	}
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation || ce.Text != "too slow" {
		t.Fatalf("stuck client: %v, want 1008 too slow", err)
	}
	mod.send(map[string]any{"type": "say", "room": lobby, "text": "after the flood"})
	for _, done := range []chan struct{}{modDone, carolDone} {
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("the others did not get the message after the flood")
		}
	}
}

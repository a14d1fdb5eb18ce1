package main

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// TestBrowserReconnectFullJitter: the page's reconnect delay is full jitter. The first
// retry is spread over [0, 1 s) (it was exactly 1 s for every page, so a dead node's
// pages all came back in the same millisecond), the ceiling doubles per attempt up to
// 30 s, and 200 draws of the first delay really spread.
func TestBrowserReconnectFullJitter(t *testing.T) {
	ts := startServer(t, nil)
	u := loginUser(t, newBrowser(t), ts.URL, "alice")
	got, err := chromedp.Run(u.ctx, chromedp.Evaluate[[]float64](`import('/static/connection.js').then(m => {
		const out = [m.reconnectDelay(0, () => 0), m.reconnectDelay(0, () => 0.5), m.reconnectDelay(0, () => 0.999),
			m.reconnectDelay(3, () => 0.5), m.reconnectDelay(9, () => 0.999)];
		const first = Array.from({length: 200}, () => m.reconnectDelay(0));
		out.push(Math.min(...first), Math.max(...first));
		return out;
	})`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	if got[0] != 0 || got[1] != 500 || got[2] < 998 || got[2] >= 1000 || got[3] != 4000 || got[4] < 29900 || got[4] >= 30000 {
		t.Fatalf("delays %v: want 0, 500, <1000, 4000, <30000", got[:5])
	}
	if got[5] > 100 || got[6] < 900 || got[6] >= 1000 {
		t.Fatalf("200 first delays ranged over [%v, %v]; want them spread over [0, 1000)", got[5], got[6])
	}
}

package main

import (
	"strconv"
	"testing"
	"time"
)

// TestBrowserE2EEGapResync: acceptance 12, second half, with the real hub. Bob's page
// is offline while alice writes more than the room's history keeps, and the store is
// pruned; when bob reconnects, the catch-up says gap:true, so his page sends
// mls_resync (counted, and a line in the room). The hub proposes the Remove of his
// device's leaf and its Add from a fresh KeyPackage, alice's page commits them, bob's
// page joins again from the Welcome, both show the same room code with two devices,
// and bob reads what alice writes next.
func TestBrowserE2EEGapResync(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HistoryMax = 4 })
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	e2eeMembers(t, "vault", alice, bob)
	evalAsync[bool](t, bob, `import('/static/state.js').then((s) => { s.state.leaving = true; s.state.ws.close(); return true; })`)
	bob.waitJS(t, "bob offline", `import("/static/state.js").then((s) => !s.state.ws || s.state.ws.readyState === WebSocket.CLOSED)`)
	for i := range 6 {
		text := "lost " + strconv.Itoa(i)
		alice.sayE2EE(t, text)
		alice.waitJS(t, text+" sent", shows(text, "alice"))
	}
	if err := ts.App.pruneHistory(time.Now()); err != nil {
		t.Fatal(err)
	}
	joins := eval[int](t, bob, `window.__mlsStats.joins`)
	evalAsync[bool](t, bob, `import('/static/connection.js').then((c) => import('/static/state.js').then((s) => { s.state.leaving = false; c.connect(); return true; }))`)
	bob.waitJS(t, "bob's page asks to be added again", `window.__mlsStats.resyncs === 1 &&
		[...document.querySelectorAll('#messages .sys-text')].some((s) => /history is gone: this device asks to be added again/.test(s.textContent))`)
	bob.waitJS(t, "bob's page joins again from a Welcome", `window.__mlsStats.joins === `+strconv.Itoa(joins+1)+` &&
		document.getElementById('e2ee-count').textContent === '2'`)
	sameCode(t, "vault", alice, bob)
	alice.sayE2EE(t, "after the resync")
	bob.waitJS(t, "bob reads the next message", shows("after the resync", "alice"))
	if n := eval[int](t, bob, `window.__mlsStats.resyncs`); n != 1 {
		t.Errorf("bob's page sent %d mls_resync, want 1", n)
	}
}

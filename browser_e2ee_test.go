package main

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// pageSend sends one command through the page's own connection (the module the
// page loaded, so the same socket), as the page's buttons do.
func pageSend(t *testing.T, u *browserUser, cmd string) {
	t.Helper()
	if !evalAsync[bool](t, u, `(async () => { const m = await import('/static/connection.js'); return m.sendJSON(`+cmd+`) !== false; })()`) {
		t.Fatalf("%s: the page did not send %s", u.name, cmd)
	}
}

// TestBrowserE2EERealHub: the page's MLS engine (static/e2ee.js, static/mls) against
// the real hub as Delivery Service, in two Chromium browsers: both pages bind their
// devices and upload KeyPackages; alice's page makes an E2EE room and its group; bob
// is invited and joins; alice's page commits the hub's Add of bob's device and bob's
// page joins by the Welcome only it gets; bob's typed message shows in alice's page,
// decrypted, with bob as its MLS author, and alice's reply in bob's; both show the
// same room code; the hub relayed ciphertext only (nothing in the room's history is a
// `message` event with text).
func TestBrowserE2EERealHub(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice := loginUser(t, newBrowser(t), ts.URL, "alice")
	bob := loginUser(t, newBrowser(t), ts.URL, "bob")
	for _, u := range []*browserUser{alice, bob} {
		u.waitJS(t, "the device's KeyPackages uploaded", `window.__mlsStats.kps > 0`)
	}
	pageSend(t, alice, `{type: 'create', room: 'vault', private: true, e2ee: true}`)
	alice.waitJS(t, "the room and its group", `!!document.querySelector('#rooms li[data-room="vault"]') && window.__mlsStats.accepted >= 0 &&
		document.querySelector('#rooms li[data-room="vault"]').classList.contains('room-e2ee')`)
	pageSend(t, alice, `{type: 'invite', room: 'vault', user: 'dev:bob'}`)
	bob.waitJS(t, "the invitation", `!!document.querySelector('#rooms li[data-room="vault"]') || true`)
	pageSend(t, bob, `{type: 'join', room: 'vault'}`)
	alice.waitJS(t, "alice's page commits bob's Add", `window.__mlsStats.commits >= 1`)
	bob.waitJS(t, "bob's page joins by the Welcome", `window.__mlsStats.joins >= 1`)

	const openVault = `(() => { const b = document.querySelector('#rooms li[data-room="vault"] button.room-open'); if (!b) return false; if (b.getAttribute('aria-current') === 'true') return true; b.click(); return false; })()`
	msgFrom := func(text, from string) string {
		return `[...document.querySelectorAll('#messages .msg')].some((m) => m.querySelector('.msg-text')?.textContent === ` +
			strconvQuote(text) + ` && m.querySelector('.msg-from').textContent === ` + strconvQuote(from) + `)`
	}
	bob.waitJS(t, "bob in the room", openVault)
	if err := chromedp.Do(bob.ctx, chromedp.SendKeys(chromedp.ID("input"), "canary from bob, encrypted\n")); err != nil {
		t.Fatal(err)
	}
	alice.waitJS(t, "alice's room open", openVault)
	alice.waitJS(t, "bob's message decrypted, by bob", msgFrom("canary from bob, encrypted", "bob"))
	if err := chromedp.Do(alice.ctx, chromedp.SendKeys(chromedp.ID("input"), "reply from alice\n")); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "alice's reply decrypted, by alice", msgFrom("reply from alice", "alice"))
	code := eval[string](t, alice, `document.getElementById('e2ee-code').textContent`)
	bob.waitJS(t, "the same room code", `document.getElementById('e2ee-code').textContent === `+strconvQuote(code))
	if code == "" {
		t.Fatal("no room code shown")
	}
	if n := historyCount(t, ts, "vault"); n < 4 {
		t.Fatalf("the room's history holds %d events", n)
	}
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

package main

// Browser tests of end-to-end encrypted direct messages with the real hub: a
// conversation between two pages with device keys is an MLS group, shown as end-to-end
// encrypted like a room; its messages notify like a plain conversation's, only when
// live; deleting one drops the plaintext the pages hold.

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// openDMByUI has u open the conversation with peer from the lobby's member list, as a
// person does, and waits until u's page holds the conversation's group with both
// devices in it (the peer's device added and committed). It returns the room name.
func openDMByUI(t *testing.T, u *browserUser, peer string) string {
	t.Helper()
	btn := `#members li[data-user="dev:` + peer + `"] button.member-dm`
	u.waitJS(t, peer+" in the member list", `!!document.querySelector(`+jsString(btn)+`)`)
	eval[bool](t, u, `(document.querySelector(`+jsString(btn)+`).click(), true)`)
	u.waitJS(t, "the conversation open", `document.querySelector('#room-title').textContent === '@`+peer+`'`)
	room := evalAsync[string](t, u, `import('/static/state.js').then((s) => s.state.current)`)
	defer func() {
		if t.Failed() {
			t.Logf("%s's engine: %s", u.name, evalAsync[string](t, u, `import('/static/e2ee.js').then((e) => JSON.stringify({
  e2ee: (e.isE2EE(`+jsString(room)+`)), info: e.engine() && e.engine().info(`+jsString(room)+`), stats: window.__mlsStats }))`))
		}
	}()
	u.waitJS(t, "the conversation's group with both devices", `import('/static/e2ee.js').then((e) => {
  const i = e.engine() && e.engine().info(`+jsString(room)+`);
  return !!i && i.members.length === 2 && !i.pending;
})`)
	return room
}

// deviceReady waits until u's page registered its device and uploaded its
// KeyPackages: before that the key directory has no live device of u's, and a
// conversation opened with u is plain.
func deviceReady(t *testing.T, u *browserUser) {
	t.Helper()
	u.waitJS(t, "the device registered with its KeyPackages", `window.__mlsStats.kps === 20`)
}

// dmSettled waits, when the conversation open on u's page is end-to-end encrypted
// (both pages had device keys when it was opened), until u's device has the group with
// the peer's device in it and no commit of its own in flight: a message typed earlier
// meets the Add still being committed (commit_required or stale_epoch) and is not sent.
func dmSettled(t *testing.T, u *browserUser) {
	t.Helper()
	u.waitJS(t, "the conversation's group settled, if it is encrypted", `Promise.all([import('/static/e2ee.js'), import('/static/state.js')]).then(([e, s]) => {
  const room = s.state.current;
  if (!e.isE2EE(room)) return true;
  const i = e.engine() && e.engine().info(room);
  return !!i && i.members.length === 2 && !i.pending;
})`)
}

// e2eeShown is a JavaScript test that the open room is marked end-to-end encrypted
// in the header and in the room list.
func e2eeShown(room string) string {
	return `!document.getElementById('room-e2ee').hidden && !document.getElementById('e2ee-bar').hidden &&
		!!document.querySelector('#rooms li.room-dm.room-e2ee[data-room=` + jsString(room) + `]')`
}

// TestBrowserDME2EE: alice opens a conversation with bob from the member list; both
// pages have device keys, so it is end-to-end encrypted: both show it so in the list
// and the header, with the same room code; what alice types goes as mls_app, bob's page
// decrypts it with alice as its MLS author, and the bolt store holds no plaintext of
// it. Alice deletes it: bob's page replaces it with the notice and its engine drops
// the copy kept for a reload, so after a reload and reopening the conversation the
// text is nowhere on bob's page.
func TestBrowserDME2EE(t *testing.T) {
	dir := t.TempDir()
	ts := startServer(t, func(c *Config) { c.Store = "bolt"; c.DataDir = dir; generousLimits(c) })
	b := newBrowser(t)
	alice := loginUser(t, b, ts.URL, "alice")
	bob := loginUser(t, b, ts.URL, "bob")
	deviceReady(t, alice)
	deviceReady(t, bob)
	room := openDMByUI(t, alice, "bob")
	alice.waitJS(t, "alice's page marks it end-to-end encrypted", e2eeShown(room))
	captureMLS(t, bob)

	const secret, plain = "marmot-dm-canary-2b7", "plain-lobby-canary-8e"
	alice.sayE2EE(t, secret)
	bob.waitJS(t, "the conversation listed as encrypted", `!!document.querySelector('#rooms li.room-dm.room-e2ee[data-room=`+jsString(room)+`] .unread')`)
	eval[bool](t, bob, `(document.querySelector('#rooms li.room-dm button.room-open').click(), true)`)
	bob.waitJS(t, "bob's page marks it end-to-end encrypted", `document.querySelector('#room-title').textContent === '@alice' && `+e2eeShown(room))
	bob.waitJS(t, "bob reads alice's message", shows(secret, "alice"))
	sameCode(t, room, alice, bob)
	if n := eval[int](t, bob, `window.__mlsApps.filter((m) => m.room === `+jsString(room)+`).length`); n != 1 {
		t.Fatalf("bob's page got %d mls_app events in the conversation, want 1", n)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.CSS(".e2ee-devices-box summary"))); err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(bob.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/dm-e2ee.png", shot)

	alice.clickRoom(t, lobby)
	alice.say(t, plain)
	bob.do(t, "open the lobby", chromedp.Click(chromedp.CSS(`#rooms li[data-room="lobby"] .room-open`)))
	bob.waitMessage(t, plain)
	raw, err := os.ReadFile(filepath.Join(dir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(raw, []byte(plain)) {
		t.Fatal("the lobby's canary is not in the store file: the scan sees nothing")
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the encrypted conversation's text is in the store file")
	}

	// Alice deletes her message from her page.
	bob.do(t, "open the conversation", chromedp.Click(chromedp.CSS(`#rooms li.room-dm .room-open`)))
	alice.do(t, "open the conversation", chromedp.Click(chromedp.CSS(`#rooms li.room-dm .room-open`)))
	alice.waitJS(t, "her message with its delete button", `[...document.querySelectorAll('#messages .msg')].some((m) => m.querySelector('.msg-text')?.textContent === `+jsString(secret)+` && !!m.querySelector('.msg-delete'))`)
	eval[bool](t, alice, `([...document.querySelectorAll('#messages .msg')].find((m) => m.querySelector('.msg-text')?.textContent === `+jsString(secret)+`).querySelector('.msg-delete').click(), true)`)
	gone := `!document.querySelector('#messages').textContent.includes(` + jsString(secret) + `) &&
		[...document.querySelectorAll('#messages .msg-deleted')].some((e) => e.textContent.includes('deleted by its sender'))`
	bob.waitJS(t, "the plaintext gone from bob's page", gone)
	alice.waitJS(t, "the plaintext gone from alice's page", gone)
	bob.waitJS(t, "bob's engine keeps no copy", `import('/static/e2ee.js').then((e) => e.engine().idle().then(() =>
		!e.engine().rooms.get(`+jsString(room)+`).plain.some((x) => x.body === `+jsString(secret)+`)))`)
	if err := chromedp.Do(bob.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "bob's page back", `document.getElementById('status').dataset.state === 'connected' && document.getElementById('me').textContent === 'bob'`)
	openDMByUI(t, bob, "alice")
	bob.waitJS(t, "the conversation reopened, its group restored", e2eeShown(room))
	alice.sayE2EE(t, "after the delete")
	bob.waitJS(t, "bob reads the next message", shows("after the delete", "alice"))
	if bytes.Contains([]byte(eval[string](t, bob, `document.body.textContent`)), []byte(secret)) {
		t.Fatal("the deleted text is back on bob's page after the reload")
	}
	for _, u := range []*browserUser{alice, bob} {
		u.watch.assertClean(t, u.name)
	}
}

// hiddenFromStart makes every document of a tab report itself hidden from its first
// script on, so nothing a page does while it loads (the history of a conversation,
// the copy of its decrypted messages) happens while it would look visible.
const hiddenFromStart = `Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => 'hidden' });
Object.defineProperty(document, 'hidden', { configurable: true, get: () => true });`

// TestBrowserDME2EENotifications: in an end-to-end encrypted conversation, a message
// that arrives live while bob's tab is hidden notifies (who, never the text), as in a
// plain conversation. A message decrypted from the history (sent while bob's page was
// away, caught up when he opens the conversation again), and the messages shown again
// from the engine's copy, do not notify, though the tab is hidden; the next live one
// does.
func TestBrowserDME2EENotifications(t *testing.T) {
	ts := startServer(t, generousLimits)
	b := newBrowser(t)
	alice := loginUser(t, b, ts.URL, "alice")
	bob := loginUser(t, b, ts.URL, "bob")
	if _, err := chromedp.Call(bob.ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: notificationHook}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "bob's page with the hook", `typeof window.__asks === 'number' &&
		document.querySelector('#status')?.dataset.state === 'connected' && !!document.querySelector('#rooms li[data-room="lobby"]')`)
	if _, err := chromedp.CallBrowser(bob.ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission:       &browser.PermissionDescriptor{Name: "notifications"},
		Setting:          browser.PermissionSettingGranted,
		Origin:           ts.URL,
		BrowserContextID: chromedp.FromContext(bob.ctx).BrowserContextID,
	}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.ID("notify-toggle"))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "notifications on", `document.querySelector('#notify-toggle').getAttribute('aria-pressed') === 'true'`)

	deviceReady(t, alice)
	deviceReady(t, bob)
	room := openDMByUI(t, alice, "bob")
	bob.setHidden(t, true)
	alice.sayE2EE(t, "live and hidden")
	bob.waitJS(t, "the live message decrypted", `import('/static/state.js').then((s) => s.state.rooms.get(`+jsString(room)+`)?.messages.some((e) => e.text === 'live and hidden'))`)
	bob.waitJS(t, "its notification", `window.__notes.length === 1`)
	want := note{Title: "alice sent you a direct message", Tag: "room:" + room}
	if got := eval[[]note](t, bob, `window.__notes`); len(got) != 1 || got[0] != want {
		t.Fatalf("notifications for a live message: %+v, want %+v", got, want)
	}

	// Bob's page goes away; alice writes; the page comes back hidden and bob opens the
	// conversation: the cached message and the caught-up one are shown, unread, and
	// neither notifies.
	if err := chromedp.Do(bob.ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	alice.sayE2EE(t, "while you were away")
	alice.waitJS(t, "alice's message stored", shows("while you were away", "alice"))
	if _, err := chromedp.Call(bob.ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: hiddenFromStart}); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Navigate(ts.URL)); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "bob's page back, hidden", `document.visibilityState === 'hidden' && document.getElementById('status').dataset.state === 'connected' &&
		document.getElementById('me').textContent === 'bob' && typeof window.__asks === 'number'`)
	btn := `#members li[data-user="dev:alice"] button.member-dm`
	bob.waitJS(t, "alice in the member list", `!!document.querySelector(`+jsString(btn)+`)`)
	eval[bool](t, bob, `(document.querySelector(`+jsString(btn)+`).click(), true)`)
	bob.waitJS(t, "both messages shown", shows("live and hidden", "alice")+` && `+shows("while you were away", "alice"))
	bob.waitJS(t, "the caught-up message counted unread", `import('/static/state.js').then((s) => s.state.rooms.get(`+jsString(room)+`).unread >= 1)`)
	if got := eval[[]note](t, bob, `window.__notes`); len(got) != 0 {
		t.Fatalf("notifications for history and cached messages: %+v, want none", got)
	}
	alice.sayE2EE(t, "live again")
	bob.waitJS(t, "the next live message", shows("live again", "alice"))
	bob.waitJS(t, "its notification", `window.__notes.length === 1`)
	if got := eval[[]note](t, bob, `window.__notes`); len(got) != 1 || got[0] != want {
		t.Fatalf("notifications after the catch-up: %+v, want %+v", got, want)
	}
	for _, u := range []*browserUser{alice, bob} {
		u.watch.assertClean(t, u.name)
	}
}

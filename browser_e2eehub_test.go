package main

import (
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// e2eeRoomByUI makes an end-to-end encrypted room from u's page exactly as a person
// would (the create form with its e2ee box) and waits until the page holds its group.
func e2eeRoomByUI(t *testing.T, u *browserUser, room string) {
	t.Helper()
	if err := chromedp.Do(u.ctx,
		chromedp.SendKeys(chromedp.ID("create-name"), room),
		chromedp.Click(chromedp.ID("create-e2ee")),
		chromedp.Click(chromedp.ID("create-submit")),
	); err != nil {
		t.Fatal(err)
	}
	u.waitJS(t, "the E2EE room's group", `(async () => {
  const e = await import('/static/e2ee.js');
  const c = e.engine();
  return !!c && !!c.info(`+strconvQuote(room)+`) && !document.getElementById('room-e2ee').hidden;
})()`)
}

// mlsInfo is the page's view of a room's group.
func mlsInfo(t *testing.T, u *browserUser, room string) (code string, members int) {
	t.Helper()
	var v struct {
		Code    string
		Members int
	}
	got := evalAsync[string](t, u, `import('/static/e2ee.js').then((e) => {
  const i = e.engine() && e.engine().info(`+strconvQuote(room)+`);
  return JSON.stringify(i ? { code: i.code, members: i.members.length } : {});
})`)
	if err := jsonUnmarshal(got, &v); err != nil {
		t.Fatal(err)
	}
	return v.Code, v.Members
}

// TestBrowserE2EEHub: two real pages and the real hub. Alice makes an E2EE room from
// the create form and invites bob; bob joins; the hub proposes his device, alice's page
// commits it, bob's page joins from the Welcome; both show the same room code and two
// devices, and messages typed on either side are decrypted on the other with the MLS
// author.
func TestBrowserE2EEHub(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob")
	alice, bob := us[0], us[1]
	e2eeRoomByUI(t, alice, "vault")
	if err := chromedp.Do(alice.ctx, chromedp.SendKeys(chromedp.ID("invite-user"), "dev:bob"), chromedp.Click(chromedp.ID("invite-submit"))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "the invitation", `!!document.querySelector('#notices')`)
	if err := chromedp.Do(bob.ctx, chromedp.SendKeys(chromedp.ID("join-name"), "vault"), chromedp.Click(chromedp.ID("join-submit"))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "bob in the group", `import('/static/e2ee.js').then((e) => !!e.engine() && !!e.engine().info('vault') && document.getElementById('e2ee-count').textContent === '2')`)
	alice.waitJS(t, "alice sees two devices", `document.getElementById('e2ee-count').textContent === '2'`)
	ca, _ := mlsInfo(t, alice, "vault")
	cb, _ := mlsInfo(t, bob, "vault")
	if ca == "" || ca != cb {
		t.Fatalf("room codes: alice %q, bob %q", ca, cb)
	}
	saySeen(t, alice, "secret hello from alice", bob)
	saySeen(t, bob, "and back from bob", alice)
	if err := chromedp.Do(alice.ctx, chromedp.Click(chromedp.CSS(".e2ee-devices-box summary"))); err != nil {
		t.Fatal(err)
	}
	shot, err := chromedp.Run(alice.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/e2ee-hub.png", shot)
	// Each page topped its device up to 20 KeyPackages once: the hub's kp_low and the
	// ack of the binding upload both ask, and a second top-up would overfill (kp_full).
	for _, u := range []*browserUser{alice, bob} {
		if n := eval[int](t, u, `window.__mlsStats.kps`); n != 20 {
			t.Errorf("%s's page made %d KeyPackages, want 20", u.name, n)
		}
	}
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

// jsonUnmarshal decodes a JSON string.
func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

// e2eeMembers makes room with owner and the others invited and joined, every page in
// the group with the same room code.
func e2eeMembers(t *testing.T, room string, owner *browserUser, others ...*browserUser) {
	t.Helper()
	e2eeRoomByUI(t, owner, room)
	for i, u := range others {
		inviteAndJoin(t, owner, u, room)
		want := strconvQuote(strconv.Itoa(i + 2))
		u.waitJS(t, "in the group", `import('/static/e2ee.js').then((e) => !!e.engine() && !!e.engine().info(`+strconvQuote(room)+`) && e.engine().info(`+strconvQuote(room)+`).members.length === `+strconv.Itoa(i+2)+`)`)
		owner.waitJS(t, "the owner sees the device", `document.getElementById('e2ee-count').textContent === `+want)
	}
	sameCode(t, room, append([]*browserUser{owner}, others...)...)
}

// sameCode waits until every page shows the same room code for room.
func sameCode(t *testing.T, room string, us ...*browserUser) string {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		codes := map[string]bool{}
		var last string
		for _, u := range us {
			c, _ := mlsInfo(t, u, room)
			codes[c] = true
			last = c
		}
		if len(codes) == 1 && last != "" {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("room codes differ: %v", codes)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// say types text into u's compose box and sends it.
func (u *browserUser) sayE2EE(t *testing.T, text string) {
	t.Helper()
	if err := chromedp.Do(u.ctx, chromedp.Focus(chromedp.ID("input")), chromedp.SendKeys(chromedp.ID("input"), text), pressEnter); err != nil {
		t.Fatal(err)
	}
}

// shows is a JavaScript test that the open room shows a message text from name.
func shows(text, name string) string {
	return `[...document.querySelectorAll('#messages .msg')].some((m) => m.querySelector('.msg-text')?.textContent === ` + strconvQuote(text) +
		` && m.querySelector('.msg-from').textContent === ` + strconvQuote(name) + `)`
}

// captureMLS makes u's page keep every mls_app event it receives in window.__mlsApps.
func captureMLS(t *testing.T, u *browserUser) {
	t.Helper()
	evalAsync[bool](t, u, `import('/static/state.js').then((s) => {
  window.__mlsApps = [];
  s.state.ws.addEventListener('message', (ev) => {
    for (const line of String(ev.data).split('\n')) {
      try { const o = JSON.parse(line); if (o.type === 'mls_app') window.__mlsApps.push(o); } catch (e) {}
    }
  });
  return true;
})`)
}

// TestBrowserE2EEKick: acceptance 1 with the real hub. Carol is kicked; her page keeps
// the group state it had; alice and bob move to the next epoch without her (the tree's
// device list in both pages says so), and the next message, which bob reads, cannot be
// decrypted by carol's kept state: her page counts it (decrypt_failed) and shows the
// notice.
func TestBrowserE2EEKick(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	e2eeMembers(t, "vault", alice, bob, carol)
	codeBefore := sameCode(t, "vault", alice, bob, carol)
	evalAsync[bool](t, carol, `import('/static/e2ee.js').then((e) => { window.__kept = e.engine().rooms.get('vault').state; return true; })`)
	captureMLS(t, bob)
	alice.sendJSON(t, `{type: 'kick', room: 'vault', user: 'dev:carol'}`)
	alice.waitJS(t, "carol's device removed", `document.getElementById('e2ee-count').textContent === '2' &&
		[...document.querySelectorAll('#messages .sys-text')].some((s) => /of dev:carol was removed/.test(s.textContent))`)
	if c := sameCode(t, "vault", alice, bob); c == codeBefore {
		t.Fatal("the room code did not change with the removal")
	}
	saySeen(t, alice, "after the kick", bob)
	next := eval[string](t, bob, `JSON.stringify(window.__mlsApps.find((m) => m.room === 'vault'))`)
	got := evalAsync[string](t, carol, `(async () => {
  const e = await import('/static/e2ee.js');
  const c = e.engine();
  const r = c.room('vault');
  r.state = window.__kept;
  await c.handle(`+next+`);
  return JSON.stringify({ rejected: window.__mlsStats.rejected.decrypt_failed || 0, accepted: window.__mlsStats.accepted });
})()`)
	if got != `{"rejected":1,"accepted":0}` {
		t.Errorf("carol's kept state on the next message: %s", got)
	}
	carol.waitJS(t, "carol's page says so", `!!document.querySelector('#notices .notice[data-code="mls_decrypt_failed"]')`)
}

// TestBrowserE2EESecondTab: acceptance 11 (tabs) with the real hub. A second tab of
// alice's profile does not get the device's lock: it says so in the room, and a
// message typed there is refused with a notice, stays in the box and never reaches the
// hub (bob sees only the first tab's message; the tab's counter says nothing sent).
func TestBrowserE2EESecondTab(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob")
	alice, bob := us[0], us[1]
	e2eeMembers(t, "vault", alice, bob)
	tab2ctx, cancel := chromedp.NewContext(alice.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(tab2ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatal(err)
	}
	second := &browserUser{ctx: tab2ctx, name: "alice (tab 2)", watch: watchPage(t, tab2ctx)}
	second.waitJS(t, "the second tab connected", `document.getElementById('status').dataset.state === 'connected'`)
	evalAsync[bool](t, second, `import('/static/actions.js').then((a) => a.joinRoom('vault'))`)
	second.waitJS(t, "the second tab in the room", `!!document.querySelector('#rooms li[data-room="vault"]')`)
	if err := chromedp.Do(tab2ctx, chromedp.Click(chromedp.CSS(`#rooms li[data-room="vault"] .room-open`))); err != nil {
		t.Fatal(err)
	}
	second.waitJS(t, "the second tab says another tab drives encryption",
		`/another tab/.test(document.getElementById('e2ee-state').textContent)`)
	second.sayE2EE(t, "from the second tab")
	second.waitJS(t, "refused with a notice, draft kept", `!!document.querySelector('#notices .notice[data-code="e2ee_other_tab"]') &&
		document.getElementById('input').value.includes('from the second tab') && window.__mlsStats.sent === 0`)
	saySeen(t, alice, "from the first tab", bob)
	if n := eval[int](t, bob, `[...document.querySelectorAll('#messages .msg-text')].filter((m) => m.textContent === 'from the second tab').length`); n != 0 {
		t.Errorf("the second tab's message reached bob %d times", n)
	}
}

// TestBrowserE2EEReconnect: acceptance 12 with the real hub. Bob's page is offline
// while the room crosses three epochs (carol added, dave added, carol kicked) with a
// message in each; when it reconnects, the catch-up replays the log and bob's page
// decrypts every message, in order, refuses nothing, and ends with everyone's code.
func TestBrowserE2EEReconnect(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	e2eeMembers(t, "vault", alice, bob)
	evalAsync[bool](t, bob, `import('/static/state.js').then((s) => { s.state.leaving = true; s.state.ws.close(); return true; })`)
	bob.waitJS(t, "bob offline", `import("/static/state.js").then((s) => !s.state.ws || s.state.ws.readyState === WebSocket.CLOSED)`)
	join := func(u *browserUser, n int) {
		inviteAndJoin(t, alice, u, "vault")
		alice.waitJS(t, "the device added", `document.getElementById('e2ee-count').textContent === '`+strconv.Itoa(n)+`'`)
	}
	saySeen(t, alice, "m1", alice)
	join(carol, 3)
	saySeen(t, alice, "m2", alice)
	join(dave, 4)
	saySeen(t, alice, "m3", alice)
	alice.sendJSON(t, `{type: 'kick', room: 'vault', user: 'dev:carol'}`)
	alice.waitJS(t, "carol removed", `document.getElementById('e2ee-count').textContent === '3'`)
	saySeen(t, alice, "m4", alice)
	evalAsync[bool](t, bob, `import('/static/connection.js').then((c) => import('/static/state.js').then((s) => { s.state.leaving = false; c.connect(); return true; }))`)
	bob.waitJS(t, "bob caught up", shows("m4", "alice"))
	got := eval[string](t, bob, `JSON.stringify({ texts: [...document.querySelectorAll('#messages .msg-text')].map((m) => m.textContent),
		rejected: window.__mlsStats.rejectedTotal, accepted: window.__mlsStats.accepted })`)
	if want := `{"texts":["m1","m2","m3","m4"],"rejected":0,"accepted":4}`; got != want {
		t.Errorf("bob after the catch-up:\n got %s\nwant %s", got, want)
	}
	sameCode(t, "vault", alice, bob, dave)
}

// TestBrowserE2EECommitRace: acceptance 9 with the real hub. Alice, bob and carol are
// online when dave joins: each page commits the hub's Add at once; the hub keeps one
// (the pages together applied exactly one own commit for that epoch, the others were
// answered stale_epoch or saw the winner first), and all four pages end in the same
// epoch with the same room code; dave reads the next message.
func TestBrowserE2EECommitRace(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob", "carol", "dave")
	alice, bob, carol, dave := us[0], us[1], us[2], us[3]
	e2eeMembers(t, "vault", alice, bob, carol)
	counts := func() (commits, stale int) {
		for _, u := range []*browserUser{alice, bob, carol} {
			commits += eval[int](t, u, `window.__mlsStats.commits`)
			stale += eval[int](t, u, `window.__mlsStats.stale`)
		}
		return
	}
	c0, s0 := counts()
	inviteAndJoin(t, alice, dave, "vault")
	dave.waitJS(t, "dave in the group", `import('/static/e2ee.js').then((e) => !!e.engine() && !!e.engine().info('vault'))`)
	code := sameCode(t, "vault", alice, bob, carol, dave)
	c1, s1 := counts()
	t.Logf("own commits applied %d, stale_epoch answers %d, room code %s", c1-c0, s1-s0, code)
	if c1-c0 != 1 {
		t.Errorf("the three pages applied %d own commits for one epoch, want 1", c1-c0)
	}
	epochs := map[int]bool{}
	for _, u := range []*browserUser{alice, bob, carol, dave} {
		epochs[evalAsync[int](t, u, `import('/static/e2ee.js').then((e) => e.engine().info('vault').epoch)`)] = true
	}
	if len(epochs) != 1 {
		t.Errorf("the pages are in different epochs: %v", epochs)
	}
	saySeen(t, bob, "after the race", dave)
}

// TestBrowserE2EEReload: acceptance 11 (reload) with the real hub. Alice's page reloads
// and joins the room again: its group comes back from IndexedDB (same room code as
// bob's), what it had decrypted is shown from its cache, the join resumes after the
// last event the group processed, and bob's next message decrypts.
func TestBrowserE2EEReload(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob")
	alice, bob := us[0], us[1]
	e2eeMembers(t, "vault", alice, bob)
	saySeen(t, bob, "before the reload", alice)
	if err := chromedp.Do(alice.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	alice.waitJS(t, "alice's page back", `document.getElementById('status').dataset.state === 'connected' && document.getElementById('me').textContent === 'alice'`)
	evalAsync[bool](t, alice, `import('/static/actions.js').then((a) => a.joinRoom('vault'))`)
	alice.waitJS(t, "the cached message and the restored group", shows("before the reload", "bob")+
		` && document.getElementById('e2ee-count').textContent === '2'`)
	sameCode(t, "vault", alice, bob)
	saySeen(t, bob, "after the reload", alice)
	if got := eval[string](t, alice, `JSON.stringify({ rejected: window.__mlsStats.rejectedTotal, texts: [...document.querySelectorAll('#messages .msg-text')].map((m) => m.textContent) })`); got != `{"rejected":0,"texts":["before the reload","after the reload"]}` {
		t.Errorf("after the reload: %s", got)
	}
}

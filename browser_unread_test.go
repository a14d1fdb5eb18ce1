package main

// Browser tests of reading comfort: @name mentions, the "new messages" marker, the
// unread count in the title, and notifications while the tab is hidden.

import (
	"os"
	"testing"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// setHidden makes the page believe its tab was hidden or shown again, as the Page
// Visibility API reports it, and fires visibilitychange. Headless Chromium keeps every
// tab visible, and the protocol has no command to hide one; the page reads only
// document.visibilityState, which this overrides on the document itself.
func (u *browserUser) setHidden(t *testing.T, hidden bool) {
	t.Helper()
	state := "visible"
	if hidden {
		state = "hidden"
	}
	eval[bool](t, u, `(() => {
		const state = `+jsString(state)+`;
		Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
		Object.defineProperty(document, 'hidden', { configurable: true, get: () => state === 'hidden' });
		document.dispatchEvent(new Event('visibilitychange'));
		return true;
	})()`)
}

// joinSide makes the user join and open another room, so lobby is not in view.
func (u *browserUser) joinSide(t *testing.T, room string) {
	t.Helper()
	u.joinByForm(t, room)
	u.openRoom(t, room)
}

// clickRoom opens a room from the user's room list, as a click does.
func (u *browserUser) clickRoom(t *testing.T, room string) {
	t.Helper()
	u.do(t, "open #"+room, chromedp.Click(chromedp.CSS(`#rooms li[data-room="`+room+`"] .room-open`)))
	u.openRoom(t, room)
}

// marks returns the highlighted mentions in the message with this text.
func (u *browserUser) marks(t *testing.T, text string) []string {
	t.Helper()
	return eval[[]string](t, u, `(() => {
		const m = Array.from(document.querySelectorAll('#messages .msg'))
			.find((m) => m.querySelector('.msg-text')?.textContent === `+jsString(text)+`);
		return m ? Array.from(m.querySelectorAll('.msg-text mark.mention'), (e) => e.textContent) : ['(no such message)'];
	})()`)
}

// TestBrowserMentions: "@name" mentioning the viewer (display name, any case, a name
// with a space, on word boundaries) is highlighted for that user only, built of DOM
// nodes (a <mark> holding text, the rest text nodes). An e-mail address, a user@host,
// a link, a longer word and a longer name are no mention. (The "@" on the unread
// badge: TestBrowserUnreadMarker.)
func TestBrowserMentions(t *testing.T) {
	ts := startServer(t, generousLimits)
	b := newBrowser(t)
	alice := loginUser(t, b, ts.URL, "alice")
	bob := loginUser(t, b, ts.URL, "Bob Stone")
	carol := loginUser(t, b, ts.URL, "carol")

	plain := "ssh deploy@carol, write to dev@carol.example or ask @carolyn (https://social.example/@carol), not @bob stoned or @bob"
	alice.say(t, plain)
	mention := "hey @BOB  STONE, can you look? thanks @carol."
	alice.say(t, mention)
	for _, u := range []*browserUser{alice, bob, carol} {
		u.waitMessage(t, mention)
	}

	for _, c := range []struct {
		u    *browserUser
		text string
		want []string
	}{
		{bob, mention, []string{"@BOB  STONE"}},
		{carol, mention, []string{"@carol"}},
		{alice, mention, nil},
		{bob, plain, nil},
		{carol, plain, nil},
	} {
		got := c.u.marks(t, c.text)
		if len(got) != len(c.want) || (len(got) > 0 && got[0] != c.want[0]) {
			t.Errorf("%s sees the mentions %q in %q, want %q", c.u.name, got, c.text, c.want)
		}
	}
	// The mentioned user's message stands out; the text is text nodes and the mark only.
	type view struct {
		Mention  bool     `json:"mention"`
		Elements []string `json:"elements"`
		Text     string   `json:"text"`
	}
	probe := `(() => {
		const m = Array.from(document.querySelectorAll('#messages .msg'))
			.find((m) => m.querySelector('.msg-text')?.textContent === ` + jsString(mention) + `);
		const t = m.querySelector('.msg-text');
		return { mention: m.classList.contains('msg-mention'),
			elements: Array.from(t.querySelectorAll('*'), (e) => e.tagName + ':' + e.childNodes.length + ':' + e.firstChild.nodeType),
			text: t.textContent };
	})()`
	if got := eval[view](t, bob, probe); !got.Mention || len(got.Elements) != 1 || got.Elements[0] != "MARK:1:3" || got.Text != mention {
		t.Errorf("bob's view of the mention: %+v", got)
	}
	if got := eval[view](t, alice, probe); got.Mention || len(got.Elements) != 0 {
		t.Errorf("alice's view of her own message: %+v", got)
	}

	shot, err := chromedp.Run(bob.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/chat-mention.png", shot)
	for _, u := range []*browserUser{alice, bob, carol} {
		u.watch.assertClean(t, u.name)
	}
}

// markerState is where the "new messages" marker is: how many there are, and the texts
// of the messages just before and after it.
type markerState struct {
	Count  int    `json:"count"`
	Before string `json:"before"`
	After  string `json:"after"`
	// AfterGrouped tells whether the message after it is shown as a follow-up (no header).
	AfterGrouped bool `json:"afterGrouped"`
}

// marker reads the marker's place in the open room.
func (u *browserUser) marker(t *testing.T) markerState {
	t.Helper()
	return eval[markerState](t, u, `(() => {
		const all = document.querySelectorAll('#messages .unread-marker');
		const m = all[0];
		const text = (e) => e?.querySelector('.msg-text')?.textContent ?? '';
		return { count: all.length, before: text(m?.previousElementSibling), after: text(m?.nextElementSibling),
			afterGrouped: !!m?.nextElementSibling?.classList.contains('msg-cont') };
	})()`)
}

// TestBrowserUnreadMarker: a room not in view counts unread messages, with an "@" on
// its badge once one mentions the user. Coming back to it shows one "new messages" divider, right before the first one not seen; switching away and back with
// nothing new takes it away; messages that arrive while the tab is hidden count in the
// title and get the divider when the tab is visible again; sending takes it away. The
// title shows the total unread count and loses it when everything is read.
func TestBrowserUnreadMarker(t *testing.T) {
	ts := startServer(t, generousLimits)
	b := newBrowser(t)
	alice := loginUser(t, b, ts.URL, "alice")
	bob := loginUser(t, b, ts.URL, "bob")

	alice.say(t, "one")
	alice.say(t, "two")
	bob.waitMessage(t, "two")
	bob.joinSide(t, "side-room")
	alice.say(t, "three")
	bob.waitJS(t, "an unread count without a mention, and in the title", `(() => {
		const li = document.querySelector('#rooms li[data-room="lobby"]');
		return li.querySelector('.unread')?.textContent === '1' && !li.querySelector('.unread-mention') &&
			document.title === '(1) #side-room · Chat';
	})()`)
	alice.say(t, "four, @bob")
	bob.waitJS(t, "the mention marker on lobby's unread badge", `(() => {
		const li = document.querySelector('#rooms li[data-room="lobby"]');
		return li.querySelector('.unread')?.textContent === '2' && li.querySelector('.unread-mention')?.textContent === '@' &&
			document.title === '(2) #side-room · Chat';
	})()`)
	shot, err := chromedp.Run(bob.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/chat-unread-badge.png", shot)
	bob.clickRoom(t, "lobby")
	bob.waitMessage(t, "four, @bob")
	if got := eval[string](t, bob, `document.title`); got != "#lobby · Chat" {
		t.Errorf("title after reading lobby: %q", got)
	}
	if got := bob.marker(t); got != (markerState{Count: 1, Before: "two", After: "three"}) {
		t.Errorf("the marker after coming back: %+v, want one between two and three, three with its header", got)
	}
	shot, err = chromedp.Run(bob.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/chat-unread-marker.png", shot)

	// Away and back with nothing new: no marker.
	bob.clickRoom(t, "side-room")
	bob.clickRoom(t, "lobby")
	if got := bob.marker(t); got.Count != 0 {
		t.Errorf("a marker after coming back to nothing new: %+v", got)
	}

	// The tab hidden with lobby open: lobby is not being read.
	bob.setHidden(t, true)
	alice.say(t, "five")
	alice.say(t, "six")
	bob.waitMessage(t, "six")
	bob.waitJS(t, "the hidden tab's unread count in the title", `document.title === '(2) #lobby · Chat'`)
	if got := bob.marker(t); got.Count != 0 {
		t.Errorf("the marker moved while the tab was hidden: %+v", got)
	}
	bob.setHidden(t, false)
	bob.waitJS(t, "the title without a count", `document.title === '#lobby · Chat'`)
	if got := bob.marker(t); got != (markerState{Count: 1, Before: "four, @bob", After: "five"}) {
		t.Errorf("the marker after the tab came back: %+v, want one between %q and five", got, "four, @bob")
	}

	// Writing is reading: the marker goes.
	bob.say(t, "back")
	bob.waitMessage(t, "back")
	bob.waitJS(t, "no marker after sending", `document.querySelectorAll('#messages .unread-marker').length === 0`)
	// The message after it returns to its group.
	if grouped := eval[bool](t, bob, `Array.from(document.querySelectorAll('#messages .msg'))
		.find((m) => m.querySelector('.msg-text')?.textContent === 'five').nextElementSibling.classList.contains('msg-cont')`); !grouped {
		t.Errorf("six is no longer grouped with five after the marker went")
	}
	for _, u := range []*browserUser{alice, bob} {
		u.watch.assertClean(t, u.name)
	}
}

// notificationHook replaces Notification before the page's scripts run with a subclass
// that records each notification made (title, options) and counts permission requests,
// and otherwise behaves as the real one.
const notificationHook = `(() => {
	const Real = window.Notification;
	window.__notes = [];
	window.__noteObjects = [];
	window.__asks = 0;
	class Counted extends Real {
		constructor(title, options) {
			super(title, options);
			window.__notes.push({ title, tag: options?.tag ?? '', body: options?.body ?? '' });
			window.__noteObjects.push(this);
		}
		static get permission() { return Real.permission; }
		static requestPermission(...args) {
			window.__asks++;
			return Real.requestPermission(...args);
		}
	}
	window.Notification = Counted;
})()`

// note is one notification the page made.
type note struct {
	Title string `json:"title"`
	Tag   string `json:"tag"`
	Body  string `json:"body"`
}

// TestBrowserNotifications: the page never asks for the notification permission on
// load; the button asks (a user gesture) and turns notifications on. While the tab is
// hidden a mention and a direct message each make one notification naming the sender
// and the room and nothing of the text; an ordinary message makes none, nor do a
// mention and a direct message while the tab is visible, nor anything once the button
// turned them off. A
// click on a notification opens its room.
func TestBrowserNotifications(t *testing.T) {
	ts := startServer(t, generousLimits)
	b := newBrowser(t)
	alice := loginUser(t, b, ts.URL, "alice")
	bob := loginUser(t, b, ts.URL, "bob")

	// bob's tab gets the hook and loads the page again.
	if _, err := chromedp.Call(bob.ctx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: notificationHook}); err != nil {
		t.Fatalf("install the notification hook: %v", err)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "the page to reconnect with the hook", `typeof window.__asks === 'number' &&
		document.querySelector('#status')?.dataset.state === 'connected' && !!document.querySelector('#rooms li[data-room="lobby"]')`)
	type button struct {
		Asks    int    `json:"asks"`
		Visible bool   `json:"visible"`
		Pressed string `json:"pressed"`
		Perm    string `json:"perm"`
	}
	probe := `({ asks: window.__asks, visible: !!document.querySelector('#notify-toggle')?.checkVisibility(),
		pressed: document.querySelector('#notify-toggle')?.getAttribute('aria-pressed'), perm: Notification.permission })`
	if got := eval[button](t, bob, probe); got != (button{Asks: 0, Visible: true, Pressed: "false", Perm: "default"}) {
		t.Fatalf("after load: %+v, want the button offered, off, and no permission asked for", got)
	}

	// The user allows notifications: the browser's prompt is answered through the
	// protocol (headless Chromium shows none), then the button is pressed.
	origin := ts.URL
	if _, err := chromedp.CallBrowser(bob.ctx, browser.SetPermission, browser.SetPermissionParams{
		Permission:       &browser.PermissionDescriptor{Name: "notifications"},
		Setting:          browser.PermissionSettingGranted,
		Origin:           origin,
		BrowserContextID: chromedp.FromContext(bob.ctx).BrowserContextID,
	}); err != nil {
		t.Fatalf("grant notifications: %v", err)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.ID("notify-toggle"))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "notifications on", `document.querySelector('#notify-toggle').getAttribute('aria-pressed') === 'true'`)
	if got := eval[button](t, bob, probe); got != (button{Asks: 1, Visible: true, Pressed: "true", Perm: "granted"}) {
		t.Fatalf("after the click: %+v, want one request and notifications on", got)
	}

	// Visible: neither a mention in the open room nor a direct message elsewhere
	// makes a notification.
	alice.say(t, "@bob while you look")
	bob.waitMessage(t, "@bob while you look")
	alice.waitJS(t, "bob in the member list", `!!document.querySelector('#members li[data-user="dev:bob"] button.member-dm')`)
	eval[bool](t, alice, `(document.querySelector('#members li[data-user="dev:bob"] button.member-dm').click(), true)`)
	alice.waitJS(t, "the conversation open", `document.querySelector('#room-title').textContent === '@bob'`)
	dmSettled(t, alice) // end-to-end encrypted: both pages have device keys
	alice.say(t, "while you look, too")
	bob.waitJS(t, "the conversation listed, unread", `document.querySelector('#rooms li.room-dm .unread')?.textContent === '1'`)

	// Hidden: an ordinary message makes none, a mention one, a direct message one.
	bob.setHidden(t, true)
	alice.clickRoom(t, "lobby")
	alice.say(t, "an ordinary message")
	alice.say(t, "@bob are you there?")
	bob.waitJS(t, "a notification", `window.__notes.length >= 1`)
	alice.do(t, "open the conversation", chromedp.Click(chromedp.CSS(`#rooms li.room-dm .room-open`)))
	alice.waitJS(t, "the conversation open", `document.querySelector('#room-title').textContent === '@bob'`)
	alice.say(t, "psst, a secret")
	bob.waitJS(t, "a second notification", `window.__notes.length >= 2`)
	notes := eval[[]note](t, bob, `window.__notes`)
	dmRoom := eval[string](t, bob, `document.querySelector('#rooms li.room-dm')?.dataset.room ?? ''`)
	want := []note{
		{Title: "alice mentioned you in #lobby", Tag: "room:lobby"},
		{Title: "alice sent you a direct message", Tag: "room:" + dmRoom},
	}
	if dmRoom == "" || len(notes) != len(want) || notes[0] != want[0] || notes[1] != want[1] {
		t.Fatalf("notifications: %+v, want %+v", notes, want)
	}
	if got := eval[string](t, bob, `document.title`); got != "(4) #lobby · Chat" {
		t.Errorf("title while hidden: %q, want (4) #lobby · Chat", got)
	}

	// A click on the conversation's notification opens it.
	eval[bool](t, bob, `(window.__noteObjects[1].dispatchEvent(new Event('click')), true)`)
	bob.waitJS(t, "the conversation opened by the click", `document.querySelector('#room-title').textContent === '@alice'`)
	bob.waitMessage(t, "psst, a secret")

	// Turned off: nothing more.
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.ID("notify-toggle"))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "notifications off", `document.querySelector('#notify-toggle').getAttribute('aria-pressed') === 'false'`)
	alice.say(t, "another secret")
	bob.waitMessage(t, "another secret")
	if n := eval[int](t, bob, `window.__notes.length`); n != 2 {
		t.Errorf("%d notifications after turning them off, want still 2", n)
	}
	if n := eval[int](t, bob, `window.__asks`); n != 1 {
		t.Errorf("%d permission requests, want 1 (the click)", n)
	}
	for _, u := range []*browserUser{alice, bob} {
		u.watch.assertClean(t, u.name)
	}
}

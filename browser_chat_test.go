package main

import (
	"os"
	"testing"

	"github.com/chromedp/chromedp"
)

// clickDelete presses the delete button of the message with this text, as a user does.
func (u *browserUser) clickDelete(t *testing.T, text string) {
	t.Helper()
	u.waitJS(t, "a delete button on "+text, `(want) => Array.from(document.querySelectorAll('#messages .msg'))
		.some((m) => m.querySelector('.msg-text')?.textContent === want && !!m.querySelector('button.msg-delete'))`, text)
	ok := eval[bool](t, u, `(() => {
		const m = Array.from(document.querySelectorAll('#messages .msg'))
			.find((m) => m.querySelector('.msg-text')?.textContent === `+jsString(text)+`);
		m.querySelector('button.msg-delete').click();
		return true;
	})()`)
	if !ok {
		t.Fatalf("%s: no delete button on %q", u.name, text)
	}
}

// jsString quotes s as a JavaScript string literal (JSON is one).
func jsString(s string) string { return string(appendJSONString(nil, s)) }

// TestBrowserDeleteAndLinks: through the page, a sender deletes their message and a
// moderator removes another's; every page shows the one-line notice instead. A member
// gets no delete button on someone else's message. http(s) links are clickable, open
// in a new tab with noopener noreferrer, and nothing else (javascript:, markup) is.
func TestBrowserDeleteAndLinks(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Moderators = []string{"dev:bob"}; generousLimits(c) })
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	carol := loginUser(t, browser, ts.URL, "carol")

	linky := "docs at https://example.com/docs?a=1&b=2, not javascript:alert(1) or <a href=x>x</a>"
	alice.say(t, linky)
	for _, u := range []*browserUser{bob, carol} {
		u.waitMessage(t, linky)
	}
	links := eval[[]map[string]string](t, carol, `Array.from(document.querySelectorAll('#messages a'), (a) =>
		({href: a.getAttribute('href'), rel: a.rel, target: a.target, text: a.textContent}))`)
	if len(links) != 1 || links[0]["href"] != "https://example.com/docs?a=1&b=2" || links[0]["rel"] != "noopener noreferrer" ||
		links[0]["target"] != "_blank" || links[0]["text"] != "https://example.com/docs?a=1&b=2" {
		t.Fatalf("links in the message: %v", links)
	}
	if n := eval[int](t, carol, `document.querySelectorAll('#messages .msg-text *:not(a)').length`); n != 0 {
		t.Fatalf("the message text holds %d elements besides the link", n)
	}

	alice.say(t, "oops, wrong room")
	carol.waitMessage(t, "oops, wrong room")
	if n := eval[int](t, carol, `document.querySelectorAll('#messages .msg button.msg-delete').length`); n != 0 {
		t.Fatalf("a member sees %d delete buttons on others' messages", n)
	}
	alice.clickDelete(t, "oops, wrong room")
	for _, u := range []*browserUser{alice, bob, carol} {
		u.waitJS(t, "the sender's deletion notice", `Array.from(document.querySelectorAll('#messages .msg-deleted'))
			.some((e) => e.textContent === 'Message deleted by its sender') &&
			!Array.from(document.querySelectorAll('#messages .msg-text')).some((e) => e.textContent === 'oops, wrong room')`)
	}

	alice.say(t, "buy cheap watches")
	bob.waitMessage(t, "buy cheap watches")
	bob.clickDelete(t, "buy cheap watches")
	alice.waitJS(t, "the moderator's removal notice", `Array.from(document.querySelectorAll('#messages .msg-deleted'))
		.some((e) => e.textContent === 'Message removed by a moderator')`)
	carol.waitJS(t, "the moderator's removal notice", `Array.from(document.querySelectorAll('#messages .msg-deleted'))
		.some((e) => e.textContent === 'Message removed by a moderator')`)

	shot, err := chromedp.Run(carol.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/chat-deleted.png", shot)
	for _, u := range []*browserUser{alice, bob, carol} {
		u.watch.assertClean(t, u.name)
	}
}

// TestBrowserDirectMessages: through the page, alice opens a conversation with bob
// from the member list and writes; bob's page lists it apart from the rooms, named
// after alice, with an unread count (also in the tab title), and the conversation
// holds the message. Conversations do not appear among the rooms to join.
func TestBrowserDirectMessages(t *testing.T) {
	ts := startServer(t, generousLimits)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")

	alice.waitJS(t, "bob in the member list", `!!document.querySelector('#members li[data-user="dev:bob"] button.member-dm')`)
	eval[bool](t, alice, `(document.querySelector('#members li[data-user="dev:bob"] button.member-dm').click(), true)`)
	alice.waitJS(t, "the conversation open", `document.querySelector('#room-title').textContent === '@bob'`)
	dmSettled(t, alice) // end-to-end encrypted: both pages have device keys
	alice.say(t, "psst, lunch?")

	bob.waitJS(t, "the conversation listed apart with an unread count", `(() => {
		const items = Array.from(document.querySelectorAll('#rooms li'));
		const head = items.findIndex((li) => li.classList.contains('room-section'));
		const dm = items.findIndex((li) => li.classList.contains('room-dm'));
		return head > 0 && dm === head + 1 &&
			items[dm].querySelector('.room-name').textContent === 'alice' &&
			items[dm].querySelector('.unread')?.textContent === '1' &&
			document.title.startsWith('(1) ');
	})()`)
	shot, err := chromedp.Run(bob.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/chat-dm-list.png", shot)

	eval[bool](t, bob, `(document.querySelector('#rooms li.room-dm button.room-open').click(), true)`)
	bob.waitJS(t, "the conversation", `document.querySelector('#room-title').textContent === '@alice'`)
	bob.waitMessage(t, "psst, lunch?")
	if n := eval[int](t, bob, `document.querySelectorAll('#browse li[data-room^="dm:"]').length`); n != 0 {
		t.Fatalf("the conversation is offered %d times among the rooms to join", n)
	}
	for _, u := range []*browserUser{alice, bob} {
		u.watch.assertClean(t, u.name)
	}
}

package main

// Browser tests of the page's room, member and admin controls, and of its
// handling of refused files: the real page in headless Chromium against the
// real server, users acting only through the page's own forms and buttons.

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// assertNoConsoleErrors fails the test if the tab logged an error or a
// warning (the page warns when it cannot handle a server event), on top of
// assertClean's dialogs, exceptions and CSP violations.
func (w *pageWatch) assertNoConsoleErrors(t *testing.T, who string) {
	t.Helper()
	w.assertClean(t, who)
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, m := range w.console {
		if strings.HasPrefix(m, "console.error") || strings.HasPrefix(m, "console.warning") || strings.HasPrefix(m, "log error/") {
			t.Errorf("%s: the page logged %q", who, m)
		}
	}
}

// do runs chromedp actions in the user's tab, failing the test with what
// the page showed.
func (u *browserUser) do(t *testing.T, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(u.ctx, actions...); err != nil {
		t.Fatalf("%s: %s: %v\npage: %s", u.name, what, err, u.describe())
	}
}

// fill replaces the value of the input sel selects by typing, as a person
// would (after emptying it).
func (u *browserUser) fill(t *testing.T, sel, value string) {
	t.Helper()
	eval[chromedp.Void](t, u, `document.querySelector(`+strconv.Quote(sel)+`).value = ''`)
	u.do(t, "fill "+sel,
		chromedp.Focus(chromedp.CSS(sel)),
		chromedp.SendKeys(chromedp.CSS(sel), value),
	)
}

// waitNotice waits for a visible notice of a code whose text contains want.
func (u *browserUser) waitNotice(t *testing.T, code, want string) {
	t.Helper()
	u.waitJS(t, fmt.Sprintf("a %s notice saying %q", code, want),
		`(code, want) => Array.from(document.querySelectorAll('#notices .notice')).some((n) =>
			n.dataset.code === code && n.checkVisibility() && n.querySelector('.notice-text').textContent.includes(want))`,
		code, want)
}

// waitOK waits for the success notice of an acknowledged command.
func (u *browserUser) waitOK(t *testing.T, want string) {
	t.Helper()
	u.waitJS(t, fmt.Sprintf("an ok notice saying %q", want),
		`(want) => Array.from(document.querySelectorAll('#notices .notice.ok')).some((n) =>
			n.dataset.code === 'ok' && n.checkVisibility() && n.textContent.includes(want))`,
		want)
}

// openRoom waits until the page shows room as the open room.
func (u *browserUser) openRoom(t *testing.T, room string) {
	t.Helper()
	u.waitJS(t, "#"+room+" to be the open room",
		`(room) => !!document.querySelector('#rooms li[data-room="' + room + '"].active') &&
			document.querySelector('#room-title').textContent === '#' + room`, room)
}

// joinByForm joins a room through the join form.
func (u *browserUser) joinByForm(t *testing.T, room string) {
	t.Helper()
	u.fill(t, "#join-name", room)
	u.do(t, "submit the join form", chromedp.Click(chromedp.ID("join-submit")))
}

// memberNames reads #members the way the older tests do: each li's text.
func (u *browserUser) memberNames(t *testing.T) []string {
	t.Helper()
	return eval[[]string](t, u, `Array.from(document.querySelectorAll('#members li'), (li) => li.textContent).sort()`)
}

// pngFile writes a small PNG of w×h pixels and returns its path.
func pngFile(t *testing.T, dir, name string, w, h int) string {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for x := range w {
		for y := range h {
			img.Set(x, y, color.RGBA{R: uint8(40 + x*7), G: 120, B: uint8(200 - y*5), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// hover moves the mouse over the middle of an element, as a person
// pointing at it would.
func (u *browserUser) hover(t *testing.T, sel string) {
	t.Helper()
	type point struct{ X, Y float64 }
	p := eval[point](t, u, `(() => { const r = document.querySelector(`+strconv.Quote(sel)+`).getBoundingClientRect();
		return { X: r.left + r.width / 2, Y: r.top + r.height / 2 }; })()`)
	u.do(t, "hover "+sel, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, p.X, p.Y))
}

// screenshot saves the tab's full page to path when CHAT_SCREENSHOTS=1.
func (u *browserUser) screenshot(t *testing.T, path string) {
	t.Helper()
	shot, err := chromedp.Run(u.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("%s: screenshot: %v", u.name, err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", path, shot)
}

// TestBrowserPrivateRoomInvite: an owner creates a private room with the
// create form and invites a user with the invite form; the invitee accepts
// from the notice and both chat there. A third user sees the public room but
// not the private one in the room list, and joining it by name is answered
// exactly as for a missing room.
func TestBrowserPrivateRoomInvite(t *testing.T) {
	ts := startServer(t, nil)
	browser := newBrowser(t)
	olga := loginUser(t, browser, ts.URL, "olga")
	bob := loginUser(t, browser, ts.URL, "bob")

	// A plain member in lobby may create rooms but not invite, expel or manage.
	olga.waitJS(t, "the create form", `!!document.querySelector('#create-form')?.checkVisibility()`)
	for _, sel := range []string{"#invite-form", "#room-manage-toggle", "#admin-toggle", "#admin-panel"} {
		if eval[bool](t, olga, `!!document.querySelector('`+sel+`')?.checkVisibility()`) {
			t.Errorf("olga, a member in lobby, sees %s", sel)
		}
	}

	// A public room first, for the control below.
	olga.fill(t, "#create-name", "town")
	olga.do(t, "create a public room", chromedp.Click(chromedp.ID("create-submit")))
	olga.openRoom(t, "town")
	olga.waitOK(t, "Room #town created")

	olga.fill(t, "#create-name", "secret")
	olga.do(t, "tick private and create", chromedp.Click(chromedp.ID("create-private")), chromedp.Click(chromedp.ID("create-submit")))
	olga.openRoom(t, "secret")
	olga.waitOK(t, "Private room #secret created")
	olga.waitJS(t, "the private tag and the owner's controls",
		`!document.querySelector('#room-private').hidden &&
		 !!document.querySelector('#invite-form')?.checkVisibility() &&
		 document.querySelector('#invite-room').textContent === '#secret' &&
		 !!document.querySelector('#room-manage-toggle')?.checkVisibility()`)

	olga.fill(t, "#invite-user", "dev:bob")
	olga.do(t, "invite bob", chromedp.Click(chromedp.ID("invite-submit")))
	olga.waitOK(t, "Invitation to #secret sent to dev:bob")

	bob.waitJS(t, "the invitation with a Join button",
		`(() => { const n = document.querySelector('#notices .notice[data-code="invited"]');
		  return !!n?.querySelector('.notice-action')?.checkVisibility() && n.textContent.includes('olga') && n.textContent.includes('#secret'); })()`)
	bob.do(t, "accept the invitation", chromedp.Click(chromedp.CSS(`#notices .notice[data-code="invited"] .notice-action`)))
	bob.openRoom(t, "secret")
	bob.waitJS(t, "secret marked private", `!document.querySelector('#room-private').hidden`)
	// bob is a member there: no invite, expel or manage controls.
	if n := eval[int](t, bob, `document.querySelectorAll('#members .member-kick, #members .member-ban, #members .member-mod').length`); n != 0 {
		t.Errorf("bob, a member of secret, has %d member buttons", n)
	}
	if eval[bool](t, bob, `!!document.querySelector('#invite-form')?.checkVisibility()`) {
		t.Errorf("bob, a member of secret, is offered the invite form")
	}
	olga.waitJS(t, "bob listed in secret",
		`Array.from(document.querySelectorAll('#members li'), (li) => li.textContent).sort().join() === 'bob,olga'`)

	olga.say(t, "welcome to the secret room")
	bob.waitMessage(t, "welcome to the secret room")
	bob.say(t, "thanks, olga")
	olga.waitMessage(t, "thanks, olga")

	// carol arrives after all this; her room list is asked afresh with the
	// browse button. She sees town, not secret.
	carol := loginUser(t, browser, ts.URL, "carol")
	eval[chromedp.Void](t, carol, `document.querySelector('#browse').replaceChildren()`)
	carol.do(t, "refresh the room list", chromedp.Click(chromedp.ID("browse-refresh")))
	carol.waitJS(t, "the refreshed room list",
		`!!document.querySelector('#browse li[data-room="lobby"]') && !!document.querySelector('#browse li[data-room="town"]')`)
	if eval[bool](t, carol, `!!document.querySelector('#browse li[data-room="secret"], #rooms li[data-room="secret"]')`) {
		t.Errorf("carol's room list shows the private room")
	}
	carol.joinByForm(t, "secret")
	carol.waitNotice(t, "no_such_room", "There is no room #secret")
	if eval[bool](t, carol, `!!document.querySelector('#rooms li[data-room="secret"]')`) {
		t.Errorf("carol joined the private room")
	}
	if got := eval[string](t, carol, `document.querySelector('#room-title').textContent`); got != "#lobby" {
		t.Errorf("carol's open room is %s after the refused join, want #lobby", got)
	}

	for _, u := range []*browserUser{olga, bob, carol} {
		u.watch.assertNoConsoleErrors(t, u.name)
	}
}

// TestBrowserModerationControls: a member sees no kick or ban buttons; a
// moderator kicks a member with the button and the member's page drops the
// room with a notice; the admin changes a setting in the admin panel, which
// is acknowledged, applied, and recorded in the audit list.
func TestBrowserModerationControls(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.Admins = []string{"dev:root"}
		c.Moderators = []string{"dev:mod"}
	})
	browser := newBrowser(t)
	mod := loginUser(t, browser, ts.URL, "mod")
	mia := loginUser(t, browser, ts.URL, "mia")
	root := loginUser(t, browser, ts.URL, "root")

	for _, u := range []*browserUser{mod, mia, root} {
		u.joinByForm(t, "ops")
		u.openRoom(t, "ops")
	}
	for _, u := range []*browserUser{mod, mia, root} {
		u.waitJS(t, "everyone in ops",
			`Array.from(document.querySelectorAll('#members li'), (li) => li.textContent).sort().join() === 'mia,mod,root'`)
	}

	// mia, a member, gets no member buttons, no room settings, no admin.
	if n := eval[int](t, mia, `document.querySelectorAll('#members .member-kick, #members .member-ban, #members .member-mod').length`); n != 0 {
		t.Errorf("mia, a member, has %d member buttons", n)
	}
	for _, sel := range []string{"#room-manage-toggle", "#admin-toggle", "#invite-form"} {
		if eval[bool](t, mia, `!!document.querySelector('`+sel+`')?.checkVisibility()`) {
			t.Errorf("mia, a member, sees %s", sel)
		}
	}

	// mod, a global moderator, may expel mia but not root (who outranks
	// him) or himself; the room's owner is mod (he joined it first), so he
	// also gets the moderator toggle. The names still read exactly.
	type buttons struct {
		Kick []string `json:"kick"`
		Ban  []string `json:"ban"`
		Mod  []string `json:"mod"`
	}
	got := eval[buttons](t, mod, `({
		kick: Array.from(document.querySelectorAll('#members .member-kick'), (b) => b.dataset.user),
		ban: Array.from(document.querySelectorAll('#members .member-ban'), (b) => b.dataset.user),
		mod: Array.from(document.querySelectorAll('#members .member-mod'), (b) => b.dataset.user)})`)
	if strings.Join(got.Kick, ",") != "dev:mia" || strings.Join(got.Ban, ",") != "dev:mia" {
		t.Errorf("mod's kick/ban buttons are for %+v, want only dev:mia", got)
	}
	if strings.Join(got.Mod, ",") != "dev:mia" {
		t.Errorf("mod's moderator buttons are for %v, want only dev:mia (root is an admin)", got.Mod)
	}
	if names := mod.memberNames(t); strings.Join(names, ",") != "mia,mod,root" {
		t.Errorf("with member buttons, #members li read %q, want exactly the names", names)
	}

	// The room settings of the owner, open, and the member buttons shown
	// by hovering mia's row: the screenshot for a person to look at.
	mod.do(t, "open the room settings", chromedp.Click(chromedp.ID("room-manage-toggle")))
	mod.waitJS(t, "the room settings", `!!document.querySelector('#topic-input')?.checkVisibility() && !!document.querySelector('#lock-toggle')?.checkVisibility()`)
	mod.fill(t, "#topic-input", "incident room")
	mod.do(t, "save the topic", chromedp.Click(chromedp.ID("topic-save")))
	mod.waitOK(t, "Topic of #ops saved")
	mia.waitJS(t, "the new topic", `document.querySelector('#room-topic').textContent === 'incident room'`)
	mod.do(t, "delete, step one", chromedp.Click(chromedp.ID("delete-room")))
	mod.waitJS(t, "the in-page confirmation",
		`!!document.querySelector('#delete-confirm')?.checkVisibility() && document.querySelector('#delete-question').textContent.includes('#ops')`)
	mod.do(t, "cancel the deletion", chromedp.Click(chromedp.ID("delete-no")))
	mod.waitJS(t, "the delete button back", `!!document.querySelector('#delete-room')?.checkVisibility() && !document.querySelector('#delete-confirm').checkVisibility()`)
	mod.hover(t, `#members li[data-user="dev:mia"]`)
	mod.waitJS(t, "the member buttons, shown on hover",
		`getComputedStyle(document.querySelector('#members li[data-user="dev:mia"] .member-actions')).opacity === '1'`)
	mod.screenshot(t, "/tmp/roles-members.png")

	mod.do(t, "kick mia", chromedp.Click(chromedp.CSS(`#members li[data-user="dev:mia"] .member-kick`)))
	mod.waitOK(t, "mia was removed from #ops")
	mia.waitJS(t, "ops dropped with a kicked notice",
		`!document.querySelector('#rooms li[data-room="ops"]') &&
		 /removed you from #ops/.test(document.querySelector('#notices .notice[data-code="kicked"]')?.textContent || '') &&
		 document.querySelector('#room-title').textContent === '#lobby'`)
	mod.waitJS(t, "mia gone from ops' members",
		`Array.from(document.querySelectorAll('#members li'), (li) => li.textContent).sort().join() === 'mod,root'`)

	// root, an admin, has the admin panel; mod does not.
	if eval[bool](t, mod, `!!document.querySelector('#admin-toggle')?.checkVisibility()`) {
		t.Errorf("mod, a moderator, sees the admin toggle")
	}
	root.waitJS(t, "the admin toggle", `!!document.querySelector('#admin-toggle')?.checkVisibility()`)
	root.do(t, "open the admin panel", chromedp.Click(chromedp.ID("admin-toggle")))
	before := ts.App.settings().MsgBurst
	root.waitJS(t, "the settings, loaded into the form",
		`(burst) => !!document.querySelector('#admin-panel')?.checkVisibility() &&
			document.querySelector('#settings-form [name="msg_burst"]').value === String(burst) &&
			document.querySelector('#settings-form [name="members_can_create_rooms"]').checked === true`, before)
	want := before + 7
	root.fill(t, `#settings-form [name="msg_burst"]`, fmt.Sprint(want))
	root.do(t, "save the settings", chromedp.Click(chromedp.ID("settings-save")))
	root.waitOK(t, "Settings saved: msg_burst.")
	if got := ts.App.settings().MsgBurst; got != want {
		t.Errorf("after the ack the server's msg_burst is %d, want %d", got, want)
	}
	root.waitJS(t, "a set_settings entry in the audit list, naming the change",
		`(want) => Array.from(document.querySelectorAll('#audit li.audit-entry')).some((li) =>
			li.querySelector('.audit-action').textContent === 'set_settings' &&
			li.querySelector('.audit-actor').textContent === 'dev:root' &&
			li.querySelector('.audit-change').textContent.includes('msg_burst: ' + (want - 7) + ' → ' + want))`, want)
	root.waitJS(t, "the kick in the audit list",
		`Array.from(document.querySelectorAll('#audit li.audit-entry')).some((li) =>
			li.querySelector('.audit-action').textContent === 'kick' && li.querySelector('.audit-target').textContent === 'ops dev:mia')`)

	// A refused setting shows the server's reason.
	root.fill(t, `#settings-form [name="msg_burst"]`, "99999999")
	root.do(t, "save the settings", chromedp.Click(chromedp.ID("settings-save")))
	root.waitNotice(t, "bad_setting", "The settings were not saved: bursts above 10000 are refused.")
	root.screenshot(t, "/tmp/roles-admin.png")
	eval[chromedp.Void](t, root, `document.querySelector('#admin-panel').scrollTop = 1e6`)
	root.screenshot(t, "/tmp/roles-admin-audit.png")

	for _, u := range []*browserUser{mod, mia, root} {
		u.watch.assertNoConsoleErrors(t, u.name)
	}
}

// TestBrowserRefusedFileNotice: a moderator picks an SVG (refused by the
// page, as it is not an accepted type), a file too big for the server (also
// refused by the page), and a "PNG" that is really text (refused by the
// server's sniffer); each shows a notice and nothing reaches the others.
// A real PNG then shows as an image from a blob: URL for another user.
func TestBrowserRefusedFileNotice(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Moderators = []string{"dev:mod"} })
	browser := newBrowser(t)
	mod := loginUser(t, browser, ts.URL, "mod")
	viewer := loginUser(t, browser, ts.URL, "viewer")

	dir := t.TempDir()
	svg := filepath.Join(dir, "logo.svg")
	if err := os.WriteFile(svg, []byte(`<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>`), 0o644); err != nil {
		t.Fatal(err)
	}
	fake := filepath.Join(dir, "fake.png")
	if err := os.WriteFile(fake, []byte("this is plain text pretending to be a picture\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "huge.png")
	if err := os.WriteFile(big, bytes.Repeat([]byte{0x89}, int(ts.App.settings().FileMaxBytes)+1), 0o644); err != nil {
		t.Fatal(err)
	}
	real := pngFile(t, dir, "dots.png", 4, 3)

	mod.waitJS(t, "the attach button", `!!document.querySelector('#attach')?.checkVisibility()`)
	upload := func(path string) {
		t.Helper()
		mod.do(t, "pick "+filepath.Base(path), chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{path}))
	}
	dismiss := func(code string) {
		t.Helper()
		mod.do(t, "dismiss the "+code+" notice", chromedp.Click(chromedp.CSS(`#notices .notice[data-code="`+code+`"] .notice-close`)))
		mod.waitJS(t, "the notice gone", `(code) => !document.querySelector('#notices .notice[data-code="' + code + '"]')`, code)
	}

	upload(svg)
	mod.waitNotice(t, "file_type", "image/svg+xml files cannot be sent")
	dismiss("file_type")

	upload(big)
	mod.waitNotice(t, "file_too_big", "files must be between 1 byte and 1.0 MB")

	upload(fake)
	mod.waitNotice(t, "file_type", "its content is text/plain")
	dismiss("file_type")

	upload(real)
	viewer.waitJS(t, "the PNG, shown inline from a blob: URL",
		`(() => { const i = document.querySelector('#messages .msg img.msg-image');
		  return !!i && i.complete && i.naturalWidth === 4 && i.naturalHeight === 3 && i.src.startsWith('blob:') && i.alt === 'dots.png'; })()`)
	mod.waitJS(t, "the PNG in the sender's own page", `!!document.querySelector('#messages img.msg-image[alt="dots.png"]')`)
	// Only the real PNG reached anyone: one file message, no svg, no text file.
	for _, u := range []*browserUser{viewer, mod} {
		type view struct {
			Files    int `json:"files"`
			Elements int `json:"elements"`
		}
		v := eval[view](t, u, `({
			files: document.querySelectorAll('#messages .msg-file').length,
			elements: document.querySelectorAll('#messages svg, #messages script, #messages iframe, #messages object, #messages embed').length})`)
		if v.Files != 1 || v.Elements != 0 {
			t.Errorf("%s: %d file messages and %d active elements, want 1 and 0", u.name, v.Files, v.Elements)
		}
	}
	if eval[bool](t, viewer, `!!document.querySelector('#notices .notice[data-code="file_type"]')`) {
		t.Errorf("the viewer was shown the sender's refusal")
	}
	for _, u := range []*browserUser{mod, viewer} {
		u.watch.assertNoConsoleErrors(t, u.name)
	}
}

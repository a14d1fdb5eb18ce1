package main

// Browser tests: the real page in a real headless Chromium against the real
// server. They prove what only a browser can: that server-supplied text is
// rendered as text (threat i), that the page runs under the strict CSP
// without a single violation, and that the page's user-visible behaviour
// (chat between two users, rate-limit notice, logout) works end to end.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

const (
	// chromiumPath is where the test setup installs Chromium; a missing
	// browser is a broken test environment, so the tests fail rather than skip.
	chromiumPath = "/usr/bin/chromium"
	// browserTestTimeout bounds a whole browser test, so a hung page or
	// browser fails the test instead of hanging the suite.
	browserTestTimeout = 60 * time.Second
	// waitTimeout bounds one wait for the page to reach a state.
	waitTimeout = 20 * time.Second
)

// newBrowser starts a fresh headless Chromium with its own profile for one
// test and returns a context bound to it; everything is torn down by
// t.Cleanup, and the test's deadline bounds the browser's life.
func newBrowser(t *testing.T) context.Context {
	t.Helper()
	return newBrowserWithin(t, browserTestTimeout)
}

// newBrowserWithin is newBrowser for a test that needs longer than browserTestTimeout
// (several browsers and pages in one story).
func newBrowserWithin(t *testing.T, limit time.Duration) context.Context {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("chromium is required for the browser tests: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browserCtx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browserCtx
}

// pageWatch records what a tab reports on its own (dialogs, console and
// log entries, uncaught exceptions), so a test can assert that an attack
// opened no dialog and that the page logged no CSP violation or error.
type pageWatch struct {
	mu         sync.Mutex
	dialogs    []string
	console    []string
	exceptions []string
}

// watchPage starts recording a tab's events. It uses chromedp.Listen, which
// delivers events in order before the replies that follow them, so anything
// that happened before a later command returned is already recorded. A
// dialog is dismissed at once so it cannot block the page.
func watchPage(t *testing.T, ctx context.Context) *pageWatch {
	t.Helper()
	w := &pageWatch{}
	err := chromedp.Listen(ctx, func(ev any) {
		w.mu.Lock()
		defer w.mu.Unlock()
		switch ev := ev.(type) {
		case *page.EventJavascriptDialogOpening:
			w.dialogs = append(w.dialogs, string(ev.Type)+": "+ev.Message)
			go func() {
				_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: false})
			}()
		case *runtime.EventConsoleAPICalled:
			var parts []string
			for _, a := range ev.Args {
				if len(a.Value) > 0 {
					parts = append(parts, string(a.Value))
				} else {
					parts = append(parts, a.Description)
				}
			}
			w.console = append(w.console, "console."+string(ev.Type)+": "+strings.Join(parts, " "))
		case *log.EventEntryAdded:
			if ev.Entry != nil {
				w.console = append(w.console, "log "+string(ev.Entry.Level)+"/"+string(ev.Entry.Source)+": "+ev.Entry.Text)
			}
		case *runtime.EventExceptionThrown:
			if d := ev.ExceptionDetails; d != nil {
				text := d.Text
				if d.Exception != nil {
					text += " " + d.Exception.Description
				}
				w.exceptions = append(w.exceptions, fmt.Sprintf("%s:%d %s", d.URL, d.LineNumber+1, text))
			}
		}
	})
	if err != nil {
		t.Fatalf("listen to the tab: %v", err)
	}
	return w
}

// cspMessages returns the recorded console and log lines that report a
// Content Security Policy violation.
func (w *pageWatch) cspMessages() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []string
	for _, m := range w.console {
		l := strings.ToLower(m)
		if strings.Contains(l, "content security policy") || strings.Contains(l, "content-security-policy") {
			out = append(out, m)
		}
	}
	return out
}

// assertClean fails the test if the tab opened a dialog, threw an uncaught
// exception or logged a CSP violation: each would mean the page is broken
// or an attack got through.
func (w *pageWatch) assertClean(t *testing.T, who string) {
	t.Helper()
	w.mu.Lock()
	dialogs := append([]string(nil), w.dialogs...)
	exceptions := append([]string(nil), w.exceptions...)
	w.mu.Unlock()
	if len(dialogs) > 0 {
		t.Errorf("%s: a JavaScript dialog opened: %q", who, dialogs)
	}
	if len(exceptions) > 0 {
		t.Errorf("%s: uncaught exceptions in the page: %q", who, exceptions)
	}
	if csp := w.cspMessages(); len(csp) > 0 {
		t.Errorf("%s: CSP violations logged: %q", who, csp)
	}
}

// browserUser is one signed-in user: a tab in its own browser context, so
// its cookie jar (and so its session) is separate from every other user's.
type browserUser struct {
	name  string
	ctx   context.Context
	watch *pageWatch
}

// openTab opens a tab in a new browser context and starts watching it,
// before anything is loaded, so no event of the page is missed.
func openTab(t *testing.T, browser context.Context) (context.Context, *pageWatch) {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("open a tab: %v", err)
	}
	return ctx, watchPage(t, ctx)
}

// loginUser opens a fresh tab, signs in through the development login form
// exactly as a person would, and waits until the chat page is connected and
// in lobby.
func loginUser(t *testing.T, browser context.Context, baseURL, name string) *browserUser {
	t.Helper()
	ctx, w := openTab(t, browser)
	u := &browserUser{name: name, ctx: ctx, watch: w}
	if err := chromedp.Do(ctx,
		chromedp.Navigate(baseURL+"/login"),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), name),
	); err != nil {
		t.Fatalf("%s: development login form: %v", name, err)
	}
	if _, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.ID("login-submit"))); err != nil {
		t.Fatalf("%s: submit the login form: %v", name, err)
	}
	u.waitJS(t, "the page to connect and join lobby",
		`location.pathname === '/' &&
		 document.querySelector('#status')?.dataset.state === 'connected' &&
		 /connected/.test(document.querySelector('#status').textContent) &&
		 !!document.querySelector('#rooms li[data-room="lobby"]')`)
	return u
}

// waitJS polls a JavaScript expression until it is truthy; on a timeout it
// fails with what the page showed, so a failure explains itself.
func (u *browserUser) waitJS(t *testing.T, what, expr string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		remaining := time.Until(deadline)
		if remaining <= 0 {
			t.Fatalf("%s: waiting for %s: timed out\npage: %s", u.name, what, u.describe())
		}
		opts := []chromedp.PollOption{chromedp.WithPollingInterval(50 * time.Millisecond), chromedp.WithPollingTimeout(remaining)}
		var err error
		if len(args) > 0 {
			opts = append(opts, chromedp.WithPollingArgs(args...))
			_, err = chromedp.Run(u.ctx, chromedp.PollFunction[chromedp.Void](expr, opts...))
		} else {
			_, err = chromedp.Run(u.ctx, chromedp.Poll[chromedp.Void](expr, opts...))
		}
		if err == nil {
			return
		}
		if u.ctx.Err() != nil || errors.Is(err, chromedp.ErrPollingTimeout) || !navigatedAway(err) {
			t.Fatalf("%s: waiting for %s: %v\npage: %s", u.name, what, err, u.describe())
		}
		// The page navigated while polling (a login redirect, a logout):
		// wait for the new document, then poll again in it.
		if err := chromedp.Do(u.ctx, chromedp.WaitReady(chromedp.CSS("body"))); err != nil {
			t.Fatalf("%s: waiting for %s: %v\npage: %s", u.name, what, err, u.describe())
		}
	}
}

// navigatedAway reports whether a poll failed only because the document it
// ran in went away, which a navigation the test expects can cause.
func navigatedAway(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "navigated or closed") || strings.Contains(msg, "Execution context was destroyed") ||
		strings.Contains(msg, "Cannot find context")
}

// describe summarises the page's visible state for failure messages.
func (u *browserUser) describe() string {
	ctx, cancel := context.WithTimeout(u.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.href,
		body: (document.body?.innerText || '').slice(0, 200),
		navigation: performance.getEntriesByType('navigation')[0]?.name,
		recorded: window.__notices,
		states: window.__states,
		status: document.querySelector('#status')?.textContent,
		me: document.querySelector('#me')?.textContent,
		rooms: Array.from(document.querySelectorAll('#rooms li'), (li) => li.dataset.room),
		notices: Array.from(document.querySelectorAll('#notices .notice'), (n) => n.dataset.code + ': ' + n.textContent),
		messages: Array.from(document.querySelectorAll('#messages .msg-text'), (m) => m.textContent).slice(-10),
	})`))
	if err != nil {
		return "(cannot read the page: " + err.Error() + ")"
	}
	return s
}

// eval runs JavaScript in the tab and decodes its result, failing the test
// on any error.
func eval[T any](t *testing.T, u *browserUser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(u.ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("%s: evaluate %q: %v", u.name, expr, err)
	}
	return v
}

// say sends a message the way a user does: type it and press Enter.
func (u *browserUser) say(t *testing.T, text string) {
	t.Helper()
	if err := chromedp.Do(u.ctx,
		chromedp.Focus(chromedp.ID("input")),
		chromedp.SendKeys(chromedp.ID("input"), text),
		pressEnter,
	); err != nil {
		t.Fatalf("%s: type a message: %v", u.name, err)
	}
}

// pressShiftEnter sends Shift+Enter the way a keyboard does (a keydown
// that carries the text "\r"), which the page must turn into a newline in
// the draft instead of sending it.
var pressShiftEnter = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	const shift = 8
	for _, p := range []input.DispatchKeyEventParams{
		{Type: input.DispatchKeyEventTypeKeyDown, Modifiers: shift, Text: "\r", UnmodifiedText: "\r", Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13},
		{Type: input.DispatchKeyEventTypeKeyUp, Modifiers: shift, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13},
	} {
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, p); err != nil {
			return err
		}
	}
	return nil
})

// pressEnter sends a bare Enter key down and up to the focused element.
// SendKeys("\n") would also send a char event that a real browser does not
// send once keydown is cancelled, leaving a stray newline in the input.
var pressEnter = chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
	for _, typ := range []input.DispatchKeyEventType{input.DispatchKeyEventTypeRawKeyDown, input.DispatchKeyEventTypeKeyUp} {
		if _, err := cdp.Call(ctx, t, input.DispatchKeyEvent, input.DispatchKeyEventParams{
			Type: typ, Key: "Enter", Code: "Enter", WindowsVirtualKeyCode: 13, NativeVirtualKeyCode: 13,
		}); err != nil {
			return err
		}
	}
	return nil
})

// sayExact puts text into the input as one value and clicks Send, for text
// that typing cannot reproduce (newlines, which Enter would send).
func (u *browserUser) sayExact(t *testing.T, text string) {
	t.Helper()
	if err := chromedp.Do(u.ctx,
		chromedp.SetValue(chromedp.ID("input"), text),
		chromedp.Click(chromedp.ID("send")),
	); err != nil {
		t.Fatalf("%s: send a message: %v", u.name, err)
	}
}

// waitMessage waits until a message whose text is exactly text is shown
// in the open room.
func (u *browserUser) waitMessage(t *testing.T, text string) {
	t.Helper()
	u.waitJS(t, fmt.Sprintf("message %q", text),
		`(want) => Array.from(document.querySelectorAll('#messages .msg .msg-text')).some((e) => e.textContent === want)`,
		text)
}

// TestBrowserTwoUsersChat proves the basic promise of the page: two people
// with separate sessions see each other's messages in lobby, with sender,
// time, own messages marked, newlines kept, members listed, and unread
// counts on rooms that are not open.
func TestBrowserTwoUsersChat(t *testing.T) {
	ts := startServer(t, nil)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")

	if got := eval[string](t, alice, `document.querySelector('#me').textContent`); got != "alice" {
		t.Errorf("alice's #me = %q, want alice", got)
	}
	if got := eval[string](t, bob, `document.querySelector('#me').textContent`); got != "bob" {
		t.Errorf("bob's #me = %q, want bob", got)
	}
	// The test server runs the development login, so the warning must show.
	alice.waitJS(t, "the development-login banner", `!!document.querySelector('#dev-banner')?.checkVisibility()`)
	// Each member's li reads exactly the name: avatars and badges add no text.
	for _, u := range []*browserUser{alice, bob} {
		u.waitJS(t, "both users in #members",
			`(() => { const names = Array.from(document.querySelectorAll('#members li'), (li) => li.textContent).sort();
			  return names.length === 2 && names[0] === 'alice' && names[1] === 'bob'; })()`)
	}

	alice.say(t, "hello from A")
	bob.waitMessage(t, "hello from A")
	alice.waitMessage(t, "hello from A")

	type msgView struct {
		From string `json:"from"`
		Time string `json:"time"`
		Mine bool   `json:"mine"`
	}
	lastMsg := `(() => { const m = Array.from(document.querySelectorAll('#messages .msg')).pop();
		return { from: m.querySelector('.msg-from').textContent, time: m.querySelector('.msg-time').textContent,
		         mine: m.classList.contains('msg-mine') }; })()`
	got := eval[msgView](t, bob, lastMsg)
	if got.From != "alice" || got.Mine {
		t.Errorf("bob sees %+v, want from alice and not marked as his own", got)
	}
	if len(got.Time) != 5 || got.Time[2] != ':' {
		t.Errorf("message time %q is not HH:MM", got.Time)
	}
	if got := eval[msgView](t, alice, lastMsg); !got.Mine {
		t.Errorf("alice's own message is not marked msg-mine: %+v", got)
	}
	if v := eval[string](t, alice, `document.querySelector('#input').value`); v != "" {
		t.Errorf("the input still holds %q after Enter sent it", v)
	}

	bob.say(t, "hi A, bob here")
	alice.waitMessage(t, "hi A, bob here")

	// Shift+Enter starts a new line in the draft; Enter alone sends it.
	if err := chromedp.Do(alice.ctx,
		chromedp.Focus(chromedp.ID("input")),
		chromedp.SendKeys(chromedp.ID("input"), "first line"),
		pressShiftEnter,
		chromedp.SendKeys(chromedp.ID("input"), "second line"),
		pressEnter,
	); err != nil {
		t.Fatalf("type a two-line message: %v", err)
	}
	bob.waitMessage(t, "first line\nsecond line")

	multi := "line one\nline two\n  indented"
	alice.sayExact(t, multi)
	bob.waitMessage(t, multi)
	if ws := eval[string](t, bob, `getComputedStyle(document.querySelector('#messages .msg:last-child .msg-text')).whiteSpace`); ws != "pre-wrap" {
		t.Errorf("message text white-space = %q, want pre-wrap so newlines show", ws)
	}

	// alice opens a second room; bob's next lobby message must count as
	// unread on alice's lobby entry.
	if err := chromedp.Do(alice.ctx,
		chromedp.SendKeys(chromedp.ID("join-name"), "side-room"),
		chromedp.Click(chromedp.ID("join-submit")),
	); err != nil {
		t.Fatalf("join form: %v", err)
	}
	alice.waitJS(t, "side-room to open",
		`!!document.querySelector('#rooms li[data-room="side-room"].active') && /side-room/.test(document.querySelector('#room-title').textContent)`)
	bob.say(t, "while you were away")
	alice.waitJS(t, "an unread count on lobby",
		`document.querySelector('#rooms li[data-room="lobby"] .unread')?.textContent === '1'`)
	if n := eval[int](t, alice, `document.querySelectorAll('#messages .msg').length`); n != 0 {
		t.Errorf("side-room shows %d messages, want 0 (lobby messages leaked into it)", n)
	}
	if err := chromedp.Do(alice.ctx, chromedp.Click(chromedp.CSS(`#rooms li[data-room="lobby"] .room-open`))); err != nil {
		t.Fatalf("open lobby: %v", err)
	}
	alice.waitMessage(t, "while you were away")
	if n := eval[int](t, alice, `document.querySelectorAll('#rooms li[data-room="lobby"] .unread').length`); n != 0 {
		t.Errorf("lobby still shows an unread badge after opening it")
	}

	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

// TestBrowserXSSRenderedAsText attacks the page with HTML in messages and
// proves it is shown literally: no element is created from it, no script
// runs, and no dialog opens, for the recipient or the sender.
func TestBrowserXSSRenderedAsText(t *testing.T) {
	ts := startServer(t, nil)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")

	payloads := []string{
		`<img src=x onerror=alert(1)>`,
		`<script>window.pwned=1</script>`,
		`<svg/onload=alert(2)><iframe srcdoc="<script>parent.pwned=1</script>">`,
	}
	for _, p := range payloads {
		alice.sayExact(t, p)
	}
	for _, u := range []*browserUser{bob, alice} {
		for _, p := range payloads {
			u.waitMessage(t, p)
		}
		type verdict struct {
			Elements int  `json:"elements"`
			Pwned    bool `json:"pwned"`
		}
		v := eval[verdict](t, u, `({
			elements: document.querySelectorAll('#messages img, #messages script, #messages svg, #messages iframe').length,
			pwned: window.pwned !== undefined,
		})`)
		if v.Elements != 0 {
			t.Errorf("%s: %d elements were created from message text", u.name, v.Elements)
		}
		if v.Pwned {
			t.Errorf("%s: a script from a message ran (window.pwned is set)", u.name)
		}
	}
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

// cspWatcher is injected before any page script runs (DevTools scripts are
// exempt from the page's CSP) so it also sees violations during the load.
const cspWatcher = `window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
	window.__cspViolations.push(e.violatedDirective + ' ' + e.blockedURI);
});`

// TestBrowserCSP proves the page works under the strict policy: the header
// forbids inline and eval'd script, and the page logs no violation while it
// loads, connects and exchanges a message. A deliberate inline script at the
// end proves the policy is enforced and the watcher would have seen a
// violation.
func TestBrowserCSP(t *testing.T) {
	ts := startServer(t, nil)

	// The header, as served with the page to a signed-in user.
	cookie := devLogin(t, ts.URL, "header-check")
	req, err := http.NewRequest(http.MethodGet, ts.URL+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(cookie)
	resp, err := (&http.Client{
		Timeout:       10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}).Do(req)
	if err != nil {
		t.Fatalf("GET /: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET / with a session: status %d, want 200", resp.StatusCode)
	}
	policy := resp.Header.Get("Content-Security-Policy")
	if !strings.Contains(policy, "script-src 'self'") {
		t.Errorf("CSP %q lacks script-src 'self'", policy)
	}
	for _, bad := range []string{"unsafe-inline", "unsafe-eval"} {
		if strings.Contains(policy, bad) {
			t.Errorf("CSP %q allows %s", policy, bad)
		}
	}

	browser := newBrowser(t)
	bobCtx, bobWatch := openTab(t, browser)
	if _, err := chromedp.Call(bobCtx, page.AddScriptToEvaluateOnNewDocument,
		page.AddScriptToEvaluateOnNewDocumentParams{Source: cspWatcher}); err != nil {
		t.Fatalf("install the CSP watcher: %v", err)
	}
	bob := &browserUser{name: "bob", ctx: bobCtx, watch: bobWatch}
	if err := chromedp.Do(bobCtx,
		chromedp.Navigate(ts.URL+"/login"),
		chromedp.WaitVisible(chromedp.ID("name")),
		chromedp.SendKeys(chromedp.ID("name"), "bob"),
	); err != nil {
		t.Fatalf("bob: login: %v", err)
	}
	if _, err := chromedp.RunResponse(bobCtx, chromedp.Click(chromedp.ID("login-submit"))); err != nil {
		t.Fatalf("bob: submit the login form: %v", err)
	}
	bob.waitJS(t, "the page to connect", `document.querySelector('#status')?.dataset.state === 'connected' && !!document.querySelector('#rooms li[data-room="lobby"]')`)
	alice := loginUser(t, browser, ts.URL, "alice")

	alice.say(t, "csp check")
	bob.waitMessage(t, "csp check")
	bob.say(t, "csp reply")
	alice.waitMessage(t, "csp reply")

	violations := eval[[]string](t, bob, `window.__cspViolations`)
	if len(violations) > 0 {
		t.Errorf("CSP violations in the page: %q", violations)
	}
	bob.watch.assertClean(t, "bob")
	alice.watch.assertClean(t, "alice")

	// The control: an inline script must be blocked and reported. Trusted Types
	// would refuse the plain string already (TestBrowserTrustedTypes); a policy made
	// here gets past that, so what blocks the script is script-src.
	ran := eval[bool](t, bob, `(() => {
		const s = document.createElement('script');
		const tt = trustedTypes.createPolicy('csp-control', { createScript: (x) => x });
		s.textContent = tt.createScript('window.__inlineRan = true');
		document.body.appendChild(s);
		return window.__inlineRan === true;
	})()`)
	if ran {
		t.Errorf("an inline script ran: the CSP is not enforced")
	}
	bob.waitJS(t, "the control violation to be reported",
		`window.__cspViolations.some((v) => v.startsWith('script-src'))`)
}

// floodJS sends 40 messages from the page as fast as a script can click,
// through the page's own send path.
const floodJS = `(() => {
	const input = document.querySelector('#input');
	const send = document.querySelector('#send');
	for (let i = 0; i < 40; i++) {
		input.value = 'flood ' + i;
		send.click();
	}
})()`

// noticeRecorderJS records every notice the page shows (code and text, on
// every change) and every connection state it passes through, so a test
// can assert on a toast or a state that has already gone.
const noticeRecorderJS = `(() => {
	window.__notices = [];
	window.__states = [];
	const box = document.querySelector('#notices');
	new MutationObserver(() => {
		for (const n of box.querySelectorAll('.notice')) window.__notices.push(n.dataset.code + ': ' + n.textContent);
	}).observe(box, { childList: true, subtree: true, characterData: true });
	const status = document.querySelector('#status');
	new MutationObserver(() => window.__states.push(status.dataset.state))
		.observe(status, { attributes: true, attributeFilter: ['data-state'] });
})()`

// TestBrowserRateLimitNotice floods the server from the page and proves the
// user is told, with one visible rate_limited notice that says when to
// retry. The abuse close is set out of reach so the flood only meets the
// rate limit.
func TestBrowserRateLimitNotice(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MsgBurst = 10
		c.UserMsgBurst = 20
		c.AbuseDrops = 1000
	})
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")

	eval[chromedp.Void](t, alice, floodJS)
	alice.waitJS(t, "a visible rate_limited notice",
		`!!document.querySelector('#notices .notice[data-code="rate_limited"]')?.checkVisibility()`)
	text := eval[string](t, alice, `document.querySelector('#notices .notice[data-code="rate_limited"]').textContent`)
	if !strings.Contains(text, "Try again in") {
		t.Errorf("rate-limit notice %q does not say when to retry", text)
	}
	if n := eval[int](t, alice, `document.querySelectorAll('#notices .notice[data-code="rate_limited"]').length`); n != 1 {
		t.Errorf("%d rate_limited notices, want one (repeats update it)", n)
	}
	if state := eval[string](t, alice, `document.querySelector('#status').dataset.state`); state != "connected" {
		t.Errorf("status %q after a rate-limited burst, want connected", state)
	}
	alice.watch.assertClean(t, "alice")
}

// TestBrowserAbuseCloseReconnects floods until the server closes the
// connection for abuse (1008). The session is still valid, so the page must
// not log the user out: it says what happened, reconnects by itself and
// re-joins the rooms it was in.
func TestBrowserAbuseCloseReconnects(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MsgBurst = 10
		c.UserMsgBurst = 20
		c.AbuseDrops = 5
		c.AbuseWindow = time.Minute
	})
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")

	// alice is also in side-room, and must be back in it after the
	// reconnect without doing anything.
	if err := chromedp.Do(alice.ctx,
		chromedp.SendKeys(chromedp.ID("join-name"), "side-room"),
		chromedp.Click(chromedp.ID("join-submit")),
	); err != nil {
		t.Fatalf("join form: %v", err)
	}
	alice.waitJS(t, "side-room to open", `!!document.querySelector('#rooms li[data-room="side-room"].active')`)
	if err := chromedp.Do(alice.ctx, chromedp.Click(chromedp.CSS(`#rooms li[data-room="lobby"] .room-open`))); err != nil {
		t.Fatalf("open lobby: %v", err)
	}

	eval[chromedp.Void](t, alice, noticeRecorderJS)
	eval[chromedp.Void](t, alice, floodJS)
	// The page must lose the connection and get it back by itself, in the
	// same document (a trip through /login would reload it and lose the
	// recorder).
	alice.waitJS(t, "the page to lose the connection and reconnect",
		`window.__states.includes('reconnecting') && document.querySelector('#status').dataset.state === 'connected'`)
	if path := eval[string](t, alice, `location.pathname`); path != "/" {
		t.Fatalf("the page left for %s after an abuse close with a valid session", path)
	}
	// When the browser gets the 1008 close frame, the page says why. The
	// server can lose that frame (it closes the socket with the flood still
	// unread, which resets the connection and the browser reports 1006), so
	// the notice is only checked when it showed.
	if notices := eval[[]string](t, alice, `window.__notices.filter((n) => n.startsWith('closed: '))`); len(notices) > 0 {
		if !strings.HasPrefix(notices[0], "closed: The server closed the connection") {
			t.Errorf("the close notice says %q", notices[0])
		}
	} else {
		t.Logf("the browser did not see the 1008 close frame (server closed with unread data); the page reconnected anyway")
	}

	// The reconnect brought lobby's history again: nothing may show twice.
	alice.waitJS(t, "lobby's catch-up after the reconnect", `!!document.querySelector('#rooms li[data-room="lobby"]')`)
	if dups := eval[[]string](t, alice, `(() => {
		const seen = new Set(), dups = [];
		for (const m of document.querySelectorAll('#messages .msg')) {
			if (seen.has(m.dataset.id)) dups.push(m.querySelector('.msg-text').textContent);
			seen.add(m.dataset.id);
		}
		return dups; })()`); len(dups) > 0 {
		t.Errorf("messages shown twice after the reconnect: %q", dups)
	}

	// The server only has alice in side-room if the page re-joined it.
	if err := chromedp.Do(bob.ctx,
		chromedp.SendKeys(chromedp.ID("join-name"), "side-room"),
		chromedp.Click(chromedp.ID("join-submit")),
	); err != nil {
		t.Fatalf("bob: join form: %v", err)
	}
	bob.waitJS(t, "alice listed in side-room",
		`!!document.querySelector('#rooms li[data-room="side-room"].active') &&
		 Array.from(document.querySelectorAll('#members li'), (li) => li.textContent).some((n) => n.includes('alice'))`)
	bob.say(t, "are you back?")
	alice.waitJS(t, "an unread message in side-room",
		`document.querySelector('#rooms li[data-room="side-room"] .unread')?.textContent === '1'`)
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

// TestBrowserRoomEvents drives the page with the room events of the
// protocol that only other users cause: an admin (a plain WebSocket
// client) invites the user into a private room, changes its topic and
// kicks the user out. The page must offer the invitation, show the room as
// private with its topic, and drop the room with a notice when kicked.
func TestBrowserRoomEvents(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Admins = []string{"dev:boss"} })
	boss := ts.user(t, "boss")
	browser := newBrowser(t)
	bob := loginUser(t, browser, ts.URL, "bob")

	boss.send(map[string]any{"type": "create", "room": "secret", "private": true, "topic": "launch plans", "ref": "c1"})
	boss.expect("joined")
	boss.send(map[string]any{"type": "invite", "room": "secret", "user": "dev:bob", "ref": "i1"})
	bob.waitJS(t, "the invitation with a Join button",
		`!!document.querySelector('#notices .notice[data-code="invited"] .notice-action')?.checkVisibility() &&
		 document.querySelector('#notices .notice[data-code="invited"]').textContent.includes('#secret')`)
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.CSS(`#notices .notice[data-code="invited"] .notice-action`))); err != nil {
		t.Fatalf("accept the invitation: %v", err)
	}
	bob.waitJS(t, "the private room to open with its topic",
		`!!document.querySelector('#rooms li[data-room="secret"].active') &&
		 !document.querySelector('#room-private').hidden &&
		 document.querySelector('#room-topic').textContent === 'launch plans'`)

	boss.send(map[string]any{"type": "topic", "room": "secret", "topic": "<i>new</i> plans"})
	bob.waitJS(t, "the new topic, as text",
		`document.querySelector('#room-topic').textContent === '<i>new</i> plans' && !document.querySelector('#room-topic i')`)

	boss.send(map[string]any{"type": "kick", "room": "secret", "user": "dev:bob"})
	bob.waitJS(t, "the room to be dropped with a notice",
		`!document.querySelector('#rooms li[data-room="secret"]') &&
		 !!document.querySelector('#notices .notice[data-code="kicked"]')?.checkVisibility() &&
		 /#lobby/.test(document.querySelector('#room-title').textContent)`)
	bob.watch.assertClean(t, "bob")
}

// TestBrowserFilesAndHistory proves the page's file and history paths: a
// user allowed to send files uploads an image and a text file; the others
// see the image inline from a blob: URL and the text file only as a
// download (never rendered as a document of the site); a user without the
// permission gets no attach button; and someone who arrives later sees the
// earlier messages and files from history, each once.
func TestBrowserFilesAndHistory(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Moderators = []string{"dev:alice"} })
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")

	dir := t.TempDir()
	img := image.NewRGBA(image.Rect(0, 0, 3, 2))
	for x := range 3 {
		img.Set(x, 0, color.RGBA{R: 200, A: 255})
	}
	var pngBuf bytes.Buffer
	if err := png.Encode(&pngBuf, img); err != nil {
		t.Fatal(err)
	}
	imgPath := filepath.Join(dir, "chart.png")
	txtPath := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(imgPath, pngBuf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(txtPath, []byte("plain notes: ship on Friday\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	alice.say(t, "before the files")
	bob.waitMessage(t, "before the files")
	alice.waitJS(t, "the attach button for a moderator", `!!document.querySelector('#attach')?.checkVisibility()`)
	if visible := eval[bool](t, bob, `!!document.querySelector('#attach')?.checkVisibility()`); visible {
		t.Errorf("bob, a plain member, is offered the attach button")
	}
	for _, path := range []string{imgPath, txtPath} {
		if err := chromedp.Do(alice.ctx, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{path})); err != nil {
			t.Fatalf("upload %s: %v", path, err)
		}
	}

	checkFiles := func(u *browserUser) {
		t.Helper()
		u.waitJS(t, "the image, shown inline",
			`(() => { const i = document.querySelector('#messages .msg img.msg-image');
			  return !!i && i.complete && i.naturalWidth === 3 && i.naturalHeight === 2 && i.src.startsWith('blob:') && i.alt === 'chart.png'; })()`)
		u.waitJS(t, "the text file, as a download link",
			`(() => { const a = document.querySelector('#messages .msg a.file-card');
			  return !!a && a.href.startsWith('blob:') && a.getAttribute('download') === 'notes.txt' &&
			    a.querySelector('.file-name').textContent === 'notes.txt'; })()`)
		// The page types the blob and the link alike; the CSP keeps a test
		// from fetching the blob: URL to look (connect-src is 'self' only).
		if typ := eval[string](t, u, `document.querySelector('#messages a.file-card').type`); typ != "application/octet-stream" {
			t.Errorf("%s: the text file is offered as %q, want application/octet-stream (never rendered)", u.name, typ)
		}
		if n := eval[int](t, u, `document.querySelectorAll('#messages script, #messages iframe').length`); n != 0 {
			t.Errorf("%s: %d elements were made from a file", u.name, n)
		}
	}
	checkFiles(bob)
	checkFiles(alice)

	// carol arrives later: lobby's history brings the messages, and the files'
	// metadata; the page fetches their bytes one at a time (fetch_file) and shows them.
	carol := loginUser(t, browser, ts.URL, "carol")
	carol.waitMessage(t, "before the files")
	checkFiles(carol)
	counts := eval[[]int](t, carol, `[
		Array.from(document.querySelectorAll('#messages .msg-text')).filter((e) => e.textContent === 'before the files').length,
		document.querySelectorAll('#messages img.msg-image').length,
		document.querySelectorAll('#messages a.file-card').length]`)
	if len(counts) != 3 || counts[0] != 1 || counts[1] != 1 || counts[2] != 1 {
		t.Errorf("carol's history shows [text, images, files] = %v, want each once", counts)
	}
	for _, u := range []*browserUser{alice, bob, carol} {
		u.watch.assertClean(t, u.name)
	}
}

// TestBrowserHistoryPages: a room's history of 2 MB comes in pages of at most 1 MiB
// (more: true); the page asks for each next page itself, and shows every message once,
// oldest first, the first and the last included.
func TestBrowserHistoryPages(t *testing.T) {
	const n = 300
	ts := bigHistoryServer(t, func(c *Config) { c.HistoryOnJoin = n })
	fillHistory(t, ts.user(t, "alice"), lobby, n, 7000)
	browser := newBrowser(t)
	bob := loginUser(t, browser, ts.URL, "bob")
	bob.waitJS(t, "every page of history",
		`document.querySelectorAll('#messages .msg-text').length === 300`)
	order := eval[bool](t, bob, `(() => {
		const texts = Array.from(document.querySelectorAll('#messages .msg-text')).map((e) => e.textContent.slice(0, 4));
		return texts.every((x, i) => x === String(i).padStart(4, '0')); })()`)
	if !order {
		t.Error("the pages' messages are not all shown once, oldest first")
	}
	bob.watch.assertClean(t, bob.name)
}

// TestBrowserLogout proves the logout button ends the session: the browser
// lands on the login page, and a second tab of the same session is sent
// there too instead of reconnecting forever.
func TestBrowserLogout(t *testing.T) {
	ts := startServer(t, nil)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")

	// A second tab in the same browser context shares alice's cookie.
	second, cancel := chromedp.NewContext(alice.ctx)
	t.Cleanup(cancel)
	if err := chromedp.Do(second, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatalf("open a second tab: %v", err)
	}
	other := &browserUser{name: "alice (second tab)", ctx: second}
	other.waitJS(t, "the second tab to connect", `document.querySelector('#status')?.dataset.state === 'connected'`)

	if err := chromedp.Do(alice.ctx, chromedp.Click(chromedp.ID("logout"))); err != nil {
		t.Fatalf("click logout: %v", err)
	}
	alice.waitJS(t, "the login page after logout", `location.pathname === '/login'`)
	other.waitJS(t, "the second tab to go to the login page", `location.pathname === '/login'`)
}

// TestBrowserScreenshots renders the login page and a chat with a few
// messages; with CHAT_SCREENSHOTS=1 it writes them to /tmp for a person to
// look at the design.
func TestBrowserScreenshots(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Moderators = []string{"dev:bob"} })
	browser := newBrowser(t)
	write := os.Getenv("CHAT_SCREENSHOTS") == "1"

	loginCtx, _ := openTab(t, browser)
	if err := chromedp.Do(loginCtx,
		chromedp.Navigate(ts.URL+"/login"),
		chromedp.WaitVisible(chromedp.ID("login-submit")),
	); err != nil {
		t.Fatalf("login page: %v", err)
	}
	shot, err := chromedp.Run(loginCtx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("login screenshot: %v", err)
	}
	saveScreenshot(t, write, "/tmp/login-screenshot.png", shot)

	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	alice.say(t, "Morning! Did the deploy go out?")
	bob.waitMessage(t, "Morning! Did the deploy go out?")
	bob.sayExact(t, "Yes, at 9:40.\nEverything green so far.")
	alice.waitMessage(t, "Yes, at 9:40.\nEverything green so far.")
	alice.say(t, "<b>HTML stays text</b> and a verylongwordthatshouldwrapnicelyinsteadofoverflowingthecolumnandbreakingthelayoutofthepage")
	bob.waitMessage(t, "<b>HTML stays text</b> and a verylongwordthatshouldwrapnicelyinsteadofoverflowingthecolumnandbreakingthelayoutofthepage")
	alice.waitMessage(t, "<b>HTML stays text</b> and a verylongwordthatshouldwrapnicelyinsteadofoverflowingthecolumnandbreakingthelayoutofthepage")

	// bob, a moderator, shares a small chart.
	chart := image.NewRGBA(image.Rect(0, 0, 240, 120))
	for x := range 240 {
		for y := range 120 {
			c := color.RGBA{R: 59, G: 91, B: 219, A: 255}
			if y > 110-(x*x)/600 {
				c = color.RGBA{R: 232, G: 237, B: 255, A: 255}
			}
			chart.Set(x, y, c)
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, chart); err != nil {
		t.Fatal(err)
	}
	chartPath := filepath.Join(t.TempDir(), "latency.png")
	if err := os.WriteFile(chartPath, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(bob.ctx, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{chartPath})); err != nil {
		t.Fatalf("upload: %v", err)
	}
	alice.waitJS(t, "the chart", `!!document.querySelector('#messages img.msg-image')?.complete`)

	shot, err = chromedp.Run(alice.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("chat screenshot: %v", err)
	}
	saveScreenshot(t, write, "/tmp/chat-screenshot.png", shot)
	alice.watch.assertClean(t, "alice")
}

// saveScreenshot writes a screenshot only when asked to, so normal runs
// leave nothing behind, and checks that it is a PNG either way.
func saveScreenshot(t *testing.T, write bool, path string, png []byte) {
	t.Helper()
	if len(png) < 8 || string(png[1:4]) != "PNG" {
		t.Fatalf("%s: not a PNG (%d bytes)", path, len(png))
	}
	if !write {
		return
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %s", path)
}

// TestBrowserTrustedTypes: under require-trusted-types-for 'script' an HTML sink
// refuses a plain string. Markup assigned to innerHTML in the page throws a
// TypeError, creates no element and runs no handler, while the page itself (which
// uses textContent only) keeps working: it connects and chats with no violation.
func TestBrowserTrustedTypes(t *testing.T) {
	ts := startServer(t, nil)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	alice.say(t, "trusted types check")
	bob.waitMessage(t, "trusted types check")
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")

	type outcome struct {
		Thrown string `json:"thrown"`
		Images int    `json:"images"`
	}
	got := eval[outcome](t, alice, `(() => {
		const box = document.createElement('div');
		document.body.appendChild(box);
		let thrown = '';
		try {
			box.innerHTML = '<img id="tt-probe" src="x" onerror="window.__ttRan = true">';
		} catch (e) {
			thrown = e.constructor.name;
		}
		return { thrown, images: document.querySelectorAll('#tt-probe').length };
	})()`)
	if got.Thrown != "TypeError" || got.Images != 0 {
		t.Fatalf("innerHTML with a string: thrown %q, %d probe elements; want a TypeError and none", got.Thrown, got.Images)
	}
	for _, sink := range []string{
		`document.body.insertAdjacentHTML('beforeend', '<b>x</b>')`,
		`document.createElement('script').src = '/static/app.js'`,
		`document.write('<b>x</b>')`,
	} {
		thrown := eval[string](t, alice, `(() => { try { `+sink+`; return ''; } catch (e) { return e.constructor.name; } })()`)
		if thrown != "TypeError" {
			t.Errorf("%s: thrown %q, want TypeError", sink, thrown)
		}
	}
	if ran := eval[bool](t, alice, `window.__ttRan === true`); ran {
		t.Fatal("the probe's handler ran")
	}
}

// sendJSON has u's page send one protocol object (a JavaScript object literal) on its
// connection, as its own code would: the E2EE tests' kicks and invitations.
func (u *browserUser) sendJSON(t *testing.T, object string) {
	t.Helper()
	evalAsync[bool](t, u, `import('/static/connection.js').then((c) => c.sendJSON(`+object+`))`)
}

// inviteAndJoin has owner invite u to room, waits for u's page to show an invitation
// and has it join; what joining leads to is the caller's to wait for.
func inviteAndJoin(t *testing.T, owner, u *browserUser, room string) {
	t.Helper()
	owner.sendJSON(t, `{type: 'invite', room: `+strconvQuote(room)+`, user: 'dev:`+u.name+`'}`)
	u.waitJS(t, "the invitation", `!!document.querySelector('#notices .notice[data-code="invited"]')`)
	evalAsync[bool](t, u, `import('/static/actions.js').then((a) => a.joinRoom(`+strconvQuote(room)+`))`)
}

// saySeen has from say text in its open E2EE room and waits until every reader's page
// shows it, from from (from itself may be among the readers: its message is sent).
func saySeen(t *testing.T, from *browserUser, text string, readers ...*browserUser) {
	t.Helper()
	from.sayE2EE(t, text)
	for _, r := range readers {
		r.waitJS(t, r.name+" shows "+strconvQuote(text), shows(text, from.name))
	}
}

// loginAll starts a browser and logs each of names in on baseURL, a tab each, in order.
func loginAll(t *testing.T, baseURL string, names ...string) []*browserUser {
	t.Helper()
	browser := newBrowser(t)
	us := make([]*browserUser, len(names))
	for i, name := range names {
		us[i] = loginUser(t, browser, baseURL, name)
	}
	return us
}

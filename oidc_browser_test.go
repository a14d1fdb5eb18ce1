package main

// The OpenID Connect login in a real headless Chromium, through the test provider's
// own consent page: the redirects, the SameSite=Lax login cookie on the way back from
// another site, the session cookie, and the page connecting with it. It reuses the
// browser helpers of browser_test.go (newBrowser fails, never skips, without
// Chromium).

import (
	"testing"

	"github.com/chromedp/chromedp"
)

// openOIDCTab opens a fresh browser context for one user.
func openOIDCTab(t *testing.T, name string) *browserUser {
	t.Helper()
	ctx, w := openTab(t, newBrowser(t))
	return &browserUser{name: name, ctx: ctx, watch: w}
}

// approveAtProvider waits for the test provider's consent page and presses its button,
// as a person would.
func approveAtProvider(t *testing.T, u *browserUser, p *testProvider) {
	t.Helper()
	u.waitJS(t, "the provider's consent page",
		`(issuer) => location.origin === issuer && location.pathname === '/authorize' && !!document.querySelector('#approve')`, p.issuer)
	if err := chromedp.Do(u.ctx, chromedp.Click(chromedp.ID("approve"))); err != nil {
		t.Fatalf("%s: press the provider's button: %v", u.name, err)
	}
}

// TestBrowserOIDCLogin signs in from /login through the provider's page, lands on the
// chat connected and in lobby, chats, then logs out: the next /login shows the sign-in
// button, and the button leads through the provider back into the chat.
func TestBrowserOIDCLogin(t *testing.T) {
	p := newTestProvider(t)
	p.set(func(p *testProvider) { p.interactive = true })
	ts := startOIDCServer(t, p, nil)
	u := openOIDCTab(t, "alice")

	if err := chromedp.Do(u.ctx, chromedp.Navigate(ts.URL+"/login")); err != nil {
		t.Fatalf("open /login: %v", err)
	}
	approveAtProvider(t, u, p)
	connected := `(origin) => location.origin === origin && location.pathname === '/' &&
		document.querySelector('#status')?.dataset.state === 'connected' &&
		/connected/.test(document.querySelector('#status').textContent) &&
		!!document.querySelector('#rooms li[data-room="lobby"]')`
	u.waitJS(t, "the chat page, connected", connected, ts.URL)
	u.waitJS(t, "the provider's name for the user", `(name) => document.querySelector('#me')?.textContent === name`, alice.Name)
	if cookies := eval[string](t, u, `document.cookie`); cookies != "" {
		t.Errorf("cookies visible to the page's script: %q (the session must be HttpOnly)", cookies)
	}
	u.say(t, "signed in through the provider")
	u.waitMessage(t, "signed in through the provider")

	if err := chromedp.Do(u.ctx, chromedp.Click(chromedp.ID("logout"))); err != nil {
		t.Fatalf("click logout: %v", err)
	}
	u.waitJS(t, "the sign-in page after logout",
		`(origin) => location.origin === origin && location.pathname === '/login' && !!document.querySelector('#login-oidc')`, ts.URL)
	if err := chromedp.Do(u.ctx, chromedp.Click(chromedp.ID("login-oidc"))); err != nil {
		t.Fatalf("click sign in: %v", err)
	}
	approveAtProvider(t, u, p)
	u.waitJS(t, "the chat page again", connected, ts.URL)
	u.watch.assertClean(t, u.name)
}

// TestBrowserOIDCRefusal: an account outside the allow-list ends on the chat's own
// error page, with no session: the page stays unreachable.
func TestBrowserOIDCRefusal(t *testing.T) {
	p := newTestProvider(t)
	p.set(func(p *testProvider) { p.interactive = true })
	ts := startOIDCServer(t, p, func(c *Config) { c.AllowedDomains = []string{"corp.example"} })
	u := openOIDCTab(t, "alice")

	if err := chromedp.Do(u.ctx, chromedp.Navigate(ts.URL+"/")); err != nil {
		t.Fatalf("open /: %v", err)
	}
	approveAtProvider(t, u, p)
	u.waitJS(t, "the refusal page",
		`(origin) => location.origin === origin && location.pathname === '/auth/callback' &&
			/not allowed/.test(document.querySelector('#login-error')?.textContent || '') &&
			document.querySelector('#login-oidc')?.getAttribute('href') === '/login'`, ts.URL)
	if n := authCount(ts, "failure", refuseDomain); n != 1 {
		t.Fatalf("refusal counted %v times", n)
	}
	if n := authCount(ts, "success", "oidc"); n != 0 {
		t.Fatalf("a session was issued %v times", n)
	}
	u.watch.assertClean(t, u.name)
}

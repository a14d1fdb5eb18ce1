package main

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
)

// liveDevices counts a user's live devices in the directory.
func liveDevices(t *testing.T, ts *testServer, user string) int {
	t.Helper()
	n := 0
	ts.App.hub.do(func() {
		if u := ts.App.keys.User(user); u != nil {
			for _, d := range u.Devices {
				if d.Revoked == 0 {
					n++
				}
			}
		}
	})
	return n
}

// click clicks the element a CSS selector names in u's tab.
func (u *browserUser) click(t *testing.T, sel string) {
	t.Helper()
	if err := chromedp.Do(u.ctx, chromedp.Click(chromedp.CSS(sel))); err != nil {
		t.Fatalf("%s: click %s: %v\npage: %s", u.name, sel, err, u.describe())
	}
}

// TestBrowserLinkDevice: a second browser profile of alice (its own Chromium and
// user-data dir) cannot register itself under her root key; it shows a link code,
// which typed wrong into her first device certifies nothing, and typed right
// certifies the new device, whose messages a third user's page then shows as signed.
// The first device's Devices panel lists both and revokes the second, which stops
// signing; a contact sees its later messages unsigned.
func TestBrowserLinkDevice(t *testing.T) {
	ts := startServer(t, generousLimits)
	// Two browsers and three pages, a link code (5200 SHA-512 rounds) on each side and a
	// reload: more than one browser test's usual bound on a loaded machine.
	first := newBrowserWithin(t, 3*browserTestTimeout)
	alice := loginUser(t, first, ts.URL, "alice")
	carol := loginUser(t, first, ts.URL, "carol") // her own browser context: another profile
	for _, u := range []*browserUser{alice, carol} {
		u.waitJS(t, "signing to be on", `document.body.dataset.signing === 'on'`)
	}
	phone := loginUser(t, newBrowserWithin(t, 3*browserTestTimeout), ts.URL, "alice")
	phone.name = "alice's second profile"
	phone.waitJS(t, "the new profile to ask to be linked", `document.body.dataset.signing === 'unlinked'`)
	phone.say(t, "before linking")
	carol.waitSig(t, "before linking", "unsigned")

	phone.click(t, "#devices-toggle")
	phone.waitJS(t, "the link code", `/^(\d{5} ){4}\d{5}$/.test(document.querySelector('#link-code')?.textContent || '')`)
	code := eval[string](t, phone, `document.querySelector('#link-code').textContent`)
	if shot, err := chromedp.Run(phone.ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	} else {
		saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/link-code-screenshot.png", shot)
	}
	phoneDevice := evalAsync[string](t, phone, `import('/static/signing.js').then((s) => s.signingDevice().device)`)

	alice.waitJS(t, "the link request notice", `!!document.querySelector('#notices .notice[data-code="link-request"]')`)
	alice.click(t, "#devices-toggle")
	row := `#devices-panel li[data-link="` + phoneDevice + `"]`
	alice.waitJS(t, "the request in the panel", `!!document.querySelector('`+row+` input.link-code-input')`)

	// A wrong code (one digit off) certifies nothing.
	wrong := []byte(code)
	if wrong[len(wrong)-1] == '9' {
		wrong[len(wrong)-1] = '0'
	} else {
		wrong[len(wrong)-1]++
	}
	if err := chromedp.Do(alice.ctx, chromedp.SendKeys(chromedp.CSS(row+" input.link-code-input"), string(wrong))); err != nil {
		t.Fatal(err)
	}
	alice.click(t, row+" button.link-submit")
	alice.waitJS(t, "the mismatch", `document.querySelector('`+row+` .link-result')?.dataset.result === 'mismatch'`)
	settleHub(t, ts.App.hub)
	if n := liveDevices(t, ts, "dev:alice"); n != 1 {
		t.Fatalf("after a wrong code alice has %d live devices, want 1", n)
	}
	if s := eval[string](t, phone, `document.body.dataset.signing`); s != "unlinked" {
		t.Fatalf("after a wrong code the new profile is %q", s)
	}

	// The right code links it.
	if err := chromedp.Do(alice.ctx,
		chromedp.Evaluate[chromedp.Void](`document.querySelector('`+row+` input.link-code-input').value = ''`),
		chromedp.SendKeys(chromedp.CSS(row+" input.link-code-input"), code),
	); err != nil {
		t.Fatal(err)
	}
	alice.click(t, row+" button.link-submit")
	alice.waitJS(t, "the link to be acknowledged", `document.body.dataset.linkResult === 'linked'`)
	phone.waitJS(t, "the new profile to sign", `document.body.dataset.signing === 'on'`)
	if n := liveDevices(t, ts, "dev:alice"); n != 2 {
		t.Fatalf("after linking alice has %d live devices, want 2", n)
	}
	phone.say(t, "from my second profile")
	carol.waitSig(t, "from my second profile", "signed")

	// A reload keeps the linked device certified (it registers with its certificate).
	if err := chromedp.Do(phone.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	phone.waitJS(t, "the reloaded profile to sign", `document.querySelector('#status')?.dataset.state === 'connected' && document.body.dataset.signing === 'on'`)

	// The first device's panel lists both devices, this one marked.
	alice.waitJS(t, "both devices listed", `document.querySelectorAll('#devices-panel .own-devices li[data-device]').length === 2 &&
		!!document.querySelector('#devices-panel .own-devices li[data-device="`+phoneDevice+`"] .device-revoke')`)
	if n := eval[int](t, alice, `Array.from(document.querySelectorAll('#devices-panel .own-devices li[data-device] .tag')).filter((t) => t.textContent === 'this device').length`); n != 1 {
		t.Fatalf("%d devices marked as this device", n)
	}
	if shot, err := chromedp.Run(alice.ctx, chromedp.FullScreenshot(100)); err != nil {
		t.Fatal(err)
	} else {
		saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/devices-screenshot.png", shot)
	}

	// Revoking the second profile from the first: it stops signing, and what it sends
	// now reaches carol unsigned.
	alice.click(t, `#devices-panel .own-devices li[data-device="`+phoneDevice+`"] .device-revoke`)
	phone.waitJS(t, "the revoked profile to stop signing", `document.body.dataset.signing === 'revoked'`)
	alice.waitJS(t, "the device shown revoked", `document.querySelector('#devices-panel .own-devices li[data-device="`+phoneDevice+`"]')?.dataset.revoked === 'true'`)
	phone.say(t, "after the revocation")
	carol.waitSig(t, "after the revocation", "unsigned")
	if !regexp.MustCompile(`^(\d{5} ){4}\d{5}$`).MatchString(code) {
		t.Fatalf("link code %q", code)
	}
	for _, u := range []*browserUser{alice, carol, phone} {
		u.watch.assertClean(t, u.name)
	}
}

// lobbyTexts returns the texts of the newest n stored messages of the lobby.
func lobbyTexts(t *testing.T, ts *testServer, n int) []string {
	t.Helper()
	historyCount(t, ts, lobby) // everything stamped is committed
	var texts []string
	err := ts.App.store.Last(historyBucket(lobby), n, func(_, v []byte) error {
		var m struct {
			Text string `json:"text"`
		}
		if err := json.Unmarshal(v, &m); err != nil {
			return err
		}
		texts = append(texts, m.Text)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return texts
}

// TestBrowserAdminRevokesDevice: a member's page has no admin lookup, and a
// revoke_device for bob's device sent from it anyway is forbidden and changes nothing.
// The admin looks bob up in the Devices panel and revokes his device with its button:
// the directory no longer has it live, bob's page is told (device_revoked: it stops
// signing and names who revoked it), and a say that bob's page still signs with the
// revoked key is refused with bad_device, delivered to no one and not stored.
func TestBrowserAdminRevokesDevice(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Admins = []string{"dev:root"}; generousLimits(c) })
	browser := newBrowser(t)
	root := loginUser(t, browser, ts.URL, "root")
	bob := loginUser(t, browser, ts.URL, "bob")
	carol := loginUser(t, browser, ts.URL, "carol")
	for _, u := range []*browserUser{root, bob, carol} {
		u.waitJS(t, "signing to be on", `document.body.dataset.signing === 'on'`)
	}
	bobDevice := evalAsync[string](t, bob, `import('/static/signing.js').then((s) => s.signingDevice().device)`)
	if n := liveDevices(t, ts, "dev:bob"); n != 1 {
		t.Fatalf("bob has %d live devices, want 1", n)
	}

	// carol is no admin: no lookup in her panel, and the command itself is forbidden.
	carol.click(t, "#devices-toggle")
	carol.waitJS(t, "her own devices", `document.querySelectorAll('#devices-panel .own-devices li[data-device]').length === 1`)
	if eval[bool](t, carol, `!!document.querySelector('#devices-user')`) {
		t.Fatal("a member's Devices panel offers the admin lookup")
	}
	if !evalAsync[bool](t, carol, `import('/static/connection.js').then((c) => c.command({ type: 'revoke_device', user: 'dev:bob', device: '`+bobDevice+`' }, 'revoked'))`) {
		t.Fatal("carol's page is not connected")
	}
	carol.waitJS(t, "the refusal", `!!document.querySelector('#notices .notice[data-code="forbidden"]')`)
	settleHub(t, ts.App.hub)
	if n := liveDevices(t, ts, "dev:bob"); n != 1 {
		t.Fatalf("after carol's revoke_device bob has %d live devices, want 1", n)
	}
	if s := eval[string](t, bob, `document.body.dataset.signing`); s != "on" {
		t.Fatalf("after carol's revoke_device bob's page is %q", s)
	}

	// The admin looks bob up and revokes his device from the panel.
	root.click(t, "#devices-toggle")
	root.waitJS(t, "the admin lookup", `!!document.querySelector('#devices-user')`)
	if err := chromedp.Do(root.ctx, chromedp.SendKeys(chromedp.ID("devices-user"), "dev:bob")); err != nil {
		t.Fatal(err)
	}
	root.click(t, `#devices-panel form.admin-section button[type="submit"]`)
	row := `#devices-panel .other-devices li[data-device="` + bobDevice + `"]`
	root.waitJS(t, "bob's device in the panel", `!!document.querySelector('`+row+` .device-revoke')`)
	root.click(t, row+" .device-revoke")
	root.waitJS(t, "bob's device shown revoked", `document.querySelector('`+row+`')?.dataset.revoked === 'true'`)
	if n := liveDevices(t, ts, "dev:bob"); n != 0 {
		t.Fatalf("after the admin's revocation bob has %d live devices, want 0", n)
	}
	var lookedUp bool
	ts.App.hub.do(func() { lookedUp = ts.App.keys.Lookup("dev:bob", bobDevice) != nil })
	if lookedUp {
		t.Fatal("the directory still finds bob's revoked device")
	}
	bob.waitJS(t, "bob's page to stop signing", `document.body.dataset.signing === 'revoked'`)
	if text := eval[string](t, bob, `document.querySelector('#notices .notice[data-code="signing"] .notice-text')?.textContent || ''`); !strings.Contains(text, "revoked by dev:root") {
		t.Fatalf("bob's page says %q, want it to name dev:root", text)
	}

	// bob's page still holds the key: a say it signs with it is refused.
	const forged = "signed by a revoked device"
	sent := evalAsync[bool](t, bob, `(async () => {
		const s = await import('/static/signing.js');
		const id = await import('/static/identity.js');
		const c = await import('/static/connection.js');
		const sig = await id.signSay(s.signingDevice(), 'lobby', '`+forged+`');
		return c.command({ type: 'say', room: 'lobby', text: '`+forged+`', sig }, 'sent');
	})()`)
	if !sent {
		t.Fatal("bob's page is not connected")
	}
	bob.waitJS(t, "the refusal", `!!document.querySelector('#notices .notice[data-code="bad_device"]')`)
	bob.say(t, "after the refusal") // unsigned now: it orders carol's view
	carol.waitSig(t, "after the refusal", "unsigned")
	if n := eval[int](t, carol, `Array.from(document.querySelectorAll('#messages .msg-text')).filter((m) => m.textContent === '`+forged+`').length`); n != 0 {
		t.Fatalf("carol's page shows the revoked device's message %d times", n)
	}
	if texts := lobbyTexts(t, ts, 5); slices.Contains(texts, forged) {
		t.Fatalf("the revoked device's message was stored: %q", texts)
	}
	for _, u := range []*browserUser{root, bob, carol} {
		u.watch.assertClean(t, u.name)
	}
}

package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"modified-chat/internal/keydir"
	"modified-chat/internal/sigmsg"
)

// evalAsync runs JavaScript that returns a promise in the tab and decodes its result.
func evalAsync[T any](t *testing.T, u *browserUser, expr string) T {
	t.Helper()
	v, err := chromedp.Run(u.ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("%s: evaluate: %v", u.name, err)
	}
	return v
}

// TestBrowserDeviceIdentity: the page's encoder produces exactly the Go encoder's
// signed bytes; the browser makes a device whose private keys cannot be exported,
// which survives a reload, and whose certificate and signatures the server's Go code
// verifies.
func TestBrowserDeviceIdentity(t *testing.T) {
	ts := startServer(t, nil)
	alice := loginUser(t, newBrowser(t), ts.URL, "alice")

	golden := &sigmsg.Message{Kind: "say", Room: "lobby", User: "dev:alice", Device: "d1", Counter: 7, TS: 1700000000000, Text: "hi ✓ \u00e9"}
	for i := range golden.ID {
		golden.ID[i] = byte(i)
	}
	got := evalAsync[string](t, alice, `import('/static/sigbytes.js').then((s) => s.hex(s.sayBytes({
		room: 'lobby', user: 'dev:alice', device: 'd1', counter: 7, ts: 1700000000000, text: 'hi ✓ \u00e9',
		msgId: Uint8Array.from({ length: 16 }, (_, i) => i) })))`)
	if want := hex.EncodeToString(golden.Encode()); got != want {
		t.Fatalf("page encodes\n%s\nGo encodes\n%s", got, want)
	}

	type device struct {
		Supported bool              `json:"supported"`
		Device    string            `json:"device"`
		DIK       string            `json:"dik"`
		Reg       map[string]any    `json:"reg"`
		Sig       map[string]any    `json:"sig"`
		Export    map[string]string `json:"export"`
	}
	const probe = `(async () => {
		const id = await import('/static/identity.js');
		const s = await import('/static/sigbytes.js');
		const supported = await id.supported();
		const dev = await id.loadDevice('dev:alice');
		const reg = await id.registration(dev);
		const sig = await id.signSay(dev, 'lobby', 'signed in the browser');
		const exp = {};
		for (const [name, key] of [['dik', dev.dik.privateKey], ['urk', dev.urk.privateKey]]) {
			try { await crypto.subtle.exportKey('pkcs8', key); exp[name] = 'exported'; }
			catch (err) { exp[name] = err.name; }
		}
		return { supported, device: dev.device, dik: s.b64(dev.dikRaw), reg, sig, export: exp };
	})()`
	first := evalAsync[device](t, alice, probe)
	if !first.Supported {
		t.Fatal("this Chromium does not support Ed25519 in WebCrypto")
	}
	for name, result := range first.Export {
		if result != "InvalidAccessError" {
			t.Fatalf("exporting the %s private key: %s, want InvalidAccessError", name, result)
		}
	}
	// The certificate verifies under the root key for this user, device and key.
	urk, _ := base64.StdEncoding.DecodeString(first.Reg["urk"].(string))
	cert, _ := base64.StdEncoding.DecodeString(first.Reg["cert"].(string))
	dik, _ := base64.StdEncoding.DecodeString(first.Reg["dik"].(string))
	c := sigmsg.DeviceCert{User: "dev:alice", Device: first.Device, Created: uint64(first.Reg["created"].(float64))}
	copy(c.DIK[:], dik)
	if !c.Verify(urk, cert) {
		t.Fatalf("the page's certificate does not verify in Go: %v", first.Reg)
	}
	m := &sigmsg.Message{Kind: "say", Room: "lobby", User: "dev:alice", Device: first.Device,
		Counter: uint64(first.Sig["counter"].(float64)), TS: uint64(first.Sig["ts"].(float64)), Text: "signed in the browser"}
	id, _ := base64.StdEncoding.DecodeString(first.Sig["msg_id"].(string))
	copy(m.ID[:], id)
	sig, _ := base64.StdEncoding.DecodeString(first.Sig["signature"].(string))
	if !m.Verify(ed25519.PublicKey(dik), sig) {
		t.Fatalf("the page's signature does not verify in Go: %v", first.Sig)
	}

	if err := chromedp.Do(alice.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	alice.waitJS(t, "the page to reconnect", `document.querySelector('#status')?.dataset.state === 'connected'`)
	again := evalAsync[device](t, alice, probe)
	if again.Device != first.Device || again.DIK != first.DIK {
		t.Fatalf("after a reload the device is %s %s, was %s %s", again.Device, again.DIK, first.Device, first.DIK)
	}
	// The cost per message in this browser (a measurement, not an assertion: speed is
	// never asserted by a test): one signature and one full check of it.
	perMsg := evalAsync[[]float64](t, alice, `(async () => {
		const id = await import('/static/identity.js');
		const dev = await id.loadDevice('dev:alice');
		const n = 200;
		const t0 = performance.now();
		for (let i = 0; i < n; i++) {
			const s = await id.signSay(dev, 'lobby', 'message ' + i);
			if (!await id.checkSay(dev.dikRaw, 'lobby', 'dev:alice', 'message ' + i, s)) throw new Error('does not verify');
		}
		const t1 = performance.now();
		for (let i = 0; i < n; i++) await id.signSay(dev, 'lobby', 'message ' + i);
		const t2 = performance.now();
		return [(t1 - t0) / n, (t2 - t1) / n];
	})()`)
	t.Logf("in Chromium: %.3f ms per message to sign and verify, %.3f ms to sign only", perMsg[0], perMsg[1])
	alice.watch.assertClean(t, "alice")
}

// messageSig polls for the badge of the newest message with this text in the open room.
const messageSig = `(text) => {
	const m = Array.from(document.querySelectorAll('#messages .msg')).reverse()
		.find((m) => m.querySelector('.msg-text')?.textContent === text);
	return m?.querySelector('.msg-sig')?.dataset.sig;
}`

// waitSig waits until the newest message with text shows badge want.
func (u *browserUser) waitSig(t *testing.T, text, want string) {
	t.Helper()
	u.waitJS(t, fmt.Sprintf("%q to show %s", text, want), `(text, want) => (`+messageSig+`)(text) === want`, text, want)
}

// inject delivers a message frame to everyone in a room as if the server had stamped
// it: the hub's own signature check is bypassed, as a compromised server would.
func inject(t *testing.T, ts *testServer, room string, frame map[string]any) {
	t.Helper()
	b, err := json.Marshal(frame)
	if err != nil {
		t.Fatal(err)
	}
	ts.App.hub.do(func() {
		if r := ts.App.hub.rooms[room]; r != nil {
			ts.App.hub.broadcast(r, b)
		}
	})
}

// storedMessage returns the newest stored message of a room, decoded.
func storedMessage(t *testing.T, ts *testServer, room string) map[string]any {
	t.Helper()
	historyCount(t, ts, room) // everything stamped is committed
	var m map[string]any
	err := ts.App.store.Last(historyBucket(room), 1, func(_, v []byte) error { return json.Unmarshal(v, &m) })
	if err != nil || m == nil {
		t.Fatalf("no stored message in %s: %v", room, err)
	}
	return m
}

// TestBrowserSignedMessages: pages sign every say and show it as signed; what a
// server alters, replays or signs with a substituted key is shown as invalid, and a
// substituted root key raises a warning that stays until the viewer accepts it.
func TestBrowserSignedMessages(t *testing.T) {
	ts := startServer(t, generousLimits)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	for _, u := range []*browserUser{alice, bob} {
		u.waitJS(t, "signing to be on", `document.body.dataset.signing === 'on'`)
	}
	alice.say(t, "hello bob")
	bob.waitSig(t, "hello bob", "signed")
	alice.waitSig(t, "hello bob", "signed")
	bob.say(t, "hello alice")
	alice.waitSig(t, "hello alice", "signed")

	// Safety numbers: each clicks the other's badge; both see the same 60 digits, and
	// once bob marks alice verified her messages show verified in his page.
	number := func(u *browserUser, other string) string {
		u.waitJS(t, "the badge to be a button", `(text) => !!Array.from(document.querySelectorAll('#messages .msg')).find((m) => m.querySelector('.msg-text')?.textContent === text)?.querySelector('button.msg-sig')`, "hello "+u.name)
		if err := chromedp.Do(u.ctx, chromedp.Evaluate[chromedp.Void](`Array.from(document.querySelectorAll('#messages .msg')).find((m) => m.querySelector('.msg-text')?.textContent === 'hello `+u.name+`').querySelector('button.msg-sig').click()`)); err != nil {
			t.Fatal(err)
		}
		sel := `#notices .notice[data-code="safety:` + other + `"] .notice-text`
		u.waitJS(t, "the safety number", `!!document.querySelector('`+sel+`')`)
		text := eval[string](t, u, `document.querySelector('`+sel+`').textContent`)
		n := regexp.MustCompile(`(\d{5} ){11}\d{5}`).FindString(text)
		if n == "" {
			t.Fatalf("%s: no 60-digit safety number in %q", u.name, text)
		}
		return n
	}
	if a, b := number(alice, "dev:bob"), number(bob, "dev:alice"); a != b {
		t.Fatalf("safety numbers differ: alice sees %s, bob sees %s", a, b)
	}
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.CSS(`#notices .notice[data-code="safety:dev:alice"] .notice-action`))); err != nil {
		t.Fatal(err)
	}
	bob.waitSig(t, "hello bob", "verified")
	genuine := storedMessage(t, ts, lobby)
	if genuine["sig"] == nil {
		t.Fatalf("the page sent an unsigned say: %v", genuine)
	}

	// carol is an outside client with her own keys (a Go device): what she signs but
	// never sends lets the test play a server that alters or redirects a message
	// nobody has seen yet.
	carol := ts.user(t, "carol")
	carolID := newTestIdentity("dev:carol", "carol-laptop")
	carol.mustAck(carolID.registration(carolID.user))
	carol.mustAck(carolID.signedSay(lobby, "carol signs in Go"))
	bob.waitSig(t, "carol signs in Go", "signed")

	// The server changes one character: the hub's check is not in the way.
	altered := carolID.signedSay(lobby, "pay bob 10")
	inject(t, ts, lobby, map[string]any{"type": "message", "room": lobby, "id": 1e6, "ts": 1700000000000,
		"from": map[string]any{"id": "dev:carol", "name": "carol"}, "text": "pay bob 1000", "sig": altered["sig"]})
	bob.waitSig(t, "pay bob 1000", "invalid")
	if got := eval[string](t, bob, `document.querySelector('#messages .msg-invalid .msg-sig').textContent`); !strings.Contains(got, "may not be from carol") {
		t.Fatalf("the invalid badge says %q", got)
	}

	// alice's stored message replayed into the same room under a new id.
	replayed := maps.Clone(genuine)
	replayed["id"] = 1e6 + 1
	inject(t, ts, lobby, replayed)
	bob.waitJS(t, "the replay to be flagged", `document.querySelector('#messages .msg[data-id="1000001"] .msg-sig')?.dataset.sig === 'invalid'`)

	// The directory swaps alice's root key and a message is signed by a device the
	// swapped key certifies.
	ghost := newTestIdentity("dev:alice", "ghost-device")
	up := ghost.registration("dev:alice")
	upload := &keydir.Upload{Device: ghost.device, Created: up["created"].(uint64)}
	upload.URK, _ = base64.StdEncoding.DecodeString(up["urk"].(string))
	upload.DIK, _ = base64.StdEncoding.DecodeString(up["dik"].(string))
	upload.Cert, _ = base64.StdEncoding.DecodeString(up["cert"].(string))
	ts.App.hub.do(func() {
		ch, kerr := ts.App.keys.Reset("dev:alice", upload)
		if kerr != nil {
			t.Errorf("substitute the key: %v", kerr)
			return
		}
		ch.Apply()
		ch.Release()
	})
	forged := ghost.signedSay(lobby, "trust me, it is alice")
	inject(t, ts, lobby, map[string]any{"type": "message", "room": lobby, "id": 1e6 + 2, "ts": 1700000000000,
		"from": map[string]any{"id": "dev:alice", "name": "alice"}, "text": forged["text"], "sig": forged["sig"]})
	bob.waitSig(t, "trust me, it is alice", "invalid")
	bob.waitJS(t, "the key-change warning", `!!document.querySelector('#notices .notice[data-code="key-changed:dev:alice"] .notice-action')`)

	// A message signed for one room delivered into another.
	if err := chromedp.Do(bob.ctx, chromedp.SendKeys(chromedp.ID("join-name"), "other"), chromedp.Click(chromedp.ID("join-submit"))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "bob to be in other", `document.querySelector('#room-title')?.textContent === '#other'`)
	elsewhere := carolID.signedSay("elsewhere", "meant for elsewhere")
	inject(t, ts, "other", map[string]any{"type": "message", "room": "other", "id": 1e6 + 3, "ts": 1700000000000,
		"from": map[string]any{"id": "dev:carol", "name": "carol"}, "text": "meant for elsewhere", "sig": elsewhere["sig"]})
	bob.waitSig(t, "meant for elsewhere", "invalid")

	// carol resets her root key: bob, who pinned the old one, is warned at once.
	fresh := newTestIdentity("dev:carol", "carol-new-laptop")
	reset := fresh.registration(fresh.user)
	reset["type"] = "reset_identity"
	carol.mustAck(reset)
	bob.waitJS(t, "the key-change warning for carol", `!!document.querySelector('#notices .notice[data-code="key-changed:dev:carol"] .notice-action')`)

	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

// TestBrowserChecksManySenders: a joiner whose history holds signed messages from more
// senders than its message burst checks them all (one `devices` asks about all of
// them) without being rate-limited.
func TestBrowserChecksManySenders(t *testing.T) {
	ts := startServer(t, nil)
	const senders = 15 // above the default burst of 10
	for i := range senders {
		name := fmt.Sprintf("sender%02d", i)
		c := ts.user(t, name)
		id := newTestIdentity("dev:"+name, name+"-device")
		c.mustAck(id.registration(id.user))
		c.mustAck(id.signedSay(lobby, "from "+name))
	}
	bob := loginUser(t, newBrowser(t), ts.URL, "bob")
	bob.waitJS(t, "every sender's message to be signed", `(n) => Array.from(document.querySelectorAll('#messages .msg-sig'), (b) => b.dataset.sig).filter((s) => s === 'signed').length === n`, senders)
	if n := eval[int](t, bob, `document.querySelectorAll('#notices .notice[data-code="rate_limited"]').length`); n != 0 {
		t.Fatalf("checking the history was rate-limited (%d notices)", n)
	}
	bob.watch.assertClean(t, "bob")
}

// TestBrowserKeyChangeBlocksSending: while a member of a room has a root key change
// the viewer has not accepted, the page sends nothing there; accepting unblocks it.
func TestBrowserKeyChangeBlocksSending(t *testing.T) {
	ts := startServer(t, generousLimits)
	bob := loginUser(t, newBrowser(t), ts.URL, "bob")
	bob.waitJS(t, "signing to be on", `document.body.dataset.signing === 'on'`)
	carol := ts.user(t, "carol")
	carolID := newTestIdentity("dev:carol", "carol-laptop")
	carol.mustAck(carolID.registration(carolID.user))
	carol.mustAck(carolID.signedSay(lobby, "carol's first key"))
	bob.waitSig(t, "carol's first key", "signed")

	fresh := newTestIdentity("dev:carol", "carol-new-laptop")
	reset := fresh.registration(fresh.user)
	reset["type"] = "reset_identity"
	carol.mustAck(reset)
	bob.waitJS(t, "the key-change warning", `!!document.querySelector('#notices .notice[data-code="key-changed:dev:carol"] .notice-action')`)

	before := historyCount(t, ts, lobby)
	bob.sayExact(t, "to a possible impersonator")
	bob.waitJS(t, "the blocked notice", `!!document.querySelector('#notices .notice[data-code="key-blocked"]')`)
	if n := historyCount(t, ts, lobby); n != before {
		t.Fatalf("a say went out while the key change was unaccepted: %d messages, was %d", n, before)
	}
	if kept := eval[string](t, bob, `document.getElementById('input').value`); kept != "to a possible impersonator" {
		t.Errorf("the refused message's text box holds %q, want the text kept", kept)
	}
	eval[string](t, bob, `document.getElementById('input').value = ''`)

	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.CSS(`#notices .notice[data-code="key-changed:dev:carol"] .notice-action`))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "the change to be accepted", `!(document.body.dataset.keyChanged || '').includes('dev:carol')`)
	bob.say(t, "after accepting")
	bob.waitSig(t, "after accepting", "signed")
}

package main

import (
	"encoding/base64"
	"testing"

	"github.com/chromedp/chromedp"
)

// isApp matches the hub's next mls_app of room.
func isApp(room string) func(ev map[string]any) bool {
	return func(ev map[string]any) bool { return ev["type"] == "mls_app" && ev["room"] == room }
}

// timesShown is a JavaScript count of the open room's messages with text from name.
func timesShown(text, name string) string {
	return `[...document.querySelectorAll('#messages .msg')].filter((m) => m.querySelector('.msg-text')?.textContent === ` + strconvQuote(text) +
		` && m.querySelector('.msg-from').textContent === ` + strconvQuote(name) + `).length`
}

// TestBrowserE2EERelayAttacks: acceptance 2-5 with the real hub, a relay in front of
// bob's page playing a server that tampers with what it relays (the hub itself is
// honest; nothing in its code path changes). Each attack is counted on bob's page by
// reason, shown as a notice, and never rendered as a genuine message:
//   - 2: a bit flipped in a relayed PrivateMessage: decrypt_failed, and the genuine
//     copy delivered after it still decrypts;
//   - 3: the same frame replayed under a new id: its generation is spent, so it
//     does not decrypt (decrypt_failed), and is shown once;
//   - 5: a `from` naming carol for alice's message: from_mismatch, shown with the
//     invalid badge, named by the MLS sender (alice, not carol);
//   - 4: alice's message of one room injected into another E2EE room at the same
//     epoch: wrong_group, shown in neither.
func TestBrowserE2EERelayAttacks(t *testing.T) {
	ts := startServer(t, nil)
	rl := startRelay(t, ts)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, rl.URL, "bob")
	e2eeMembers(t, "other", alice, bob)
	e2eeMembers(t, "vault", alice, bob)
	bob.waitJS(t, "bob in vault", `import('/static/state.js').then((s) => s.state.current === 'vault')`)

	// 2. A flipped bit, then the genuine copy.
	rl.once(isApp("vault"), func(ev map[string]any, line []byte) [][]byte {
		msg, _ := base64.StdEncoding.DecodeString(ev["msg"].(string))
		msg[len(msg)-5] ^= 0x01
		ev["msg"] = base64.StdEncoding.EncodeToString(msg)
		return [][]byte{encodeEvent(t, ev), line}
	})
	alice.sayE2EE(t, "flip me")
	bob.waitJS(t, "the flipped copy refused, the genuine one shown", `window.__mlsStats.rejected.decrypt_failed === 1 &&
		!!document.querySelector('#notices .notice[data-code="mls_decrypt_failed"]') && `+timesShown("flip me", "alice")+` === 1`)

	// 3. The same frame again, under a new id.
	rl.once(isApp("vault"), func(ev map[string]any, line []byte) [][]byte {
		ev["id"] = ev["id"].(float64) + 1000
		return [][]byte{line, encodeEvent(t, ev)}
	})
	alice.sayE2EE(t, "say it once")
	// Its generation is spent: the copy does not decrypt.
	bob.waitJS(t, "the replay refused", `window.__mlsStats.rejected.decrypt_failed === 2 && window.__mlsStats.rejectedTotal === 2 && `+timesShown("say it once", "alice")+` === 1`)

	// 5. A server `from` that disagrees with the MLS sender.
	rl.once(isApp("vault"), func(ev map[string]any, _ []byte) [][]byte {
		ev["from"] = map[string]any{"id": "dev:carol", "name": "carol", "dev": "carol-device"}
		return [][]byte{encodeEvent(t, ev)}
	})
	alice.sayE2EE(t, "who sent me")
	bob.waitJS(t, "the forged from flagged", `window.__mlsStats.rejected.from_mismatch === 1 &&
		!!document.querySelector('#notices .notice[data-code="mls_from_mismatch"]') &&
		[...document.querySelectorAll('#messages .msg')].some((m) => m.querySelector('.msg-text')?.textContent === 'who sent me' &&
			m.querySelector('.msg-from').textContent === 'alice' && m.querySelector('.msg-sig').dataset.sig === 'invalid')`)

	// 4. Vault's message injected into the other room, at the same epoch.
	rl.once(isApp("vault"), func(ev map[string]any, line []byte) [][]byte {
		ev["room"] = "other"
		ev["id"] = ev["id"].(float64) + 2000
		return [][]byte{line, encodeEvent(t, ev)}
	})
	alice.sayE2EE(t, "for vault only")
	bob.waitJS(t, "the injection refused", `window.__mlsStats.rejected.wrong_group === 1 && window.__mlsStats.rejectedTotal === 4 && `+timesShown("for vault only", "alice")+` === 1`)
	if err := chromedp.Do(bob.ctx, chromedp.Click(chromedp.CSS(`#rooms li[data-room="other"]`))); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "bob in other", `import('/static/state.js').then((s) => s.state.current === 'other')`)
	if n := eval[int](t, bob, timesShown("for vault only", "alice")); n != 0 {
		t.Fatalf("the injected message is shown in the other room %d times", n)
	}
	alice.watch.assertClean(t, "alice")
}

// TestBrowserE2EEInsiderReplay: acceptance 3, second half, with the real hub. Bob, a
// member, takes alice's decrypted message and encrypts it again as his own, under a
// fresh generation of his, with alice's msg_id: the hub relays it (it cannot tell),
// and carol's page refuses it by the in-payload msg_id (replayed, a notice) and shows
// alice's message once and nothing from bob.
func TestBrowserE2EEInsiderReplay(t *testing.T) {
	ts := startServer(t, nil)
	us := loginAll(t, ts.URL, "alice", "bob", "carol")
	alice, bob, carol := us[0], us[1], us[2]
	e2eeMembers(t, "vault", alice, bob, carol)
	saySeen(t, alice, "said once by alice", bob, carol)
	evalAsync[bool](t, bob, `(async () => {
  const m = await import('/static/vendor/ts-mls-1.6.4.min.js');
  const s = await import('/static/sigbytes.js');
  const conn = await import('/static/connection.js');
  const e = (await import('/static/e2ee.js')).engine();
  const r = e.rooms.get('vault');
  const kept = r.plain.find((x) => x.body === 'said once by alice');
  const payload = { v: 1, msg_id: kept.msgId, ts: kept.sent, kind: 'text', body: kept.body };
  const res = await m.createApplicationMessage(r.state, new TextEncoder().encode(JSON.stringify(payload)), e.cs);
  r.state = res.newState;
  const msg = s.b64(m.encodeMlsMessage({ version: 'mls10', wireformat: 'mls_private_message', privateMessage: res.privateMessage }));
  return conn.sendJSON({ type: 'mls_app', room: 'vault', epoch: Number(r.state.groupContext.epoch), msg });
})()`)
	carol.waitJS(t, "the re-encrypted copy refused", `window.__mlsStats.rejected.replayed === 1 && window.__mlsStats.rejectedTotal === 1 &&
		!!document.querySelector('#notices .notice[data-code="mls_replayed"]') && `+timesShown("said once by alice", "alice")+` === 1 && `+timesShown("said once by alice", "bob")+` === 0`)
}

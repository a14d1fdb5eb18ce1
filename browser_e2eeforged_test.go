package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"testing"

	"modified-chat/internal/mls"
	"modified-chat/internal/mlsoracle"
)

// injectProposals makes the relay deliver, right after the hub's next mls_app of
// room, an mls_proposals event carrying p, with the id after the app's (the page's
// next genuine event of the room is then taken for a repeat: each room serves one
// injection).
func injectProposals(t *testing.T, rl *relay, room string, epoch uint64, p mls.ExternalProposal, change map[string]any) {
	t.Helper()
	rl.once(isApp(room), func(ev map[string]any, line []byte) [][]byte {
		forged := map[string]any{"type": "mls_proposals", "room": room, "id": ev["id"].(float64) + 1, "ts": ev["ts"], "epoch": epoch,
			"proposals": []string{base64.StdEncoding.EncodeToString(p.Message)},
			"refs":      []string{base64.StdEncoding.EncodeToString(p.Ref)}, "changes": []any{change}}
		return [][]byte{line, encodeEvent(t, forged)}
	})
}

// groupOf is the hub's group_id and epoch of an E2EE room.
func groupOf(ts *testServer, room string) (gid []byte, epoch uint64) {
	ts.App.hub.do(func() {
		g := ts.App.hub.mls.groups[room]
		gid, epoch = bytes.Clone(g.GroupID), g.Epoch
	})
	return gid, epoch
}

// TestBrowserE2EEForgedProposals: acceptance 7 and 8 with the real hub, a relay in
// front of bob's page playing a malicious server.
//   - 8: a Remove of alice proposed under another key than the hub's external sender:
//     bob's page refuses it (bad_proposal, a notice), holds the room (blocked) and
//     commits nothing; its epoch stays.
//   - 7: the hub's own key proposes a ghost device for alice, certified by a root key
//     that is not the one bob's page pinned for her: bob's page names it in a notice
//     (untrusted_device) and commits nothing; its epoch stays.
func TestBrowserE2EEForgedProposals(t *testing.T) {
	ts := startServer(t, nil)
	rl := startRelay(t, ts)
	o := mlsoracle.Start(t)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, rl.URL, "bob")
	e2eeMembers(t, "ghost", alice, bob)
	e2eeMembers(t, "vault", alice, bob)
	commits := eval[int](t, bob, `window.__mlsStats.commits`)

	// 8. Signed by someone else.
	gid, epoch := groupOf(ts, "vault")
	_, other, _ := ed25519.GenerateKey(nil)
	injectProposals(t, rl, "vault", epoch, mls.SignExternalProposal(other, gid, epoch, mls.RemoveProposal(0)),
		map[string]any{"op": "remove", "user": "dev:alice", "device": "x", "leaf": 0})
	alice.sayE2EE(t, "carrier one")
	bob.waitJS(t, "the forged proposal refused", `window.__mlsStats.rejected.bad_proposal === 1 &&
		!!document.querySelector('#notices .notice[data-code="mls_bad_proposal"]') &&
		[...document.querySelectorAll('#messages .sys-text')].some((s) => /membership change is on hold/.test(s.textContent))`)

	// 7. A ghost device for alice, under the hub's own key.
	ghost := newTestIdentity("dev:alice", "alice-ghost")
	pub := o.Do(map[string]any{"op": "keygen", "id": "ghost"}).Bytes("pub")
	raw, _ := base64.StdEncoding.DecodeString(o.Do(map[string]any{"op": "kp", "id": "ghost", "identity": mlsoracle.B64(ghost.identityBytes(pub))}).Str("kp"))
	m, err := mls.ParseMessage(raw)
	if err != nil || m.KeyPackage == nil {
		t.Fatalf("the ghost's KeyPackage: %v", err)
	}
	gid, epoch = groupOf(ts, "ghost")
	injectProposals(t, rl, "ghost", epoch, mls.SignExternalProposal(ts.App.mlsKey, gid, epoch, mls.AddProposal(m.KeyPackage)),
		map[string]any{"op": "add", "user": "dev:alice", "device": "alice-ghost"})
	evalAsync[bool](t, alice, `import('/static/e2ee.js').then((e) => e.sendE2EE('ghost', 'carrier two'))`)
	bob.waitJS(t, "the ghost named and refused", `window.__mlsStats.rejected.untrusted_device === 1 &&
		[...document.querySelectorAll('#notices .notice[data-code="mls_untrusted"]')].some((n) => /claiming to be dev:alice/.test(n.textContent))`)

	if n := eval[int](t, bob, `window.__mlsStats.commits`); n != commits {
		t.Errorf("bob's page committed %d times after the forged proposals", n-commits)
	}
	for _, room := range []string{"vault", "ghost"} {
		_, want := groupOf(ts, room)
		if got := evalAsync[int](t, bob, `import('/static/e2ee.js').then((e) => e.engine().info(`+strconvQuote(room)+`).epoch)`); uint64(got) != want {
			t.Errorf("%s: bob's page is at epoch %d, the hub at %d", room, got, want)
		}
	}
}

// TestBrowserE2EEKeySubstitution: acceptance 6 with the real hub, the relay in front of
// alice's page (the member who commits). Alice already shares a room with bob, so her
// page pinned his root key. When bob joins a second E2EE room, the relay swaps the
// hub's Add of his KeyPackage for one of the same device id under another root key,
// signed with the hub's own key (a directory that substitutes his keys): alice's page
// gives the blocking warning naming bob, holds the room and commits nothing, so the
// hub's group stays at epoch 0 with the Add outstanding and bob is not let in.
func TestBrowserE2EEKeySubstitution(t *testing.T) {
	ts := startServer(t, nil)
	rl := startRelay(t, ts)
	o := mlsoracle.Start(t)
	browser := newBrowser(t)
	alice := loginUser(t, browser, rl.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	e2eeMembers(t, "first", alice, bob)
	e2eeRoomByUI(t, alice, "vault")
	commits := eval[int](t, alice, `window.__mlsStats.commits`)
	rl.once(func(ev map[string]any) bool { return ev["type"] == "mls_proposals" && ev["room"] == "vault" }, func(ev map[string]any, _ []byte) [][]byte {
		device := ev["changes"].([]any)[0].(map[string]any)["device"].(string)
		sub := newTestIdentity("dev:bob", device)
		pub := o.Do(map[string]any{"op": "keygen", "id": "sub"}).Bytes("pub")
		raw, _ := base64.StdEncoding.DecodeString(o.Do(map[string]any{"op": "kp", "id": "sub", "identity": mlsoracle.B64(sub.identityBytes(pub))}).Str("kp"))
		m, err := mls.ParseMessage(raw)
		if err != nil || m.KeyPackage == nil {
			t.Errorf("the substitute KeyPackage: %v", err)
			return nil
		}
		gid, epoch := groupOf(ts, "vault")
		p := mls.SignExternalProposal(ts.App.mlsKey, gid, epoch, mls.AddProposal(m.KeyPackage))
		ev["proposals"] = []string{base64.StdEncoding.EncodeToString(p.Message)}
		ev["refs"] = []string{base64.StdEncoding.EncodeToString(p.Ref)}
		return [][]byte{encodeEvent(t, ev)}
	})
	alice.sendJSON(t, `{type: 'invite', room: 'vault', user: 'dev:bob'}`)
	bob.waitJS(t, "the invitation", `[...document.querySelectorAll('#notices .notice[data-code="invited"]')].some((n) => /#vault/.test(n.textContent))`)
	evalAsync[bool](t, bob, `import('/static/actions.js').then((a) => a.joinRoom('vault'))`)
	alice.waitJS(t, "the substituted key refused", `window.__mlsStats.rejected.untrusted_device === 1 &&
		[...document.querySelectorAll('#notices .notice[data-code="mls_untrusted"]')].some((n) => /claiming to be dev:bob/.test(n.textContent)) &&
		[...document.querySelectorAll('#messages .sys-text')].some((s) => /membership change is on hold/.test(s.textContent))`)
	if n := eval[int](t, alice, `window.__mlsStats.commits`); n != commits {
		t.Errorf("alice's page committed %d times after the substitution", n-commits)
	}
	var epoch uint64
	var outstanding int
	ts.App.hub.do(func() {
		g := ts.App.hub.mls.groups["vault"]
		epoch, outstanding = g.Epoch, len(g.Outstanding)
	})
	if epoch != 0 || outstanding != 1 {
		t.Errorf("the hub's group: epoch %d with %d outstanding, want 0 with bob's Add", epoch, outstanding)
	}
	if got := evalAsync[bool](t, bob, `import('/static/e2ee.js').then((e) => !!e.engine().info('vault'))`); got {
		t.Error("bob's page is in the group")
	}
}

package main

import "testing"

// TestBrowserE2EEAcrossNodes: real pages on two cluster nodes (real redis-server).
// alice's page on node 1 makes an E2EE room from the create form; bob and carol,
// whose pages are on node 2, are invited and join: node 2 proposes their devices,
// alice's page commits, their pages join from the Welcomes node 2 hands them. All
// three show one room code, and messages typed on either node are decrypted on the
// other. Then alice kicks carol: every page moves to an epoch without her (a new
// room code, two devices), and the next message reaches bob on node 2.
func TestBrowserE2EEAcrossNodes(t *testing.T) {
	_, nodes := startPair(t)
	alice := loginAll(t, nodes[0].ts.URL, "alice")[0]
	us := loginAll(t, nodes[1].ts.URL, "bob", "carol")
	bob, carol := us[0], us[1]
	e2eeMembers(t, "vault", alice, bob, carol)
	before := sameCode(t, "vault", alice, bob, carol)
	saySeen(t, alice, "sealed on node one", bob, carol)
	saySeen(t, bob, "sealed on node two", alice, carol)

	alice.sendJSON(t, `{type: 'kick', room: 'vault', user: 'dev:carol'}`)
	for _, u := range []*browserUser{alice, bob} {
		u.waitJS(t, "carol's device removed", `document.getElementById('e2ee-count').textContent === '2'`)
	}
	if after := sameCode(t, "vault", alice, bob); after == before {
		t.Fatal("the room code did not change with the removal")
	}
	saySeen(t, alice, "after the kick, across nodes", bob)
}

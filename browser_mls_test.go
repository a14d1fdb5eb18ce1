package main

import (
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"

	"modified-chat/internal/mls"
)

// mlsSmokeJS runs in the signed-in page: it imports the vendored bundle from
// /static/vendor (so the page's CSP, script-src 'self' with Trusted Types, applies),
// builds a ciphersuite-1 group of alice, bob and carol, exchanges one message, then has
// alice remove carol and send again. It reports what each step gave, as data, so the
// Go side asserts the exact outcome.
const mlsSmokeJS = `(async () => {
  const m = await import('/static/vendor/ts-mls-1.6.4.min.js');
  const out = {};
  const enc = new TextEncoder(), dec = new TextDecoder();
  const cs = await m.getCiphersuiteImpl(m.getCiphersuiteFromName('MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519'));
  const kp = (name) => m.generateKeyPackage({credentialType: 'basic', identity: enc.encode(name)},
    m.defaultCapabilities(), m.defaultLifetime, [], cs);
  const a = await kp('alice'), b = await kp('bob'), c = await kp('carol');
  let alice = await m.createGroup(enc.encode('room-smoke'), a.publicPackage, a.privatePackage, [], cs);
  const added = await m.createCommit({state: alice, cipherSuite: cs}, {
    wireAsPublicMessage: true, ratchetTreeExtension: true,
    extraProposals: [
      {proposalType: 'add', add: {keyPackage: b.publicPackage}},
      {proposalType: 'add', add: {keyPackage: c.publicPackage}}]});
  alice = added.newState;
  let bob = await m.joinGroup(added.welcome, b.publicPackage, b.privatePackage, m.emptyPskIndex, cs);
  let carol = await m.joinGroup(added.welcome, c.publicPackage, c.privatePackage, m.emptyPskIndex, cs);
  out.epochs = [alice.groupContext.epoch, bob.groupContext.epoch, carol.groupContext.epoch].map(String);

  const first = await m.createApplicationMessage(alice, enc.encode('hello epoch 1'), cs);
  alice = first.newState;
  const bobGot = await m.processPrivateMessage(bob, first.privateMessage, m.emptyPskIndex, cs);
  bob = bobGot.newState;
  const carolGot = await m.processPrivateMessage(carol, first.privateMessage, m.emptyPskIndex, cs);
  carol = carolGot.newState;
  out.first = [bobGot.kind, dec.decode(bobGot.message), dec.decode(carolGot.message)];

  // alice removes carol; the commit must carry an UpdatePath (RFC 9420 §12.4): without
  // one, carol, who knows the old init_secret, derives the next epoch (ts-mls <= 1.6.2).
  const carolLeaf = carol.privatePath.leafIndex;
  const removed = await m.createCommit({state: alice, cipherSuite: cs}, {
    wireAsPublicMessage: true, extraProposals: [{proposalType: 'remove', remove: {removed: carolLeaf}}]});
  alice = removed.newState;
  out.removeHasPath = removed.commit.publicMessage.content.commit.path !== undefined;
  const bobCommit = await m.processPublicMessage(bob, removed.commit.publicMessage, m.emptyPskIndex, cs);
  bob = bobCommit.newState;
  const carolKept = carol; // the state carol's page still holds
  let carolAfter = carol;
  try {
    const r = await m.processPublicMessage(carol, removed.commit.publicMessage, m.emptyPskIndex, cs);
    carolAfter = r.newState;
    out.carolCommit = r.newState.groupActiveState.kind;
  } catch (e) { out.carolCommit = 'error: ' + e.message; }

  const second = await m.createApplicationMessage(alice, enc.encode('after the kick'), cs);
  alice = second.newState;
  const bobSecond = await m.processPrivateMessage(bob, second.privateMessage, m.emptyPskIndex, cs);
  out.bobSecond = dec.decode(bobSecond.message);
  out.carolSecond = [];
  for (const st of [carolKept, carolAfter]) {
    try {
      const r = await m.processPrivateMessage(st, second.privateMessage, m.emptyPskIndex, cs);
      out.carolSecond.push('DECRYPTED: ' + (r.message ? dec.decode(r.message) : r.kind));
    } catch (e) { out.carolSecond.push('rejected'); }
  }
  out.epochAfter = String(alice.groupContext.epoch);
  const hex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
  return JSON.stringify({out, removeCommit: hex(m.encodeMlsMessage(removed.commit)),
    app: hex(m.encodeMlsMessage({version: 'mls10', wireformat: 'mls_private_message', privateMessage: second.privateMessage}))});
})()`

// TestBrowserMLSVendored: the vendored ts-mls 1.6.4 loads in the real page under its
// CSP and runs MLS with ciphersuite 1 on native WebCrypto: two members exchange a
// message, and after a member is removed the removed member cannot decrypt the next
// epoch's message, with either the state it kept or the state after processing its
// own removal. This is the pin test: with ts-mls 1.6.2 or earlier the Remove commit
// carries no path and the kicked member reads on (E2EE.md §1.2).
func TestBrowserMLSVendored(t *testing.T) {
	ts := startServer(t, nil)
	alice := loginUser(t, newBrowser(t), ts.URL, "alice")
	var res struct {
		Out          json.RawMessage
		RemoveCommit string
		App          string
	}
	if err := json.Unmarshal([]byte(evalAsync[string](t, alice, mlsSmokeJS)), &res); err != nil {
		t.Fatal(err)
	}
	got := string(res.Out)
	want := `{"epochs":["1","1","1"],"first":["applicationMessage","hello epoch 1","hello epoch 1"],` +
		`"removeHasPath":true,"carolCommit":"removedFromGroup","bobSecond":"after the kick",` +
		`"carolSecond":["rejected","rejected"],"epochAfter":"2"}`
	if got != want {
		t.Errorf("MLS in the page:\n got %s\nwant %s", got, want)
	}
	if strings.Contains(got, "DECRYPTED") {
		t.Errorf("the removed member decrypted the next epoch: the pinned ts-mls is not 1.6.4")
	}
	alice.watch.assertClean(t, "alice")

	// The same bytes, made in Chromium, through the hub's Go parser.
	commitBytes, _ := hex.DecodeString(res.RemoveCommit)
	cm, err := mls.ParseMessage(commitBytes)
	if err != nil {
		t.Fatalf("parse the page's Remove commit: %v", err)
	}
	if c := cm.Public.Commit; string(cm.Public.GroupID) != "room-smoke" || cm.Public.Epoch != 1 ||
		cm.Public.Sender != (mls.Sender{Type: mls.SenderMember, Index: 0}) || len(c.Proposals) != 1 ||
		c.Proposals[0].Proposal == nil || c.Proposals[0].Proposal.Type != mls.ProposalRemove ||
		c.Proposals[0].Proposal.Removed != 2 || !c.HasPath {
		t.Errorf("the page's Remove commit parsed as %+v", cm.Public)
	}
	appBytes, _ := hex.DecodeString(res.App)
	am, err := mls.ParseMessage(appBytes)
	if err != nil {
		t.Fatalf("parse the page's application message: %v", err)
	}
	if string(am.Private.GroupID) != "room-smoke" || am.Private.Epoch != 2 || am.Private.ContentType != mls.ContentApplication {
		t.Errorf("the page's application message parsed as %+v", am.Private)
	}
}

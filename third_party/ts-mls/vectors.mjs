// vectors.mjs writes MLS messages made by the vendored bundle into
// internal/mls/testdata, as golden inputs for the Go parser's tests and fuzz seeds.
// Run: node vectors.mjs (needs only node, which has WebCrypto Ed25519 and X25519).
// The messages are random each run; the Go tests check structure, not exact bytes.
import { writeFileSync, mkdirSync } from "node:fs";
import * as m from "../../static/vendor/ts-mls-1.6.4.min.js";

const out = new URL("../../internal/mls/testdata/tsmls/", import.meta.url);
mkdirSync(out, { recursive: true });
const enc = new TextEncoder();
const save = (name, msg) => writeFileSync(new URL(name + ".hex", out), Buffer.from(m.encodeMlsMessage(msg)).toString("hex") + "\n");

const cs = await m.getCiphersuiteImpl(m.getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
const kp = (name) => m.generateKeyPackage({ credentialType: "basic", identity: enc.encode(name) }, m.defaultCapabilities(), m.defaultLifetime, [], cs);
const a = await kp("alice"), b = await kp("bob"), c = await kp("carol");
save("keypackage", { version: "mls10", wireformat: "mls_key_package", keyPackage: b.publicPackage });
let alice = await m.createGroup(enc.encode("room-vectors"), a.publicPackage, a.privatePackage, [], cs);
const added = await m.createCommit({ state: alice, cipherSuite: cs }, {
  wireAsPublicMessage: true,
  extraProposals: [{ proposalType: "add", add: { keyPackage: b.publicPackage } }, { proposalType: "add", add: { keyPackage: c.publicPackage } }],
  ratchetTreeExtension: true,
});
alice = added.newState;
save("commit-add", added.commit);
save("welcome", { version: "mls10", wireformat: "mls_welcome", welcome: added.welcome });
const app = await m.createApplicationMessage(alice, enc.encode("hello"), cs);
alice = app.newState;
save("private-app", app.privateMessage ? { version: "mls10", wireformat: "mls_private_message", privateMessage: app.privateMessage } : app.message);
const removed = await m.createCommit({ state: alice, cipherSuite: cs }, {
  wireAsPublicMessage: true, extraProposals: [{ proposalType: "remove", remove: { removed: 2 } }],
});
alice = removed.newState;
save("commit-remove", removed.commit);
const gi = await m.createGroupInfoWithExternalPub(alice, [], cs);
save("groupinfo", { version: "mls10", wireformat: "mls_group_info", groupInfo: gi });
const proposal = await m.createProposal(alice, true, { proposalType: "remove", remove: { removed: 1 } }, cs);
save("proposal-remove", proposal.message);
console.log("wrote", out.pathname);

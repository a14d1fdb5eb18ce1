// oracle.mjs is an MLS client made of the vendored ts-mls 1.6.4 bundle, driven by Go
// tests over stdin/stdout: one JSON request per line, one JSON answer per line. It
// lets the hub's Delivery Service be tested end to end against the real library
// without a browser. Bytes travel as standard base64. Each request names a client
// ("id"); a client holds its signature key, its KeyPackages and its group state.
// Answers are {"ok":true,...} or {"ok":false,"error":"..."}.
//
// Run: node oracle.mjs (node 20 has WebCrypto Ed25519 and X25519).
import { createInterface } from "node:readline";
import * as m from "../../static/vendor/ts-mls-1.6.4.min.js";

const cs = await m.getCiphersuiteImpl(m.getCiphersuiteFromName("MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519"));
const enc = new TextEncoder(), dec = new TextDecoder();
const b64 = (b) => Buffer.from(b).toString("base64");
const unb64 = (s) => new Uint8Array(Buffer.from(s, "base64"));
const clients = new Map();

const client = (id) => {
  let c = clients.get(id);
  if (!c) { c = { kps: [] }; clients.set(id, c); }
  return c;
};
const decodeMsg = (s) => {
  const d = m.decodeMlsMessage(unb64(s), 0);
  if (!d) throw new Error("not an MLSMessage");
  return d[0];
};
const wrap = (wireformat, field, v) => b64(m.encodeMlsMessage({ version: "mls10", wireformat, [field]: v }));
// The hub as external sender: members accept proposals from it and nobody else.
const extSenders = (pub, identity) => [{ extensionType: "external_senders",
  extensionData: m.encodeExternalSender({ signaturePublicKey: unb64(pub), credential: { credentialType: "basic", identity: unb64(identity) } }) }];

const ops = {
  // keygen makes the client's MLS signature key; the Go side binds it into a credential.
  async keygen(r) {
    const c = client(r.id);
    c.keys = await cs.signature.keygen();
    return { pub: b64(c.keys.publicKey) };
  },
  // kp makes a KeyPackage with the given credential identity and lifetime (seconds).
  async kp(r) {
    const c = client(r.id);
    const now = BigInt(Math.floor(Date.now() / 1000));
    const lifetime = { notBefore: r.not_before !== undefined ? BigInt(r.not_before) : now - 60n,
      notAfter: r.not_after !== undefined ? BigInt(r.not_after) : now + 30n * 86400n - 120n };
    const k = await m.generateKeyPackageWithKey({ credentialType: "basic", identity: unb64(r.identity) },
      m.defaultCapabilities(), lifetime, [], c.keys, cs);
    c.kps.push(k);
    return { kp: wrap("mls_key_package", "keyPackage", k.publicPackage) };
  },
  // create makes a group from the client's newest KeyPackage with the hub as external sender.
  async create(r) {
    const c = client(r.id);
    const k = c.kps.at(-1);
    c.state = await m.createGroup(unb64(r.group_id), k.publicPackage, k.privatePackage, extSenders(r.ext_pub, r.ext_identity), cs);
    const gi = await m.createGroupInfoWithExternalPubAndRatchetTree(c.state, [], cs);
    return { group_info: wrap("mls_group_info", "groupInfo", gi), key_package: wrap("mls_key_package", "keyPackage", k.publicPackage) };
  },
  // process takes a PublicMessage (a proposal or a commit) or a PrivateMessage.
  async process(r) {
    const c = client(r.id);
    const msg = decodeMsg(r.msg);
    const res = await m.processMessage(msg, c.state, m.emptyPskIndex, m.acceptAll, cs);
    if (res.kind === "newState") {
      c.state = res.newState;
      return { kind: c.state.groupActiveState?.kind ?? "active", epoch: String(c.state.groupContext.epoch) };
    }
    c.state = res.newState;
    return { kind: "application", text: dec.decode(res.message), epoch: String(c.state.groupContext.epoch) };
  },
  // commit commits whatever is outstanding (by reference), as a PublicMessage with the
  // ratchet tree in the GroupInfo; the new state waits for "apply" (the hub's ack).
  async commit(r) {
    const c = client(r.id);
    const res = await m.createCommit({ state: c.state, cipherSuite: cs }, { wireAsPublicMessage: !r.private, ratchetTreeExtension: true });
    c.pending = res.newState;
    const gi = await m.createGroupInfoWithExternalPubAndRatchetTree(res.newState, [], cs);
    return { commit: b64(m.encodeMlsMessage(res.commit)), welcome: res.welcome ? wrap("mls_welcome", "welcome", res.welcome) : "",
      group_info: wrap("mls_group_info", "groupInfo", gi), epoch: String(c.state.groupContext.epoch) };
  },
  async apply(r) {
    const c = client(r.id);
    c.state = c.pending; c.pending = undefined;
    return { epoch: String(c.state.groupContext.epoch) };
  },
  // join processes a Welcome with whichever of the client's KeyPackages it is for.
  async join(r) {
    const c = client(r.id);
    const w = decodeMsg(r.welcome).welcome;
    let last;
    for (const k of c.kps) {
      try {
        c.state = await m.joinGroup(w, k.publicPackage, k.privatePackage, m.emptyPskIndex, cs);
        return { epoch: String(c.state.groupContext.epoch) };
      } catch (e) { last = e; }
    }
    throw last ?? new Error("no KeyPackage");
  },
  async encrypt(r) {
    const c = client(r.id);
    const res = await m.createApplicationMessage(c.state, enc.encode(r.text), cs);
    c.state = res.newState;
    return { msg: wrap("mls_private_message", "privateMessage", res.privateMessage), epoch: String(c.state.groupContext.epoch) };
  },
  // state says the client's epoch and its epoch authenticator (the room code).
  async state(r) {
    const c = client(r.id);
    return { epoch: String(c.state.groupContext.epoch), auth: b64(c.state.keySchedule.epochAuthenticator),
      members: c.state.ratchetTree.filter((n) => n?.nodeType === "leaf").length };
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let out;
  try {
    const r = JSON.parse(line);
    out = { ok: true, ...(await ops[r.op](r)) };
  } catch (e) {
    out = { ok: false, error: String(e?.message ?? e) };
  }
  process.stdout.write(JSON.stringify(out) + "\n");
}

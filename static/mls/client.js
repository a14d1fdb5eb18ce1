// One device's end-to-end encryption engine: the MLS (RFC 9420) client of every E2EE
// room this device is in, on the vendored ts-mls 1.6.4 with ciphersuite 1. It speaks
// the wire contract of PROTOCOL.md ("End-to-end encrypted rooms") as plain objects:
// handle() takes the server's events, and what it wants sent goes out through the
// send callback; what the user should see comes out through onEvent. It holds the
// client-side policy of E2EE.md §3.3: only the hub (external sender 0) may add or
// remove, a device is committed only when its credential chain reaches the user's
// pinned root key, a member commits exactly the hub's outstanding proposals by
// reference and applies its own commit only when the hub acknowledges it.
// This module never touches the DOM.

import * as m from '../vendor/ts-mls-1.6.4.min.js';
import { b64, certBytes, unb64 } from '../sigbytes.js';
import { checkChain, decodeIdentity, makeIdentity } from './cred.js';
import { GROUPS, KPS, SIGNERS } from './store.js';

const SUITE = 'MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519'; // suite 1, all native WebCrypto
const KP_TARGET = 20; // KeyPackages kept uploaded per device (E2EE.md RECOMMENDATION; the hub keeps at most 20)
const KP_CHUNK = 5; // KeyPackages per kp_upload, so that each line stays far below -read-limit
const TEXT_LIMIT = 6000; // longest MLS command line sent as JSON; longer ones go as a bin frame
const MAX_EARLY = 500; // events kept while waiting for our Welcome (the history comes before it)
const KP_LIFETIME_S = 30 * 24 * 3600; // 30 days; ts-mls's default lifetime is 2^63
const KP_SKEW_S = 120; // notBefore this far back, for clocks a little behind ours; the whole lifetime stays 30 days (the hub allows 30 days and 5 minutes)
const PAYLOAD_V = 1; // version of the encrypted payload {v, msg_id, ts, kind, body} (a file's: file, not body)
const MAX_SEEN = 4096; // msg_ids remembered per room for the replay check
const MAX_PLAIN = 1000; // decrypted messages cached per room (reload shows them again)
const MAX_BODY = 64 * 1024; // largest decrypted payload accepted (bytes)
const KINDS = new Set(['text', 'file']); // payload kinds the page renders
// A message refused because the room's keys are changing (commit_required: the hub's
// proposals are not yet committed; stale_epoch: a commit won meanwhile) is encrypted
// again, under the new epoch, once that commit is in: a few tries, further apart each
// time. Only a fresh encryption under the state after the commit is sent, so a member
// being removed never gets the retried message either.
const SEND_RETRIES = 4;
const SEND_RETRY_MS = 400;
const TRANSIENT = new Set(['commit_required', 'stale_epoch']);

// The reasons a message or handshake is refused; they are the keys of stats.rejected
// and the data of every 'rejected' event, so tests and the page name them exactly.
export const REJECT = Object.freeze({
  DECRYPT: 'decrypt_failed', // AES-GCM or signature failure: tampered, foreign, forged
  REPLAY: 'replayed', // a msg_id seen before in this room
  BAD_PAYLOAD: 'bad_payload', // decrypted, but not a payload this version understands
  WRONG_EPOCH: 'wrong_epoch', // the server's epoch does not match the message's
  WRONG_GROUP: 'wrong_group', // a message of another group
  FROM_MISMATCH: 'from_mismatch', // the server names another sender than MLS does (shown, flagged)
  MEMBER_PROPOSAL: 'member_proposal', // a member tried to add, remove or change the group itself
  BAD_PROPOSAL: 'bad_proposal', // an external proposal that is not the hub's Add or Remove
  UNTRUSTED_DEVICE: 'untrusted_device', // credential chain does not reach the pinned root key
  BAD_COMMIT: 'bad_commit', // a commit that fails MLS validation or our policy
  NOT_MLS: 'not_mls', // bytes that are not the expected MLS message
});

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

let csPromise = null;

// suite loads ciphersuite 1 (once per page).
export function suite() {
  if (!csPromise) csPromise = m.getCiphersuiteImpl(m.getCiphersuiteFromName(SUITE));
  return csPromise;
}

// supported reports whether this browser runs ciphersuite 1 natively (Ed25519 and
// X25519 in WebCrypto): without them E2EE rooms are refused with a clear message.
export async function supported() {
  try {
    const k = await crypto.subtle.generateKey({ name: 'X25519' }, false, ['deriveBits']);
    await crypto.subtle.deriveBits({ name: 'X25519', public: k.publicKey }, k.privateKey, 256);
    const s = await crypto.subtle.generateKey({ name: 'Ed25519' }, false, ['sign', 'verify']);
    return (await crypto.subtle.sign({ name: 'Ed25519' }, s.privateKey, new Uint8Array(1))).byteLength === 64;
  } catch (err) {
    return false;
  }
}

// equal compares byte arrays.
function equal(a, b) {
  if (!a || !b || a.length !== b.length) return false;
  let d = 0;
  for (let i = 0; i < a.length; i++) d |= a[i] ^ b[i];
  return d === 0;
}

// varint is the QUIC-style length prefix MLS uses for opaque<V>.
function varint(n) {
  if (n < 64) return Uint8Array.of(n);
  if (n < 16384) return Uint8Array.of(0x40 | (n >> 8), n & 0xff);
  return Uint8Array.of(0x80 | (n >>> 24), (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
}

// keyPackageRef is RFC 9420 §5.2 RefHash("MLS 1.0 KeyPackage Reference", KeyPackage),
// the name a Welcome gives its joiner (ts-mls computes it but does not export it).
async function keyPackageRef(kpBytes) {
  const label = utf8.encode('MLS 1.0 KeyPackage Reference');
  const parts = [varint(label.length), label, varint(kpBytes.length), kpBytes];
  const buf = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    buf.set(p, at);
    at += p.length;
  }
  return new Uint8Array(await crypto.subtle.digest('SHA-256', buf));
}

// decode parses MLS message bytes (base64) into ts-mls's object, or null.
function decode(s) {
  const bytes = typeof s === 'string' ? unb64(s) : s;
  if (!bytes || bytes.length < 4) return null;
  try {
    const r = m.decodeMlsMessage(bytes, 0);
    return r && r[1] === bytes.length ? r[0] : null;
  } catch (err) {
    return null;
  }
}

// encode is the base64 of an MLS message object.
const encode = (msg) => b64(m.encodeMlsMessage(msg));

// roomCode shows an epoch authenticator as 30 digits in groups of five, as DAVE and the
// safety numbers do: equal codes mean the same group secrets in this epoch (RFC 9420 §8.7).
export function roomCode(auth) {
  let digits = '';
  for (let i = 0; i < 30; i += 5) {
    let n = 0;
    for (let j = 0; j < 5; j++) n = n * 256 + auth[i + j];
    digits += String(n % 100000).padStart(5, '0');
  }
  return digits.replace(/(\d{5})(?=\d)/g, '$1 ');
}

// leaves lists a ratchet tree's members: leaf index, and the user and device their
// credential names (null for a credential that does not parse: the hub's never sits
// in the tree, so that means a foreign client).
export function leaves(tree) {
  const out = [];
  for (let i = 0; i < tree.length; i += 2) {
    const n = tree[i];
    if (!n || n.nodeType !== 'leaf') continue;
    const id = n.leaf.credential.credentialType === 'basic' ? decodeIdentity(n.leaf.credential.identity) : null;
    out.push({ leaf: i / 2, user: id ? id.user : null, device: id ? id.device : null, key: b64(n.leaf.signaturePublicKey) });
  }
  return out;
}

// BIN_FIELDS are, per command, the base64 fields a bin frame carries instead, in order.
const BIN_FIELDS = {
  mls_commit: ['commit', 'welcome', 'group_info'],
  mls_group_init: ['group_info', 'key_package'],
  mls_app: ['msg'],
};

// framed joins parts as u32(len) ‖ part ‖ ...
function framed(parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + 4 + p.length, 0));
  const dv = new DataView(out.buffer);
  let at = 0;
  for (const p of parts) {
    dv.setUint32(at, p.length);
    out.set(p, at + 4);
    at += 4 + p.length;
  }
  return out;
}

// Room is this device's view of one E2EE room.
class Room {
  constructor(name) {
    this.name = name;
    this.state = null; // ts-mls ClientState, null until created or joined
    this.groupId = null; // bytes the hub named for this room (joined.e2ee.group_id)
    this.pending = null; // own commit awaiting the hub: {ref, commit, epoch, newState}
    this.lastId = 0; // highest server message id processed (history replays skip below)
    this.seen = []; // msg_ids (base64) of recent payloads, oldest first
    this.seenSet = new Set();
    this.plain = []; // recent decrypted messages, for a reload
    this.queue = Promise.resolve(); // events of a room are processed one at a time, in order
    this.refused = new Set(); // proposal refs this device refused in the current epoch
    this.early = []; // events that arrived before our Welcome, replayed after it
  }
}

// MlsClient is the engine of one device. Make it with openClient.
export class MlsClient {
  constructor(opts) {
    this.owner = opts.dev.user + '\n' + opts.dev.device;
    this.dev = opts.dev;
    this.cs = opts.cs;
    this.store = opts.store;
    this.sendFn = opts.send;
    this.onEvent = opts.onEvent || (() => {});
    this.trust = opts.trust; // async (user, urkB64) -> true when urk is the user's pinned root key
    this.signer = opts.signer; // {pub, priv, identity}
    this.externalKey = null; // the hub's external-sender signature key (bytes)
    this.externalSender = null; // ts-mls ExternalSender for new groups
    this.rooms = new Map();
    this.refs = new Map(); // ref of an outgoing command -> what to do with its ack or error
    this.nextRef = 1;
    this.leader = opts.leader !== false;
    this.textLimit = opts.textLimit || TEXT_LIMIT;
    this.stats = { accepted: 0, rejected: {}, rejectedTotal: 0, sent: 0, commits: 0, stale: 0, joins: 0, kps: 0 };
    const self = this;
    this.config = {
      keyRetentionConfig: m.defaultKeyRetentionConfig,
      lifetimeConfig: { ...m.defaultLifetimeConfig, validateLifetimeOnReceive: true },
      keyPackageEqualityConfig: m.defaultKeyPackageEqualityConfig,
      paddingConfig: m.defaultPaddingConfig,
      // authService is called by ts-mls at every RFC 9420 §5.3.1 event (join, commit,
      // GroupInfo, external senders). Its default accepts everything.
      authService: { validateCredential: (cred, key) => self.validCredential(cred, key) },
    };
  }

  // validCredential accepts the hub's external-sender credential (by its key) and
  // otherwise only a device credential whose chain reaches its user's pinned root key.
  async validCredential(cred, key) {
    if (this.externalKey && equal(key, this.externalKey)) return true;
    return (await this.checkCredential(cred, key)).ok;
  }

  // checkCredential says whose device a credential is and why it is refused, if it is.
  async checkCredential(cred, key) {
    const id = cred && cred.credentialType === 'basic' ? decodeIdentity(cred.identity) : null;
    if (!id) return { ok: false, why: 'not a device credential' };
    if (!(await checkChain(id, key))) return { ok: false, id, why: 'the device certificate does not verify' };
    if (!(await this.trust(id.user, b64(id.urk)))) return { ok: false, id, why: 'not signed by the root key pinned for ' + id.user };
    return { ok: true, id };
  }

  room(name) {
    let r = this.rooms.get(name);
    if (!r) {
      r = new Room(name);
      this.rooms.set(name, r);
    }
    return r;
  }

  // emit hands an event to the page and never lets its failure break the engine.
  emit(ev) {
    try {
      this.onEvent(ev);
    } catch (err) {
      console.error('mls event handler', err);
    }
  }

  // reject counts a refusal and tells the page (which shows a notice for each).
  reject(room, reason, detail) {
    this.stats.rejected[reason] = (this.stats.rejected[reason] || 0) + 1;
    this.stats.rejectedTotal++;
    this.emit({ type: 'rejected', room, reason, detail: detail || '' });
  }

  // command sends a client command with a fresh ref, remembering what its answer means.
  command(obj, onAnswer) {
    const ref = 'm' + this.nextRef++;
    this.refs.set(ref, onAnswer);
    const line = { ...obj, ref };
    const bin = BIN_FIELDS[obj.type];
    if (bin && JSON.stringify(line).length > this.textLimit) {
      // Large MLS messages (PROTOCOL.md): announce with bin, then one binary frame of
      // u32-length-prefixed parts (one part for mls_app), in the fields' order.
      const parts = bin.map((f) => (line[f] ? unb64(line[f]) : new Uint8Array(0)));
      for (const f of bin) delete line[f];
      const bytes = obj.type === 'mls_app' ? parts[0] : framed(parts);
      line.bin = bytes.length;
      this.sendFn(line, bytes);
    } else {
      this.sendFn(line);
    }
    return ref;
  }

  // setHub records the hub's e2ee parameters (from welcome/joined): its external-sender
  // key and credential. A group only ever trusts the external sender it was created or
  // joined with; this key is only a check of the credential in that extension.
  setHub(e2ee) {
    if (!e2ee || typeof e2ee !== 'object' || e2ee.suite !== 1 || !e2ee.external_sender) return;
    const key = unb64(e2ee.external_sender.signature_key);
    const identity = unb64(e2ee.external_sender.identity);
    if (!key || key.length !== 32 || !identity) return; // a malformed key leaves E2EE unusable, never half-trusted
    this.externalKey = key;
    this.externalSender = { signaturePublicKey: key, credential: { credentialType: 'basic', identity } };
  }

  // keyPackages makes n fresh KeyPackages, keeps their private halves and returns the
  // public ones, base64 MLSMessages, for kp_upload.
  async keyPackages(n) {
    const lifetime = this.lifetime();
    const cred = { credentialType: 'basic', identity: this.signer.identity };
    const out = [];
    for (let i = 0; i < n; i++) {
      const kp = await m.generateKeyPackageWithKey(cred, m.defaultCapabilities(), lifetime, [],
        { signKey: this.signer.priv, publicKey: this.signer.pub }, this.cs);
      const msg = { version: 'mls10', wireformat: 'mls_key_package', keyPackage: kp.publicPackage };
      const bytes = m.encodeMlsMessage(msg);
      const ref = b64(await keyPackageRef(bytes.subarray(4)));
      await this.store.put(KPS, { ref, owner: this.owner, pub: bytes, priv: kp.privatePackage, made: Date.now() });
      out.push(b64(bytes));
    }
    this.stats.kps += n;
    return out;
  }

  // uploadKeyPackages tops the directory up to KP_TARGET (kp_upload); `have` is how many
  // the hub says it holds (kp_low), 0 at start.
  // One top-up at a time: the hub answers a kp_upload that leaves the device low both
  // with kp_low and with the ack, and two top-ups would overfill it (kp_full).
  async uploadKeyPackages(have = 0) {
    const n = Math.max(0, KP_TARGET - (Number.isSafeInteger(have) ? have : 0));
    if (!n || !this.leader || this.uploading) return 0;
    this.uploading = true;
    try {
      const kps = await this.keyPackages(n);
      for (let i = 0; i < kps.length; i += KP_CHUNK) {
        this.command({ type: 'kp_upload', device: this.dev.device, kps: kps.slice(i, i + KP_CHUNK) }, () => {});
      }
    } finally {
      this.uploading = false;
    }
    return n;
  }

  // bind ties the connection to this device (kp_upload with no KeyPackages, as the page
  // does at every welcome) and tops the directory up from the count the ack reports.
  // It resolves once the KeyPackages it made are sent.
  bind() {
    if (!this.leader) return Promise.resolve();
    return new Promise((resolve) => {
      this.command({ type: 'kp_upload', device: this.dev.device, kps: [] }, async (ans) => {
        if (ans.type === 'ack') await this.uploadKeyPackages(Number.isSafeInteger(ans.count) ? ans.count : 0);
        else this.emit({ type: 'device_refused', code: ans.code || '' });
        resolve();
      });
    });
  }

  // restore loads every room this device has state for (after a reload).
  async restore() {
    // KeyPackages past their lifetime can no longer be used: drop their private halves.
    const old = Date.now() - (KP_LIFETIME_S + KP_SKEW_S) * 1000;
    for (const kp of await this.store.byOwner(KPS, this.owner)) if (kp.made < old) await this.store.del(KPS, kp.ref);
    const rows = await this.store.byOwner(GROUPS, this.owner);
    for (const row of rows) {
      const r = this.room(row.room);
      if (row.state) {
        const d = m.decodeGroupState(row.state, 0);
        if (d) r.state = { ...d[0], clientConfig: this.config };
      }
      r.groupId = row.groupId ? unb64(row.groupId) : r.state ? r.state.groupContext.groupId : null;
      r.lastId = row.lastId || 0;
      r.seen = row.seen || [];
      r.seenSet = new Set(r.seen);
      r.plain = row.plain || [];
    }
    return rows.map((x) => x.room);
  }

  // save writes a room's state, so that a reload continues exactly where we are; it is
  // awaited before anything that depends on it leaves the page (a sent message's
  // generation must never be reused).
  // A tab that is not the leader never writes: the stored state is the leader's.
  async save(r) {
    if (!this.leader) return;
    await this.store.put(GROUPS, {
      key: this.owner + '\n' + r.name,
      owner: this.owner,
      room: r.name,
      groupId: r.groupId ? b64(r.groupId) : null,
      state: r.state ? m.encodeGroupState(r.state) : null,
      lastId: r.lastId,
      seen: r.seen,
      plain: r.plain,
    });
  }

  // cached shows again (as 'message' events marked replayed) what this device decrypted
  // or sent in a room, from its store: after a reload the history resumes after them.
  cached(name) {
    const r = this.rooms.get(name);
    if (r) for (const kept of r.plain) this.emit({ ...kept, replayed: true });
  }

  // drop forgets the plaintext this device kept of a deleted message (by its server id),
  // after whatever the room still has queued, so a reload does not show it again.
  drop(name, id) {
    const r = this.rooms.get(name);
    if (!r || !Number.isSafeInteger(id)) return Promise.resolve();
    return this.enqueue(r, async () => {
      const n = r.plain.length;
      r.plain = r.plain.filter((x) => x.id !== id);
      if (r.plain.length !== n) await this.save(r);
    });
  }

  // forget drops a room's group (removed, room deleted).
  async forget(name) {
    this.rooms.delete(name);
    if (this.leader) await this.store.del(GROUPS, this.owner + '\n' + name);
  }

  // info describes a room for the page: epoch, room code, members from the tree.
  info(name) {
    const r = this.rooms.get(name);
    if (!r || !r.state) return null;
    return {
      epoch: Number(r.state.groupContext.epoch),
      code: roomCode(r.state.keySchedule.epochAuthenticator),
      members: leaves(r.state.ratchetTree),
      pending: !!r.pending,
    };
  }

  // enqueue runs fn after everything queued for the room, so events apply in order.
  enqueue(r, fn) {
    const p = r.queue.then(fn).catch((err) => {
      console.error('mls', r.name, err);
    });
    r.queue = p;
    return p;
  }

  // idle resolves once every room's queue has drained (tests wait on it).
  async idle() {
    for (;;) {
      const qs = [...this.rooms.values()].map((r) => r.queue);
      await Promise.all(qs);
      if ([...this.rooms.values()].every((r, i) => r.queue === qs[i])) return;
    }
  }

  // createRoom makes the group of a new E2EE room with the hub as its only external
  // sender, and publishes its GroupInfo (mls_group_init).
  async createRoom(name, groupIdB64) {
    const groupId = unb64(groupIdB64);
    if (!groupId || !groupId.length) throw new Error('no group id for ' + name);
    if (!this.externalSender) throw new Error('the server named no external sender');
    const r = this.room(name);
    return this.enqueue(r, async () => {
      if (r.state || r.creating) return;
      r.creating = true;
      const kp = await m.generateKeyPackageWithKey({ credentialType: 'basic', identity: this.signer.identity },
        m.defaultCapabilities(), this.lifetime(), [], { signKey: this.signer.priv, publicKey: this.signer.pub }, this.cs);
      const ext = { extensionType: 'external_senders', extensionData: m.encodeExternalSender(this.externalSender) };
      const st = await m.createGroup(groupId, kp.publicPackage, kp.privatePackage, [ext], this.cs, this.config);
      const gi = await m.createGroupInfoWithExternalPubAndRatchetTree(st, [], this.cs);
      // The group is ours only once the hub accepts it: another member may have made
      // the room's group first (stale_epoch), and then we wait for our Add instead.
      this.command({
        type: 'mls_group_init', room: name,
        group_info: encode({ version: 'mls10', wireformat: 'mls_group_info', groupInfo: gi }),
        key_package: encode({ version: 'mls10', wireformat: 'mls_key_package', keyPackage: kp.publicPackage }),
      }, (ans) => this.enqueue(r, async () => {
        r.creating = false;
        if (ans.type !== 'ack' || r.state) {
          this.emit({ type: 'group_refused', room: name, code: ans.code || '' });
          return;
        }
        r.state = st;
        r.groupId = groupId;
        await this.save(r);
        this.emitEpoch(r, [], leaves(r.state.ratchetTree));
        await this.replayEarly(r);
      }));
    });
  }

  lifetime() {
    const now = Math.floor(Date.now() / 1000);
    return { notBefore: BigInt(now - KP_SKEW_S), notAfter: BigInt(now - KP_SKEW_S + KP_LIFETIME_S) };
  }

  // expect records the group id the hub gave a room (joined.e2ee), checked at Welcome.
  expect(name, groupIdB64) {
    const id = unb64(groupIdB64);
    if (id && id.length) this.room(name).groupId = id;
  }

  // handle takes one server event (live, or from a history page, in order). It returns
  // a promise that settles when the event has been processed. live is true only for an
  // event the server relayed as it happened; a decrypted live mls_app's 'message' says
  // so (live: true), one from history or a catch-up never does, so the page notifies
  // only what is news.
  handle(ev, live = false) {
    if (!ev || typeof ev !== 'object') return Promise.resolve();
    if ((ev.type === 'ack' || ev.type === 'error') && typeof ev.ref === 'string' && this.refs.has(ev.ref)) {
      const f = this.refs.get(ev.ref);
      this.refs.delete(ev.ref);
      return Promise.resolve(f(ev));
    }
    if (ev.type === 'kp_low') return ev.device === this.dev.device ? this.uploadKeyPackages(ev.count || 0) : Promise.resolve();
    if (typeof ev.room !== 'string') return Promise.resolve();
    const r = this.room(ev.room);
    switch (ev.type) {
      case 'mls_proposals': return this.enqueue(r, () => this.onProposals(r, ev));
      case 'mls_commit': return this.enqueue(r, () => this.onCommit(r, ev));
      case 'mls_welcome': return this.enqueue(r, () => this.onWelcome(r, ev));
      case 'mls_app': return this.enqueue(r, () => this.onApp(r, ev, live === true));
      default: return Promise.resolve();
    }
  }

  // fresh reports whether a logged event is new (history replays what we processed) and
  // advances lastId.
  fresh(r, ev) {
    if (!Number.isSafeInteger(ev.id)) return true;
    if (ev.id <= r.lastId) return false;
    r.lastId = ev.id;
    return true;
  }

  // early keeps an event that came while this device has no group for the room (the
  // history before our Welcome, or a group init in flight): after the Welcome, those
  // of our epoch or later are processed, older ones are what we cannot read.
  keepEarly(r, ev) {
    if (r.early.length >= MAX_EARLY) r.early.shift();
    r.early.push(ev);
  }

  // replayEarly processes what keepEarly kept, in order, now that we have a group.
  async replayEarly(r) {
    const evs = r.early;
    r.early = [];
    const epoch = r.state.groupContext.epoch;
    for (const ev of evs) {
      if (!r.state) return;
      const e = ev.epoch !== undefined ? BigInt(ev.epoch) : epoch;
      if (e < epoch) {
        if (ev.type === 'mls_app') this.emit({ type: 'undecryptable', room: r.name, id: ev.id, why: 'sent before this device joined' });
        continue;
      }
      if (ev.type === 'mls_proposals') await this.onProposals(r, ev);
      else if (ev.type === 'mls_commit') await this.onCommit(r, ev);
      else if (ev.type === 'mls_app') await this.onApp(r, ev);
    }
  }

  // onProposals checks the hub's external proposals and, when every one is acceptable,
  // commits them (by reference: createCommit takes all unapplied ones).
  async onProposals(r, ev) {
    if (!r.state) return this.keepEarly(r, ev);
    if (!this.fresh(r, ev)) return;
    const epoch = BigInt(ev.epoch || 0);
    if (epoch !== r.state.groupContext.epoch) return; // for an epoch we left behind: the hub re-proposes
    let refused = 0;
    for (const p of Array.isArray(ev.proposals) ? ev.proposals : []) {
      const msg = decode(p);
      if (!msg || msg.wireformat !== 'mls_public_message' || msg.publicMessage.content.contentType !== 'proposal') {
        this.reject(r.name, REJECT.NOT_MLS, 'a proposal that is not a PublicMessage proposal');
        refused++;
        continue;
      }
      const c = msg.publicMessage.content;
      if (c.sender.senderType !== 'external' || c.sender.senderIndex !== 0) {
        this.reject(r.name, REJECT.MEMBER_PROPOSAL, 'only the server may propose membership changes');
        refused++;
        continue;
      }
      const type = c.proposal.proposalType;
      if (type !== 'add' && type !== 'remove') {
        this.reject(r.name, REJECT.BAD_PROPOSAL, 'the server proposed ' + type);
        refused++;
        continue;
      }
      if (type === 'add') {
        const leaf = c.proposal.add.keyPackage.leafNode;
        const chk = await this.checkCredential(leaf.credential, leaf.signaturePublicKey);
        if (!chk.ok) {
          this.reject(r.name, REJECT.UNTRUSTED_DEVICE, (chk.id ? chk.id.user + ' device ' + chk.id.device + ': ' : '') + chk.why);
          this.emit({ type: 'untrusted_device', room: r.name, user: chk.id ? chk.id.user : null, device: chk.id ? chk.id.device : null, why: chk.why });
          refused++;
          continue;
        }
      }
      try {
        const res = await m.processPublicMessage(r.state, msg.publicMessage, m.emptyPskIndex, this.cs, (inc) => this.policy(inc));
        if (res.actionTaken !== 'accept') {
          this.reject(r.name, REJECT.BAD_PROPOSAL, 'refused by policy');
          refused++;
          continue;
        }
        r.state = res.newState;
      } catch (err) {
        this.reject(r.name, REJECT.BAD_PROPOSAL, String(err && err.message || err));
        refused++;
      }
    }
    await this.save(r);
    if (refused) {
      this.emit({ type: 'blocked', room: r.name, epoch: Number(r.state.groupContext.epoch) });
      return;
    }
    await this.commitPending(r);
  }

  // policy is the IncomingMessageCallback: proposals come only from the external sender
  // (the hub) and only Add and Remove; a commit may carry only those (by reference), or
  // nothing (a self-update).
  policy(inc) {
    const ok = (p) => p.senderLeafIndex === undefined &&
      (p.proposal.proposalType === 'add' || p.proposal.proposalType === 'remove');
    if (inc.kind === 'proposal') return ok(inc.proposal) ? 'accept' : 'reject';
    return inc.proposals.every(ok) ? 'accept' : 'reject';
  }

  // commitPending commits the outstanding hub proposals, unless a commit is in flight or
  // there are none. The hub keeps the first valid commit of the epoch; ours is applied
  // only on its ack, dropped on stale_epoch.
  async commitPending(r) {
    if (!this.leader || r.pending || !r.state) return;
    const props = Object.values(r.state.unappliedProposals);
    if (!props.length) return;
    // A member never commits its own removal (RFC 9420 §12.2): the others do.
    const me = r.state.privatePath.leafIndex;
    if (props.some((p) => p.proposal.proposalType === 'remove' && p.proposal.remove.removed === me)) return;
    const epoch = r.state.groupContext.epoch;
    const res = await m.createCommit({ state: r.state, cipherSuite: this.cs }, { wireAsPublicMessage: true, ratchetTreeExtension: true });
    const gi = await m.createGroupInfoWithExternalPubAndRatchetTree(res.newState, [], this.cs);
    const commit = encode(res.commit);
    const out = { type: 'mls_commit', room: r.name, epoch: Number(epoch), commit,
      group_info: encode({ version: 'mls10', wireformat: 'mls_group_info', groupInfo: gi }) };
    if (res.welcome) out.welcome = encode({ version: 'mls10', wireformat: 'mls_welcome', welcome: res.welcome });
    r.pending = { commit, epoch, newState: res.newState, ref: null };
    r.pending.ref = this.command(out, (ans) => this.enqueue(r, () => this.onCommitAnswer(r, commit, ans)));
  }

  // onCommitAnswer applies our commit when the hub stored it, or drops it when another
  // won the epoch (the winner arrives as mls_commit and is processed then).
  async onCommitAnswer(r, commit, ans) {
    if (ans.type === 'error' && ans.code === 'stale_epoch') this.stats.stale++;
    if (!r.pending || r.pending.commit !== commit) return; // applied from the broadcast, or lost to it
    if (ans.type === 'ack') {
      if (Number.isSafeInteger(ans.id) && ans.id > r.lastId) r.lastId = ans.id;
      await this.applyOwn(r);
      return;
    }
    r.pending = null;
    if (ans.code !== 'stale_epoch') this.emit({ type: 'commit_refused', room: r.name, code: ans.code || '' });
  }

  // applyOwn moves to our pending commit's epoch.
  async applyOwn(r) {
    const before = leaves(r.state.ratchetTree);
    r.state = r.pending.newState;
    r.pending = null;
    this.stats.commits++;
    await this.save(r);
    this.emitEpoch(r, before, leaves(r.state.ratchetTree));
    await this.commitPending(r);
  }

  // emitEpoch tells the page the room's new epoch, code and membership changes.
  emitEpoch(r, before, after) {
    const key = (x) => x.key;
    const had = new Set(before.map(key));
    const has = new Set(after.map(key));
    this.emit({
      type: 'epoch', room: r.name, epoch: Number(r.state.groupContext.epoch),
      code: roomCode(r.state.keySchedule.epochAuthenticator), members: after,
      added: after.filter((x) => !had.has(x.key)), removed: before.filter((x) => !has.has(x.key)),
    });
  }

  // onCommit processes another member's commit (or our own, echoed).
  async onCommit(r, ev) {
    if (!r.state) return this.keepEarly(r, ev);
    if (!this.fresh(r, ev)) return;
    if (r.pending && ev.commit === r.pending.commit) {
      await this.applyOwn(r); // our own, from history before the ack came
      return;
    }
    const msg = decode(ev.commit);
    if (!msg || msg.wireformat !== 'mls_public_message' || msg.publicMessage.content.contentType !== 'commit') {
      this.reject(r.name, REJECT.NOT_MLS, 'a commit that is not a PublicMessage commit');
      return;
    }
    const c = msg.publicMessage.content;
    if (!equal(c.groupId, r.state.groupContext.groupId)) {
      this.reject(r.name, REJECT.WRONG_GROUP, 'a commit of another group');
      return;
    }
    if (c.epoch < r.state.groupContext.epoch) return; // applied already
    if (c.epoch > r.state.groupContext.epoch) {
      this.emit({ type: 'resync', room: r.name, why: 'missed a commit' });
      return;
    }
    if (r.pending) r.pending = null; // another commit won this epoch; ours is void
    // The committer keeps its identity and key (E2EE.md §3.3).
    if (c.sender.senderType !== 'member') {
      this.reject(r.name, REJECT.BAD_COMMIT, 'a commit not from a member');
      return;
    }
    const node = r.state.ratchetTree[c.sender.leafIndex * 2];
    if (c.commit.path && (!node || !equal(node.leaf.credential.identity, c.commit.path.leafNode.credential.identity) ||
      !equal(node.leaf.signaturePublicKey, c.commit.path.leafNode.signaturePublicKey))) {
      this.reject(r.name, REJECT.BAD_COMMIT, 'the committer changed its identity');
      return;
    }
    const before = leaves(r.state.ratchetTree);
    let res;
    try {
      res = await m.processPublicMessage(r.state, msg.publicMessage, m.emptyPskIndex, this.cs, (inc) => this.policy(inc));
    } catch (err) {
      this.reject(r.name, REJECT.BAD_COMMIT, String(err && err.message || err));
      await this.save(r);
      return;
    }
    if (res.actionTaken !== 'accept') {
      this.reject(r.name, REJECT.MEMBER_PROPOSAL, 'a commit with a member-made membership change');
      await this.save(r);
      return;
    }
    r.state = res.newState;
    if (r.state.groupActiveState.kind === 'removedFromGroup') {
      this.emit({ type: 'removed', room: r.name });
      await this.forget(r.name);
      return;
    }
    await this.save(r);
    this.emitEpoch(r, before, leaves(r.state.ratchetTree));
    await this.commitPending(r);
  }

  // onWelcome joins the group with the KeyPackage the Welcome names.
  async onWelcome(r, ev) {
    if (r.state && ev.epoch !== undefined && BigInt(ev.epoch) <= r.state.groupContext.epoch) return; // joined already
    const msg = decode(ev.welcome);
    if (!msg || msg.wireformat !== 'mls_welcome') {
      this.reject(r.name, REJECT.NOT_MLS, 'a Welcome that is not one');
      return;
    }
    let mine = null;
    for (const s of msg.welcome.secrets) {
      const row = await this.store.get(KPS, b64(s.newMember));
      if (row && row.owner === this.owner) {
        mine = row;
        break;
      }
    }
    if (!mine) return; // not for this device (or its KeyPackage is gone)
    const kp = decode(mine.pub);
    let st;
    try {
      st = await m.joinGroup(msg.welcome, kp.keyPackage, mine.priv, m.emptyPskIndex, this.cs, undefined, undefined, this.config);
    } catch (err) {
      this.reject(r.name, REJECT.BAD_COMMIT, 'cannot join: ' + String(err && err.message || err));
      return;
    }
    await this.store.del(KPS, mine.ref); // each KeyPackage is used once (RFC 9750 §5.1)
    if (r.groupId && !equal(r.groupId, st.groupContext.groupId)) {
      this.reject(r.name, REJECT.WRONG_GROUP, 'a Welcome into another group');
      return;
    }
    const ext = st.groupContext.extensions.find((e) => e.extensionType === 'external_senders');
    if (!ext || !this.externalKey || !equal(m.decodeExternalSender(ext.extensionData, 0)[0].signaturePublicKey, this.externalKey)) {
      this.reject(r.name, REJECT.BAD_COMMIT, 'a group whose external sender is not this server');
      return;
    }
    r.state = st;
    r.groupId = st.groupContext.groupId;
    r.pending = null;
    if (Number.isSafeInteger(ev.id) && ev.id > r.lastId) r.lastId = ev.id; // the Welcome's id is its commit's
    this.stats.joins++;
    await this.save(r);
    this.emit({ type: 'joined', room: r.name, epoch: Number(st.groupContext.epoch) });
    this.emitEpoch(r, [], leaves(st.ratchetTree));
    await this.replayEarly(r);
    await this.commitPending(r);
  }

  // onApp decrypts an application message and hands its payload to the page, with the
  // author MLS authenticated (the sender leaf's credential), never the server's `from`,
  // and live as handle was told (kept for a reload without it: a replay is never live).
  async onApp(r, ev, live = false) {
    if (Number.isSafeInteger(ev.id) && ev.id <= r.lastId) {
      const kept = r.plain.find((x) => x.id === ev.id);
      if (kept) this.emit({ ...kept, replayed: true });
      return;
    }
    if (!r.state) return this.keepEarly(r, ev);
    const msg = decode(ev.msg);
    if (!msg || msg.wireformat !== 'mls_private_message' || msg.privateMessage.contentType !== 'application') {
      this.reject(r.name, REJECT.NOT_MLS, 'not an application message');
      return;
    }
    const pm = msg.privateMessage;
    if (!equal(pm.groupId, r.state.groupContext.groupId)) {
      this.reject(r.name, REJECT.WRONG_GROUP, 'a message of another group');
      return;
    }
    if (ev.epoch !== undefined && BigInt(ev.epoch) !== pm.epoch) {
      this.reject(r.name, REJECT.WRONG_EPOCH, 'the server and the message disagree on the epoch');
      return;
    }
    // Which leaf sent it: 1.6.4 does not say (E2EE.md §1.2), so read the sender data
    // with the same key the library uses, then let the library verify the signature
    // against that leaf.
    const cur = pm.epoch === r.state.groupContext.epoch;
    const old = cur ? null : r.state.historicalReceiverData.get(pm.epoch);
    const sds = cur ? r.state.keySchedule.senderDataSecret : old && old.senderDataSecret;
    const tree = cur ? r.state.ratchetTree : old && old.ratchetTree;
    let leaf;
    let res;
    try {
      if (!sds) throw new Error('epoch too old');
      const sd = await m.decryptSenderData(pm, sds, this.cs);
      if (!sd) throw new Error('sender data');
      leaf = tree[sd.leafIndex * 2];
      res = await m.processPrivateMessage(r.state, pm, m.emptyPskIndex, this.cs, (inc) => this.policy(inc));
    } catch (err) {
      this.reject(r.name, REJECT.DECRYPT, String(err && err.message || err));
      return;
    }
    r.state = res.newState;
    this.fresh(r, ev);
    const id = leaf ? decodeIdentity(leaf.leaf.credential.identity) : null;
    let p = null;
    try {
      if (res.message.length <= MAX_BODY) p = JSON.parse(fromUtf8.decode(res.message));
    } catch (err) {
      p = null;
    }
    const msgId = p && typeof p.msg_id === 'string' ? unb64(p.msg_id) : null;
    if (!id || !p || p.v !== PAYLOAD_V || !msgId || msgId.length !== 16 || !Number.isSafeInteger(p.ts) ||
      !KINDS.has(p.kind) || (p.kind === 'file' ? p.file : p.body) === undefined) {
      await this.save(r);
      this.reject(r.name, REJECT.BAD_PAYLOAD, 'an encrypted payload this page does not understand');
      return;
    }
    if (r.seenSet.has(p.msg_id)) {
      await this.save(r);
      this.reject(r.name, REJECT.REPLAY, 'message ' + p.msg_id + ' was delivered before');
      return;
    }
    this.see(r, p.msg_id);
    const from = ev.from && typeof ev.from === 'object' ? ev.from : {};
    const mismatch = from.id !== id.user || (from.dev !== undefined && from.dev !== id.device);
    const out = {
      type: 'message', room: r.name, id: ev.id, ts: ev.ts, sent: p.ts, kind: p.kind, body: p.kind === 'file' ? p.file : p.body, msgId: p.msg_id,
      author: { user: id.user, device: id.device, urk: b64(id.urk) }, from: { id: from.id, name: from.name, dev: from.dev }, mismatch,
    };
    this.stats.accepted++;
    this.remember(r, out);
    await this.save(r);
    this.emit({ ...out, live });
    if (mismatch) this.reject(r.name, REJECT.FROM_MISMATCH, 'the server says ' + from.id + ', MLS says ' + id.user);
  }

  // see records a msg_id for the replay check, keeping the newest MAX_SEEN.
  see(r, id) {
    r.seen.push(id);
    r.seenSet.add(id);
    while (r.seen.length > MAX_SEEN) r.seenSet.delete(r.seen.shift());
  }

  // remember keeps a decrypted message for a reload, the newest MAX_PLAIN.
  remember(r, out) {
    if (!Number.isSafeInteger(out.id)) return;
    r.plain.push(out);
    while (r.plain.length > MAX_PLAIN) r.plain.shift();
  }

  // send encrypts a payload of kind with body into room (mls_app). It resolves with the
  // msg_id once the state that used the generation is saved and the frame is sent.
  async send(name, kind, body, tries = 0) {
    if (!this.leader) throw new Error('another tab holds this device\'s encryption: send from that tab');
    const r = this.rooms.get(name);
    if (!r || !r.state) throw new Error('this device is not a member of the room\'s group yet');
    return this.enqueue(r, async () => {
      const msgId = b64(crypto.getRandomValues(new Uint8Array(16)));
      const p = { v: PAYLOAD_V, msg_id: msgId, ts: Date.now(), kind, [kind === 'file' ? 'file' : 'body']: body };
      const res = await m.createApplicationMessage(r.state, utf8.encode(JSON.stringify(p)), this.cs);
      r.state = res.newState;
      this.see(r, msgId);
      await this.save(r);
      const msg = encode({ version: 'mls10', wireformat: 'mls_private_message', privateMessage: res.privateMessage });
      const me = { user: this.dev.user, device: this.dev.device };
      this.stats.sent++;
      // The sender cannot decrypt its own message (its generation is spent), and the hub
      // does not echo it: the ack says it is stored, and then it is shown.
      this.command({ type: 'mls_app', room: name, epoch: Number(r.state.groupContext.epoch), msg }, (ans) => this.enqueue(r, async () => {
        if (ans.type !== 'ack') {
          if (TRANSIENT.has(ans.code) && tries < SEND_RETRIES) {
            this.stats.retried = (this.stats.retried || 0) + 1;
            setTimeout(() => this.send(name, kind, body, tries + 1).catch(() =>
              this.emit({ type: 'send_refused', room: name, code: ans.code, msgId, kind, body })), SEND_RETRY_MS * (tries + 1));
            return;
          }
          this.emit({ type: 'send_refused', room: name, code: ans.code || '', msgId, kind, body });
          return;
        }
        const out = { type: 'message', room: name, id: ans.id, ts: Date.now(), sent: p.ts, kind, body, msgId, author: me, from: { id: me.user, dev: me.device }, mismatch: false, own: true };
        if (Number.isSafeInteger(ans.id) && ans.id > r.lastId) r.lastId = ans.id;
        this.remember(r, out);
        await this.save(r);
        this.emit(out);
      }));
      return msgId;
    });
  }
}

// makeSigner makes (or loads) the device's MLS signature key and its credential
// identity, certified by the device key.
// A stored key whose credential names another root key or certificate than the
// device's current ones (the device was linked, or its user reset their root key) is
// replaced: a credential must always chain to the root key on record.
async function makeSigner(cs, store, dev, owner) {
  const have = await store.get(SIGNERS, owner);
  if (have && !dev.dik) return have; // a device known only by its ids (tests): its stored key
  const cert = dev.cert instanceof Uint8Array ? dev.cert : new Uint8Array(await crypto.subtle.sign({ name: 'Ed25519' },
    dev.urk.privateKey, certBytes({ user: dev.user, device: dev.device, dik: dev.dikRaw, created: dev.created })));
  const id = have && decodeIdentity(have.identity);
  if (id && equal(id.urk, dev.urkRaw) && equal(id.cert, cert)) return have;
  const kp = await cs.signature.keygen();
  const identity = await makeIdentity(dev, cert, kp.publicKey);
  const row = { owner, pub: kp.publicKey, priv: kp.signKey, identity };
  await store.put(SIGNERS, row);
  return row;
}

// lead takes the device's Web Lock, so that exactly one tab drives its MLS state: a
// second tab would reuse generations (receivers drop them as replays) and fork the
// state. It resolves with true in the tab that holds the lock; a tab that does not
// gets false, and onLeader is called if it takes over later (the first tab closed).
export function lead(name, onLeader) {
  if (!navigator.locks) return Promise.resolve(true);
  return new Promise((resolve) => {
    navigator.locks.request(name, { ifAvailable: true }, (lock) => {
      if (!lock) {
        resolve(false);
        navigator.locks.request(name, () => {
          if (onLeader) onLeader();
          return new Promise(() => {});
        });
        return undefined;
      }
      resolve(true);
      return new Promise(() => {}); // held for the page's life
    });
  });
}

// openClient makes the engine for a device: opts = {dev (identity.js device), store,
// send(obj), onEvent(ev), trust(user, urkB64), leader (default true)}.
export async function openClient(opts) {
  const cs = await suite();
  const owner = opts.dev.user + '\n' + opts.dev.device;
  const signer = await makeSigner(cs, opts.store, opts.dev, owner);
  const c = new MlsClient({ ...opts, cs, signer });
  await c.restore();
  return c;
}

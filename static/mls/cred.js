// The MLS credential of a device (E2EE.md §4, PROTOCOL.md "End-to-end encrypted
// rooms"): a basic credential whose identity bytes carry the whole chain from the
// user's root key (URK) to the device's MLS signature key, so that every member can
// check, offline, that a leaf in the ratchet tree belongs to the user it names:
//
//   "mc1" ‖ f(user id) ‖ f(device id) ‖ urk[32] ‖ dik[32] ‖ u64(created) ‖ cert[64] ‖ leaf_sig[64]
//
// cert is the URK's signature over the device certificate bytes (sigbytes.js certBytes,
// the same certificate the key directory holds) and leaf_sig the DIK's signature over
// "modified-chat/v1/mls-leaf\0" ‖ f(user id) ‖ f(device id) ‖ mls_pub[32]. The MLS
// key itself is the leaf's signature_key, outside the identity, so one device key can
// certify a fresh MLS key without a new device certificate.
// This module never touches the DOM.

import { certBytes } from '../sigbytes.js';

const MAGIC = 'mc1';
const TAG_LEAF = 'modified-chat/v1/mls-leaf\0';
const KEY = 32; // Ed25519 public key length
const SIG = 64; // Ed25519 signature length
const MAX_ID = 256; // longest user or device id accepted inside a credential (bytes)
const ED25519 = { name: 'Ed25519' };

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder('utf-8', { fatal: true });

// concat joins byte arrays.
function concat(parts) {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// field is a string as its UTF-8 length (4 bytes big-endian) and bytes.
function field(s) {
  const b = utf8.encode(s);
  const n = new Uint8Array(4);
  new DataView(n.buffer).setUint32(0, b.length);
  return concat([n, b]);
}

// u64 is a non-negative safe integer as 8 bytes big-endian.
function u64(v) {
  const n = new Uint8Array(8);
  new DataView(n.buffer).setBigUint64(0, BigInt(v));
  return n;
}

// leafBytes are what the device key signs to certify an MLS signature key.
export function leafBytes(user, device, mlsPub) {
  if (!(mlsPub instanceof Uint8Array) || mlsPub.length !== KEY) throw new Error('the MLS key must be 32 bytes');
  return concat([utf8.encode(TAG_LEAF), field(user), field(device), mlsPub]);
}

// encodeIdentity builds the credential identity bytes of c = {user, device, urk, dik,
// created, cert, leafSig} (keys and signatures as raw bytes).
export function encodeIdentity(c) {
  for (const [name, v, len] of [['urk', c.urk, KEY], ['dik', c.dik, KEY], ['cert', c.cert, SIG], ['leafSig', c.leafSig, SIG]]) {
    if (!(v instanceof Uint8Array) || v.length !== len) throw new Error(name + ' must be ' + len + ' bytes');
  }
  return concat([utf8.encode(MAGIC), field(c.user), field(c.device), c.urk, c.dik, u64(c.created), c.cert, c.leafSig]);
}

// decodeIdentity parses credential identity bytes, strictly: the exact layout, no
// trailing bytes, ids of 1..MAX_ID bytes of valid UTF-8. It returns null for anything
// else, so a malformed credential is simply not a member's.
export function decodeIdentity(b) {
  if (!(b instanceof Uint8Array) || b.length < 3) return null;
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let at = 0;
  const take = (n) => {
    if (n < 0 || at + n > b.length) throw new Error('short');
    const out = b.subarray(at, at + n);
    at += n;
    return out;
  };
  const str = () => {
    if (at + 4 > b.length) throw new Error('short');
    const n = dv.getUint32(at);
    at += 4;
    if (n < 1 || n > MAX_ID) throw new Error('length');
    return fromUtf8.decode(take(n));
  };
  try {
    if (fromUtf8.decode(take(3)) !== MAGIC) return null;
    const user = str();
    const device = str();
    const urk = take(KEY).slice();
    const dik = take(KEY).slice();
    if (at + 8 > b.length) return null;
    const created = dv.getBigUint64(at);
    at += 8;
    if (created > BigInt(Number.MAX_SAFE_INTEGER)) return null;
    const cert = take(SIG).slice();
    const leafSig = take(SIG).slice();
    if (at !== b.length) return null;
    return { user, device, urk, dik, created: Number(created), cert, leafSig };
  } catch (err) {
    return null;
  }
}

// verify reports whether a raw Ed25519 public key signed bytes; malformed input is false.
async function verify(pub, sig, bytes) {
  try {
    const key = await crypto.subtle.importKey('raw', pub, ED25519, false, ['verify']);
    return await crypto.subtle.verify(ED25519, key, sig, bytes);
  } catch (err) {
    return false;
  }
}

// checkChain verifies a decoded identity against the leaf's MLS signature key: the URK
// certified the DIK for this user and device, and the DIK certified the MLS key. It
// says nothing about whether the URK is the user's real one: that is the pin's job.
export async function checkChain(id, mlsPub) {
  if (!id || !(mlsPub instanceof Uint8Array) || mlsPub.length !== KEY) return false;
  let cert;
  try {
    cert = certBytes({ user: id.user, device: id.device, dik: id.dik, created: id.created });
  } catch (err) {
    return false;
  }
  if (!(await verify(id.urk, id.cert, cert))) return false;
  return verify(id.dik, id.leafSig, leafBytes(id.user, id.device, mlsPub));
}

// makeIdentity certifies an MLS signature key (raw public bytes) with this profile's
// device (identity.js loadDevice: non-extractable DIK and URK) and returns the identity
// bytes. cert is the device certificate the directory holds (from registration).
export async function makeIdentity(dev, cert, mlsPub) {
  const leafSig = new Uint8Array(await crypto.subtle.sign(ED25519, dev.dik.privateKey,
    leafBytes(dev.user, dev.device, mlsPub)));
  return encodeIdentity({
    user: dev.user, device: dev.device, urk: dev.urkRaw, dik: dev.dikRaw, created: dev.created, cert, leafSig,
  });
}

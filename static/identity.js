// This browser profile's signing identity and the keys it trusts, kept in IndexedDB.
// Each signed-in user gets a device here: a random device id and an Ed25519 device key
// (DIK), and on the user's first device also their root key (URK), which certifies the
// DIK. Private keys are made non-extractable by WebCrypto: script can sign with them
// but never read them, not even this page's. Other users' root keys are pinned on first
// use (TOFU); a different one later is a key change the page must warn about.
// This module never touches the DOM.

import { database } from './idb.js';
import { b64, certBytes, fileBytes, sayBytes, unb64 } from './sigbytes.js';

const DB_NAME = 'modified-chat';
const DB_VERSION = 1;
const DEVICES = 'devices'; // user id -> {user, device, dik, urk, dikRaw, urkRaw, created}
const PINS = 'pins'; // viewer id + '\n' + user id -> {key, urk (base64), verified}
const ED25519 = { name: 'Ed25519' };

// tx runs one request on a store of the page's database and resolves with its result.
const tx = database(DB_NAME, DB_VERSION, (d) => {
  if (!d.objectStoreNames.contains(DEVICES)) d.createObjectStore(DEVICES, { keyPath: 'user' });
  if (!d.objectStoreNames.contains(PINS)) d.createObjectStore(PINS, { keyPath: 'key' });
});

// supported reports whether this browser can make and use Ed25519 keys.
export async function supported() {
  try {
    if (!globalThis.crypto || !crypto.subtle || !globalThis.indexedDB) return false;
    const k = await crypto.subtle.generateKey(ED25519, false, ['sign', 'verify']);
    const sig = await crypto.subtle.sign(ED25519, k.privateKey, new Uint8Array(1));
    return await crypto.subtle.verify(ED25519, k.publicKey, sig, new Uint8Array(1));
  } catch (err) {
    return false;
  }
}

// newKey makes a non-extractable Ed25519 key pair and returns it with its raw public key.
async function newKey() {
  const pair = await crypto.subtle.generateKey(ED25519, false, ['sign', 'verify']);
  const raw = new Uint8Array(await crypto.subtle.exportKey('raw', pair.publicKey));
  return { pair, raw };
}

// randomID makes a device id: 16 random bytes, base64url without padding.
function randomID() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return b64(b).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

// loadDevice returns this profile's device for user, making it (and a root key) the
// first time. The same device and keys come back after a reload.
export function loadDevice(user) {
  // Two modules ask at every welcome (signing.js, e2ee.js): on a fresh profile both
  // would make a device, and the page would sign with one and bind MLS to the other.
  // One load per user, shared: a failed one is forgotten so the next call retries.
  let p = loadingDevice.get(user);
  if (!p) {
    p = openDevice(user);
    p.catch(() => loadingDevice.delete(user));
    loadingDevice.set(user, p);
  }
  return p;
}

// loadingDevice holds each user's device load (see loadDevice).
const loadingDevice = new Map();

// openDevice reads the device of user, or makes it.
async function openDevice(user) {
  const have = await tx(DEVICES, 'readonly', (s) => s.get(user));
  if (have) return have;
  const dik = await newKey();
  const urk = await newKey();
  const dev = {
    user,
    device: randomID(),
    dik: dik.pair,
    urk: urk.pair,
    dikRaw: dik.raw,
    urkRaw: urk.raw,
    created: Date.now(),
    lastCounter: 0,
  };
  await tx(DEVICES, 'readwrite', (s) => s.put(dev));
  return dev;
}

// registration is the command that (re)registers dev: register_device, its own root
// key certifying its device key, or, for a device another device linked (it holds no
// root key), certify_device with the certificate it was given.
export async function registration(dev) {
  if (dev.linked) {
    return { type: 'certify_device', device: dev.device, dik: b64(dev.dikRaw), created: dev.created, cert: dev.cert };
  }
  const cert = await crypto.subtle.sign(ED25519, dev.urk.privateKey,
    certBytes({ user: dev.user, device: dev.device, dik: dev.dikRaw, created: dev.created }));
  return {
    type: 'register_device',
    urk: b64(dev.urkRaw),
    device: dev.device,
    dik: b64(dev.dikRaw),
    created: dev.created,
    cert: b64(new Uint8Array(cert)),
  };
}

// resetRegistration is the reset_identity command: dev's own root key replaces the
// user's, and certifies dev.
export async function resetRegistration(dev) {
  const reg = await registration(Object.assign({}, dev, { linked: false }));
  reg.type = 'reset_identity';
  return reg;
}

// linkRequest is the link_request command for dev: its public key, for a device of
// the same user that holds the root key to certify.
export function linkRequest(dev) {
  return { type: 'link_request', device: dev.device, dik: b64(dev.dikRaw), created: dev.created };
}

// canCertify reports whether dev holds the root key on record (urk, base64): only then
// can it certify another device.
export function canCertify(dev, urk) {
  return !!dev && !dev.linked && !!dev.urk && b64(dev.urkRaw) === urk;
}

// certifyLink is the certify_device command for a link request {device, dik, created}
// of user, signed by dev's root key. The caller has compared the link codes.
export async function certifyLink(dev, req) {
  const dik = unb64(req.dik);
  if (!dik || dik.length !== 32 || !Number.isSafeInteger(req.created)) throw new Error('malformed link request');
  const cert = await crypto.subtle.sign(ED25519, dev.urk.privateKey,
    certBytes({ user: dev.user, device: req.device, dik, created: req.created }));
  return { type: 'certify_device', device: req.device, dik: req.dik, created: req.created, cert: b64(new Uint8Array(cert)) };
}

// markLinked records that dev was certified by the user's root key (urk, base64) with
// cert: from now on it registers with that certificate, and its own root key, which
// the directory never took, is dropped.
export async function markLinked(dev, urk, cert) {
  dev.linked = true;
  dev.cert = cert;
  dev.rootUrk = urk;
  dev.urk = null;
  dev.urkRaw = null;
  await tx(DEVICES, 'readwrite', (s) => s.put(dev));
}

// markRoot records that dev's own root key is now the user's (after a reset).
export async function markRoot(dev) {
  if (!dev.linked) return;
  const urk = await newKey();
  Object.assign(dev, { linked: false, cert: null, rootUrk: null, urk: urk.pair, urkRaw: urk.raw });
  await tx(DEVICES, 'readwrite', (s) => s.put(dev));
}

// nextCounter gives a counter above every earlier one of this device, without a
// database write per message: the clock in microseconds, or one more than the last
// one this page used. Two tabs sending in the same microsecond would collide; the
// server refuses the second (`replayed`) rather than deliver a duplicate.
function nextCounter(dev) {
  dev.lastCounter = Math.max((dev.lastCounter || 0) + 1, Date.now() * 1000);
  return dev.lastCounter;
}

// signSay returns the `sig` field for a say of text (already cleaned) in room.
export async function signSay(dev, room, text) {
  const msgId = crypto.getRandomValues(new Uint8Array(16));
  const m = { room, user: dev.user, device: dev.device, counter: nextCounter(dev), msgId, ts: Date.now(), text };
  const s = await crypto.subtle.sign(ED25519, dev.dik.privateKey, sayBytes(m));
  return { device: dev.device, counter: m.counter, msg_id: b64(msgId), ts: m.ts, signature: b64(new Uint8Array(s)) };
}

// sha256 is the SHA-256 digest of bytes.
export async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

// signFile returns the `sig` field for a file announcement in room: its name, declared
// type and the SHA-256 of its bytes.
export async function signFile(dev, room, name, mime, bytes) {
  const msgId = crypto.getRandomValues(new Uint8Array(16));
  const m = { room, user: dev.user, device: dev.device, counter: nextCounter(dev), msgId, ts: Date.now(), name, mime, sha256: await sha256(bytes) };
  const s = await crypto.subtle.sign(ED25519, dev.dik.privateKey, fileBytes(m));
  return { device: dev.device, counter: m.counter, msg_id: b64(msgId), ts: m.ts, signature: b64(new Uint8Array(s)) };
}

const MAX_KEYS = 1000; // imported public keys kept, so each is imported once
const imported = new Map(); // base64 of a raw public key -> CryptoKey

// publicKey imports a raw Ed25519 public key, once.
async function publicKey(raw) {
  const id = b64(raw);
  let key = imported.get(id);
  if (!key) {
    key = await crypto.subtle.importKey('raw', raw, ED25519, false, ['verify']);
    if (imported.size >= MAX_KEYS) imported.delete(imported.keys().next().value);
    imported.set(id, key);
  }
  return key;
}

// verifyRaw checks an Ed25519 signature with a raw public key; malformed input is false.
async function verifyRaw(pubRaw, sig, bytes) {
  if (!pubRaw || pubRaw.length !== 32 || !sig || sig.length !== 64) return false;
  try {
    return await crypto.subtle.verify(ED25519, await publicKey(pubRaw), sig, bytes);
  } catch (err) {
    return false;
  }
}

// checkDevice verifies that urk (raw) certified a device record from the directory
// for user, and returns the device key (raw) or null.
export async function checkDevice(urkRaw, user, rec) {
  const dik = unb64(rec && rec.dik);
  const cert = unb64(rec && rec.cert);
  if (!dik || dik.length !== 32 || typeof rec.device !== 'string' || typeof rec.created !== 'number') return null;
  const ok = await verifyRaw(urkRaw, cert, certBytes({ user, device: rec.device, dik, created: rec.created }));
  return ok ? dik : null;
}

// checkSay verifies a received message's signature with a device key (raw), for the
// room it arrived in and the user the server names as its sender.
export async function checkSay(dikRaw, room, user, text, sig) {
  const msgId = unb64(sig.msg_id);
  const s = unb64(sig.signature);
  if (!msgId || msgId.length !== 16 || !Number.isSafeInteger(sig.counter) || !Number.isSafeInteger(sig.ts) ||
      sig.counter < 1 || sig.ts < 0 || typeof sig.device !== 'string') return false;
  const bytes = sayBytes({ room, user, device: sig.device, counter: sig.counter, msgId, ts: sig.ts, text });
  return verifyRaw(dikRaw, s, bytes);
}

// checkFile verifies a received file's signature with a device key (raw): for the room
// it arrived in, the sender the server names, its name and type, and the SHA-256 of the
// bytes that actually arrived (digest).
export async function checkFile(dikRaw, room, user, name, mime, digest, sig) {
  const msgId = unb64(sig.msg_id);
  const s = unb64(sig.signature);
  if (!msgId || msgId.length !== 16 || !Number.isSafeInteger(sig.counter) || !Number.isSafeInteger(sig.ts) ||
      sig.counter < 1 || sig.ts < 0 || typeof sig.device !== 'string' || !(digest instanceof Uint8Array)) return false;
  const bytes = fileBytes({ room, user, device: sig.device, counter: sig.counter, msgId, ts: sig.ts, name, mime, sha256: digest });
  return verifyRaw(dikRaw, s, bytes);
}

// pin returns the root key viewer pinned for user, pinning urk (base64) when there is
// none yet (trust on first use). changed is true when a different key is pinned.
export async function pin(viewer, user, urk) {
  const key = viewer + '\n' + user;
  let have = pinned.get(key);
  if (!have) have = await tx(PINS, 'readonly', (s) => s.get(key));
  if (!have) {
    have = { key, urk, verified: false };
    await tx(PINS, 'readwrite', (s) => s.put(have));
  }
  remember(have);
  return { urk: have.urk, changed: have.urk !== urk, verified: !!have.verified };
}

const MAX_PINS = 1000; // pins kept in memory, so a busy room does not read IndexedDB per message
const pinned = new Map(); // viewer + '\n' + user -> the stored pin

// remember keeps a pin in memory.
function remember(p) {
  pinned.delete(p.key);
  if (pinned.size >= MAX_PINS) pinned.delete(pinned.keys().next().value);
  pinned.set(p.key, p);
}

// acceptKey replaces the pinned root key of user with urk, after the viewer accepted
// the key change; a verification made for the old key does not carry over.
export async function acceptKey(viewer, user, urk) {
  const p = { key: viewer + '\n' + user, urk, verified: false };
  await tx(PINS, 'readwrite', (s) => s.put(p));
  remember(p);
}

const SAFETY_ITERATIONS = 5200; // as Signal's fingerprints: slows down a search for a colliding key

// fingerprint is one user's half of a safety number: 30 digits from iterated SHA-512
// over their root key and user id.
async function fingerprint(user, urkRaw) {
  return digits(await iteratedHash(new TextEncoder().encode(user), urkRaw), 30);
}

// iteratedHash is Signal's fingerprint hash: SHA-512 over a version, the key and an
// identifier, then 5199 more rounds over the previous hash and the key.
async function iteratedHash(id, keyRaw) {
  let h = new Uint8Array(2 + keyRaw.length + id.length);
  h.set(keyRaw, 2);
  h.set(id, 2 + keyRaw.length);
  const buf = new Uint8Array(64 + keyRaw.length);
  buf.set(keyRaw, 64);
  h = new Uint8Array(await crypto.subtle.digest('SHA-512', h));
  for (let i = 1; i < SAFETY_ITERATIONS; i++) {
    buf.set(h, 0);
    h = new Uint8Array(await crypto.subtle.digest('SHA-512', buf));
  }
  return h;
}

// digits turns a hash into n decimal digits (n a multiple of 5), five from each 5 bytes.
function digits(h, n) {
  let out = '';
  for (let i = 0; i < n; i += 5) {
    let v = 0;
    for (let j = 0; j < 5; j++) v = v * 256 + h[i + j];
    out += String(v % 100000).padStart(5, '0');
  }
  return out;
}

const LINK_DIGITS = 25; // about 83 bits: a server cannot find a second key with the same code

// linkCode is the code a new device shows and the user types into the device that
// certifies it: 25 digits committing to exactly what the certificate will cover
// (user, device id, device key, created), made like a safety number's half with the
// certificate bytes as the identifier and the device key as the key.
export async function linkCode(user, device, dikRaw, created) {
  const id = certBytes({ user, device, dik: dikRaw, created });
  return digits(await iteratedHash(id, dikRaw), LINK_DIGITS).replace(/(\d{5})(?=\d)/g, '$1 ');
}

// safetyNumber is the 60-digit number two users compare (in person, on a call) to know
// that each sees the other's real root key: both halves, the smaller first, so both
// see the same number.
export async function safetyNumber(userA, urkA, userB, urkB) {
  const parts = [await fingerprint(userA, urkA), await fingerprint(userB, urkB)].sort();
  return (parts[0] + parts[1]).replace(/(\d{5})(?=\d)/g, '$1 ');
}

// markVerified records that viewer compared safety numbers with user for the pinned key.
export async function markVerified(viewer, user, urk) {
  const p = { key: viewer + '\n' + user, urk, verified: true };
  await tx(PINS, 'readwrite', (s) => s.put(p));
  remember(p);
}

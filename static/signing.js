// Signed messages in the page: this device signs every say once the server has its
// key, and every received message is checked against the sender's root key as this
// browser first saw it (trust on first use). Each message shows one badge: verified
// (chain valid, and the viewer compared safety numbers with the sender), signed (chain
// valid), invalid (a signature, key or replay check failed: shown as not from that
// user), unsigned (a client without keys) or, when the directory did not
// answer, not checked. A sender whose root key changed is shown invalid, with a
// warning, until the viewer accepts the new key.
// (Security rule: see app.js.)

import { make, ui } from './dom.js';
import { state, str } from './state.js';
import { sendJSON } from './connection.js';
import { entryNode, renderMessages } from './messages.js';
import { notify } from './notices.js';
import {
  acceptKey, checkDevice, checkFile, checkSay, loadDevice, markLinked, markRoot, markVerified, pin, registration,
  resetRegistration, safetyNumber, sha256, signFile, signSay, supported,
} from './identity.js';
import { linkAnswer, offerLink, onOtherDevices, onOwnDeviceAdded, onOwnDeviceRevoked, onOwnDevices } from './devices.js';
import { unb64 } from './sigbytes.js';
import { qrSvg } from './qr.js';

const MAX_USERS = 500; // key records cached
const MAX_MSG_IDS = 5000; // message ids remembered to spot a replay
const KEY_WAIT_MS = 10000; // how long a check waits for a `devices` answer
const ASK_BATCH_MS = 50; // users asked about within this long share one `devices`
const ASK_MAX_USERS = 50; // the server's limit per `devices`

// sig is the signing state: this device, whether the server accepted it, what is
// known of other users' keys, and which message ids were seen where.
const sig = {
  status: 'off', // off, unsupported, registering, on, refused, unlinked (waiting to be linked), revoked
  dev: null,
  queue: Promise.resolve(),
  users: new Map(), // user id -> {rec, waiters: [], asked}
  msgIds: new Map(), // msg_id -> 'room\nid' of the first message that carried it
  changed: new Set(), // users whose root key differs from the pinned one
  certified: new Map(), // user, root key, device record -> device key, once its certificate checked
  refs: 0,
  ask: new Set(), // users to ask the directory about in the next `devices`
  askTimer: 0,
};

// setStatus records the signing state on the body, where tests and styles read it.
function setStatus(s) {
  sig.status = s;
  document.body.dataset.signing = s;
}

// startSigning runs on every welcome: it loads (or makes) this profile's device for
// the signed-in user and registers it, which the server acknowledges without a change
// when it already knows the device.
export async function startSigning() {
  const me = state.me;
  if (!me || !me.id) return;
  if (!(await supported())) {
    setStatus('unsupported');
    notify('signing', 'This browser cannot sign messages (no Ed25519 in WebCrypto); yours are sent unsigned.');
    return;
  }
  try {
    const dev = await loadDevice(me.id);
    if (state.me !== me) return; // another welcome came first
    sig.dev = dev;
    setStatus('registering');
    sendJSON(Object.assign(await registration(dev), { ref: 'k' + ++sig.refs }));
  } catch (err) {
    setStatus('unsupported');
    notify('signing', 'This browser could not store its signing key; your messages are sent unsigned.');
  }
}

// signingAnswer takes the ack or error for a registration; true when it was one. A
// registration refused because the user already has another root key makes this a new
// device of theirs, which asks to be linked (devices.js).
export function signingAnswer(ev) {
  if (linkAnswer(ev)) return true;
  if (typeof ev.ref !== 'string' || !ev.ref.startsWith('k')) return false;
  if (ev.type === 'ack') {
    setStatus('on');
  } else if (ev.code === 'urk_mismatch' && sig.dev && !sig.dev.linked && sig.status === 'registering') {
    setStatus('unlinked');
    offerLink(sig.dev);
  } else {
    setStatus('refused');
    notify('signing', 'This browser is not a certified device of yours (' + str(ev.code) + '); your messages are sent unsigned.');
  }
  return true;
}

// signingDevice is this profile's device for the signed-in user (null before it loaded).
export function signingDevice() {
  return sig.dev;
}

// signingLinked records that another device certified this one under the user's root
// key (urk, base64) with cert, and starts signing.
export async function signingLinked(dev, urk, cert) {
  await markLinked(dev, urk, cert);
  if (sig.dev === dev) setStatus('on');
}

// signingRevoked stops signing: the directory revoked this device.
export function signingRevoked() {
  setStatus('revoked');
}

// signingReset replaces the user's root key with a new one made here (reset_identity):
// every other device of theirs is revoked and contacts see a key change.
export async function signingReset() {
  const dev = sig.dev;
  if (!dev) return;
  await markRoot(dev);
  setStatus('registering');
  sendJSON(Object.assign(await resetRegistration(dev), { ref: 'k' + ++sig.refs }));
}

// cleanForSigning applies the server's cleaning (PROTOCOL.md, "Text cleaning") so that
// the signed text is exactly the text delivered: the server refuses signed text it
// would change.
export function cleanForSigning(text) {
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/g, '').trim();
}

// sendSigned sends a say, signed when this device is registered. While a member of
// the room has a root key change the viewer has not accepted, nothing is sent there:
// the warning blocks, so nobody writes to an impersonator without deciding to. Signing is
// asynchronous, so says go through one queue and leave in the order they were made.
// It returns false when it refused to send (the caller keeps the text).
export function sendSigned(msg, failed) {
  const r = state.rooms.get(msg.room);
  const blocked = r ? Array.from(sig.changed).filter((u) => r.members.has(u)) : [];
  if (blocked.length > 0) {
    notify('key-blocked', 'Not sent: ' + blocked.map(nameOf).join(', ') + ' in this room changed their security key. Accept or check the new key first.');
    return false;
  }
  if (sig.status !== 'on') {
    if (!sendJSON(msg)) failed();
    return true;
  }
  const dev = sig.dev;
  sig.queue = sig.queue.then(async () => {
    msg.text = cleanForSigning(msg.text);
    msg.sig = await signSay(dev, msg.room, msg.text);
    if (!sendJSON(msg)) failed();
  }).catch(() => failed());
  return true;
}

// sendSignedFile sends a file announcement signed (over the file's name, type and the
// SHA-256 of its bytes) when this device is registered, through the same queue as
// says, so counters reach the server in order; send puts the announcement and the
// bytes on the wire together.
export function sendSignedFile(ann, buf, send) {
  if (sig.status !== 'on') {
    send(ann);
    return;
  }
  const dev = sig.dev;
  sig.queue = sig.queue.then(async () => {
    ann.sig = await signFile(dev, ann.room, ann.name, ann.mime, new Uint8Array(buf));
    send(ann);
  }).catch(() => notify('bad_file', 'The file could not be signed; it was not sent.'));
}

// keysOf returns (asking the server once) a user's key record: {urk, devices}.
function keysOf(user, fresh) {
  let k = sig.users.get(user);
  if (!k) {
    if (sig.users.size >= MAX_USERS) sig.users.delete(sig.users.keys().next().value);
    k = { rec: null, waiters: [], asked: false };
    sig.users.set(user, k);
  }
  if (k.rec && !fresh) return Promise.resolve(k.rec);
  return new Promise((resolve) => {
    k.waiters.push(resolve);
    if (!k.asked) {
      k.asked = true;
      sig.ask.add(user);
      if (!sig.askTimer) sig.askTimer = setTimeout(askKeys, ASK_BATCH_MS);
    }
    setTimeout(() => resolve(null), KEY_WAIT_MS);
  });
}

// askKeys sends the users waiting for their keys in one `devices` (at most
// ASK_MAX_USERS a message): a room full of senders costs one message, not one each.
function askKeys() {
  sig.askTimer = 0;
  const users = Array.from(sig.ask).slice(0, ASK_MAX_USERS);
  for (const u of users) sig.ask.delete(u);
  if (users.length > 0 && !sendJSON({ type: 'devices', users })) {
    for (const u of users) {
      const k = sig.users.get(u);
      if (k) k.asked = false;
    }
  }
  if (sig.ask.size > 0) sig.askTimer = setTimeout(askKeys, ASK_BATCH_MS);
}

// onDevices stores a user's record from the directory and wakes the checks waiting for it.
export function onDevices(ev) {
  const user = str(ev.user);
  if (state.me && user === state.me.id) onOwnDevices(ev);
  else onOtherDevices(ev);
  const k = sig.users.get(user);
  if (!k) return;
  k.rec = { urk: str(ev.urk), devices: Array.isArray(ev.devices) ? ev.devices : [] };
  k.asked = false;
  const waiters = k.waiters;
  k.waiters = [];
  for (const w of waiters) w(k.rec);
}

// onKeysChanged forgets a user's cached record after device_added, device_revoked or
// key_changed, so the next check asks the directory again.
// key_changed also warns at once when the new root key is not the pinned one.
export function onKeysChanged(ev) {
  const user = str(ev.user);
  if (ev.type === 'device_added') onOwnDeviceAdded(ev);
  if (ev.type === 'device_revoked') onOwnDeviceRevoked(ev);
  const k = sig.users.get(user);
  if (k) k.rec = null;
  if (ev.type !== 'key_changed' || !state.me || !user || typeof ev.urk !== 'string') return;
  const me = state.me;
  pin(me.id, user, ev.urk).then((p) => {
    if (p.changed && state.me === me) keyChanged(user, nameOf(user), ev.urk);
  });
}

// nameOf finds a user's display name in the rooms this page knows, else their id.
function nameOf(user) {
  for (const r of state.rooms.values()) {
    const m = r.members.get(user);
    if (m && m.name) return m.name;
  }
  return user;
}

// checkEntry gives a new message entry its badge: unsigned at once, or checking while
// its signature is verified in the background.
export function checkEntry(r, entry, ev) {
  if (!ev.sig || typeof ev.sig !== 'object') {
    entry.sig = 'unsigned';
    return;
  }
  entry.sig = 'checking';
  const done = (v) => {
    entry.sig = v;
    redraw(r, entry);
  };
  const s = ev.sig;
  if (!entry.file) {
    verify(r.name, entry, s, (dik) => checkSay(dik, r.name, entry.from.id, entry.text, s)).then(done);
    return;
  }
  // A file is checked against the bytes that arrived: now for a live one, once
  // fetched for one from history (files.js calls onData before showing it).
  const f = entry.file;
  const check = (data) => {
    const bytes = unb64(data);
    if (!bytes) return done('invalid');
    sha256(bytes).then((digest) => verify(r.name, entry, s, (dik) => checkFile(dik, r.name, entry.from.id, f.name, f.mime, digest, s))).then(done);
  };
  if (f.data) check(f.data);
  else f.onData = check;
}

// verify decides a signed message's badge: the sender's device must be certified by
// the root key this browser pinned for them, the signature must cover this room, this
// sender and this text, and its message id must not have been seen on another message.
async function verify(room, entry, s, check) {
  const user = entry.from.id;
  const where = room + '\n' + entry.id;
  const msgId = str(s.msg_id);
  const seen = sig.msgIds.get(msgId);
  if (seen !== undefined && seen !== where) return 'invalid';
  if (seen === undefined) {
    if (sig.msgIds.size >= MAX_MSG_IDS) sig.msgIds.delete(sig.msgIds.keys().next().value);
    sig.msgIds.set(msgId, where);
  }
  let rec = await keysOf(user, false);
  let dev = rec && rec.devices.find((d) => d && d.device === s.device);
  if (rec && !dev) {
    rec = await keysOf(user, true); // a device added since we asked
    dev = rec && rec.devices.find((d) => d && d.device === s.device);
  }
  if (!rec) return 'unknown'; // no answer: not checked, which is not the same as invalid
  if (!dev || !rec.urk) return 'invalid';
  const pinned = await pin(state.me.id, user, rec.urk);
  if (pinned.changed) {
    keyChanged(user, entry.from.name, rec.urk);
    return 'invalid';
  }
  const certified = user + '\n' + pinned.urk + '\n' + dev.device + '\n' + str(dev.dik) + '\n' + str(dev.cert);
  let dik = sig.certified.get(certified);
  if (!dik) {
    dik = await checkDevice(unb64(pinned.urk), user, dev);
    if (!dik) return 'invalid';
    if (sig.certified.size >= MAX_USERS) sig.certified.delete(sig.certified.keys().next().value);
    sig.certified.set(certified, dik);
  }
  if (!(await check(dik))) return 'invalid';
  return pinned.verified ? 'verified' : 'signed';
}

// keyChanged warns, until the viewer accepts it, that a user's root key is not the one
// this browser pinned: the server (or someone who took over the account) may be
// impersonating them.
function keyChanged(user, name, urk) {
  sig.changed.add(user);
  document.body.dataset.keyChanged = Array.from(sig.changed).join(' ');
  notify('key-changed:' + user, name + '\u2019s security key changed. Messages signed with the new key are shown as invalid until you accept it; check with ' + name + ' first.',
    24 * 3600 * 1000, {
      label: 'Accept the new key',
      run: async () => {
        await acceptKey(state.me.id, user, urk);
        sig.changed.delete(user);
        document.body.dataset.keyChanged = Array.from(sig.changed).join(' ');
      },
    });
}

// redraw replaces a shown message's node after its badge changed.
function redraw(r, entry) {
  if (r.name !== state.current) return;
  const i = r.messages.indexOf(entry);
  const node = typeof entry.id === 'number' ? ui.messages.querySelector('[data-id="' + entry.id + '"]') : null;
  if (i < 0 || !node) return;
  node.replaceWith(entryNode(entry, r.messages[i - 1]));
}

// sigBadge is the badge a message shows; an invalid one also says plainly that the
// message may not be from the user named.
export function sigBadge(entry) {
  const kind = entry.sig || 'unsigned';
  const label = {
    verified: '✓ verified',
    signed: 'signed',
    unsigned: 'unsigned',
    checking: 'checking…',
    unknown: 'not checked: keys unavailable',
    invalid: '⚠ signature invalid: may not be from ' + entry.from.name,
  }[kind];
  const mine = state.me && entry.from.id === state.me.id;
  const b = make(kind === 'signed' && !mine ? 'button' : 'span', 'msg-sig msg-sig-' + kind, label);
  b.dataset.sig = kind;
  if (b.tagName === 'BUTTON') {
    b.type = 'button';
    b.title = 'Compare safety numbers with ' + entry.from.name;
    b.addEventListener('click', () => showSafetyNumber(entry.from));
  }
  return b;
}

// showSafetyNumber shows the safety number of the viewer and a sender, with an action
// to mark the sender verified once both compared it out of band.
async function showSafetyNumber(u) {
  const me = state.me;
  const mine = sig.users.get(me.id);
  const theirs = sig.users.get(u.id);
  const myRec = (mine && mine.rec) || await keysOf(me.id, true);
  const their = await pin(me.id, u.id, theirs && theirs.rec ? theirs.rec.urk : '');
  if (!myRec || !myRec.urk || !their.urk) return;
  const number = await safetyNumber(me.id, unb64(myRec.urk), u.id, unb64(their.urk));
  const box = notify('safety:' + u.id, 'Safety number with ' + u.name + ': ' + number + '. Compare it with ' + u.name +
    ' in person or on a call; if it is the same on both screens, mark them verified.', 5 * 60 * 1000, {
    label: 'Mark as verified',
    run: async () => {
      await markVerified(me.id, u.id, their.urk);
      for (const r of state.rooms.values()) {
        for (const e of r.messages) if (e.sig === 'signed' && e.from.id === u.id) e.sig = 'verified';
      }
      renderMessages();
    },
  });
  showSafetyQR(box, number, u);
}

// showSafetyQR puts the safety number's QR code beside its digits in the toast,
// replacing the one an earlier click drew. It carries exactly the 60 digits (no
// spaces), so a scanner on the other screen reads the same number the text shows.
function showSafetyQR(box, number, u) {
  const old = box.querySelector('.safety-qr');
  if (old) old.remove();
  box.classList.add('notice-safety');
  const qr = qrSvg(number.replace(/ /g, ''), 'QR code of the safety number with ' + u.name);
  qr.classList.add('safety-qr');
  box.querySelector('.notice-text').after(qr);
}

// End-to-end encrypted rooms in the page: the glue between the chat (connection,
// rooms, timeline) and this device's MLS engine (mls/client.js). The server's MLS
// events go to the engine; what it decrypts becomes timeline entries whose author is
// the MLS sender leaf, with the signed-message badges; every refusal is counted
// (window.__mlsStats) and shown, as a notice and as a line in the room. The room
// header says the room is end-to-end encrypted, shows its room code (the epoch
// authenticator as digits) and the devices in its ratchet tree.
// (Security rule: see app.js.)

import { make, ui } from './dom.js';
import { state } from './state.js';
import { sendJSON } from './connection.js';
import { pushEntry, renderMessages, trimRoom } from './messages.js';
import { notify } from './notices.js';
import { loadDevice, pin, registration } from './identity.js';
import { unb64 } from './sigbytes.js';
import { lead, openClient, supported } from './mls/client.js';
import { idbStore, persist } from './mls/store.js';
import { arrived, noteArrival } from './unread.js';
import { sealedFile, sendE2EEFile } from './e2eefiles.js';

const BIND_TRIES = 5; // kp_upload retries while register_device is still being stored
const BIND_RETRY_MS = 1000;

// REASONS says in words why a message or change was refused, per REJECT reason.
const REASONS = {
  decrypt_failed: 'a message that does not decrypt (altered, forged or not for this room) was dropped',
  replayed: 'a message delivered before was delivered again and dropped',
  bad_payload: 'a message this page cannot read was dropped',
  wrong_epoch: 'a message whose epoch the server misstated was dropped',
  wrong_group: 'a message of another room was dropped',
  from_mismatch: 'the server named another sender than the one who encrypted a message',
  member_proposal: 'a member tried to change who is in the room: refused (only the server may)',
  bad_proposal: 'a membership change not signed by this server was refused',
  untrusted_device: 'a device not certified by its owner\'s root key was not let in',
  bad_commit: 'a change of the room\'s keys was refused',
  not_mls: 'malformed encrypted data was dropped',
};

const e2ee = {
  client: null, // MlsClient of the signed-in user's device
  opening: null, // promise of the client being made
  user: '', // whose client it is
  hub: null, // welcome.e2ee
  leader: false, // this tab holds the device's Web Lock
  unavailable: '', // why E2EE cannot run here ('' when it can)
};

// stats is the test-visible counter: what the engine accepted, refused (by reason),
// sent and committed.
window.__mlsStats = { accepted: 0, rejected: {}, rejectedTotal: 0, sent: 0, commits: 0, stale: 0, joins: 0, kps: 0 };

// isE2EE tells whether a joined room is end-to-end encrypted.
export function isE2EE(name) {
  const r = state.rooms.get(name);
  return !!(r && r.e2ee);
}

// start runs at every welcome: it opens (once per user) the device's MLS engine and
// binds the connection to the device (kp_upload), topping up its KeyPackages.
export function startE2EE(ev) {
  e2ee.hub = ev.e2ee && typeof ev.e2ee === 'object' ? ev.e2ee : null;
  if (!e2ee.hub || !state.me) return;
  if (e2ee.client && e2ee.user === state.me.id) {
    e2ee.client.setHub(e2ee.hub);
    bind(0);
    return;
  }
  e2ee.user = state.me.id;
  e2ee.client = null;
  e2ee.opening = open(state.me.id).catch((err) => {
    e2ee.unavailable = 'End-to-end encryption could not start on this device: ' + (err && err.message || err);
    notify('e2ee_unavailable', e2ee.unavailable);
    renderE2EE();
  });
}

// open makes the engine for user's device: the device's keys from identity.js, the
// Web Lock, the stored groups.
async function open(userId) {
  if (!(await supported())) {
    e2ee.unavailable = 'This browser lacks Ed25519 or X25519 in WebCrypto: end-to-end encrypted rooms are not available.';
    renderE2EE();
    return;
  }
  const dev = await loadDevice(userId);
  const reg = await registration(dev);
  e2ee.leader = await lead('modified-chat-mls:' + userId + '\n' + dev.device, () => {
    // The tab that held the lock went away: this one drives MLS from now on. Its state
    // may be behind the other tab's, so start over from what is stored.
    location.reload();
  });
  persist();
  const c = await openClient({
    // A linked device holds no root key: its credential names the user's (rootUrk).
    dev: { ...dev, cert: unb64(reg.cert), urkRaw: dev.urkRaw || unb64(dev.rootUrk) },
    store: idbStore,
    leader: e2ee.leader,
    // MLS command lines above this go as bin frames: the server's read limit, less room
    // for the envelope.
    textLimit: Math.max(1024, (state.limits && Number(state.limits.read_limit_bytes) || 8192) - 1024),
    trust: async (user, urk) => !(await pin(userId, user, urk)).changed,
    send: (obj, bin) => {
      if (!sendJSON(obj)) return;
      if (bin) state.ws.send(bin);
    },
    onEvent: onEngine,
  });
  c.setHub(e2ee.hub);
  window.__mlsStats = c.stats;
  e2ee.client = c;
  for (const [name, r] of state.rooms) if (r.e2ee && r.mls) joinedGroup(name, r.mls);
  bind(0);
  renderE2EE();
}

// bind sends kp_upload; the server refuses it until the device's registration is
// stored, so a refusal is retried a few times.
function bind(tries) {
  const c = e2ee.client;
  if (!c || !e2ee.leader) return;
  c.bind();
  c.bindTries = tries;
}

// withClient runs f once the engine is open (events that arrive while it loads wait).
function withClient(f) {
  if (e2ee.client) return f(e2ee.client);
  if (e2ee.opening) return e2ee.opening.then(() => (e2ee.client ? f(e2ee.client) : undefined));
  return undefined;
}

// onJoinedE2EE records that a joined room is end-to-end encrypted and makes its group
// when the server says there is none yet (the creator's page, or any member's).
export function onJoinedE2EE(ev) {
  const r = state.rooms.get(ev.room);
  if (!r) return;
  r.e2ee = ev.e2ee === true;
  if (!r.e2ee) return;
  r.mls = ev.mls && typeof ev.mls === 'object' ? ev.mls : {};
  withClient((c) => {
    joinedGroup(ev.room, r.mls);
    // What this device decrypted before (a reload): shown again from its cache.
    if (!r.messages.some((e) => e.kind === 'msg')) c.cached(ev.room);
  });
  renderE2EE();
}

// joinedGroup tells the engine the room's group id and creates the group if needed.
function joinedGroup(name, mls) {
  const c = e2ee.client;
  if (!c || typeof mls.group_id !== 'string') return;
  c.expect(name, mls.group_id);
  const have = c.info(name);
  if (mls.ready === false && !have && e2ee.leader) c.createRoom(name, mls.group_id).catch((err) => console.warn('mls', err));
}

// resumeAfter is where a join of room should resume: after the last event this
// device's group processed (0 when it has none).
export function resumeAfter(name) {
  const c = e2ee.client;
  const r = c && c.rooms.get(name);
  return r && r.state ? r.lastId : 0;
}

// isMLSEvent tells whether a server event (live or in history) is the engine's.
export function isMLSEvent(ev) {
  return !!ev && typeof ev.type === 'string' && (ev.type.startsWith('mls_') || ev.type === 'kp_low' ||
    ((ev.type === 'ack' || ev.type === 'error') && typeof ev.ref === 'string' && ev.ref.startsWith('m') && !!e2ee.client && e2ee.client.refs.has(ev.ref)));
}

// onMLSEvent hands a server event to the engine, advancing the room's resume point.
// live is true for an event as the server relays it, false for one from history.
export function onMLSEvent(ev, live = false) {
  if (typeof ev.room === 'string' && typeof ev.id === 'number') {
    const r = state.rooms.get(ev.room);
    if (r) r.lastId = Math.max(r.lastId, ev.id);
  }
  if (ev.type === 'error' && ev.code === 'unknown_device' && e2ee.client && (e2ee.client.bindTries || 0) < BIND_TRIES) {
    const tries = (e2ee.client.bindTries || 0) + 1;
    e2ee.client.handle(ev);
    setTimeout(() => bind(tries), BIND_RETRY_MS);
    return;
  }
  withClient((c) => c.handle(ev, live));
}

// historyItems feeds a history page's MLS events to the engine, in order, and returns
// the others for the timeline.
export function historyItems(messages) {
  const rest = [];
  for (const m of messages) {
    if (isMLSEvent(m)) onMLSEvent(m);
    else if (!(m && m.type === 'file' && isE2EE(m.room))) rest.push(m); // ciphertext: see e2eefiles.js
  }
  return rest;
}

// onHistoryGap answers a history page that says messages are gone for good (gap: true)
// in an E2EE room this device is a member of: commits may be among them, so its group
// state may never reach the room's epoch. It asks the hub to remove and re-add the
// device (mls_resync, PROTOCOL.md "History"); a member's commit and a Welcome follow.
export function onHistoryGap(name) {
  const c = e2ee.client;
  if (!isE2EE(name) || !c || !e2ee.leader || !c.info(name)) return;
  c.stats.resyncs = (c.stats.resyncs || 0) + 1;
  sendJSON({ type: 'mls_resync', room: name });
  sys(name, 'Part of this room\'s history is gone: this device asks to be added again, to read what follows.', 'e2ee-warn');
}

// onRoomGone drops the group of a room we were kicked from or that was deleted.
export function onRoomGone(name) {
  withClient((c) => c.forget(name));
}

// sendE2EE encrypts a text into an E2EE room. It reports false (and says why) when it
// cannot, so the caller keeps the draft.
export function sendE2EE(name, text) {
  if (!canSend(name)) return false;
  e2ee.client.send(name, 'text', text).catch((err) => notify('e2ee_send', 'Not sent: ' + (err && err.message || err)));
  return true;
}

// canSend tells whether this tab can encrypt into room now, and says why not.
function canSend(name) {
  const c = e2ee.client;
  if (!c || e2ee.unavailable) {
    notify('e2ee_unavailable', e2ee.unavailable || 'End-to-end encryption is still starting; try again in a moment.');
    return false;
  }
  if (!e2ee.leader) {
    notify('e2ee_other_tab', 'This device\'s encryption runs in another tab of this browser: send from that tab.');
    return false;
  }
  if (!c.info(name)) {
    notify('e2ee_not_member', 'This device is not in the room\'s encryption group yet: a member must be online to add it.');
    return false;
  }
  return true;
}

// sendFileE2EE encrypts a picked file into an E2EE room (e2eefiles.js), when this tab
// can send there (as sendE2EE).
export function sendFileE2EE(name, file) {
  if (!canSend(name)) return;
  sendE2EEFile(name, file, (room, meta) => e2ee.client.send(room, 'file', meta));
}

// sys adds a system line to a room's timeline.
function sys(name, text, cls) {
  const r = state.rooms.get(name);
  if (!r) return;
  pushEntry(r, { kind: 'sys', text, ts: Date.now(), e2ee: cls || 'e2ee' });
  if (r.name !== state.current) renderE2EE();
}

// gone holds "room\nid" of messages deleted while this page is open, so a decryption
// that finishes after the `deleted` does not show the message again; the oldest are
// forgotten beyond GONE_MAX.
const gone = new Set();
const GONE_MAX = 1000;

// onDeletedE2EE drops what this page holds of a deleted message in an E2EE room: the
// copy the engine keeps for a reload (the timeline entry goes in messages.js).
export function onDeletedE2EE(ev) {
  if (!isE2EE(ev.room) || typeof ev.id !== 'number') return;
  gone.add(ev.room + '\n' + ev.id);
  if (gone.size > GONE_MAX) gone.delete(gone.values().next().value);
  withClient((c) => c.drop(ev.room, ev.id));
}

// insert puts a decrypted message into its room's timeline in id order; a live one
// (relayed as it happened, not a catch-up or a reload's replay) may notify.
function insert(r, entry, live) {
  if (typeof entry.id === 'number' && gone.has(r.name + '\n' + entry.id)) return;
  if (typeof entry.id === 'number') {
    if (r.seen.has(entry.id)) return;
    r.seen.add(entry.id);
  }
  const at = typeof entry.id === 'number'
    ? r.messages.findIndex((e) => e.kind === 'msg' && typeof e.id === 'number' && e.id > entry.id)
    : -1;
  if (at < 0) {
    pushEntry(r, entry);
  } else {
    r.messages.splice(at, 0, entry);
    trimRoom(r);
    if (r.name === state.current) renderMessages();
  }
  // Counted, marked, checked for a mention and notified as any message (unread.js).
  if (noteArrival(r, entry, live)) arrived();
}

// TRANSIENT_HINT explains the refusals that come from a key change in progress.
const TRANSIENT_HINT = {
  commit_required: ': the room\'s keys were still changing; your text is back in the box, send it again',
  stale_epoch: ': the room\'s keys were still changing; your text is back in the box, send it again',
};

// onEngine turns what the engine reports into what the user sees.
async function onEngine(ev) {
  const name = ev.room;
  switch (ev.type) {
    case 'message': {
      const r = state.rooms.get(name);
      if (!r || (ev.kind !== 'text' && ev.kind !== 'file') || (ev.kind === 'text' && typeof ev.body !== 'string')) return;
      const file = ev.kind === 'file' ? sealedFile(name, ev.body) : null;
      if (ev.kind === 'file' && !file) return;
      // The author is who encrypted it (the MLS leaf), named with the server's
      // display name only when the server agrees on who that is.
      const known = r.members.get(ev.author.user);
      const nameOf = ev.own ? state.me.name : !ev.mismatch && ev.from.name ? ev.from.name : known ? known.name : ev.author.user;
      let sig = 'signed';
      if (ev.mismatch) sig = 'invalid';
      else if (!ev.own && ev.author.urk) {
        const p = await pin(state.me.id, ev.author.user, ev.author.urk);
        if (p.verified && !p.changed) sig = 'verified';
      }
      insert(r, {
        kind: 'msg', id: ev.id, from: { id: ev.author.user, name: nameOf, role: '' },
        ts: typeof ev.ts === 'number' ? ev.ts : Date.now(), text: file ? '' : ev.body, file, sig, e2ee: true,
      }, ev.live === true && !ev.replayed && !ev.own);
      return;
    }
    case 'rejected':
      sys(name, '⚠ ' + (REASONS[ev.reason] || ev.reason) + '.', 'e2ee-warn');
      notify('mls_' + ev.reason, '#' + name + ': ' + (REASONS[ev.reason] || ev.reason) + '.');
      break;
    case 'untrusted_device':
      notify('mls_untrusted', '#' + name + ': a device claiming to be ' + (ev.user || 'someone') +
        '\'s is not certified by the root key you pinned for them. It was not added. Compare safety numbers.');
      break;
    case 'joined':
      sys(name, 'This device joined the room\'s encryption: you can read messages sent after you joined, not before.');
      break;
    case 'undecryptable':
      sys(name, 'A message sent before this device joined cannot be read here.');
      break;
    case 'epoch':
      for (const d of ev.added) if (d.device !== e2ee.client.dev.device) sys(name, 'Device ' + d.device + ' of ' + d.user + ' now reads this room.');
      for (const d of ev.removed) sys(name, 'Device ' + d.device + ' of ' + d.user + ' was removed and cannot read what follows.');
      break;
    case 'removed':
      sys(name, 'This device was removed from the room\'s encryption.');
      break;
    case 'blocked':
      sys(name, 'A membership change is on hold: it was refused here, so nobody can write until it is resolved.', 'e2ee-warn');
      break;
    case 'resync':
      sendJSON({ type: 'mls_resync', room: name });
      break;
    case 'send_refused':
      // The engine already tried again where the refusal was only a key change; this
      // one stands. The text comes back into an empty composer, so nothing typed is lost.
      notify('e2ee_send', '#' + name + ': not sent (' + ev.code + (TRANSIENT_HINT[ev.code] || '') + ').');
      if (ev.kind === 'text' && typeof ev.body === 'string' && name === state.current && ui.input.value === '') ui.input.value = ev.body;
      break;
    case 'commit_refused':
      notify('e2ee_commit', '#' + name + ': the server refused this device\'s key change (' + ev.code + ').');
      break;
    default:
      break;
  }
  if (name === state.current) renderE2EE();
}

// renderE2EE shows, for the open room, whether it is end-to-end encrypted, its room
// code and the devices in its ratchet tree.
export function renderE2EE() {
  const tag = document.getElementById('room-e2ee');
  const bar = document.getElementById('e2ee-bar');
  if (!tag || !bar) return;
  const name = state.current;
  const on = isE2EE(name);
  tag.hidden = !on;
  bar.hidden = !on;
  document.body.classList.toggle('room-is-e2ee', on);
  for (const li of ui.rooms.children) {
    if (li.dataset.room) li.classList.toggle('room-e2ee', isE2EE(li.dataset.room));
  }
  if (!on) return;
  const info = e2ee.client ? e2ee.client.info(name) : null;
  const code = document.getElementById('e2ee-code');
  const state2 = document.getElementById('e2ee-state');
  const list = document.getElementById('e2ee-devices');
  const count = document.getElementById('e2ee-count');
  if (e2ee.unavailable) state2.textContent = e2ee.unavailable;
  else if (!e2ee.leader && e2ee.client) state2.textContent = 'Encryption runs in another tab of this browser; this tab only shows the room.';
  else if (!info) state2.textContent = 'Waiting to join the encryption group (a member must be online to add this device).';
  else state2.textContent = 'Messages are end-to-end encrypted: the server cannot read them. You can read messages sent after you joined.';
  code.textContent = info ? info.code : '—';
  code.title = info ? 'Room code of epoch ' + info.epoch + ': everyone in the room should see the same digits' : '';
  const frag = document.createDocumentFragment();
  for (const d of info ? info.members : []) {
    const li = make('li', 'e2ee-device');
    li.appendChild(make('span', 'e2ee-device-user', d.user || 'unknown credential'));
    li.appendChild(make('span', 'e2ee-device-id', d.device || ''));
    if (e2ee.client && d.device === e2ee.client.dev.device) li.appendChild(make('span', 'tag', 'this device'));
    frag.appendChild(li);
  }
  list.replaceChildren(frag);
  count.textContent = info ? String(info.members.length) : '0';
}

// engine is this page's MLS engine (null until it is open): for tests and the console.
export function engine() {
  return e2ee.client;
}

// The Devices panel: the signed-in user's devices (this one marked), revoking one,
// linking a new browser profile, and, for admins, another user's devices.
//
// Linking (PROTOCOL.md, "Linking a device"): a new profile of a user who already has
// a root key sends link_request and shows its link code; the device holding the root
// key receives the request through the server, and certifies the new key only if the
// code the user types there equals the code it computes from the key it received. The
// code commits to the key, so a server that swapped it would be caught here.
// (Security rule: see app.js.)

import { make } from './dom.js';
import { state, str } from './state.js';
import { command, sendJSON } from './connection.js';
import { clearNotice, notify } from './notices.js';
import { signingDevice, signingLinked, signingRevoked, signingReset } from './signing.js';
import { canCertify, certifyLink, checkDevice, linkCode, linkRequest } from './identity.js';
import { unb64 } from './sigbytes.js';

const MAX_LINKS = 3; // the server keeps at most 3 waiting requests per user

// devs is the panel's state: the user's own record from the directory, the waiting
// link requests, this device's own link code while it waits, and the record of the
// other user an admin looked up.
const devs = {
  rec: null, // {urk, devices}
  links: [], // [{device, dik, created, at}]
  ownCode: '', // this device's link code, while it is not certified
  other: null, // {user, rec}
};

// The panel's elements. Looked up here with the DOM's own function: this module is
// reached through an import cycle (connection.js, signing.js) before dom.js has run.
const panel = document.getElementById('devices-panel');
const toggle = document.getElementById('devices-toggle');

// toggleDevices opens or closes the panel; opening it asks for a fresh record.
export function toggleDevices(open) {
  panel.hidden = !open;
  toggle.setAttribute('aria-expanded', String(open));
  toggle.classList.toggle('active', open);
  document.body.classList.toggle('show-devices', open);
  if (open) {
    sendJSON({ type: 'devices' });
    render();
  }
}

// dateTime shows Unix milliseconds as a local date and time.
function dateTime(ms) {
  return typeof ms === 'number' && ms > 0 ? new Date(ms).toLocaleString() : '—';
}

// onOwnDevices takes the `devices` answer about the signed-in user.
export function onOwnDevices(ev) {
  devs.rec = { urk: str(ev.urk), devices: Array.isArray(ev.devices) ? ev.devices.filter((d) => d && typeof d === 'object') : [] };
  const dev = signingDevice();
  devs.links = (Array.isArray(ev.links) ? ev.links : [])
    .filter((l) => l && typeof l.device === 'string' && (!dev || l.device !== dev.device))
    .slice(0, MAX_LINKS);
  render();
}

// onOtherDevices takes a `devices` answer about the user an admin looked up.
export function onOtherDevices(ev) {
  if (!devs.other || devs.other.user !== str(ev.user)) return false;
  devs.other.rec = { devices: Array.isArray(ev.devices) ? ev.devices.filter((d) => d && typeof d === 'object') : [] };
  render();
  return true;
}

// onLinkRequest shows a new device's request, on a device that can certify it.
export function onLinkRequest(ev) {
  const dev = signingDevice();
  if (!dev || str(ev.device) === dev.device || !state.me || str(ev.user) !== state.me.id) return;
  devs.links = devs.links.filter((l) => l.device !== ev.device).concat([ev]).slice(-MAX_LINKS);
  sendJSON({ type: 'devices' });
  if (devs.rec && !canCertify(dev, devs.rec.urk)) return;
  render();
  notify('link-request', 'A new device asks to be linked to your account. Open Devices and type the code it shows, or ignore this if it is not yours.',
    10 * 60 * 1000, { label: 'Open Devices', run: () => toggleDevices(true) });
}

// offerLink runs when the server refused this device's registration because the user
// already has another root key: this device asks to be linked and shows its code.
export async function offerLink(dev) {
  devs.ownCode = await linkCode(dev.user, dev.device, dev.dikRaw, dev.created);
  sendJSON(Object.assign(linkRequest(dev), { ref: 'L' + state.nextRef++ }));
  render();
  notify('signing', 'This browser is a new device of yours: your messages are sent unsigned until you link it. Open Devices here for its code.',
    10 * 60 * 1000, { label: 'Open Devices', run: () => toggleDevices(true) });
}

// linkAnswer takes the answer to a link_request; true when it was one.
export function linkAnswer(ev) {
  if (typeof ev.ref !== 'string' || !ev.ref.startsWith('L')) return false;
  if (ev.type === 'error') {
    notify('link-refused', 'This device could not ask to be linked (' + str(ev.code) + '): ' + str(ev.message));
  }
  return true;
}

// onOwnDeviceAdded finishes linking on the new device: the directory added it, with a
// certificate that must verify under the root key the event names for this key.
export async function onOwnDeviceAdded(ev) {
  const dev = signingDevice();
  const rec = ev.device;
  // Only a device waiting to be linked: the first device hears of its own
  // registration too, and must keep its root key.
  if (!dev || dev.linked || document.body.dataset.signing !== 'unlinked') return;
  if (!rec || rec.device !== dev.device || !state.me || str(ev.user) !== state.me.id) return;
  const dik = await checkDevice(unb64(str(ev.urk)), dev.user, rec);
  if (!dik || dik.length !== dev.dikRaw.length || !dik.every((b, i) => b === dev.dikRaw[i])) return;
  devs.ownCode = '';
  await signingLinked(dev, str(ev.urk), str(rec.cert));
  notify('signing', 'This browser is now a certified device of yours: your messages are signed.', 5000);
  sendJSON({ type: 'devices' });
  render();
}

// onOwnDeviceRevoked stops signing on a device that was revoked.
export function onOwnDeviceRevoked(ev) {
  const dev = signingDevice();
  if (dev && state.me && str(ev.user) === state.me.id && str(ev.device) === dev.device) {
    signingRevoked();
    notify('signing', 'This device was revoked by ' + str(ev.by) + '; your messages are sent unsigned.', 24 * 3600 * 1000);
  }
  if (!panel.hidden) sendJSON({ type: 'devices' });
}

// digitsOf keeps only the digits of what the user typed.
function digitsOf(s) {
  return s.replace(/\D/g, '');
}

// link certifies a waiting request once the typed code equals the code of the key the
// server delivered; otherwise nothing is sent.
async function link(req, typed, out) {
  const dev = signingDevice();
  if (!dev || !devs.rec || !canCertify(dev, devs.rec.urk)) {
    out.textContent = 'Only the device that created your identity can link others.';
    return;
  }
  const dik = unb64(str(req.dik));
  if (!dik || dik.length !== 32 || !Number.isSafeInteger(req.created)) return;
  const want = digitsOf(await linkCode(dev.user, str(req.device), dik, req.created));
  if (digitsOf(typed) !== want) {
    out.textContent = 'The code does not match: nothing was certified. Check the code on the new device; if it still differs, the request may not come from it.';
    out.dataset.result = 'mismatch';
    document.body.dataset.linkResult = 'mismatch';
    return;
  }
  out.textContent = 'Linking…';
  out.dataset.result = 'sent';
  command(await certifyLink(dev, req), 'The new device is linked.', () => {
    document.body.dataset.linkResult = 'linked';
    clearNotice('link-request');
    devs.links = devs.links.filter((l) => l.device !== req.device);
    sendJSON({ type: 'devices' });
  });
}

// revoke asks the server to revoke a device (of another user: admins only).
function revoke(user, device) {
  const msg = { type: 'revoke_device', device };
  if (user !== state.me.id) msg.user = user;
  command(msg, 'Device ' + device + ' is revoked.', () => {
    sendJSON(user === state.me.id ? { type: 'devices' } : { type: 'devices', user });
  });
}

// deviceList renders a user's devices, each with a Revoke button while live.
function deviceList(user, rec, className) {
  const dev = signingDevice();
  const list = make('ul', 'device-list ' + className);
  for (const d of rec.devices) {
    const id = str(d.device);
    const li = make('li', 'device');
    li.dataset.device = id;
    const head = make('div', 'device-head');
    head.appendChild(make('code', 'device-id', id));
    if (user === state.me.id && dev && id === dev.device) head.appendChild(make('span', 'tag', 'this device'));
    if (d.revoked) {
      li.dataset.revoked = 'true';
      head.appendChild(make('span', 'tag tag-warn', 'revoked'));
    }
    li.appendChild(head);
    li.appendChild(make('div', 'device-seen muted', 'first seen ' + dateTime(d.first_seen) + ' · last seen ' + dateTime(d.last_seen) +
      (d.revoked ? ' · revoked ' + dateTime(d.revoked) + ' by ' + str(d.revoked_by) : '')));
    if (!d.revoked) {
      const b = make('button', 'button small danger device-revoke', 'Revoke');
      b.type = 'button';
      b.addEventListener('click', () => revoke(user, id));
      li.appendChild(b);
    }
    list.appendChild(li);
  }
  if (rec.devices.length === 0) list.appendChild(make('li', 'muted', 'No devices.'));
  return list;
}

// linkSection renders the waiting requests, each with a code field.
function linkSection() {
  const box = make('div', 'admin-section');
  box.appendChild(make('h3', 'section-title', 'Link a new device'));
  if (devs.links.length === 0) {
    box.appendChild(make('p', 'muted', 'To add a browser, sign in there: it shows a code to type here.'));
    return box;
  }
  const list = make('ul', 'device-list link-requests');
  for (const req of devs.links) {
    const li = make('li', 'device');
    li.dataset.link = str(req.device);
    li.appendChild(make('div', 'device-head', 'Device '));
    li.firstChild.appendChild(make('code', 'device-id', str(req.device)));
    li.appendChild(make('div', 'device-seen muted', 'asked ' + dateTime(req.at)));
    const form = make('form', 'admin-row');
    const input = make('input', 'link-code-input');
    input.type = 'text';
    input.inputMode = 'numeric';
    input.autocomplete = 'off';
    input.placeholder = 'code shown on the new device';
    input.setAttribute('aria-label', 'Code shown on the new device');
    const go = make('button', 'button small link-submit', 'Link');
    go.type = 'submit';
    form.appendChild(input);
    form.appendChild(go);
    const out = make('p', 'link-result muted');
    form.addEventListener('submit', (ev) => {
      ev.preventDefault();
      link(req, input.value, out);
    });
    li.appendChild(form);
    li.appendChild(out);
    list.appendChild(li);
  }
  box.appendChild(list);
  return box;
}

// ownLinkSection tells a device that is not yet certified what to do.
function ownLinkSection() {
  const box = make('div', 'admin-section link-own');
  box.appendChild(make('h3', 'section-title', 'This browser is not linked yet'));
  box.appendChild(make('p', '', 'On the device where you first used this account, open Devices and type this code. Check that it asks for this device: '));
  box.appendChild(make('p', 'link-code', devs.ownCode)).id = 'link-code';
  box.appendChild(make('p', 'muted', 'Or start a new identity here: your other devices are revoked, and everyone you talk to sees a key change.'));
  const reset = make('button', 'button small danger', 'Start a new identity');
  reset.type = 'button';
  reset.id = 'reset-identity';
  reset.addEventListener('click', () => {
    devs.ownCode = '';
    signingReset();
    render();
  });
  box.appendChild(reset);
  return box;
}

// adminSection lets an admin look up and revoke another user's devices.
function adminSection() {
  const box = make('form', 'admin-section');
  box.appendChild(make('h3', 'section-title', 'Another user\u2019s devices (admin)'));
  const row = make('div', 'admin-row');
  const input = make('input', '');
  input.id = 'devices-user';
  input.type = 'text';
  input.maxLength = 256;
  input.placeholder = 'user id, e.g. dev:bob';
  input.setAttribute('aria-label', 'User id');
  input.value = devs.other ? devs.other.user : '';
  const go = make('button', 'button small', 'Show');
  go.type = 'submit';
  row.appendChild(input);
  row.appendChild(go);
  box.appendChild(row);
  box.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const user = input.value.trim();
    if (!user) return;
    devs.other = { user, rec: null };
    sendJSON({ type: 'devices', user });
  });
  if (devs.other && devs.other.rec) box.appendChild(deviceList(devs.other.user, devs.other.rec, 'other-devices'));
  return box;
}

// render redraws the open panel.
function render() {
  if (panel.hidden || !state.me) return;
  const body = document.getElementById('devices-body');
  body.textContent = '';
  if (devs.ownCode) body.appendChild(ownLinkSection());
  const mine = make('div', 'admin-section');
  mine.appendChild(make('h3', 'section-title', 'Your devices'));
  mine.appendChild(devs.rec ? deviceList(state.me.id, devs.rec, 'own-devices') : make('p', 'muted', 'Loading…'));
  body.appendChild(mine);
  const dev = signingDevice();
  if (dev && devs.rec && canCertify(dev, devs.rec.urk)) body.appendChild(linkSection());
  if (state.perms.includes('admin')) body.appendChild(adminSection());
}

toggle.addEventListener('click', () => toggleDevices(panel.hidden));
document.getElementById('devices-close').addEventListener('click', () => {
  toggleDevices(false);
  toggle.focus();
});

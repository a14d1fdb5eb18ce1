// What the user does: join, send, create, invite.
// (Security rule: see app.js.)

import { ui } from './dom.js';
import { MAX_PENDING, room, ROOM_RE, state } from './state.js';
import { command, sendJSON } from './connection.js';
import { selectRoom, updateCounter } from './panels.js';
import { notify } from './notices.js';
import { sendSigned } from './signing.js';
import { isE2EE, resumeAfter, sendE2EE } from './e2ee.js';

// joinRoom opens a room, joining it first when needed.
export function joinRoom(raw) {
  const name = String(raw).trim().toLowerCase();
  if (!ROOM_RE.test(name)) {
    notify('bad_room', 'Room names are 1–32 characters of a–z, 0–9, - and _, starting with a letter or digit.');
    return false;
  }
  if (state.rooms.has(name)) {
    selectRoom(name);
    return true;
  }
  state.switchTo = name;
  // An E2EE room this device has a group for resumes after the last event it
  // processed: its group must see every commit since, in order.
  const after = resumeAfter(name);
  if (!sendJSON(after ? { type: 'join', room: name, after } : { type: 'join', room: name })) {
    notify('offline', 'Not connected; try again when the status says connected.');
    return false;
  }
  return true;
}

// sendMessage sends the draft to the open room and remembers it by ref,
// so a refusal can give it back.
export function sendMessage() {
  const text = ui.input.value;
  if (text.trim() === '') return;
  if (!state.connected) {
    notify('offline', 'Not connected; your message was not sent.');
    return;
  }
  if (isE2EE(state.current)) {
    // Encrypted on this device; a refusal (said in a notice) keeps the draft.
    if (sendE2EE(state.current, text)) {
      ui.input.value = '';
      updateCounter();
    }
    return;
  }
  const ref = String(state.nextRef++);
  const msg = { type: 'say', room: state.current, text, ref };
  // A send the page itself refuses (a key change not yet accepted) keeps the text.
  if (!sendSigned(msg, () => notify('offline', 'Not connected; your message was not sent.'))) return;
  state.pending.set(ref, { room: state.current, text });
  while (state.pending.size > MAX_PENDING) state.pending.delete(state.pending.keys().next().value);
  ui.input.value = '';
  updateCounter();
}

// createRoom asks the server for a new room, public or private, and opens
// it when it is joined.
export function createRoom() {
  const name = ui.createName.value.trim().toLowerCase();
  if (!ROOM_RE.test(name)) {
    notify('bad_room', 'Room names are 1–32 characters of a–z, 0–9, - and _, starting with a letter or digit.');
    return;
  }
  const e2eeBox = document.getElementById('create-e2ee');
  const e2ee = !!(e2eeBox && e2eeBox.checked);
  const priv = ui.createPrivate.checked || e2ee; // an E2EE room is always private
  state.switchTo = name;
  const ok = e2ee
    ? 'End-to-end encrypted room #' + name + ' created. Invite people from the members panel.'
    : priv
      ? 'Private room #' + name + ' created. Invite people from the members panel.'
      : 'Room #' + name + ' created.';
  const msg = { type: 'create', room: name, private: priv };
  if (e2ee) msg.e2ee = true;
  if (command(msg, ok)) {
    ui.createName.value = '';
    ui.createPrivate.checked = false;
    if (e2eeBox) e2eeBox.checked = false;
  }
}

// inviteUser invites a user id, or an email address, into the open room.
export function inviteUser() {
  const who = ui.inviteUser.value.trim();
  if (!who) return;
  const room = state.current;
  const msg = { type: 'invite', room };
  if (who.includes('@')) msg.email = who;
  else msg.user = who;
  if (command(msg, 'Invitation to #' + room + ' sent to ' + who + '.')) ui.inviteUser.value = '';
}

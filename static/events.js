// What the page does with each server event: rooms joined and left, presence, messages
// and history, roles, errors.
// (Security rule: see app.js.)

import { $, ui } from './dom.js';
import {
  LOBBY, MAX_HISTORY_PAGES, MAX_OPS, NOTICE_MS, OK_MS, RETRY_MAX, room, roomInfo,
  state, str, user,
} from './state.js';
import { sendJSON, setStatus } from './connection.js';
import { makeEntry, pushEntry, releaseEntry, renderMessages, trimRoom } from './messages.js';
import {
  markBrowseJoined, renderBrowse, renderControls, renderHeader, renderMembers, renderRooms, selectRoom, updateCounter,
} from './panels.js';
import { onFetchRefused } from './files.js';
import { clearNotice, hasNotice, notify } from './notices.js';
import { joinRoom } from './actions.js';
import { signingAnswer, startSigning } from './signing.js';
import { historyItems, onHistoryGap, onJoinedE2EE, startE2EE } from './e2ee.js';
import { arrived, noteArrival } from './unread.js';

// onWelcome learns who we are and re-joins the rooms we had before a
// reconnect (the server joins lobby by itself).
export function onWelcome(ev) {
  const you = user(ev.you);
  if (state.me && state.me.id !== you.id) {
    // A different account in the same tab: forget the old one's rooms.
    state.rooms.clear();
    state.wanted = new Set([LOBBY]);
    state.current = LOBBY;
  }
  state.me = you;
  state.limits = ev.limits && typeof ev.limits === 'object' ? ev.limits : null;
  state.connected = true;
  state.attempt = 0;
  ui.me.textContent = you.name;
  ui.devBanner.hidden = ev.dev !== true;
  showMotd(ev.motd);
  showRole(ev.role);
  state.perms = Array.isArray(ev.perms) ? ev.perms.filter((x) => typeof x === 'string') : [];
  renderControls();
  setStatus('connected', 'connected');
  // Say that the connection is back where a notice said it was lost.
  if (hasNotice('closed')) notify('closed', 'Reconnected.', 3000);
  clearNotice('offline');
  // Re-join what we were in; where we saw messages, ask for what was missed
  // (the server joined lobby already, and answers a repeated join of it
  // with the catch-up).
  for (const name of state.wanted) {
    const r = state.rooms.get(name);
    if (r && r.lastId > 0) sendJSON({ type: 'join', room: name, after: r.lastId });
    else if (name !== LOBBY) sendJSON({ type: 'join', room: name });
  }
  sendJSON({ type: 'rooms' });
  updateCounter();
  startSigning();
  startE2EE(ev);
}

// onJoined records the room and its members, and opens the room when the
// user asked for it.
export function onJoined(ev) {
  const name = str(ev.room);
  if (!name) return;
  const r = room(name);
  r.pages = 0;
  roomInfo(r.info, ev);
  if (Array.isArray(ev.my_perms)) r.perms = ev.my_perms.filter((x) => typeof x === 'string');
  onJoinedE2EE(ev);
  r.members.clear();
  if (Array.isArray(ev.members)) {
    for (const m of ev.members) {
      const u = user(m);
      r.members.set(u.id || u.name, { name: u.name, role: u.role });
    }
  }
  state.wanted.add(name);
  markBrowseJoined();
  const asked = ev.kind === 'dm' && ev.peer && state.dmWith && ev.peer.id === state.dmWith;
  if (asked) state.dmWith = '';
  if (asked || state.switchTo === name || !state.rooms.has(state.current)) {
    state.switchTo = '';
    selectRoom(name);
    return;
  }
  renderRooms();
  if (name === state.current) {
    renderMembers();
    renderHeader();
  }
}

// onLeft forgets a room the user left.
export function onLeft(ev) {
  forgetRoom(str(ev.room));
}

// forgetRoom drops a room the connection is no longer in (left, kicked or
// deleted), and moves to another one if it was open.
export function forgetRoom(name) {
  const gone = state.rooms.get(name);
  if (gone) gone.messages.forEach(releaseEntry);
  state.rooms.delete(name);
  state.wanted.delete(name);
  markBrowseJoined();
  if (state.current === name) {
    const next = state.rooms.has(LOBBY) ? LOBBY : state.rooms.keys().next().value;
    selectRoom(next || LOBBY);
  } else {
    renderRooms();
  }
}

// onPresence keeps a room's member list current and notes the change in
// the room's timeline.
export function onPresence(ev) {
  const name = str(ev.room);
  const r = state.rooms.get(name);
  if (!r) return;
  const u = user(ev.user);
  const key = u.id || u.name;
  const before = r.members.size;
  let text;
  if (ev.event === 'join') {
    r.members.set(key, { name: u.name, role: u.role });
    text = u.name + ' joined';
  } else if (ev.event === 'leave') {
    r.members.delete(key);
    text = u.name + ' left';
  } else {
    return;
  }
  if (r.info.count !== null) r.info.count = Math.max(0, r.info.count + r.members.size - before);
  pushEntry(r, { kind: 'sys', text, ts: Date.now() });
  if (name === state.current) {
    renderMembers();
    renderHeader();
  }
}

// onMessage stores a chat message and shows it if its room is open, and
// counts it as unread when the user is not looking (see unread.js).
export function onMessage(ev) {
  const name = str(ev.room);
  const r = state.rooms.get(name);
  if (!r) return;
  const entry = makeEntry(r, ev);
  if (!entry) return;
  pushEntry(r, entry);
  if (noteArrival(r, entry, true)) arrived();
}

// onHistory merges stored messages into a room: on a first join the
// recent past, after a reconnect what was missed. It may arrive after
// live messages, so each is put before the first newer message.
export function onHistory(ev) {
  if (typeof ev.ref === 'string') state.history.delete(ev.ref);
  const r = state.rooms.get(str(ev.room));
  if (!r || !Array.isArray(ev.messages)) return;
  nextPage(r, ev);
  if (ev.gap === true) onHistoryGap(r.name); // an E2EE room's group state may be lost
  const had = r.messages.some((e) => e.kind === 'msg');
  const added = [];
  for (const m of historyItems(ev.messages)) {
    if (!m || typeof m !== 'object' || Array.isArray(m)) continue;
    const entry = makeEntry(r, m);
    if (entry) added.push(entry);
  }
  added.sort((a, b) => (a.id || 0) - (b.id || 0));
  if (ev.gap === true && had) {
    const first = added[0];
    added.unshift({ kind: 'sys', text: 'Some messages from while you were away are not shown.', ts: first ? first.ts : Date.now(), id: first ? first.id : undefined });
  }
  if (added.length === 0) return;
  for (const entry of added) {
    const at = typeof entry.id === 'number'
      ? r.messages.findIndex((e) => e.kind === 'msg' && typeof e.id === 'number' && e.id > entry.id)
      : -1;
    if (at < 0) r.messages.push(entry);
    else r.messages.splice(at, 0, entry);
  }
  trimRoom(r);
  // A first join's recent past is not news; a reconnect's catch-up is.
  let counted = false;
  if (had) for (const entry of added) counted = noteArrival(r, entry, false) || counted;
  if (r.name === state.current) renderMessages();
  if (counted) arrived();
}

// nextPage asks for the page after ev when the server says more follow, up to
// MAX_HISTORY_PAGES per join; beyond that the room says older ones are missing.
export function nextPage(r, ev) {
  if (ev.more !== true) return;
  let last = 0;
  for (const m of ev.messages) if (m && typeof m.id === 'number') last = Math.max(last, m.id);
  if (last === 0) return;
  if (r.pages >= MAX_HISTORY_PAGES) {
    r.messages.push({ kind: 'sys', text: 'Some messages from while you were away are not shown.', ts: Date.now() });
    return;
  }
  r.pages++;
  askHistory(r.name, last, 0);
}

// askHistory sends a history request and remembers it, to retry it when the
// server says to slow down. after is an id, or undefined for the newest.
export function askHistory(name, after, tries) {
  const ref = 'h' + state.nextRef++;
  const req = { type: 'history', room: name, ref };
  if (typeof after === 'number') req.after = after;
  if (state.history.size > MAX_OPS) state.history.clear();
  state.history.set(ref, { room: name, after, tries });
  sendJSON(req);
}

// retryLater runs f after the server's retry hint (at least a second).
export function retryLater(ev, f) {
  const ms = typeof ev.retry_after_ms === 'number' && ev.retry_after_ms > 0 ? ev.retry_after_ms : 1000;
  setTimeout(f, Math.min(Math.max(ms, 1000), 60000));
}

// onHistoryRefused retries a refused history page later, a few times.
export function onHistoryRefused(ev, req) {
  if (ev.code !== 'rate_limited' || req.tries >= RETRY_MAX) return;
  retryLater(ev, () => {
    if (state.connected && state.rooms.has(req.room)) askHistory(req.room, req.after, req.tries + 1);
  });
}

// onRoomChanged shows a joined room's new topic, lock or privacy.
export function onRoomChanged(ev) {
  const r = state.rooms.get(str(ev.room));
  if (!r) return;
  roomInfo(r.info, ev);
  renderRooms();
  if (r.name === state.current) renderHeader();
}

// onRole shows a member's new role in a room.
export function onRole(ev) {
  const r = state.rooms.get(str(ev.room));
  if (!r) return;
  const u = user(ev.user);
  const m = r.members.get(u.id);
  if (m) m.role = u.role;
  if (r.name === state.current) renderMembers();
}

// onYou shows the user's new global role.
export function onYou(ev) {
  showRole(ev.role);
  if (Array.isArray(ev.perms)) state.perms = ev.perms.filter((x) => typeof x === 'string');
  renderHeader();
  renderMembers();
  notify('you', 'Your role is now ' + (str(ev.role) || 'member') + '.');
}

// onInvited offers to join a private room the user was invited to.
export function onInvited(ev) {
  const name = str(ev.room);
  if (!name) return;
  const by = user(ev.by);
  notify('invited', by.name + ' invited you to #' + name + '.', 30000, {
    label: 'Join',
    run: () => joinRoom(name),
  });
}

// onKicked drops a room the user was removed from, and says by whom.
export function onKicked(ev) {
  const name = str(ev.room);
  const by = user(ev.by);
  forgetRoom(name);
  notify('kicked', by.name + (ev.ban === true ? ' banned you from #' : ' removed you from #') + name + '.');
}

// onRoomDeleted drops a room that no longer exists.
export function onRoomDeleted(ev) {
  const name = str(ev.room);
  if (!state.rooms.has(name)) return;
  forgetRoom(name);
  notify('room_deleted', '#' + name + ' was deleted.');
}

// showMotd shows the message of the day, or hides its bar when empty.
export function showMotd(v) {
  const motd = str(v).trim();
  ui.motd.textContent = motd;
  ui.motd.hidden = motd === '';
}

// showRole marks a global role other than the default next to the name.
export function showRole(v) {
  const role = str(v);
  ui.myRole.textContent = role;
  ui.myRole.hidden = role === '' || role === 'member';
}

// onRooms fills the browse list.
export function onRooms(ev) {
  state.browse = Array.isArray(ev.rooms)
    ? ev.rooms
      // Conversations are listed with the joined rooms, not offered here.
      .filter((x) => x && typeof x === 'object' && typeof x.name === 'string' && x.kind !== 'dm')
      .map((x) => ({
        name: x.name,
        members: typeof x.members === 'number' ? x.members : null,
        private: x.private === true,
        topic: str(x.topic),
      }))
    : [];
  state.browse.sort((a, b) => a.name.localeCompare(b.name));
  renderBrowse();
}

// onAck forgets a delivered message's draft, or confirms a command the
// server has carried out and stored.
export function onAck(ev) {
  if (signingAnswer(ev)) return;
  const ref = str(ev.ref);
  state.pending.delete(ref);
  const op = state.ops.get(ref);
  if (!op) return;
  state.ops.delete(ref);
  if (op.ok) notify('ok', op.ok, OK_MS);
  if (op.after) op.after(ev); // the ack: a file's carries its id (e2eefiles.js)
}

// onError shows the server's complaint and undoes what it refused.
export function onError(ev) {
  if (signingAnswer(ev)) return;
  const code = str(ev.code, 'error') || 'error';
  const ref = str(ev.ref);
  const errRoom = str(ev.room);
  // Background requests of the page (history pages, file bytes) retry by
  // themselves and bother nobody.
  if (ref && state.fetching && ref === state.fetching.ref) return onFetchRefused(ev);
  if (ref && state.history.has(ref)) {
    const req = state.history.get(ref);
    state.history.delete(ref);
    return onHistoryRefused(ev, req);
  }
  if (code === 'rate_limited' && !ref && errRoom) {
    // A join or its history refused while the answers were over budget:
    // try again later instead of forgetting the room.
    retryLater(ev, () => {
      if (!state.connected) return;
      const r = state.rooms.get(errRoom);
      if (r) askHistory(errRoom, r.lastId > 0 ? r.lastId : undefined, 1);
      else if (state.wanted.has(errRoom)) sendJSON({ type: 'join', room: errRoom });
    });
    return undefined;
  }
  let text = errorText(code, str(ev.message), errRoom);
  let timeout = NOTICE_MS;
  if (ref) state.ops.delete(ref);
  if (code === 'rate_limited') {
    const ms = typeof ev.retry_after_ms === 'number' && ev.retry_after_ms > 0 ? ev.retry_after_ms : 1000;
    text = 'You are sending too fast. Try again in ' + (ms / 1000).toFixed(1) + ' s.';
    timeout = Math.max(NOTICE_MS, ms + 3000);
  }
  if (errRoom && !state.rooms.has(errRoom)) {
    // A join that failed (bad name, full, banned, private...): stop
    // trying to re-join it after reconnects.
    state.wanted.delete(errRoom);
    if (state.switchTo === errRoom) state.switchTo = '';
  }
  if (errRoom && !text.includes('#' + errRoom)) text += ' (#' + errRoom + ')';
  // Give a refused message back to the user instead of losing it.
  const draft = ref ? state.pending.get(ref) : undefined;
  if (draft) {
    state.pending.delete(ref);
    if (ui.input.value === '' && draft.room === state.current) {
      ui.input.value = draft.text;
      updateCounter();
    }
  }
  notify(code, text, timeout);
}

// sentence turns a server message ("no such room") into one for people.
export function sentence(msg) {
  const t = msg.trim();
  if (!t) return '';
  return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
}

// clause ends a server message with a full stop, to follow a colon.
export function clause(msg) {
  const t = msg.trim();
  return t && !/[.!?]$/.test(t) ? t + '.' : t;
}

// errorText says what a refusal means. The server's message is kept where
// it carries the detail (which setting, which file type); codes whose
// meaning does not depend on it get a fixed sentence.
export function errorText(code, msg, errRoom) {
  const where = errRoom ? '#' + errRoom : 'that room';
  switch (code) {
    case 'forbidden':
      return sentence(msg) || 'You are not allowed to do that.';
    case 'no_such_room':
      return 'There is no room ' + where + ', or it is private and you were not invited.';
    case 'banned':
      return sentence(msg) || 'You are banned from ' + where + '.';
    case 'room_exists':
      return 'The name ' + where + ' is taken; pick another one or join it.';
    case 'bad_setting':
      return 'The settings were not saved: ' + (clause(msg) || 'a value is out of range.');
    case 'file_type':
      return 'The file was refused: ' + (clause(msg) || 'this type of file is not accepted.');
    case 'file_too_big':
      return 'The file was refused: ' + (clause(msg) || 'it is too big.');
    case 'bad_filename':
      return 'The file was refused: ' + (clause(msg) || 'its name has special characters.');
    case 'bad_file':
      return 'The file was refused: ' + (clause(msg) || 'it is not what was announced.');
    case 'read_only':
      return where.charAt(0).toUpperCase() + where.slice(1) + ' is read-only: only its owner and moderators can write.';
    case 'room_limit':
      return sentence(msg) || 'The limit of rooms, invitations or roles is reached.';
    case 'store_failed':
      return 'The change is in effect but could not be saved; it may be lost at a restart.';
    case 'busy':
      return 'The server is busy; try again in a moment.';
    case 'dm_refused':
      return 'That person does not take direct messages from you.';
    case 'no_such_message':
      return 'That message is already gone.';
    default:
      return sentence(msg) || sentence(code.replace(/_/g, ' '));
  }
}

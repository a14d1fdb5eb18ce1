// The room header, room and member lists, the controls each role sees and the compose
// counter.
// (Security rule: see app.js.)

import { avatar, badge, make, ui } from './dom.js';
import {
  comeBack, isMe, LOBBY, MAX_KNOWN_USERS, RANKS, ROLES, room, roomLabel, state, user,
} from './state.js';
import { command, sendJSON } from './connection.js';
import { renderMessages, showMarker } from './messages.js';
import { canSendFiles } from './files.js';
import { notify } from './notices.js';
import { joinRoom } from './actions.js';
import { toggleAdmin } from './admin.js';
import { renderE2EE } from './e2ee.js';

// selectRoom opens a joined room: its messages (with the marker before the
// first one not yet seen), members and header.
export function selectRoom(name) {
  state.current = name;
  const r = state.rooms.get(name);
  if (r) comeBack(r);
  renderMessages();
  showMarker();
  renderRooms();
  renderMembers();
  renderHeader();
  updateTitle();
  document.body.classList.remove('show-rooms');
  ui.toggleRooms.setAttribute('aria-expanded', 'false');
}

// renderHeader shows the open room's name and size.
export function renderHeader() {
  const r = state.rooms.get(state.current);
  ui.roomTitle.textContent = roomLabel(r);
  const n = r ? (r.info.count !== null ? r.info.count : r.members.size) : 0;
  ui.roomCount.textContent = r ? n + ' online' : 'not joined';
  ui.roomPrivate.hidden = !(r && r.info.private);
  ui.roomLocked.hidden = !(r && r.info.locked);
  const topic = r ? r.info.topic.trim() : '';
  ui.roomTopic.textContent = topic;
  ui.roomTopic.hidden = topic === '';
  ui.attach.hidden = !canSendFiles();
  renderControls();
  renderE2EE();
}

// can tells whether the user holds a permission in a joined room (its
// my_perms) or globally. The server decides; this only hides controls.
export function can(r, perm) {
  return state.perms.includes(perm) || !!(r && r.perms.includes(perm));
}

// myRank is the user's rank in a room for kick and ban, as the server
// ranks it: admin 3, manage (owner) 2, expel (moderator) 1.
export function myRank(r) {
  if (can(r, 'admin')) return 3;
  if (can(r, 'manage')) return 2;
  if (can(r, 'expel')) return 1;
  return 0;
}

// renderControls shows the room, member and admin controls the user's
// permissions allow, and hides the others.
export function renderControls() {
  const isAdmin = state.perms.includes('admin');
  ui.adminToggle.hidden = !isAdmin;
  if (!isAdmin && !ui.adminPanel.hidden) toggleAdmin(false);
  ui.createForm.hidden = !state.perms.includes('send');

  const r = state.rooms.get(state.current);
  ui.inviteForm.hidden = !can(r, 'invite') || !r;
  ui.inviteRoom.textContent = '#' + state.current;

  const manage = !!r && can(r, 'manage');
  const expel = !!r && can(r, 'expel');
  ui.manageToggle.hidden = !(manage || expel);
  if (ui.manageToggle.hidden && !ui.roomSettings.hidden) toggleRoomSettings(false);
  for (const el of ui.roomSettings.querySelectorAll('.manage-only')) el.hidden = !manage;
  ui.unbanForm.hidden = !expel;
  const locked = !!(r && r.info.locked);
  ui.lockToggle.textContent = locked ? 'Let everyone write' : 'Make read-only';
  ui.lockToggle.dataset.locked = String(locked);
  if (state.current === LOBBY || ui.deleteConfirm.dataset.room !== state.current) disarmDelete();
  if (r && document.activeElement !== ui.topicInput && ui.topicInput.dataset.room !== r.name + '\n' + r.info.topic) {
    ui.topicInput.value = r.info.topic;
    ui.topicInput.dataset.room = r.name + '\n' + r.info.topic;
  }
}

// toggleRoomSettings opens or closes the open room's settings.
export function toggleRoomSettings(open) {
  ui.roomSettings.hidden = !open;
  ui.manageToggle.setAttribute('aria-expanded', String(open));
  ui.manageToggle.classList.toggle('active', open);
  if (!open) disarmDelete();
}

// armDelete asks, inside the page, whether the room should really go.
export function armDelete() {
  ui.deleteConfirm.dataset.room = state.current;
  ui.deleteQuestion.textContent = 'Delete #' + state.current + ' and its history for everyone?';
  ui.deleteConfirm.hidden = false;
  ui.deleteRoom.hidden = true;
  ui.deleteNo.focus();
}

// disarmDelete puts the delete button back.
export function disarmDelete() {
  ui.deleteConfirm.hidden = true;
  ui.deleteConfirm.dataset.room = '';
  ui.deleteRoom.hidden = state.current === LOBBY;
}

// memberButton makes one member action. Its label is CSS generated content
// (data-label), so the member's li still reads exactly the name.
export function memberButton(cls, label, aria, run) {
  const b = make('button', 'member-btn ' + cls);
  b.type = 'button';
  b.dataset.label = label;
  b.title = aria;
  b.setAttribute('aria-label', aria);
  b.addEventListener('click', run);
  return b;
}

// memberActions builds the kick, ban and moderator buttons for one member
// of the open room, or null when the user may do none of it to them.
export function memberActions(r, u) {
  if (!r || isMe(u) || !u.id) return null;
  const room = r.name;
  const box = make('span', 'member-actions');
  const target = RANKS[u.role] || 0;
  if (r.info.kind !== 'dm') {
    const b = memberButton('member-dm', 'Message', 'Send ' + u.name + ' a direct message', () => {
      state.dmWith = u.id;
      if (!sendJSON({ type: 'open_dm', user: u.id })) notify('offline', 'Not connected.');
    });
    b.dataset.user = u.id;
    box.appendChild(b);
  }
  if (can(r, 'manage') && target < 2) {
    const isMod = u.role === 'moderator';
    const b = memberButton('member-mod' + (isMod ? ' on' : ''), isMod ? 'Unmod' : 'Mod',
      (isMod ? 'Remove ' + u.name + ' as moderator of #' : 'Make ' + u.name + ' a moderator of #') + room,
      () => command({ type: 'set_room_role', room, user: u.id, role: isMod ? 'member' : 'moderator' },
        isMod ? u.name + ' is no longer a moderator of #' + room + '.' : u.name + ' is now a moderator of #' + room + '.'));
    b.dataset.user = u.id;
    box.appendChild(b);
  }
  if (can(r, 'expel') && target < myRank(r)) {
    const kick = memberButton('member-kick', 'Kick', 'Remove ' + u.name + ' from #' + room,
      () => command({ type: 'kick', room, user: u.id }, u.name + ' was removed from #' + room + '.'));
    kick.dataset.user = u.id;
    box.appendChild(kick);
    const ban = memberButton('member-ban', 'Ban', 'Ban ' + u.name + ' from #' + room,
      () => command({ type: 'ban', room, user: u.id }, u.name + ' is banned from #' + room + '.'));
    ban.dataset.user = u.id;
    box.appendChild(ban);
  }
  return box.childElementCount > 0 ? box : null;
}

// renderKnownUsers offers the ids of people in the joined rooms as
// suggestions in the user id fields (invite, unban, roles, bans).
export function renderKnownUsers() {
  const known = new Map();
  for (const r of state.rooms.values()) {
    for (const [id, m] of r.members) {
      if (known.size >= MAX_KNOWN_USERS) break;
      if (id && !known.has(id) && !(state.me && id === state.me.id)) known.set(id, m.name);
    }
  }
  const ids = Array.from(known.keys()).sort();
  const key = ids.map((id) => id + '\u0000' + known.get(id)).join('\u0001');
  if (key === state.knownUsersKey) return;
  state.knownUsersKey = key;
  const frag = document.createDocumentFragment();
  for (const id of ids) {
    const opt = document.createElement('option');
    opt.value = id;
    opt.label = known.get(id);
    frag.appendChild(opt);
  }
  ui.knownUsers.replaceChildren(frag);
}

// renderRooms lists the joined rooms with unread counts and leave buttons.
export function renderRooms() {
  // Rooms first (the lobby at the top), then the conversations, apart.
  const isDM = (name) => state.rooms.get(name).info.kind === 'dm';
  const names = Array.from(state.rooms.keys()).sort((a, b) => {
    if (isDM(a) !== isDM(b)) return isDM(a) ? 1 : -1;
    if (a === LOBBY) return -1;
    if (b === LOBBY) return 1;
    return roomLabel(state.rooms.get(a)).localeCompare(roomLabel(state.rooms.get(b)));
  });
  const frag = document.createDocumentFragment();
  let section = false;
  for (const name of names) {
    const r = state.rooms.get(name);
    const dm = r.info.kind === 'dm';
    if (dm && !section) {
      section = true;
      frag.appendChild(make('li', 'room-section', 'Direct messages'));
    }
    const li = make('li', (name === state.current ? 'room active' : 'room') + (dm ? ' room-dm' : ''));
    li.dataset.room = name;
    const open = make('button', 'room-open');
    open.type = 'button';
    open.appendChild(make('span', 'room-hash', dm ? '@' : r.info.private ? '●' : '#'));
    if (r.info.private && !dm) open.title = 'Private room';
    open.appendChild(make('span', 'room-name', dm ? roomLabel(r).slice(1) : name));
    if (r.unread > 0 && name !== state.current) {
      if (r.mentions > 0) {
        // A mention is the unread that is for you: marked apart from the count.
        const at = make('span', 'unread-mention', '@');
        at.title = r.mentions === 1 ? 'You are mentioned' : 'You are mentioned ' + r.mentions + ' times';
        open.appendChild(at);
      }
      const badge = make('span', 'unread', r.unread > 99 ? '99+' : String(r.unread));
      badge.title = r.unread + ' unread';
      open.appendChild(badge);
    }
    if (name === state.current) open.setAttribute('aria-current', 'true');
    open.addEventListener('click', () => selectRoom(name));
    li.appendChild(open);
    const leave = make('button', 'room-leave', '×');
    leave.type = 'button';
    leave.title = 'Leave ' + roomLabel(r);
    leave.setAttribute('aria-label', 'Leave ' + roomLabel(r));
    leave.addEventListener('click', () => {
      if (!sendJSON({ type: 'leave', room: name })) notify('offline', 'Not connected.');
    });
    li.appendChild(leave);
    frag.appendChild(li);
  }
  ui.rooms.replaceChildren(frag);
  renderE2EE();
}

// renderBrowse lists every room the server reported, to join with a click.
export function renderBrowse() {
  const frag = document.createDocumentFragment();
  if (state.browse.length === 0) {
    frag.appendChild(make('li', 'empty', 'No rooms yet.'));
  }
  for (const b of state.browse) {
    const li = make('li', state.rooms.has(b.name) ? 'browse-room joined' : 'browse-room');
    li.dataset.room = b.name;
    const btn = make('button', 'browse-join');
    btn.type = 'button';
    btn.appendChild(make('span', 'room-name', '#' + b.name));
    if (b.private) btn.appendChild(make('span', 'tag', 'private'));
    if (b.members !== null) btn.appendChild(make('span', 'count', String(b.members)));
    btn.title = (state.rooms.has(b.name) ? 'Open ' : 'Join ') + b.name + (b.topic ? ': ' + b.topic : '');
    btn.addEventListener('click', () => joinRoom(b.name));
    li.appendChild(btn);
    frag.appendChild(li);
  }
  ui.browse.replaceChildren(frag);
}

// markBrowseJoined refreshes the joined marks of the browse list.
export function markBrowseJoined() {
  for (const li of ui.browse.children) {
    if (li.dataset.room) li.classList.toggle('joined', state.rooms.has(li.dataset.room));
  }
}

// renderMembers lists the open room's members, you first.
export function renderMembers() {
  const r = state.rooms.get(state.current);
  const list = r ? Array.from(r.members, ([id, m]) => ({ id, name: m.name, role: m.role })) : [];
  list.sort((a, b) => {
    if (isMe(a) !== isMe(b)) return isMe(a) ? -1 : 1;
    return a.name.localeCompare(b.name);
  });
  const frag = document.createDocumentFragment();
  for (const u of list) {
    const li = make('li', isMe(u) ? 'member me' : 'member');
    li.dataset.user = u.id;
    if (u.id) li.title = u.id;
    li.appendChild(avatar(u));
    li.appendChild(make('span', 'member-name', u.name));
    if (u.role && u.role !== 'member') li.appendChild(badge('tag role-' + (ROLES.has(u.role) ? u.role : 'other'), u.role));
    if (isMe(u)) li.appendChild(badge('tag you', 'you'));
    const actions = memberActions(r, u);
    if (actions) {
      li.classList.add('has-actions');
      li.appendChild(actions);
    }
    frag.appendChild(li);
  }
  ui.members.replaceChildren(frag);
  ui.memberCount.textContent = r ? String(list.length) : '';
  renderKnownUsers();
}

// updateTitle puts the unread count in the tab title.
export function updateTitle() {
  let n = 0;
  for (const r of state.rooms.values()) n += r.unread;
  document.title = (n > 0 ? '(' + n + ') ' : '') + roomLabel(state.rooms.get(state.current)) + ' · Chat';
}

// updateCounter shows how close the draft is to the server's length cap.
export function updateCounter() {
  const max = state.limits && typeof state.limits.text_max_chars === 'number' ? state.limits.text_max_chars : 0;
  const len = Array.from(ui.input.value).length;
  const lines = ui.input.value.split('\n').length;
  ui.input.rows = Math.min(6, Math.max(1, lines));
  if (!max || len < max * 0.8) {
    ui.counter.hidden = true;
    return;
  }
  ui.counter.hidden = false;
  ui.counter.textContent = len + ' / ' + max;
  ui.counter.classList.toggle('over', len > max);
}

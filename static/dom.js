// Page elements and the small DOM builders every other module uses. Text only ever goes
// in through textContent or data attributes.
// (Security rule: see app.js.)

import { HUES } from './state.js';
import { inviteUser } from './actions.js';

export const $ = (id) => document.getElementById(id);

export const ui = {
  status: $('status'),
  me: $('me'),
  devBanner: $('dev-banner'),
  motd: $('motd'),
  rooms: $('rooms'),
  browse: $('browse'),
  browseRefresh: $('browse-refresh'),
  joinForm: $('join-form'),
  joinName: $('join-name'),
  roomTitle: $('room-title'),
  roomCount: $('room-count'),
  roomTopic: $('room-topic'),
  roomPrivate: $('room-private'),
  roomLocked: $('room-locked'),
  myRole: $('my-role'),
  attach: $('attach'),
  fileInput: $('file-input'),
  messages: $('messages'),
  jump: $('jump'),
  compose: $('compose'),
  input: $('input'),
  counter: $('counter'),
  send: $('send'),
  members: $('members'),
  memberCount: $('member-count'),
  notices: $('notices'),
  logoutForm: $('logout-form'),
  toggleRooms: $('toggle-rooms'),
  toggleMembers: $('toggle-members'),
  createForm: $('create-form'),
  createName: $('create-name'),
  createPrivate: $('create-private'),
  inviteForm: $('invite-form'),
  inviteUser: $('invite-user'),
  inviteRoom: $('invite-room'),
  knownUsers: $('known-users'),
  manageToggle: $('room-manage-toggle'),
  roomSettings: $('room-settings'),
  topicForm: $('topic-form'),
  topicInput: $('topic-input'),
  lockToggle: $('lock-toggle'),
  deleteRoom: $('delete-room'),
  deleteConfirm: $('delete-confirm'),
  deleteQuestion: $('delete-question'),
  deleteYes: $('delete-yes'),
  deleteNo: $('delete-no'),
  unbanForm: $('unban-form'),
  unbanUser: $('unban-user'),
  adminToggle: $('admin-toggle'),
  adminPanel: $('admin-panel'),
  adminClose: $('admin-close'),
  settingsForm: $('settings-form'),
  settingsReload: $('settings-reload'),
  settingsState: $('settings-state'),
  roleForm: $('role-form'),
  roleUser: $('role-user'),
  roleSelect: $('role-select'),
  gbanForm: $('gban-form'),
  gbanUser: $('gban-user'),
  gbanReason: $('gban-reason'),
  audit: $('audit'),
  auditRefresh: $('audit-refresh'),
};

// make builds an element with a class and optional text, so that every
// piece of text goes through textContent and never through HTML parsing.
export function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

// hueClass picks a stable colour class for a user id, so avatars are
// coloured without inline styles (which the CSP forbids).
export function hueClass(id) {
  let h = 0;
  for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
  return 'hue-' + (h % HUES);
}

// initial gives the first visible character of a name for its avatar.
export function initial(name) {
  const first = Array.from(name.trim())[0];
  return first ? first.toUpperCase() : '?';
}

// avatar draws a coloured circle with the user's initial. The letter is
// CSS generated content from data-initial, so the element adds no text to
// its list item or message (a member's li reads exactly the name).
export function avatar(u) {
  const a = make('span', 'avatar ' + hueClass(u.id || u.name));
  a.dataset.initial = initial(u.name);
  a.setAttribute('aria-hidden', 'true');
  return a;
}

// badge makes a small label whose text is CSS generated content from
// data-label, for the same reason as avatar.
export function badge(className, label) {
  const b = make('span', className);
  b.dataset.label = label;
  return b;
}

// hhmm formats Unix milliseconds as local HH:MM, as the messages show it.
export function hhmm(d) {
  return String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
}

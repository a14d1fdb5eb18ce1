// The page's constants and its one state object, and helpers that read or normalise
// server values.
// (Security rule: see app.js.)

import { $ } from './dom.js';

export const LOBBY = 'lobby';

export const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;

export const BACKOFF_MIN_MS = 1000;

export const BACKOFF_MAX_MS = 30000;

export const MAX_MESSAGES_PER_ROOM = 500;

export const MAX_PENDING = 200;

export const MAX_NOTICES = 5;

export const NOTICE_MS = 8000;

export const HUES = 8;

export const ROLES = new Set(['admin', 'owner', 'moderator', 'readonly']);

// Image types the page shows inline (as <img> from a blob: URL). Anything
// else is offered as a download whose blob is typed octet-stream, so the
// browser never renders it as a document of this origin.
export const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp']);

// Used when the server's welcome does not say which files it takes.
export const DEFAULT_FILE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'application/pdf', 'text/plain'];

export const DEFAULT_FILE_MAX = 1 << 20;

export const MAX_SEEN = 5000;

export const MAX_OPS = 100; // commands waiting for their ack

export const MAX_KNOWN_USERS = 300; // suggestions in the user id fields

// History comes in pages (more: true); one catch-up fetches at most this many
// and then says that older messages are not shown.
export const MAX_HISTORY_PAGES = 20;

// Files in history come without their bytes; they are fetched one at a time,
// at most this many waiting, each retried at most RETRY_MAX times when the
// server says to slow down.
export const MAX_FETCH_QUEUE = 50;

export const RETRY_MAX = 5;

export const OK_MS = 4000;

// Rank of a member's display role, as the server orders them for kick and
// ban (admin > owner > moderator > others). The page only uses it to hide
// buttons the server would refuse.
export const RANKS = { admin: 3, owner: 2, moderator: 1 };

// Run-time settings: the form field names are the protocol's names.
export const SETTING_NUMBERS = ['msg_rate', 'msg_burst', 'user_msg_rate', 'user_msg_burst', 'byte_rate', 'byte_burst', 'read_limit', 'text_max_chars'];

export const SETTING_INTS = new Set(['msg_burst', 'user_msg_burst', 'byte_burst', 'read_limit', 'text_max_chars']);

// Characters the server refuses in file names (paths, shell specials,
// controls and bidi overrides), checked first for a clearer message.
export const BAD_FILE_NAME = /[\/\\:*?"<>|\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;

export const GROUP_MS = 5 * 60 * 1000; // messages closer than this from one sender are grouped

export const state = {
  ws: null,
  connected: false, // true between welcome and close
  me: null, // {id, name} from welcome
  limits: null,
  perms: [], // global permissions from welcome / you
  rooms: new Map(), // room name -> record made by room()
  wanted: new Set([LOBBY]), // rooms to be in; re-joined after a reconnect
  current: LOBBY,
  switchTo: '', // room the user asked to open; opened when its `joined` arrives
  dmWith: '', // user id whose conversation the user asked to open (open_dm)
  nextRef: 1,
  pending: new Map(), // ref -> {room, text} for says not yet acked
  attempt: 0,
  retryTimer: 0,
  countdownTimer: 0,
  retryAt: 0,
  leaving: false,
  browse: [],
  ops: new Map(), // ref -> {ok, after} for commands waiting for their ack
  settings: null, // the server's settings as last received (admins)
  knownUsersKey: '',
  history: new Map(), // ref -> {room, after, tries} for history pages asked for
  fetchQueue: [], // history files waiting for their bytes
  fetching: null, // {ref, file, tries} for the fetch_file in flight
  fetchTimer: 0,
};

// str turns any JSON value into a display string, so a malformed server
// object cannot throw while rendering.
export function str(v, fallback = '') {
  return typeof v === 'string' ? v : fallback;
}

// user normalises a {id, name, role} object from the server.
export function user(u) {
  if (!u || typeof u !== 'object') return { id: '', name: '?', role: '' };
  return { id: str(u.id), name: str(u.name, '?') || '?', role: str(u.role) };
}

// roomInfo copies the description fields of joined/room/rooms events
// that are present, so a partial event does not erase the others.
export function roomInfo(info, ev) {
  if (typeof ev.private === 'boolean') info.private = ev.private;
  if (typeof ev.locked === 'boolean') info.locked = ev.locked;
  if (typeof ev.topic === 'string') info.topic = ev.topic;
  if (ev.kind === 'dm' || ev.kind === 'room') info.kind = ev.kind;
  if (ev.peer && typeof ev.peer === 'object') info.peer = str(ev.peer.name) || str(ev.peer.id);
  if (typeof ev.member_count === 'number') info.count = ev.member_count;
  else if (typeof ev.online === 'number') info.count = ev.online;
  return info;
}

// roomLabel is how a room is named on the page: #name, or @person for a
// direct-message conversation.
export function roomLabel(r) {
  if (r && r.info.kind === 'dm') return '@' + (r.info.peer || 'conversation');
  return '#' + (r ? r.name : state.current);
}

// isMe tells whether a user is the signed-in user, to mark own messages.
export function isMe(u) {
  return !!(state.me && u.id && u.id === state.me.id);
}

// room returns the local record of a joined room, creating it if needed.
export function room(name) {
  let r = state.rooms.get(name);
  if (!r) {
    r = {
      name,
      members: new Map(), // user id -> {name, role}
      messages: [],
      seen: new Set(),
      unread: 0, // messages of others that arrived while the room was not in view
      mentions: 0, // how many of them mention the user
      unreadFrom: null, // id of the first of them, where the marker goes when the user comes back
      marker: null, // id of the message the "new messages" marker sits before, or null
      info: { private: false, locked: false, topic: '', count: null, kind: 'room' },
      perms: [], // my_perms in this room
      lastId: 0, // highest message id seen: where a reconnect resumes
      pages: 0, // history pages fetched since the last join
    };
    state.rooms.set(name, r);
  }
  return r;
}

// comeBack is what happens to a room's unread part when the user returns to
// it (opens it, or the tab becomes visible with it open): the marker moves to
// the first message they have not seen, or goes away when nothing is new, and
// the counts start again from nothing.
export function comeBack(r) {
  r.marker = r.unread > 0 ? r.unreadFrom : null;
  r.unread = 0;
  r.mentions = 0;
  r.unreadFrom = null;
}

// The message list: entries per room, their rendering (grouping, times, own messages)
// and scrolling.
// (Security rule: see app.js.)

import { avatar, hhmm, make, ui } from './dom.js';
import {
  GROUP_MS, isMe, MAX_MESSAGES_PER_ROOM, MAX_SEEN, room, state, str, user,
} from './state.js';
import { fileNode } from './files.js';
import { checkEntry, sigBadge } from './signing.js';
import { sendJSON } from './connection.js';
import { mentionRanges } from './mentions.js';

// LINK finds http(s) links in message text; nothing else is ever a link.
const LINK = /\bhttps?:\/\/[^\s<>"']+/gi;

// DELETED_TEXT is the one-line notice a deleted message leaves behind.
const DELETED_TEXT = {
  sender: 'Message deleted by its sender',
  moderator: 'Message removed by a moderator',
};

// makeEntry turns a message or file event into a timeline entry, or
// returns null for one already shown (a resume or history can repeat).
export function makeEntry(r, ev) {
  if (typeof ev.id === 'number') {
    if (r.seen.has(ev.id)) return null;
    r.seen.add(ev.id);
    if (r.seen.size > MAX_SEEN) {
      r.seen = new Set(r.messages.filter((e) => typeof e.id === 'number').map((e) => e.id));
      r.seen.add(ev.id);
    }
    r.lastId = Math.max(r.lastId, ev.id);
  }
  const entry = {
    kind: 'msg',
    id: ev.id,
    from: user(ev.from),
    ts: typeof ev.ts === 'number' ? ev.ts : Date.now(),
    text: str(ev.text),
    file: null,
    sig: 'unsigned',
  };
  if (ev.type === 'file') {
    entry.file = {
      name: str(ev.name, 'file') || 'file',
      mime: str(ev.mime),
      size: typeof ev.size === 'number' ? ev.size : 0,
      data: str(ev.data),
      url: '',
      type: '',
      room: r.name,
      id: ev.id,
      // History carries no bytes: they are fetched with fetch_file ('' not
      // yet, 'queued', 'failed').
      fetch: '',
    };
  }
  checkEntry(r, entry, ev);
  return entry;
}

// pushEntry appends a message or system line to a room and, when the room
// is open, to the page, keeping the view pinned to the bottom if it was.
export function pushEntry(r, entry) {
  r.messages.push(entry);
  trimRoom(r);
  // Writing in a room is reading it: the marker has done its job.
  if (entry.kind === 'msg' && isMe(entry.from)) dropMarker(r);
  if (r.name !== state.current) return;
  const stick = atBottom();
  ui.messages.appendChild(entryNode(entry, r.messages[r.messages.length - 2]));
  while (ui.messages.childElementCount > MAX_MESSAGES_PER_ROOM) {
    ui.messages.firstElementChild.remove();
    ui.messages.firstElementChild.classList.remove('msg-cont');
  }
  if (stick || (entry.kind === 'msg' && isMe(entry.from))) scrollToBottom();
  else if (entry.kind === 'msg') ui.jump.hidden = false;
}

// trimRoom keeps a room's timeline bounded and frees the blob URLs of
// files that fall off it.
export function trimRoom(r) {
  if (r.messages.length <= MAX_MESSAGES_PER_ROOM) return;
  for (const e of r.messages.splice(0, r.messages.length - MAX_MESSAGES_PER_ROOM)) releaseEntry(e);
}

// releaseEntry frees what an entry holds outside the DOM.
export function releaseEntry(e) {
  if (e.file && e.file.url) {
    URL.revokeObjectURL(e.file.url);
    e.file.url = '';
  }
}

// renderMessages redraws the open room's timeline, staying at the bottom
// if the reader was there.
export function renderMessages() {
  const r = state.rooms.get(state.current);
  const stick = atBottom();
  const frag = document.createDocumentFragment();
  if (r) {
    r.messages.forEach((e, i) => {
      const marked = r.marker !== null && e.id === r.marker;
      if (marked) frag.appendChild(markerNode());
      frag.appendChild(entryNode(e, r.messages[i - 1], marked));
    });
  }
  ui.messages.replaceChildren(frag);
  if (stick) scrollToBottom();
}

// continues tells whether a message follows one from the same sender
// closely enough to be shown as part of the same group.
export function continues(entry, prev) {
  return !!prev && prev.kind === 'msg' && entry.kind === 'msg' &&
    prev.from.id === entry.from.id && prev.from.name === entry.from.name &&
    entry.ts - prev.ts >= 0 && entry.ts - prev.ts < GROUP_MS;
}

// entryNode builds the DOM for one timeline entry, text only; prev is the
// entry before it, to group consecutive messages of one sender, unless
// the unread marker stands between them (afterMarker).
export function entryNode(entry, prev, afterMarker = false) {
  if (entry.kind === 'deleted') {
    const line = make('div', 'sys msg-deleted');
    line.dataset.id = String(entry.id);
    line.appendChild(make('span', 'sys-text', entry.text));
    return line;
  }
  if (entry.kind === 'sys') {
    const line = make('div', 'sys');
    line.appendChild(make('span', 'sys-text', entry.text));
    return line;
  }
  const mine = isMe(entry.from);
  const item = make('div', mine ? 'msg msg-mine' : 'msg');
  if (continues(entry, prev)) {
    // Remembered so that the grouping comes back when the marker goes.
    item.dataset.cont = '1';
    if (!afterMarker) item.classList.add('msg-cont');
  }
  if (!mine && !entry.file && mentionsMe(entry.text)) item.classList.add('msg-mention');
  if (typeof entry.id === 'number') item.dataset.id = String(entry.id);
  item.appendChild(avatar(entry.from));
  const body = make('div', 'msg-body');
  const head = make('div', 'msg-head');
  head.appendChild(make('span', 'msg-from', entry.from.name));
  const when = new Date(entry.ts);
  const time = make('time', 'msg-time', Number.isNaN(when.getTime()) ? '' : hhmm(when));
  if (!Number.isNaN(when.getTime())) {
    time.dateTime = when.toISOString();
    time.title = when.toLocaleString();
  }
  head.appendChild(time);
  head.appendChild(sigBadge(entry));
  const r = state.rooms.get(state.current);
  let deleteButton = null;
  if (typeof entry.id === 'number' && r &&
      (mine || (r.info.kind !== 'dm' && r.perms.includes('expel')))) {
    const del = make('button', 'msg-delete', 'Delete');
    del.type = 'button';
    del.title = mine ? 'Delete your message' : 'Remove this message (moderator)';
    const id = entry.id;
    const name = r.name;
    del.addEventListener('click', () => sendJSON({ type: 'delete', room: name, id }));
    item.dataset.deletable = '1';
    deleteButton = del;
  }
  if (entry.sig === 'invalid') {
    item.classList.remove('msg-cont');
    delete item.dataset.cont;
    item.classList.add('msg-invalid');
  }
  body.appendChild(head);
  body.appendChild(entry.file ? fileNode(entry.file) : textNode(entry.text));
  item.appendChild(body);
  if (deleteButton) item.appendChild(deleteButton);
  return item;
}

// linkRuns cuts message text into runs of plain text ({text}) and http(s) links
// ({text, href}), in order; together they are the whole text.
export function linkRuns(text) {
  const runs = [];
  let at = 0;
  for (const m of text.matchAll(LINK)) {
    // A sentence's closing punctuation is not part of the link.
    const href = m[0].replace(/[.,;:!?)\]]+$/, '');
    let url;
    try {
      url = new URL(href);
    } catch {
      continue;
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') continue;
    if (m.index > at) runs.push({ text: text.slice(at, m.index) });
    runs.push({ text: href, href: url.href });
    at = m.index + href.length;
  }
  if (at < text.length) runs.push({ text: text.slice(at) });
  return runs;
}

// mentionsMe tells whether a text mentions the signed-in user (outside links:
// a profile URL ending in /@name is not a mention).
export function mentionsMe(text) {
  if (!state.me || typeof text !== 'string') return false;
  return linkRuns(text).some((run) => !run.href && mentionRanges(run.text, state.me.name).length > 0);
}

// textNode renders message text with its http(s) links clickable and the
// mentions of the signed-in user highlighted: links are <a> elements made
// with DOM APIs (their text and href set as plain strings, opened in a new
// tab without opener or referrer), mentions <mark> elements with the text
// in textContent, everything else is text nodes.
export function textNode(text) {
  const div = make('div', 'msg-text');
  const me = state.me ? state.me.name : '';
  for (const run of linkRuns(text)) {
    if (run.href) {
      const a = make('a', 'msg-link', run.text);
      a.href = run.href;
      a.target = '_blank';
      a.rel = 'noopener noreferrer';
      a.referrerPolicy = 'no-referrer';
      div.appendChild(a);
      continue;
    }
    let at = 0;
    for (const [start, end] of mentionRanges(run.text, me)) {
      if (start > at) div.appendChild(document.createTextNode(run.text.slice(at, start)));
      const mark = make('mark', 'mention', run.text.slice(start, end));
      mark.title = 'Mentions you';
      div.appendChild(mark);
      at = end;
    }
    if (at < run.text.length) div.appendChild(document.createTextNode(run.text.slice(at)));
  }
  return div;
}

// markerNode is the one-line divider before the first message the user had
// not seen when they came back to the room.
export function markerNode() {
  const line = make('div', 'unread-marker');
  line.setAttribute('role', 'separator');
  line.appendChild(make('span', 'unread-marker-text', 'New messages'));
  return line;
}

// dropMarker takes the "new messages" marker away from a room and, when the
// room is open, from the page.
export function dropMarker(r) {
  if (r.marker === null) return;
  r.marker = null;
  if (r.name !== state.current) return;
  const line = ui.messages.querySelector('.unread-marker');
  if (!line) return;
  const next = line.nextElementSibling;
  line.remove();
  // The message after it goes back into its sender's group, if it was one.
  if (next && next.dataset.cont === '1') next.classList.add('msg-cont');
}

// showMarker scrolls the open room so that its marker is in view: at the
// bottom when everything unread fits, else with the marker at the top (and
// the jump button offered for the rest).
export function showMarker() {
  scrollToBottom();
  const line = ui.messages.querySelector('.unread-marker');
  if (!line) return;
  const top = line.getBoundingClientRect().top - ui.messages.getBoundingClientRect().top;
  if (top < 0) {
    ui.messages.scrollTop += top - 8;
    ui.jump.hidden = false;
  }
}

// onDeleted replaces a deleted message with a one-line notice, dropping
// what the page held of it (its text, a file's bytes).
export function onDeleted(ev) {
  const r = state.rooms.get(str(ev.room));
  if (!r || typeof ev.id !== 'number') return;
  const i = r.messages.findIndex((e) => e.id === ev.id && e.kind === 'msg');
  if (i < 0) return;
  releaseEntry(r.messages[i]);
  r.messages[i] = {
    kind: 'deleted', id: ev.id, ts: r.messages[i].ts,
    text: DELETED_TEXT[ev.by] || DELETED_TEXT.moderator,
  };
  if (r.name === state.current) renderMessages();
}

// atBottom tells whether the user is reading the newest messages, so new
// ones only auto-scroll then.
export function atBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
}

// scrollToBottom shows the newest message.
export function scrollToBottom() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
  ui.jump.hidden = true;
}

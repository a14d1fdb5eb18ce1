// Files: limits, picking and sending them, and showing received ones (inline images
// through blob URLs).
// (Security rule: see app.js.)

import { badge, make } from './dom.js';
import {
  BAD_FILE_NAME, DEFAULT_FILE_MAX, DEFAULT_FILE_TYPES, INLINE_IMAGES, MAX_FETCH_QUEUE, RETRY_MAX, room, state,
  str,
} from './state.js';
import { sendJSON } from './connection.js';
import { retryLater } from './events.js';
import { renderMessages } from './messages.js';
import { notify } from './notices.js';
import { sendSignedFile } from './signing.js';

// wantFile queues a history file for its bytes; one fetch runs at a time.
export function wantFile(f) {
  if (f.fetch || typeof f.id !== 'number' || state.fetchQueue.length >= MAX_FETCH_QUEUE) return;
  f.fetch = 'queued';
  state.fetchQueue.push(f);
  pumpFetch();
}

// pumpFetch sends the next fetch_file when none is in flight.
export function pumpFetch() {
  if (state.fetching || state.fetchTimer || !state.connected) return;
  while (state.fetchQueue.length > 0) {
    const f = state.fetchQueue.shift();
    if (!state.rooms.has(f.room)) {
      f.fetch = '';
      continue;
    }
    const ref = 'f' + state.nextRef++;
    state.fetching = { ref, file: f, tries: f.tries || 0 };
    sendJSON({ type: 'fetch_file', room: f.room, id: f.id, ref });
    return;
  }
}

// onFetched gives a history file its bytes and shows it.
export function onFetched(ev) {
  const f = state.fetching.file;
  state.fetching = null;
  f.data = str(ev.data);
  f.fetch = f.data ? '' : 'failed';
  if (f.data && f.onData) f.onData(f.data); // its signature is checked against these bytes
  f.onData = null;
  if (f.room === state.current) renderMessages();
  pumpFetch();
}

// onFetchRefused retries a fetch the server asked to slow down, a few times;
// any other refusal (the file is gone) shows the file as unavailable.
export function onFetchRefused(ev) {
  const f = state.fetching.file;
  const tries = state.fetching.tries;
  state.fetching = null;
  if (ev.code === 'rate_limited' && tries < RETRY_MAX) {
    f.tries = tries + 1;
    state.fetchQueue.unshift(f);
    state.fetchTimer = 1;
    retryLater(ev, () => {
      state.fetchTimer = 0;
      pumpFetch();
    });
    return;
  }
  f.fetch = 'failed';
  if (f.room === state.current) renderMessages();
  pumpFetch();
}

// forgetFetches drops the fetches of a closed connection; the files ask again
// when they are next shown.
export function forgetFetches() {
  if (state.fetching) state.fetching.file.fetch = '';
  for (const f of state.fetchQueue) f.fetch = '';
  state.fetching = null;
  state.fetchQueue = [];
  state.history.clear();
}

// fileURL decodes a file's base64 bytes once into a blob: URL. Only the
// inline image types keep their type; everything else becomes an opaque
// download.
export function fileURL(f) {
  if (f.url) return f.url;
  let bytes;
  try {
    const bin = atob(f.data);
    bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  } catch (err) {
    return '';
  }
  f.type = INLINE_IMAGES.has(f.mime) ? f.mime : 'application/octet-stream';
  f.url = URL.createObjectURL(new Blob([bytes], { type: f.type }));
  f.data = ''; // the blob holds the bytes now
  return f.url;
}

// fileSize formats a byte count for people.
export function fileSize(n) {
  if (n < 1024) return n + ' B';
  if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + ' KB';
  return (n / 1024 / 1024).toFixed(1) + ' MB';
}

// fileNode shows a file message: an image inline, anything else as a
// download link. The name is always text (caption or link text).
export function fileNode(f) {
  const box = make('div', 'msg-text msg-file');
  if (!f.data && !f.url) return pendingFileNode(f, box);
  const url = fileURL(f);
  if (url && INLINE_IMAGES.has(f.mime)) {
    const img = make('img', 'msg-image');
    img.alt = f.name;
    img.decoding = 'async';
    img.src = url;
    const link = make('a', 'msg-image-link');
    link.href = url;
    link.download = f.name;
    link.title = 'Download ' + f.name;
    link.appendChild(img);
    box.appendChild(link);
    box.appendChild(make('span', 'msg-caption', f.name + ' · ' + fileSize(f.size)));
    return box;
  }
  if (!url) {
    box.appendChild(make('span', 'msg-caption', f.name + ' (cannot be shown)'));
    return box;
  }
  const link = make('a', 'file-card');
  link.href = url;
  link.download = f.name;
  link.type = f.type;
  link.appendChild(badge('file-icon', (f.mime.split('/')[1] || 'file').slice(0, 4).toUpperCase()));
  link.appendChild(make('span', 'file-name', f.name));
  link.appendChild(make('span', 'file-size', fileSize(f.size)));
  box.appendChild(link);
  return box;
}

// pendingFileNode shows a history file whose bytes are not here yet, and asks
// for them: they arrive one file at a time, and the file is shown then.
export function pendingFileNode(f, box) {
  if (f.fetch === 'failed') {
    box.appendChild(make('span', 'msg-caption', f.name + ' (no longer available)'));
    return box;
  }
  if (f.fetch === 'refused') { // an E2EE room's file that failed its checks (e2eefiles.js)
    box.appendChild(make('span', 'msg-caption msg-refused', f.name + ' (not shown: ' + f.why + ')'));
    return box;
  }
  wantFile(f);
  box.appendChild(make('span', 'msg-caption msg-loading', f.name + ' · ' + fileSize(f.size) + ' · loading…'));
  return box;
}

// canSendFiles tells whether the user may send files in the open room
// (globally or by a role in the room); the server checks again.
export function canSendFiles() {
  const r = state.rooms.get(state.current);
  return state.perms.includes('send_binary') || !!(r && r.perms.includes('send_binary'));
}

// fileLimits is what the server takes: from the welcome when it says so,
// else the server's defaults. Sending a file it would refuse for size can
// cost the connection, so the page checks first.
export function fileLimits() {
  const l = state.limits || {};
  return {
    max: typeof l.file_max_bytes === 'number' && l.file_max_bytes > 0 ? l.file_max_bytes : DEFAULT_FILE_MAX,
    types: Array.isArray(l.file_types) ? l.file_types.filter((x) => typeof x === 'string') : DEFAULT_FILE_TYPES,
  };
}

// sendFile announces a file and sends its bytes as the one binary frame
// that must follow the announcement.
export async function sendFile(file) {
  const { max, types } = fileLimits();
  const mime = file.type || '';
  if (!types.includes(mime)) {
    notify('file_type', 'The file was refused: ' + (mime ? mime + ' files' : 'files of unknown type') +
      ' cannot be sent. Accepted: ' + types.join(', ') + '.');
    return;
  }
  if (file.size <= 0 || file.size > max) {
    notify('file_too_big', 'The file was refused: files must be between 1 byte and ' + fileSize(max) +
      (file.size > 0 ? ', and this one has ' + fileSize(file.size) : '') + '.');
    return;
  }
  const name = file.name;
  if (Array.from(name).length > 128) {
    notify('bad_filename', 'The file was refused: its name is longer than 128 characters.');
    return;
  }
  if (BAD_FILE_NAME.test(name) || name.includes('..') || name.startsWith('.') || name.trim() !== name) {
    notify('bad_filename', 'The file was refused: its name may not contain / \\ : * ? " < > |, "..", control characters or a leading dot. Rename it and try again.');
    return;
  }
  let buf;
  try {
    buf = await file.arrayBuffer();
  } catch (err) {
    notify('bad_file', 'The file cannot be read.');
    return;
  }
  const ref = String(state.nextRef++);
  const ann = { type: 'file', room: state.current, name: file.name, mime, size: buf.byteLength, ref };
  // Signed when this device can sign; the announcement and its bytes leave together.
  sendSignedFile(ann, buf, (a) => {
    const ws = state.ws;
    if (!state.connected || !ws || ws.readyState !== WebSocket.OPEN) {
      notify('offline', 'Not connected; the file was not sent.');
      return;
    }
    ws.send(JSON.stringify(a));
    ws.send(buf);
  });
}

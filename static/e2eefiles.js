// Files in end-to-end encrypted rooms (PROTOCOL.md, "Files in E2EE rooms"). The page
// checks a file's real type, encrypts it with a fresh AES-256-GCM key, uploads the
// ciphertext as an opaque file, and sends the key, hash and type inside an MLS
// message; a receiving page decrypts the bytes and shows them only if their hash,
// size and real type (sniffed here: the server cannot) are what the message says.
// Every refusal is counted (window.__e2eeFiles) and shown, as a notice and a line in
// the room. This module never reads the server's `file` events as files: in these
// rooms they only carry ciphertext.
// (Security rule: see app.js.)

import { INLINE_IMAGES, MAX_OPS, state } from './state.js';
import { fileLimits, fileSize } from './files.js';
import { renderMessages, pushEntry } from './messages.js';
import { notify } from './notices.js';
import { b64, unb64 } from './sigbytes.js';

// Sizes of the per-file key, IV and hash, in bytes.
const KEY_BYTES = 32;
const IV_BYTES = 12;
const HASH_BYTES = 32;

// OPAQUE is how the upload is announced: the server holds ciphertext, typed so.
const OPAQUE = 'application/octet-stream';

// UPLOAD_NAME is the name the server sees: the real one travels encrypted.
const UPLOAD_NAME = 'encrypted';

// MAX_CARRIED bounds the live ciphertexts kept until the message with their key
// arrives (it follows its file at once); older ones are fetched again if needed.
const MAX_CARRIED = 8;

// MAX_MINE bounds the files this page sent whose plaintext it keeps to show them.
const MAX_MINE = 16;

// SNIFF_BYTES is how much of a file the type check reads, as the server's sniffer.
const SNIFF_BYTES = 512;

// ACTIVE are the byte sequences that refuse a file anywhere in it, the same as the
// server's for plain rooms (files.go activeMarkers): markup or active PDF content.
const ACTIVE = ['<script', '<html', '<svg', '<iframe', '<object', '<embed', '<body', '<!doctype', '<?xml', '<meta',
  'javascript:', 'onerror=', 'onload=', '/javascript', '/launch', '/embeddedfile', '/openaction', '/aa '];

// WHY says in words why a received file was not shown, per refusal reason.
const WHY = {
  bad_meta: 'its description in the encrypted message is malformed',
  decrypt: 'its bytes do not decrypt with the key its message carries (altered or replaced)',
  hash: 'its bytes are not the ones its sender hashed',
  size: 'its size is not the one its sender gave',
  type: 'its content is not the type it claims',
  active: 'it hides markup or active content',
  not_allowed: 'files of its type are not accepted here',
};

// stats is the test-visible counter of files sent, shown, and refused by reason.
const stats = { sent: 0, shown: 0, refused: {}, refusedTotal: 0 };
window.__e2eeFiles = stats;

const carried = new Map(); // room + '\n' + id -> base64 ciphertext of a live file event
const mine = new Map(); // room + '\n' + id -> { bytes, type } of a file this page sent
const utf8 = new TextDecoder('utf-8', { fatal: true });

// startsWith tells whether bytes hold pat (a string of byte values, '?' any byte)
// at offset at.
function startsWith(bytes, pat, at = 0) {
  if (bytes.length < at + pat.length) return false;
  for (let i = 0; i < pat.length; i++) {
    if (pat[i] !== '?' && bytes[at + i] !== pat.charCodeAt(i)) return false;
  }
  return true;
}

// isMP4 follows the server's sniffer: an ftyp box whose brands include mp4.
function isMP4(b) {
  if (b.length < 12) return false;
  const box = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  if (box % 4 !== 0 || b.length < box || !startsWith(b, 'ftyp', 4)) return false;
  for (let st = 8; st < box; st += 4) {
    if (st !== 12 && startsWith(b, 'mp4', st)) return true;
  }
  return false;
}

// isText tells whether the head of a file is UTF-8 text without binary control bytes.
function isText(head, whole) {
  for (const c of head) {
    if (c <= 0x08 || c === 0x0b || (c >= 0x0e && c <= 0x1a) || (c >= 0x1c && c <= 0x1f)) return false;
  }
  try {
    utf8.decode(whole);
    return true;
  } catch (err) {
    return false;
  }
}

// sniffType names a file's type from its first bytes, as the server's sniffer does
// for its allow-list (net/http DetectContentType); '' for anything else. Markup at
// the start is named text/html, which no list allows.
export function sniffType(bytes) {
  const head = bytes.subarray(0, SNIFF_BYTES);
  let i = 0;
  while (i < head.length && ' \t\n\r\f'.includes(String.fromCharCode(head[i]))) i++;
  const lead = String.fromCharCode(...head.subarray(i, i + 14)).toLowerCase();
  if (lead.startsWith('<!doctype html') || lead.startsWith('<?xml') || /^<(html|head|script|iframe|h1|div|font|table|a|style|title|b|body|br|p|!--)[ >]/.test(lead)) return 'text/html';
  if (startsWith(head, '%PDF-')) return 'application/pdf';
  if (startsWith(head, 'BM')) return 'image/bmp';
  if (startsWith(head, 'GIF87a') || startsWith(head, 'GIF89a')) return 'image/gif';
  if (startsWith(head, 'RIFF????WEBPVP')) return 'image/webp';
  if (startsWith(head, '\x89PNG\r\n\x1a\n')) return 'image/png';
  if (startsWith(head, '\xff\xd8\xff')) return 'image/jpeg';
  if (startsWith(head, 'ID3')) return 'audio/mpeg';
  if (startsWith(head, 'RIFF????WAVE')) return 'audio/wave';
  if (isMP4(head)) return 'video/mp4';
  if (startsWith(head, '\x1a\x45\xdf\xa3')) return 'video/webm';
  if (startsWith(head, 'PK\x03\x04')) return 'application/zip';
  if (isText(head, bytes)) return 'text/plain';
  return '';
}

// hasActive tells whether markup or active content hides anywhere in the bytes.
export function hasActive(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 8192) s += String.fromCharCode(...bytes.subarray(i, i + 8192));
  s = s.toLowerCase();
  return ACTIVE.some((m) => s.includes(m));
}

// checkPlain is the type check of both ends: the reason a file's bytes may not be
// sent or shown as type, or '' when they may.
export function checkPlain(bytes, type) {
  const sniffed = sniffType(bytes);
  if (sniffed !== type) return 'type';
  if (!fileLimits().types.includes(sniffed)) return 'not_allowed';
  if (hasActive(bytes)) return 'active';
  return '';
}

// sha256 hashes bytes.
async function sha256(bytes) {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes));
}

// bounded sets a key in a map that keeps only its newest max entries.
function bounded(map, key, value, max) {
  map.delete(key);
  map.set(key, value);
  while (map.size > max) map.delete(map.keys().next().value);
}

// sendSealed encrypts bytes with a fresh key, uploads the ciphertext to room as an
// opaque file and, once the server acknowledges it, has send (the MLS engine's send)
// carry its key, hash and meta (name, type) to the room. It does not check the type:
// sendE2EEFile does, and tests call this directly to send a file that lies.
export async function sendSealed(room, bytes, meta, send) {
  const raw = crypto.getRandomValues(new Uint8Array(KEY_BYTES));
  const iv = crypto.getRandomValues(new Uint8Array(IV_BYTES));
  const key = await crypto.subtle.importKey('raw', raw, 'AES-GCM', false, ['encrypt']);
  const ct = new Uint8Array(await crypto.subtle.encrypt({ name: 'AES-GCM', iv }, key, bytes));
  const file = { name: meta.name, type: meta.type, size: bytes.length, sha256: b64(await sha256(bytes)), key: b64(raw), iv: b64(iv) };
  const ws = state.ws;
  if (!state.connected || !ws || ws.readyState !== WebSocket.OPEN) {
    notify('offline', 'Not connected; the file was not sent.');
    return;
  }
  const ref = String(state.nextRef++);
  if (state.ops.size < MAX_OPS) {
    state.ops.set(ref, {
      after: (ack) => {
        if (!ack || !Number.isSafeInteger(ack.id)) return;
        file.id = ack.id;
        bounded(mine, room + '\n' + ack.id, { bytes, type: meta.type }, MAX_MINE);
        stats.sent++;
        send(room, file).catch((err) => notify('e2ee_send', 'Not sent: ' + (err && err.message || err)));
      },
    });
  }
  ws.send(JSON.stringify({ type: 'file', room, name: UPLOAD_NAME, mime: OPAQUE, size: ct.length, ref }));
  ws.send(ct);
}

// sendE2EEFile checks a picked file as the server would check a plain one (size, name
// through its declared type; the type from its bytes) and sends it sealed.
export async function sendE2EEFile(room, picked, send) {
  // The ciphertext is 16 bytes longer (the GCM tag) and must fit; the server also
  // refuses one larger than what its history keeps (file_too_big, with the limit).
  const limit = fileLimits().max - 16;
  if (picked.size <= 0 || picked.size > limit) {
    notify('file_too_big', 'The file was refused: files must be between 1 byte and ' + fileSize(limit) + '.');
    return;
  }
  let bytes;
  try {
    bytes = new Uint8Array(await picked.arrayBuffer());
  } catch (err) {
    notify('bad_file', 'The file cannot be read.');
    return;
  }
  const why = checkPlain(bytes, picked.type || '');
  if (why) {
    notify('file_type', 'The file was refused: ' + WHY[why] + ' (' + (sniffType(bytes) || 'unknown type') + '). Accepted: ' + fileLimits().types.join(', ') + '.');
    return;
  }
  const name = Array.from(picked.name || 'file').slice(0, 128).join('');
  await sendSealed(room, bytes, { name, type: picked.type }, send);
}

// onSealedFile keeps the ciphertext of a live `file` event of an E2EE room for the
// message with its key, which follows; the event itself is not shown.
export function onSealedFile(ev) {
  if (typeof ev.room !== 'string' || !Number.isSafeInteger(ev.id) || typeof ev.data !== 'string' || !ev.data) return;
  bounded(carried, ev.room + '\n' + ev.id, ev.data, MAX_CARRIED);
}

// validMeta tells whether a decrypted message's file description is well formed.
function validMeta(f) {
  if (!f || typeof f !== 'object' || !Number.isSafeInteger(f.id) || f.id <= 0 || typeof f.name !== 'string' ||
    f.name === '' || Array.from(f.name).length > 128 || typeof f.type !== 'string' ||
    !Number.isSafeInteger(f.size) || f.size <= 0) return false;
  const h = unb64(f.sha256);
  const k = unb64(f.key);
  const iv = unb64(f.iv);
  return !!h && h.length === HASH_BYTES && !!k && k.length === KEY_BYTES && !!iv && iv.length === IV_BYTES;
}

// refuse counts and shows a received file that is not shown.
function refuse(f, reason) {
  stats.refused[reason] = (stats.refused[reason] || 0) + 1;
  stats.refusedTotal++;
  const text = (f ? f.name : 'a file') + ' was not shown: ' + WHY[reason] + '.';
  if (f) {
    f.fetch = 'refused';
    f.why = WHY[reason];
  }
  const room = f ? f.room : '';
  const r = state.rooms.get(room);
  if (r) pushEntry(r, { kind: 'sys', text: '⚠ ' + text, ts: Date.now(), e2ee: 'e2ee-warn' });
  notify('e2ee_file_' + reason, (room ? '#' + room + ': ' : '') + text);
  if (room === state.current) renderMessages();
}

// show makes a checked plaintext the file's blob URL; only inline image types keep
// their type, as for every file (files.js fileURL).
function show(f, bytes) {
  f.type = INLINE_IMAGES.has(f.mime) ? f.mime : 'application/octet-stream';
  f.url = URL.createObjectURL(new Blob([bytes], { type: f.type }));
  f.fetch = '';
  stats.shown++;
  if (f.room === state.current) renderMessages();
}

// open decrypts a file's ciphertext (base64) and shows it if it passes every check.
async function open(f, data) {
  f.data = ''; // never the ciphertext as the file
  f.fetch = 'opening';
  const ct = unb64(data);
  let plain;
  try {
    const key = await crypto.subtle.importKey('raw', unb64(f.sealed.key), 'AES-GCM', false, ['decrypt']);
    plain = new Uint8Array(await crypto.subtle.decrypt({ name: 'AES-GCM', iv: unb64(f.sealed.iv) }, key, ct || new Uint8Array(0)));
  } catch (err) {
    return refuse(f, 'decrypt');
  }
  if (plain.length !== f.size) return refuse(f, 'size');
  if (b64(await sha256(plain)) !== f.sealed.sha256) return refuse(f, 'hash');
  const why = checkPlain(plain, f.mime);
  if (why) return refuse(f, why);
  return show(f, plain);
}

// sealedFile is the timeline file of a decrypted file message in room (null, counted
// and shown, when its description is malformed). Its bytes come from this page's own
// upload, the live event that carried them, or fetch_file; they are shown once checked.
export function sealedFile(room, meta) {
  if (!validMeta(meta)) {
    refuse(null, 'bad_meta');
    return null;
  }
  const f = {
    name: meta.name, mime: meta.type, size: meta.size, data: '', url: '', type: '', room, id: meta.id, fetch: '',
    sealed: { key: meta.key, iv: meta.iv, sha256: meta.sha256 },
  };
  f.onData = (data) => open(f, data);
  const key = room + '\n' + meta.id;
  const own = mine.get(key);
  if (own && own.type === meta.type) {
    f.onData = null;
    show(f, own.bytes);
  } else if (carried.has(key)) {
    const data = carried.get(key);
    carried.delete(key);
    f.onData = null;
    open(f, data);
  }
  return f;
}

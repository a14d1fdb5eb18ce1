// The exact bytes a device signs, as internal/sigmsg encodes them (PROTOCOL.md,
// "Signed bytes"): a version tag ending in NUL, then each field, variable-length ones
// prefixed by their UTF-8 length (4 bytes big-endian), numbers as 8 bytes big-endian.
// No JSON canonicalisation: the same message gives the same bytes in every client.
// This module never touches the DOM.

const TAG_SAY = 'modified-chat/v1/say\0';
const TAG_DEVICE = 'modified-chat/v1/device\0';
const TAG_FILE = 'modified-chat/v1/file\0';

const utf8 = new TextEncoder();

// Writer appends fields to a growing byte array.
class Writer {
  constructor() {
    this.parts = [];
    this.length = 0;
  }

  raw(bytes) {
    this.parts.push(bytes);
    this.length += bytes.length;
  }

  field(s) {
    const b = utf8.encode(s);
    const n = new Uint8Array(4);
    new DataView(n.buffer).setUint32(0, b.length);
    this.raw(n);
    this.raw(b);
  }

  // u64 writes a non-negative integer up to 2^53 - 1 (what a JavaScript number holds).
  u64(v) {
    const n = new Uint8Array(8);
    new DataView(n.buffer).setBigUint64(0, BigInt(v));
    this.raw(n);
  }

  bytes() {
    const out = new Uint8Array(this.length);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }
}

// fixed appends bytes that must have exactly n of them (ids, digests, keys).
function fixed(w, bytes, n, what) {
  if (!(bytes instanceof Uint8Array) || bytes.length !== n) throw new Error(`${what} must be ${n} bytes`);
  w.raw(bytes);
}

// messageHead starts the bytes of anything a device says in a room: the tag, room,
// user id, device id, counter, the 16-byte message id and the client's time (Unix ms).
function messageHead(tag, m) {
  const w = new Writer();
  w.raw(utf8.encode(tag));
  w.field(m.room);
  w.field(m.user);
  w.field(m.device);
  w.u64(m.counter);
  fixed(w, m.msgId, 16, 'msg_id');
  w.u64(m.ts);
  return w;
}

// sayBytes encodes a chat message: the message head, then the exact text.
export function sayBytes(m) {
  const w = messageHead(TAG_SAY, m);
  w.field(m.text);
  return w.bytes();
}

// fileBytes encodes a file announcement: the message head, then the file's name and
// declared type, and the SHA-256 of its bytes (32 bytes).
export function fileBytes(m) {
  const w = messageHead(TAG_FILE, m);
  w.field(m.name);
  w.field(m.mime);
  fixed(w, m.sha256, 32, 'the digest');
  return w.bytes();
}

// certBytes encodes a device certificate: tag, user id, device id, the 32-byte device
// key and the time it was made (Unix ms).
export function certBytes(c) {
  const w = new Writer();
  w.raw(utf8.encode(TAG_DEVICE));
  w.field(c.user);
  w.field(c.device);
  fixed(w, c.dik, 32, 'the device key');
  w.u64(c.created);
  return w.bytes();
}

// b64 and unb64 convert bytes to and from standard base64, as the protocol carries
// keys and signatures. unb64 returns null for anything that is not base64.
export function b64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function unb64(s) {
  if (typeof s !== 'string') return null;
  try {
    const bin = atob(s);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  } catch (err) {
    return null;
  }
}

// hex shows bytes as lower-case hex (tests compare with the Go encoder's vectors).
export function hex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

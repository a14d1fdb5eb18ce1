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

// sayBytes encodes a chat message: tag, room, user id, device id, counter, the 16-byte
// message id, the client's time (Unix ms) and the exact text.
export function sayBytes(m) {
  const w = new Writer();
  w.raw(utf8.encode(TAG_SAY));
  w.field(m.room);
  w.field(m.user);
  w.field(m.device);
  w.u64(m.counter);
  if (!(m.msgId instanceof Uint8Array) || m.msgId.length !== 16) throw new Error('msg_id must be 16 bytes');
  w.raw(m.msgId);
  w.u64(m.ts);
  w.field(m.text);
  return w.bytes();
}

// fileBytes encodes a file announcement: tag, room, user id, device id, counter, the
// 16-byte message id, the client's time, the file's name and declared type, and the
// SHA-256 of its bytes (32 bytes).
export function fileBytes(m) {
  const w = new Writer();
  w.raw(utf8.encode(TAG_FILE));
  w.field(m.room);
  w.field(m.user);
  w.field(m.device);
  w.u64(m.counter);
  if (!(m.msgId instanceof Uint8Array) || m.msgId.length !== 16) throw new Error('msg_id must be 16 bytes');
  w.raw(m.msgId);
  w.u64(m.ts);
  w.field(m.name);
  w.field(m.mime);
  if (!(m.sha256 instanceof Uint8Array) || m.sha256.length !== 32) throw new Error('the digest must be 32 bytes');
  w.raw(m.sha256);
  return w.bytes();
}

// certBytes encodes a device certificate: tag, user id, device id, the 32-byte device
// key and the time it was made (Unix ms).
export function certBytes(c) {
  const w = new Writer();
  w.raw(utf8.encode(TAG_DEVICE));
  w.field(c.user);
  w.field(c.device);
  if (!(c.dik instanceof Uint8Array) || c.dik.length !== 32) throw new Error('the device key must be 32 bytes');
  w.raw(c.dik);
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

// @name mentions: where a text names a person, as "@" and their display name as the
// server shows it (which is the local part of the e-mail address when the sign-in gave no
// name). Pure functions, no DOM: the message list highlights what they find and the unread
// counts use them to tell a mention apart.
// (Security rule: see app.js.)

// Around a mention. Before the "@": not a letter, digit or a character of an e-mail
// address's local part, so "carol@bob.example" mentions nobody. After the name: not a
// letter, digit, "_", "-" or "@" (so "@bobby" is not "@bob"), and not a dot that goes on
// into a word (so "@bob.example" is an address, while "@bob." ends a sentence).
const BEFORE = '(?<![\\p{L}\\p{N}_.+\\-])';
const AFTER = '(?![\\p{L}\\p{N}_@\\-])(?!\\.[\\p{L}\\p{N}])';

// MAX_CACHED bounds the compiled patterns kept (one per name asked for: in practice
// the user's own name, and a new one only when the server renames them).
const MAX_CACHED = 8;

const patterns = new Map();

// escapeRegExp makes a name's characters literal in a pattern.
function escapeRegExp(s) {
  return s.replace(/[\\^$.*+?()[\]{}|\/]/g, '\\$&');
}

// mentionPattern compiles the pattern for one name: case-insensitive (Unicode case
// folding) and, for a name with spaces, any run of white space between its words, so
// "@Alice  smith" names "Alice Smith".
function mentionPattern(name) {
  let re = patterns.get(name);
  if (re) return re;
  const words = name.trim().split(/\s+/u).filter((w) => w !== '').map(escapeRegExp);
  re = words.length === 0 ? null : new RegExp(BEFORE + '@' + words.join('\\s+') + AFTER, 'giu');
  if (patterns.size >= MAX_CACHED) patterns.clear();
  patterns.set(name, re);
  return re;
}

// mentionRanges returns [start, end) of every "@name" in text, in order; none for
// an empty name.
export function mentionRanges(text, name) {
  const re = typeof name === 'string' ? mentionPattern(name) : null;
  if (!re || typeof text !== 'string' || text === '') return [];
  const out = [];
  for (const m of text.matchAll(re)) out.push([m.index, m.index + m[0].length]);
  return out;
}

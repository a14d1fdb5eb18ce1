// The safety number as a QR code, so two people can compare it by scanning one phone
// or screen with the other instead of reading 60 digits aloud. The encoding is the
// vendored qrcode-generator 2.0.4 (static/vendor, built by `make vendor`); this module
// only asks it for the matrix and draws the dark modules as one SVG path with DOM
// calls: no markup string is ever parsed, as Trusted Types demands.
// (Security rule: see app.js.)

import { qrcode } from './vendor/qrcode-generator-2.0.4.min.js';

const SVG_NS = 'http://www.w3.org/2000/svg';
const QR_LEVEL = 'M'; // error correction: 15 % of the code may be lost (a glare, a crease)
const QR_QUIET = 4; // light modules around the code, the margin the standard asks scanners to get

// qrMatrix is the QR code of a string of decimal digits, encoded in numeric mode at
// the smallest version that holds it, as rows of '1' (dark) and '0' (light). Anything
// but digits is refused: the code must carry exactly the number the screen shows.
export function qrMatrix(digits) {
  if (!/^[0-9]+$/.test(digits)) throw new Error('qrMatrix: digits only');
  const q = qrcode(0, QR_LEVEL);
  q.addData(digits, 'Numeric');
  q.make();
  const n = q.getModuleCount();
  const rows = [];
  for (let r = 0; r < n; r++) {
    let row = '';
    for (let c = 0; c < n; c++) row += q.isDark(r, c) ? '1' : '0';
    rows.push(row);
  }
  return rows;
}

// qrSvg draws qrMatrix(digits) as a scalable SVG: a light square with the quiet zone
// and one path of unit squares for the dark modules (one element, however large the
// code). label is read by screen readers in place of the picture.
export function qrSvg(digits, label) {
  const rows = qrMatrix(digits);
  const size = rows.length + 2 * QR_QUIET;
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', 'qr');
  svg.setAttribute('viewBox', '0 0 ' + size + ' ' + size);
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  svg.setAttribute('shape-rendering', 'crispEdges');
  svg.dataset.modules = String(rows.length);
  const title = document.createElementNS(SVG_NS, 'title');
  title.textContent = label;
  svg.appendChild(title);
  const light = document.createElementNS(SVG_NS, 'rect');
  light.setAttribute('class', 'qr-light');
  light.setAttribute('width', String(size));
  light.setAttribute('height', String(size));
  svg.appendChild(light);
  let d = '';
  rows.forEach((row, r) => {
    for (let c = 0; c < row.length; c++) {
      if (row[c] === '1') d += 'M' + (c + QR_QUIET) + ' ' + (r + QR_QUIET) + 'h1v1h-1z';
    }
  });
  const dark = document.createElementNS(SVG_NS, 'path');
  dark.setAttribute('class', 'qr-dark');
  dark.setAttribute('d', d);
  svg.appendChild(dark);
  return svg;
}

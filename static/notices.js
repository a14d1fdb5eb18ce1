// Toasts for errors and events, one per code.
// (Security rule: see app.js.)

import { make, ui } from './dom.js';
import { MAX_NOTICES, NOTICE_MS } from './state.js';

// notify shows a dismissable toast for an error code; a repeated code
// updates the existing toast instead of stacking copies. It returns the toast, for a
// caller that adds a picture to it (the safety number's QR code).
export function notify(code, text, timeout = NOTICE_MS, action = null) {
  let box = null;
  for (const n of ui.notices.children) {
    if (n.dataset.code === code) box = n;
  }
  if (!box) {
    // ok notices confirm a change the server acked; the others are
    // refusals and events that need attention.
    box = make('div', code === 'ok' ? 'notice ok' : 'notice');
    box.dataset.code = code;
    box.setAttribute('role', code === 'ok' ? 'status' : 'alert');
    box.appendChild(make('span', 'notice-text'));
    const close = make('button', 'notice-close', '×');
    close.type = 'button';
    close.setAttribute('aria-label', 'Dismiss');
    close.addEventListener('click', () => box.remove());
    box.appendChild(close);
    ui.notices.appendChild(box);
    while (ui.notices.childElementCount > MAX_NOTICES) ui.notices.firstElementChild.remove();
  }
  box.querySelector('.notice-text').textContent = text;
  const old = box.querySelector('.notice-action');
  if (old) old.remove();
  if (action) {
    const btn = make('button', 'button small notice-action', action.label);
    btn.type = 'button';
    btn.addEventListener('click', () => {
      box.remove();
      action.run();
    });
    box.insertBefore(btn, box.querySelector('.notice-close'));
  }
  clearTimeout(Number(box.dataset.timer || 0));
  const target = box;
  box.dataset.timer = String(setTimeout(() => target.remove(), timeout));
  return box;
}

// hasNotice tells whether a toast of this code is showing.
export function hasNotice(code) {
  return Array.from(ui.notices.children).some((n) => n.dataset.code === code);
}

// clearNotice removes the toast of one code once its cause is over.
export function clearNotice(code) {
  for (const n of Array.from(ui.notices.children)) {
    if (n.dataset.code === code) n.remove();
  }
}

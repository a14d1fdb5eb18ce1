// Browser (desktop) notifications for mentions and direct messages while the tab is
// hidden. The permission is asked for only when the user presses the notifications
// button (browsers ignore or penalise a request without a user gesture, and asking on
// load is a nag), and each notification says who wrote where, never what: the text may
// be private, and a notification can show on a locked screen.
// (Security rule: see app.js.)

import { $ } from './dom.js';

// PREF_KEY is where the user's choice is kept in localStorage ('on' or 'off'): a
// permission granted once stays granted, but the user may still want silence.
const PREF_KEY = 'chat.notifications';

// The notifications button beside "Your rooms", found by bindNotifications (not at
// module evaluation: dom.js may not have run yet in the import graph).
let button = null;

// supported tells whether this browser has the Notification API at all.
function supported() {
  return typeof window.Notification === 'function';
}

// pref reads the user's choice; storage may be unavailable (private modes), then
// notifications are off until the button turns them on for this page's life.
let memoryPref = 'off';
function pref() {
  try {
    return window.localStorage.getItem(PREF_KEY) || memoryPref;
  } catch {
    return memoryPref;
  }
}

// setPref records the user's choice.
function setPref(v) {
  memoryPref = v;
  try {
    window.localStorage.setItem(PREF_KEY, v);
  } catch {
    // Kept in memory only.
  }
}

// notificationsOn tells whether a notification may be shown now: the browser
// allows it and the user wants it.
export function notificationsOn() {
  return supported() && Notification.permission === 'granted' && pref() === 'on';
}

// renderNotifyButton shows the button's state: on, off, or blocked by the browser
// (then only the browser's site settings can change it, and the title says so).
function renderNotifyButton() {
  const b = button;
  if (!b) return;
  b.hidden = !supported();
  if (b.hidden) return;
  const on = notificationsOn();
  const blocked = Notification.permission === 'denied';
  b.setAttribute('aria-pressed', String(on));
  b.classList.toggle('active', on);
  b.disabled = blocked;
  b.title = blocked
    ? 'Notifications are blocked for this site in the browser settings'
    : on
      ? 'Notifying you of mentions and direct messages while this tab is hidden; click to stop'
      : 'Notify me of mentions and direct messages while this tab is hidden';
}

// toggleNotifications is the button's click: turn off, or ask the browser for the
// permission (inside the user's gesture) and turn on if it is given.
async function toggleNotifications() {
  if (notificationsOn()) {
    setPref('off');
    renderNotifyButton();
    return;
  }
  let answer = Notification.permission;
  if (answer !== 'denied') {
    try {
      answer = await Notification.requestPermission();
    } catch {
      answer = Notification.permission;
    }
  }
  if (answer === 'granted') setPref('on');
  renderNotifyButton();
}

// bindNotifications wires the button; nothing is asked of the browser here.
export function bindNotifications() {
  button = $('notify-toggle');
  if (!button) return;
  button.addEventListener('click', toggleNotifications);
  renderNotifyButton();
}

// showNotification shows one notification, replacing an earlier one with the
// same tag (one per room, so a busy room does not stack them); a click on it
// brings the tab forward and runs open. Failures (a browser that only allows
// notifications from a service worker) are ignored: the unread counts remain.
export function showNotification(title, tag, open) {
  if (!notificationsOn()) return;
  let n;
  try {
    n = new Notification(title, { tag, renotify: false, silent: false });
  } catch {
    return;
  }
  n.addEventListener('click', () => {
    window.focus();
    open();
    n.close();
  });
}

// The WebSocket: connecting, reconnecting with back-off, the session check, splitting
// frames and dispatching each event, and commands that wait for their ack.
// (Security rule: see app.js.)

import { ui } from './dom.js';
import { BACKOFF_MAX_MS, BACKOFF_MIN_MS, MAX_OPS, state, str } from './state.js';
import {
  onAck, onError, onHistory, onInvited, onJoined, onKicked, onLeft, onMessage,
  onPresence, onRole, onRoomChanged, onRoomDeleted, onRooms, onWelcome, onYou, showMotd,
} from './events.js';
import { forgetFetches, onFetched } from './files.js';
import { notify } from './notices.js';
import { onDeleted } from './messages.js';
import { onAudit, onSettings } from './admin.js';
import { onDevices, onKeysChanged } from './signing.js';
import { isE2EE, isMLSEvent, onDeletedE2EE, onMLSEvent, onRoomGone } from './e2ee.js';
import { onSealedFile } from './e2eefiles.js';
import { onLinkRequest } from './devices.js';

// setStatus shows the connection state; tests and users read #status,
// whose text contains "connected" exactly when the socket is usable.
export function setStatus(kind, text) {
  ui.status.dataset.state = kind;
  ui.status.textContent = text;
  const usable = kind === 'connected';
  ui.send.disabled = !usable;
  document.body.classList.toggle('is-offline', !usable);
}

// wsURL derives the WebSocket address from the page's own origin, so the
// cookie goes along and connect-src 'self' allows it.
export function wsURL() {
  return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
}

// connect opens the WebSocket and wires its events.
export function connect() {
  clearRetry();
  if (state.leaving) return;
  if (navigator.onLine === false) {
    setStatus('offline', 'offline');
    return;
  }
  setStatus('connecting', 'connecting…');
  let ws;
  try {
    ws = new WebSocket(wsURL());
  } catch (err) {
    scheduleReconnect();
    return;
  }
  state.ws = ws;
  let opened = false;
  ws.addEventListener('open', () => {
    opened = true;
  });
  ws.addEventListener('message', (ev) => {
    if (state.ws === ws) onFrame(ev.data);
  });
  ws.addEventListener('close', (ev) => {
    if (state.ws !== ws) return;
    state.ws = null;
    state.connected = false;
    forgetFetches();
    onClose(ev, opened);
  });
}

// onClose decides what a closed socket means: a session that is gone sends
// the user to the login page, anything else reconnects with back-off.
export function onClose(ev, opened) {
  if (state.leaving) return;
  setStatus('reconnecting', 'reconnecting…');
  const policy = ev.code === 1008;
  if (!opened || policy) {
    // The handshake failed or the server closed for policy (logged out,
    // session ended, banned, abuse). Only a login can fix a missing
    // session, so ask the page endpoint whether the session still exists.
    checkSession().then((alive) => {
      if (alive === false) {
        goLogin();
        return;
      }
      if (policy) {
        const why = str(ev.reason) || 'policy violation';
        notify('closed', 'The server closed the connection: ' + why + '.');
      }
      scheduleReconnect();
    });
    return;
  }
  if (ev.code === 1001) notify('closed', 'The server is restarting. Reconnecting…');
  scheduleReconnect();
}

// checkSession asks for the page without following redirects: a redirect
// (to /login) or 401 means the session is gone. It resolves to true, false
// or null (unknown, e.g. the network is down).
export function checkSession() {
  return fetch('/', { method: 'HEAD', redirect: 'manual', cache: 'no-store', credentials: 'same-origin' })
    .then((r) => {
      if (r.type === 'opaqueredirect' || (r.status >= 300 && r.status < 400)) return false;
      if (r.status === 401 || r.status === 403) return false;
      return true;
    })
    .catch(() => null);
}

// goLogin leaves the page for the login screen.
export function goLogin() {
  state.leaving = true;
  setStatus('offline', 'signed out');
  location.assign('/login');
}

// clearRetry stops any pending reconnect and its countdown.
export function clearRetry() {
  clearTimeout(state.retryTimer);
  clearInterval(state.countdownTimer);
  state.retryTimer = 0;
  state.countdownTimer = 0;
}

// reconnectDelay is the wait before reconnect attempt number attempt (0 for
// the first): full jitter, uniform between 0 and a ceiling that doubles from
// 1 s up to 30 s. The first retry must be spread too: when a node of a cluster
// dies, all its pages lose their sockets at the same instant, and a fixed first
// delay would send them all to the remaining nodes in the same millisecond.
// random is Math.random, injected so a test can pin it.
export function reconnectDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  return random() * ceiling;
}

// scheduleReconnect waits reconnectDelay, so that a restarted server (or the
// rest of a cluster that lost a node) is not stampeded.
export function scheduleReconnect() {
  clearRetry();
  if (state.leaving) return;
  if (navigator.onLine === false) {
    setStatus('offline', 'offline');
    return;
  }
  const delay = reconnectDelay(state.attempt);
  state.attempt = Math.min(state.attempt + 1, 10);
  state.retryAt = Date.now() + delay;
  const tick = () => {
    const secs = Math.max(1, Math.ceil((state.retryAt - Date.now()) / 1000));
    setStatus('reconnecting', 'reconnecting in ' + secs + 's');
  };
  tick();
  state.countdownTimer = setInterval(tick, 1000);
  state.retryTimer = setTimeout(connect, delay);
}

// sendJSON writes one object to the socket; it reports false when there is
// no open connection so callers can keep the user's input.
export function sendJSON(obj) {
  const ws = state.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  ws.send(JSON.stringify(obj));
  return true;
}

// onFrame splits a frame into its newline-separated JSON objects; one bad
// line must not stop the others.
export function onFrame(data) {
  if (typeof data !== 'string') return;
  for (const line of data.split('\n')) {
    if (!line.trim()) continue;
    let obj;
    try {
      obj = JSON.parse(line);
    } catch (err) {
      continue;
    }
    if (!obj || typeof obj !== 'object' || Array.isArray(obj)) continue;
    try {
      handle(obj);
    } catch (err) {
      console.warn('chat: cannot handle a server event', err);
    }
  }
}

// handle dispatches one server event by its type.
export function handle(ev) {
  // End-to-end encrypted rooms' events go to this device's MLS engine.
  if (isMLSEvent(ev)) return onMLSEvent(ev, true);
  if (ev.type === 'kicked' || ev.type === 'room_deleted') onRoomGone(str(ev.room));
  // An answer other than ack or error that carries our ref (settings,
  // audit) ends the wait for it.
  if (typeof ev.ref === 'string' && ev.type !== 'ack' && ev.type !== 'error') state.ops.delete(ev.ref);
  switch (ev.type) {
    case 'welcome': return onWelcome(ev);
    case 'joined': return onJoined(ev);
    case 'left': return onLeft(ev);
    case 'presence': return onPresence(ev);
    case 'message': return onMessage(ev);
    case 'file':
      if (state.fetching && ev.ref === state.fetching.ref) return onFetched(ev);
      // In an E2EE room a file event only carries ciphertext for a message to come.
      return isE2EE(str(ev.room)) ? onSealedFile(ev) : onMessage(ev);
    case 'history': return onHistory(ev);
    case 'rooms': return onRooms(ev);
    case 'ack': return onAck(ev);
    case 'error': return onError(ev);
    case 'room': return onRoomChanged(ev);
    case 'role': return onRole(ev);
    case 'you': return onYou(ev);
    case 'invited': return onInvited(ev);
    case 'kicked': return onKicked(ev);
    case 'room_deleted': return onRoomDeleted(ev);
    case 'deleted':
      onDeletedE2EE(ev);
      return onDeleted(ev);
    case 'motd': return showMotd(ev.motd);
    case 'limits':
      // An admin changed the limits: check input against the new ones.
      if (ev.limits && typeof ev.limits === 'object') state.limits = ev.limits;
      return;
    case 'settings': return onSettings(ev);
    case 'audit': return onAudit(ev);
    case 'devices': return onDevices(ev);
    case 'device_added':
    case 'device_revoked':
    case 'key_changed':
      return onKeysChanged(ev);
    case 'link_request': return onLinkRequest(ev);
    default: return undefined; // newer servers may add events
  }
}

// command sends a state-changing command with a ref; when the server acks
// it (the change is stored) the page says ok and runs after. A refusal
// comes back as an error with the same ref, shown as a notice.
export function command(obj, ok, after) {
  const ref = 'c' + state.nextRef++;
  if (!sendJSON(Object.assign({}, obj, { ref }))) {
    notify('offline', 'Not connected; try again when the status says connected.');
    return false;
  }
  state.ops.set(ref, { ok, after: after || null });
  while (state.ops.size > MAX_OPS) state.ops.delete(state.ops.keys().next().value);
  return true;
}

// request sends a question whose answer (settings, audit) carries the ref
// back; nothing waits for an ack.
export function request(obj) {
  const ref = 'q' + state.nextRef++;
  if (!sendJSON(Object.assign({}, obj, { ref }))) {
    notify('offline', 'Not connected.');
    return false;
  }
  return true;
}

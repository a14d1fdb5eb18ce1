// The chat page. Plain JavaScript, no build step, no framework.
//
// Security rule for this file: every string that comes from the server (or
// from another user through the server) is put into the page with
// textContent, createTextNode or a dataset/attribute value, never parsed as
// HTML. The page's Content-Security-Policy forbids inline script and style,
// so this file sets no style attributes either; it only toggles classes.
'use strict';

(() => {
  const LOBBY = 'lobby';
  const ROOM_RE = /^[a-z0-9][a-z0-9_-]{0,31}$/;
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const MAX_MESSAGES_PER_ROOM = 500;
  const MAX_PENDING = 200;
  const MAX_NOTICES = 5;
  const NOTICE_MS = 8000;
  const HUES = 8;
  const ROLES = new Set(['admin', 'owner', 'moderator', 'readonly']);
  const GROUP_MS = 5 * 60 * 1000; // messages closer than this from one sender are grouped

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $('status'),
    me: $('me'),
    devBanner: $('dev-banner'),
    motd: $('motd'),
    rooms: $('rooms'),
    browse: $('browse'),
    browseRefresh: $('browse-refresh'),
    joinForm: $('join-form'),
    joinName: $('join-name'),
    roomTitle: $('room-title'),
    roomCount: $('room-count'),
    roomTopic: $('room-topic'),
    roomPrivate: $('room-private'),
    roomLocked: $('room-locked'),
    myRole: $('my-role'),
    messages: $('messages'),
    jump: $('jump'),
    compose: $('compose'),
    input: $('input'),
    counter: $('counter'),
    send: $('send'),
    members: $('members'),
    memberCount: $('member-count'),
    notices: $('notices'),
    logoutForm: $('logout-form'),
    toggleRooms: $('toggle-rooms'),
    toggleMembers: $('toggle-members'),
  };

  const state = {
    ws: null,
    connected: false, // true between welcome and close
    me: null, // {id, name} from welcome
    limits: null,
    rooms: new Map(), // room name -> record made by room()
    wanted: new Set([LOBBY]), // rooms to be in; re-joined after a reconnect
    current: LOBBY,
    switchTo: '', // room the user asked to open; opened when its `joined` arrives
    nextRef: 1,
    pending: new Map(), // ref -> {room, text} for says not yet acked
    attempt: 0,
    retryTimer: 0,
    countdownTimer: 0,
    retryAt: 0,
    leaving: false,
    browse: [],
  };

  // ---------------------------------------------------------------------
  // Small helpers

  // make builds an element with a class and optional text, so that every
  // piece of text goes through textContent and never through HTML parsing.
  function make(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // str turns any JSON value into a display string, so a malformed server
  // object cannot throw while rendering.
  function str(v, fallback = '') {
    return typeof v === 'string' ? v : fallback;
  }

  // user normalises a {id, name, role} object from the server.
  function user(u) {
    if (!u || typeof u !== 'object') return { id: '', name: '?', role: '' };
    return { id: str(u.id), name: str(u.name, '?') || '?', role: str(u.role) };
  }

  // roomInfo copies the description fields of joined/room/rooms events
  // that are present, so a partial event does not erase the others.
  function roomInfo(info, ev) {
    if (typeof ev.private === 'boolean') info.private = ev.private;
    if (typeof ev.locked === 'boolean') info.locked = ev.locked;
    if (typeof ev.topic === 'string') info.topic = ev.topic;
    if (typeof ev.member_count === 'number') info.count = ev.member_count;
    else if (typeof ev.online === 'number') info.count = ev.online;
    return info;
  }

  // hueClass picks a stable colour class for a user id, so avatars are
  // coloured without inline styles (which the CSP forbids).
  function hueClass(id) {
    let h = 0;
    for (let i = 0; i < id.length; i++) h = (h * 31 + id.charCodeAt(i)) >>> 0;
    return 'hue-' + (h % HUES);
  }

  // initial gives the first visible character of a name for its avatar.
  function initial(name) {
    const first = Array.from(name.trim())[0];
    return first ? first.toUpperCase() : '?';
  }

  // avatar draws a coloured circle with the user's initial. The letter is
  // CSS generated content from data-initial, so the element adds no text to
  // its list item or message (a member's li reads exactly the name).
  function avatar(u) {
    const a = make('span', 'avatar ' + hueClass(u.id || u.name));
    a.dataset.initial = initial(u.name);
    a.setAttribute('aria-hidden', 'true');
    return a;
  }

  // badge makes a small label whose text is CSS generated content from
  // data-label, for the same reason as avatar.
  function badge(className, label) {
    const b = make('span', className);
    b.dataset.label = label;
    return b;
  }

  // hhmm formats Unix milliseconds as local HH:MM, as the messages show it.
  function hhmm(d) {
    return String(d.getHours()).padStart(2, '0') + ':' + String(d.getMinutes()).padStart(2, '0');
  }

  // isMe tells whether a user is the signed-in user, to mark own messages.
  function isMe(u) {
    return !!(state.me && u.id && u.id === state.me.id);
  }

  // room returns the local record of a joined room, creating it if needed.
  function room(name) {
    let r = state.rooms.get(name);
    if (!r) {
      r = {
        name,
        members: new Map(), // user id -> {name, role}
        messages: [],
        seen: new Set(),
        unread: 0,
        info: { private: false, locked: false, topic: '', count: null },
      };
      state.rooms.set(name, r);
    }
    return r;
  }

  // ---------------------------------------------------------------------
  // Connection

  // setStatus shows the connection state; tests and users read #status,
  // whose text contains "connected" exactly when the socket is usable.
  function setStatus(kind, text) {
    ui.status.dataset.state = kind;
    ui.status.textContent = text;
    const usable = kind === 'connected';
    ui.send.disabled = !usable;
    document.body.classList.toggle('is-offline', !usable);
  }

  // wsURL derives the WebSocket address from the page's own origin, so the
  // cookie goes along and connect-src 'self' allows it.
  function wsURL() {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
  }

  // connect opens the WebSocket and wires its events.
  function connect() {
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
      onClose(ev, opened);
    });
  }

  // onClose decides what a closed socket means: a session that is gone sends
  // the user to the login page, anything else reconnects with back-off.
  function onClose(ev, opened) {
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
    else if (ev.code === 1013) notify('closed', 'The server is full. Trying again shortly…');
    scheduleReconnect();
  }

  // checkSession asks for the page without following redirects: a redirect
  // (to /login) or 401 means the session is gone. It resolves to true, false
  // or null (unknown, e.g. the network is down).
  function checkSession() {
    return fetch('/', { method: 'HEAD', redirect: 'manual', cache: 'no-store', credentials: 'same-origin' })
      .then((r) => {
        if (r.type === 'opaqueredirect' || (r.status >= 300 && r.status < 400)) return false;
        if (r.status === 401 || r.status === 403) return false;
        return true;
      })
      .catch(() => null);
  }

  // goLogin leaves the page for the login screen.
  function goLogin() {
    state.leaving = true;
    setStatus('offline', 'signed out');
    location.assign('/login');
  }

  // clearRetry stops any pending reconnect and its countdown.
  function clearRetry() {
    clearTimeout(state.retryTimer);
    clearInterval(state.countdownTimer);
    state.retryTimer = 0;
    state.countdownTimer = 0;
  }

  // scheduleReconnect waits an exponentially growing, jittered delay
  // (1 s up to 30 s) so that a restarted server is not stampeded.
  function scheduleReconnect() {
    clearRetry();
    if (state.leaving) return;
    if (navigator.onLine === false) {
      setStatus('offline', 'offline');
      return;
    }
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.attempt);
    const delay = Math.max(BACKOFF_MIN_MS, ceiling / 2 + Math.random() * (ceiling / 2));
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
  function sendJSON(obj) {
    const ws = state.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify(obj));
    return true;
  }

  // onFrame splits a frame into its newline-separated JSON objects; one bad
  // line must not stop the others.
  function onFrame(data) {
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
  function handle(ev) {
    switch (ev.type) {
      case 'welcome': return onWelcome(ev);
      case 'joined': return onJoined(ev);
      case 'left': return onLeft(ev);
      case 'presence': return onPresence(ev);
      case 'message': return onMessage(ev);
      case 'rooms': return onRooms(ev);
      case 'ack': return onAck(ev);
      case 'error': return onError(ev);
      case 'room': return onRoomChanged(ev);
      case 'role': return onRole(ev);
      case 'you': return onYou(ev);
      case 'invited': return onInvited(ev);
      case 'kicked': return onKicked(ev);
      case 'room_deleted': return onRoomDeleted(ev);
      case 'motd': return showMotd(ev.motd);
      default: return undefined; // newer servers may add events
    }
  }

  // ---------------------------------------------------------------------
  // Server events

  // onWelcome learns who we are and re-joins the rooms we had before a
  // reconnect (the server joins lobby by itself).
  function onWelcome(ev) {
    const you = user(ev.you);
    if (state.me && state.me.id !== you.id) {
      // A different account in the same tab: forget the old one's rooms.
      state.rooms.clear();
      state.wanted = new Set([LOBBY]);
      state.current = LOBBY;
    }
    state.me = you;
    state.limits = ev.limits && typeof ev.limits === 'object' ? ev.limits : null;
    state.connected = true;
    state.attempt = 0;
    for (const r of state.rooms.values()) r.seen.clear();
    ui.me.textContent = you.name;
    ui.devBanner.hidden = ev.dev !== true;
    showMotd(ev.motd);
    showRole(ev.role);
    setStatus('connected', 'connected');
    // Say that the connection is back where a notice said it was lost.
    if (hasNotice('closed')) notify('closed', 'Reconnected.', 3000);
    clearNotice('offline');
    for (const name of state.wanted) {
      if (name !== LOBBY) sendJSON({ type: 'join', room: name });
    }
    sendJSON({ type: 'rooms' });
    updateCounter();
  }

  // onJoined records the room and its members, and opens the room when the
  // user asked for it.
  function onJoined(ev) {
    const name = str(ev.room);
    if (!name) return;
    const r = room(name);
    roomInfo(r.info, ev);
    r.members.clear();
    if (Array.isArray(ev.members)) {
      for (const m of ev.members) {
        const u = user(m);
        r.members.set(u.id || u.name, { name: u.name, role: u.role });
      }
    }
    state.wanted.add(name);
    markBrowseJoined();
    if (state.switchTo === name || !state.rooms.has(state.current)) {
      state.switchTo = '';
      selectRoom(name);
      return;
    }
    renderRooms();
    if (name === state.current) {
      renderMembers();
      renderHeader();
    }
  }

  // onLeft forgets a room the user left.
  function onLeft(ev) {
    forgetRoom(str(ev.room));
  }

  // forgetRoom drops a room the connection is no longer in (left, kicked or
  // deleted), and moves to another one if it was open.
  function forgetRoom(name) {
    state.rooms.delete(name);
    state.wanted.delete(name);
    markBrowseJoined();
    if (state.current === name) {
      const next = state.rooms.has(LOBBY) ? LOBBY : state.rooms.keys().next().value;
      selectRoom(next || LOBBY);
    } else {
      renderRooms();
    }
  }

  // onPresence keeps a room's member list current and notes the change in
  // the room's timeline.
  function onPresence(ev) {
    const name = str(ev.room);
    const r = state.rooms.get(name);
    if (!r) return;
    const u = user(ev.user);
    const key = u.id || u.name;
    const before = r.members.size;
    let text;
    if (ev.event === 'join') {
      r.members.set(key, { name: u.name, role: u.role });
      text = u.name + ' joined';
    } else if (ev.event === 'leave') {
      r.members.delete(key);
      text = u.name + ' left';
    } else {
      return;
    }
    if (r.info.count !== null) r.info.count = Math.max(0, r.info.count + r.members.size - before);
    pushEntry(r, { kind: 'sys', text, ts: Date.now() });
    if (name === state.current) {
      renderMembers();
      renderHeader();
    }
  }

  // onMessage stores a chat message and shows it if its room is open, or
  // counts it as unread otherwise.
  function onMessage(ev) {
    const name = str(ev.room);
    const r = state.rooms.get(name);
    if (!r) return;
    if (typeof ev.id === 'number') {
      if (r.seen.has(ev.id)) return;
      r.seen.add(ev.id);
    }
    const entry = {
      kind: 'msg',
      id: ev.id,
      from: user(ev.from),
      ts: typeof ev.ts === 'number' ? ev.ts : Date.now(),
      text: str(ev.text),
    };
    pushEntry(r, entry);
    if (name !== state.current) {
      r.unread++;
      renderRooms();
    }
    updateTitle();
  }

  // onRoomChanged shows a joined room's new topic, lock or privacy.
  function onRoomChanged(ev) {
    const r = state.rooms.get(str(ev.room));
    if (!r) return;
    roomInfo(r.info, ev);
    renderRooms();
    if (r.name === state.current) renderHeader();
  }

  // onRole shows a member's new role in a room.
  function onRole(ev) {
    const r = state.rooms.get(str(ev.room));
    if (!r) return;
    const u = user(ev.user);
    const m = r.members.get(u.id);
    if (m) m.role = u.role;
    if (r.name === state.current) renderMembers();
  }

  // onYou shows the user's new global role.
  function onYou(ev) {
    showRole(ev.role);
    notify('you', 'Your role is now ' + (str(ev.role) || 'member') + '.');
  }

  // onInvited offers to join a private room the user was invited to.
  function onInvited(ev) {
    const name = str(ev.room);
    if (!name) return;
    const by = user(ev.by);
    notify('invited', by.name + ' invited you to #' + name + '.', 30000, {
      label: 'Join',
      run: () => joinRoom(name),
    });
  }

  // onKicked drops a room the user was removed from, and says by whom.
  function onKicked(ev) {
    const name = str(ev.room);
    const by = user(ev.by);
    forgetRoom(name);
    notify('kicked', by.name + (ev.ban === true ? ' banned you from #' : ' removed you from #') + name + '.');
  }

  // onRoomDeleted drops a room that no longer exists.
  function onRoomDeleted(ev) {
    const name = str(ev.room);
    if (!state.rooms.has(name)) return;
    forgetRoom(name);
    notify('room_deleted', '#' + name + ' was deleted.');
  }

  // showMotd shows the message of the day, or hides its bar when empty.
  function showMotd(v) {
    const motd = str(v).trim();
    ui.motd.textContent = motd;
    ui.motd.hidden = motd === '';
  }

  // showRole marks a global role other than the default next to the name.
  function showRole(v) {
    const role = str(v);
    ui.myRole.textContent = role;
    ui.myRole.hidden = role === '' || role === 'member';
  }

  // onRooms fills the browse list.
  function onRooms(ev) {
    state.browse = Array.isArray(ev.rooms)
      ? ev.rooms
        .filter((x) => x && typeof x === 'object' && typeof x.name === 'string')
        .map((x) => ({
          name: x.name,
          members: typeof x.members === 'number' ? x.members : null,
          private: x.private === true,
          topic: str(x.topic),
        }))
      : [];
    state.browse.sort((a, b) => a.name.localeCompare(b.name));
    renderBrowse();
  }

  // onAck forgets a delivered message's draft.
  function onAck(ev) {
    state.pending.delete(str(ev.ref));
  }

  // onError shows the server's complaint and undoes what it refused.
  function onError(ev) {
    const code = str(ev.code, 'error') || 'error';
    const ref = str(ev.ref);
    const errRoom = str(ev.room);
    let text = str(ev.message) || code.replace(/_/g, ' ');
    let timeout = NOTICE_MS;
    if (code === 'rate_limited') {
      const ms = typeof ev.retry_after_ms === 'number' && ev.retry_after_ms > 0 ? ev.retry_after_ms : 1000;
      text = 'You are sending too fast. Try again in ' + (ms / 1000).toFixed(1) + ' s.';
      timeout = Math.max(NOTICE_MS, ms + 3000);
    }
    if (errRoom && !state.rooms.has(errRoom)) {
      // A join that failed (bad name, full, banned, private...): stop
      // trying to re-join it after reconnects.
      state.wanted.delete(errRoom);
      if (state.switchTo === errRoom) state.switchTo = '';
    }
    if (errRoom && !text.includes(errRoom)) text += ' (#' + errRoom + ')';
    // Give a refused message back to the user instead of losing it.
    const draft = ref ? state.pending.get(ref) : undefined;
    if (draft) {
      state.pending.delete(ref);
      if (ui.input.value === '' && draft.room === state.current) {
        ui.input.value = draft.text;
        updateCounter();
      }
    }
    notify(code, text, timeout);
  }

  // ---------------------------------------------------------------------
  // Rendering

  // pushEntry appends a message or system line to a room and, when the room
  // is open, to the page, keeping the view pinned to the bottom if it was.
  function pushEntry(r, entry) {
    r.messages.push(entry);
    if (r.messages.length > MAX_MESSAGES_PER_ROOM) r.messages.splice(0, r.messages.length - MAX_MESSAGES_PER_ROOM);
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

  // continues tells whether a message follows one from the same sender
  // closely enough to be shown as part of the same group.
  function continues(entry, prev) {
    return !!prev && prev.kind === 'msg' && entry.kind === 'msg' &&
      prev.from.id === entry.from.id && prev.from.name === entry.from.name &&
      entry.ts - prev.ts >= 0 && entry.ts - prev.ts < GROUP_MS;
  }

  // entryNode builds the DOM for one timeline entry, text only; prev is the
  // entry before it, to group consecutive messages of one sender.
  function entryNode(entry, prev) {
    if (entry.kind === 'sys') {
      const line = make('div', 'sys');
      line.appendChild(make('span', 'sys-text', entry.text));
      return line;
    }
    const mine = isMe(entry.from);
    const item = make('div', mine ? 'msg msg-mine' : 'msg');
    if (continues(entry, prev)) item.classList.add('msg-cont');
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
    body.appendChild(head);
    body.appendChild(make('div', 'msg-text', entry.text));
    item.appendChild(body);
    return item;
  }

  // atBottom tells whether the user is reading the newest messages, so new
  // ones only auto-scroll then.
  function atBottom() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
  }

  // scrollToBottom shows the newest message.
  function scrollToBottom() {
    ui.messages.scrollTop = ui.messages.scrollHeight;
    ui.jump.hidden = true;
  }

  // selectRoom opens a joined room: its messages, members and header.
  function selectRoom(name) {
    state.current = name;
    const r = state.rooms.get(name);
    if (r) r.unread = 0;
    const frag = document.createDocumentFragment();
    if (r) r.messages.forEach((e, i) => frag.appendChild(entryNode(e, r.messages[i - 1])));
    ui.messages.replaceChildren(frag);
    scrollToBottom();
    renderRooms();
    renderMembers();
    renderHeader();
    updateTitle();
    document.body.classList.remove('show-rooms');
    ui.toggleRooms.setAttribute('aria-expanded', 'false');
  }

  // renderHeader shows the open room's name and size.
  function renderHeader() {
    ui.roomTitle.textContent = '#' + state.current;
    const r = state.rooms.get(state.current);
    const n = r ? (r.info.count !== null ? r.info.count : r.members.size) : 0;
    ui.roomCount.textContent = r ? n + ' online' : 'not joined';
    ui.roomPrivate.hidden = !(r && r.info.private);
    ui.roomLocked.hidden = !(r && r.info.locked);
    const topic = r ? r.info.topic.trim() : '';
    ui.roomTopic.textContent = topic;
    ui.roomTopic.hidden = topic === '';
  }

  // renderRooms lists the joined rooms with unread counts and leave buttons.
  function renderRooms() {
    const names = Array.from(state.rooms.keys()).sort((a, b) => {
      if (a === LOBBY) return -1;
      if (b === LOBBY) return 1;
      return a.localeCompare(b);
    });
    const frag = document.createDocumentFragment();
    for (const name of names) {
      const r = state.rooms.get(name);
      const li = make('li', name === state.current ? 'room active' : 'room');
      li.dataset.room = name;
      const open = make('button', 'room-open');
      open.type = 'button';
      open.appendChild(make('span', 'room-hash', r.info.private ? '●' : '#'));
      if (r.info.private) open.title = 'Private room';
      open.appendChild(make('span', 'room-name', name));
      if (r.unread > 0 && name !== state.current) {
        const badge = make('span', 'unread', r.unread > 99 ? '99+' : String(r.unread));
        badge.title = r.unread + ' unread';
        open.appendChild(badge);
      }
      if (name === state.current) open.setAttribute('aria-current', 'true');
      open.addEventListener('click', () => selectRoom(name));
      li.appendChild(open);
      const leave = make('button', 'room-leave', '×');
      leave.type = 'button';
      leave.title = 'Leave ' + name;
      leave.setAttribute('aria-label', 'Leave ' + name);
      leave.addEventListener('click', () => {
        if (!sendJSON({ type: 'leave', room: name })) notify('offline', 'Not connected.');
      });
      li.appendChild(leave);
      frag.appendChild(li);
    }
    ui.rooms.replaceChildren(frag);
  }

  // renderBrowse lists every room the server reported, to join with a click.
  function renderBrowse() {
    const frag = document.createDocumentFragment();
    if (state.browse.length === 0) {
      frag.appendChild(make('li', 'empty', 'No rooms yet.'));
    }
    for (const b of state.browse) {
      const li = make('li', state.rooms.has(b.name) ? 'browse-room joined' : 'browse-room');
      li.dataset.room = b.name;
      const btn = make('button', 'browse-join');
      btn.type = 'button';
      btn.appendChild(make('span', 'room-name', '#' + b.name));
      if (b.private) btn.appendChild(make('span', 'tag', 'private'));
      if (b.members !== null) btn.appendChild(make('span', 'count', String(b.members)));
      btn.title = (state.rooms.has(b.name) ? 'Open ' : 'Join ') + b.name + (b.topic ? ': ' + b.topic : '');
      btn.addEventListener('click', () => joinRoom(b.name));
      li.appendChild(btn);
      frag.appendChild(li);
    }
    ui.browse.replaceChildren(frag);
  }

  // markBrowseJoined refreshes the joined marks of the browse list.
  function markBrowseJoined() {
    for (const li of ui.browse.children) {
      if (li.dataset.room) li.classList.toggle('joined', state.rooms.has(li.dataset.room));
    }
  }

  // renderMembers lists the open room's members, you first.
  function renderMembers() {
    const r = state.rooms.get(state.current);
    const list = r ? Array.from(r.members, ([id, m]) => ({ id, name: m.name, role: m.role })) : [];
    list.sort((a, b) => {
      if (isMe(a) !== isMe(b)) return isMe(a) ? -1 : 1;
      return a.name.localeCompare(b.name);
    });
    const frag = document.createDocumentFragment();
    for (const u of list) {
      const li = make('li', isMe(u) ? 'member me' : 'member');
      li.dataset.user = u.id;
      li.appendChild(avatar(u));
      li.appendChild(make('span', 'member-name', u.name));
      if (u.role && u.role !== 'member') li.appendChild(badge('tag role-' + (ROLES.has(u.role) ? u.role : 'other'), u.role));
      if (isMe(u)) li.appendChild(badge('tag you', 'you'));
      frag.appendChild(li);
    }
    ui.members.replaceChildren(frag);
    ui.memberCount.textContent = r ? String(list.length) : '';
  }

  // updateTitle puts the unread count in the tab title.
  function updateTitle() {
    let n = 0;
    for (const r of state.rooms.values()) n += r.unread;
    document.title = (n > 0 ? '(' + n + ') ' : '') + '#' + state.current + ' · Chat';
  }

  // updateCounter shows how close the draft is to the server's length cap.
  function updateCounter() {
    const max = state.limits && typeof state.limits.text_max_chars === 'number' ? state.limits.text_max_chars : 0;
    const len = Array.from(ui.input.value).length;
    const lines = ui.input.value.split('\n').length;
    ui.input.rows = Math.min(6, Math.max(1, lines));
    if (!max || len < max * 0.8) {
      ui.counter.hidden = true;
      return;
    }
    ui.counter.hidden = false;
    ui.counter.textContent = len + ' / ' + max;
    ui.counter.classList.toggle('over', len > max);
  }

  // ---------------------------------------------------------------------
  // Notices

  // notify shows a dismissable toast for an error code; a repeated code
  // updates the existing toast instead of stacking copies.
  function notify(code, text, timeout = NOTICE_MS, action = null) {
    let box = null;
    for (const n of ui.notices.children) {
      if (n.dataset.code === code) box = n;
    }
    if (!box) {
      box = make('div', 'notice');
      box.dataset.code = code;
      box.setAttribute('role', 'alert');
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
  }

  // hasNotice tells whether a toast of this code is showing.
  function hasNotice(code) {
    return Array.from(ui.notices.children).some((n) => n.dataset.code === code);
  }

  // clearNotice removes the toast of one code once its cause is over.
  function clearNotice(code) {
    for (const n of Array.from(ui.notices.children)) {
      if (n.dataset.code === code) n.remove();
    }
  }

  // ---------------------------------------------------------------------
  // User actions

  // joinRoom opens a room, joining it first when needed.
  function joinRoom(raw) {
    const name = String(raw).trim().toLowerCase();
    if (!ROOM_RE.test(name)) {
      notify('bad_room', 'Room names are 1–32 characters of a–z, 0–9, - and _, starting with a letter or digit.');
      return false;
    }
    if (state.rooms.has(name)) {
      selectRoom(name);
      return true;
    }
    state.switchTo = name;
    if (!sendJSON({ type: 'join', room: name })) {
      notify('offline', 'Not connected; try again when the status says connected.');
      return false;
    }
    return true;
  }

  // sendMessage sends the draft to the open room and remembers it by ref,
  // so a refusal can give it back.
  function sendMessage() {
    const text = ui.input.value;
    if (text.trim() === '') return;
    if (!state.connected) {
      notify('offline', 'Not connected; your message was not sent.');
      return;
    }
    const ref = String(state.nextRef++);
    const msg = { type: 'say', room: state.current, text, ref };
    if (!sendJSON(msg)) {
      notify('offline', 'Not connected; your message was not sent.');
      return;
    }
    state.pending.set(ref, { room: state.current, text });
    while (state.pending.size > MAX_PENDING) state.pending.delete(state.pending.keys().next().value);
    ui.input.value = '';
    updateCounter();
  }

  // bind attaches every event handler; the HTML has no on* attributes.
  function bind() {
    ui.compose.addEventListener('submit', (ev) => {
      ev.preventDefault();
      sendMessage();
      ui.input.focus();
    });
    ui.input.addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
        ev.preventDefault();
        sendMessage();
      }
    });
    ui.input.addEventListener('input', updateCounter);
    ui.joinForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      if (joinRoom(ui.joinName.value)) ui.joinName.value = '';
    });
    ui.joinName.addEventListener('input', () => {
      const lower = ui.joinName.value.toLowerCase();
      if (lower !== ui.joinName.value) ui.joinName.value = lower;
    });
    ui.browseRefresh.addEventListener('click', () => {
      if (!sendJSON({ type: 'rooms' })) notify('offline', 'Not connected.');
    });
    ui.messages.addEventListener('scroll', () => {
      if (atBottom()) ui.jump.hidden = true;
    });
    ui.jump.addEventListener('click', scrollToBottom);
    ui.logoutForm.addEventListener('submit', () => {
      state.leaving = true;
      clearRetry();
    });
    ui.toggleRooms.addEventListener('click', () => togglePanel('show-rooms', ui.toggleRooms));
    ui.toggleMembers.addEventListener('click', () => togglePanel('show-members', ui.toggleMembers));
    window.addEventListener('pagehide', () => {
      state.leaving = true;
      clearRetry();
    });
    window.addEventListener('pageshow', (ev) => {
      // Coming back from the back/forward cache: start over.
      if (ev.persisted) {
        state.leaving = false;
        connect();
      }
    });
    window.addEventListener('offline', () => {
      if (!state.ws) {
        clearRetry();
        setStatus('offline', 'offline');
      }
    });
    window.addEventListener('online', () => {
      if (!state.ws) {
        state.attempt = 0;
        connect();
      }
    });
  }

  // togglePanel opens one side panel on narrow screens and closes the other.
  function togglePanel(cls, button) {
    const open = !document.body.classList.contains(cls);
    document.body.classList.remove('show-rooms', 'show-members');
    ui.toggleRooms.setAttribute('aria-expanded', 'false');
    ui.toggleMembers.setAttribute('aria-expanded', 'false');
    if (open) {
      document.body.classList.add(cls);
      button.setAttribute('aria-expanded', 'true');
    }
  }

  bind();
  renderHeader();
  renderBrowse();
  connect();
})();

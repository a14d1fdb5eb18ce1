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
  // Image types the page shows inline (as <img> from a blob: URL). Anything
  // else is offered as a download whose blob is typed octet-stream, so the
  // browser never renders it as a document of this origin.
  const INLINE_IMAGES = new Set(['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'image/bmp']);
  // Used when the server's welcome does not say which files it takes.
  const DEFAULT_FILE_TYPES = ['image/png', 'image/jpeg', 'image/gif', 'image/webp', 'application/pdf', 'text/plain'];
  const DEFAULT_FILE_MAX = 1 << 20;
  const MAX_SEEN = 5000;
  const MAX_OPS = 100; // commands waiting for their ack
  const MAX_KNOWN_USERS = 300; // suggestions in the user id fields
  // History comes in pages (more: true); one catch-up fetches at most this many
  // and then says that older messages are not shown.
  const MAX_HISTORY_PAGES = 20;
  // Files in history come without their bytes; they are fetched one at a time,
  // at most this many waiting, each retried at most RETRY_MAX times when the
  // server says to slow down.
  const MAX_FETCH_QUEUE = 50;
  const RETRY_MAX = 5;
  const OK_MS = 4000;
  // Rank of a member's display role, as the server orders them for kick and
  // ban (admin > owner > moderator > others). The page only uses it to hide
  // buttons the server would refuse.
  const RANKS = { admin: 3, owner: 2, moderator: 1 };
  // Run-time settings: the form field names are the protocol's names.
  const SETTING_NUMBERS = ['msg_rate', 'msg_burst', 'user_msg_rate', 'user_msg_burst', 'byte_rate', 'byte_burst', 'read_limit', 'text_max_chars'];
  const SETTING_INTS = new Set(['msg_burst', 'user_msg_burst', 'byte_burst', 'read_limit', 'text_max_chars']);
  // Characters the server refuses in file names (paths, shell specials,
  // controls and bidi overrides), checked first for a clearer message.
  const BAD_FILE_NAME = /[\/\\:*?"<>|\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
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
    attach: $('attach'),
    fileInput: $('file-input'),
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
    createForm: $('create-form'),
    createName: $('create-name'),
    createPrivate: $('create-private'),
    inviteForm: $('invite-form'),
    inviteUser: $('invite-user'),
    inviteRoom: $('invite-room'),
    knownUsers: $('known-users'),
    manageToggle: $('room-manage-toggle'),
    roomSettings: $('room-settings'),
    topicForm: $('topic-form'),
    topicInput: $('topic-input'),
    lockToggle: $('lock-toggle'),
    deleteRoom: $('delete-room'),
    deleteConfirm: $('delete-confirm'),
    deleteQuestion: $('delete-question'),
    deleteYes: $('delete-yes'),
    deleteNo: $('delete-no'),
    unbanForm: $('unban-form'),
    unbanUser: $('unban-user'),
    adminToggle: $('admin-toggle'),
    adminPanel: $('admin-panel'),
    adminClose: $('admin-close'),
    settingsForm: $('settings-form'),
    settingsReload: $('settings-reload'),
    settingsState: $('settings-state'),
    roleForm: $('role-form'),
    roleUser: $('role-user'),
    roleSelect: $('role-select'),
    gbanForm: $('gban-form'),
    gbanUser: $('gban-user'),
    gbanReason: $('gban-reason'),
    audit: $('audit'),
    auditRefresh: $('audit-refresh'),
  };

  const state = {
    ws: null,
    connected: false, // true between welcome and close
    me: null, // {id, name} from welcome
    limits: null,
    perms: [], // global permissions from welcome / you
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
    ops: new Map(), // ref -> {ok, after} for commands waiting for their ack
    settings: null, // the server's settings as last received (admins)
    knownUsersKey: '',
    history: new Map(), // ref -> {room, after, tries} for history pages asked for
    fetchQueue: [], // history files waiting for their bytes
    fetching: null, // {ref, file, tries} for the fetch_file in flight
    fetchTimer: 0,
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
        perms: [], // my_perms in this room
        lastId: 0, // highest message id seen: where a reconnect resumes
        pages: 0, // history pages fetched since the last join
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
      forgetFetches();
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
    // An answer other than ack or error that carries our ref (settings,
    // audit) ends the wait for it.
    if (typeof ev.ref === 'string' && ev.type !== 'ack' && ev.type !== 'error') state.ops.delete(ev.ref);
    switch (ev.type) {
      case 'welcome': return onWelcome(ev);
      case 'joined': return onJoined(ev);
      case 'left': return onLeft(ev);
      case 'presence': return onPresence(ev);
      case 'message': return onMessage(ev);
      case 'file': return state.fetching && ev.ref === state.fetching.ref ? onFetched(ev) : onMessage(ev);
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
      case 'motd': return showMotd(ev.motd);
      case 'limits':
        // An admin changed the limits: check input against the new ones.
        if (ev.limits && typeof ev.limits === 'object') state.limits = ev.limits;
        return;
      case 'settings': return onSettings(ev);
      case 'audit': return onAudit(ev);
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
    ui.me.textContent = you.name;
    ui.devBanner.hidden = ev.dev !== true;
    showMotd(ev.motd);
    showRole(ev.role);
    state.perms = Array.isArray(ev.perms) ? ev.perms.filter((x) => typeof x === 'string') : [];
    renderControls();
    setStatus('connected', 'connected');
    // Say that the connection is back where a notice said it was lost.
    if (hasNotice('closed')) notify('closed', 'Reconnected.', 3000);
    clearNotice('offline');
    // Re-join what we were in; where we saw messages, ask for what was missed
    // (the server joined lobby already, and answers a repeated join of it
    // with the catch-up).
    for (const name of state.wanted) {
      const r = state.rooms.get(name);
      if (r && r.lastId > 0) sendJSON({ type: 'join', room: name, after: r.lastId });
      else if (name !== LOBBY) sendJSON({ type: 'join', room: name });
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
    r.pages = 0;
    roomInfo(r.info, ev);
    if (Array.isArray(ev.my_perms)) r.perms = ev.my_perms.filter((x) => typeof x === 'string');
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
    const gone = state.rooms.get(name);
    if (gone) gone.messages.forEach(releaseEntry);
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
    const entry = makeEntry(r, ev);
    if (!entry) return;
    pushEntry(r, entry);
    if (name !== state.current) {
      r.unread++;
      renderRooms();
    }
    updateTitle();
  }

  // makeEntry turns a message or file event into a timeline entry, or
  // returns null for one already shown (a resume or history can repeat).
  function makeEntry(r, ev) {
    if (typeof ev.id === 'number') {
      if (r.seen.has(ev.id)) return null;
      r.seen.add(ev.id);
      if (r.seen.size > MAX_SEEN) {
        r.seen = new Set(r.messages.filter((e) => typeof e.id === 'number').map((e) => e.id));
        r.seen.add(ev.id);
      }
      r.lastId = Math.max(r.lastId, ev.id);
    }
    const entry = {
      kind: 'msg',
      id: ev.id,
      from: user(ev.from),
      ts: typeof ev.ts === 'number' ? ev.ts : Date.now(),
      text: str(ev.text),
      file: null,
    };
    if (ev.type === 'file') {
      entry.file = {
        name: str(ev.name, 'file') || 'file',
        mime: str(ev.mime),
        size: typeof ev.size === 'number' ? ev.size : 0,
        data: str(ev.data),
        url: '',
        type: '',
        room: r.name,
        id: ev.id,
        // History carries no bytes: they are fetched with fetch_file ('' not
        // yet, 'queued', 'failed').
        fetch: '',
      };
    }
    return entry;
  }

  // onHistory merges stored messages into a room: on a first join the
  // recent past, after a reconnect what was missed. It may arrive after
  // live messages, so each is put before the first newer message.
  function onHistory(ev) {
    if (typeof ev.ref === 'string') state.history.delete(ev.ref);
    const r = state.rooms.get(str(ev.room));
    if (!r || !Array.isArray(ev.messages)) return;
    nextPage(r, ev);
    const had = r.messages.some((e) => e.kind === 'msg');
    const added = [];
    for (const m of ev.messages) {
      if (!m || typeof m !== 'object' || Array.isArray(m)) continue;
      const entry = makeEntry(r, m);
      if (entry) added.push(entry);
    }
    added.sort((a, b) => (a.id || 0) - (b.id || 0));
    if (ev.gap === true && had) {
      const first = added[0];
      added.unshift({ kind: 'sys', text: 'Some messages from while you were away are not shown.', ts: first ? first.ts : Date.now(), id: first ? first.id : undefined });
    }
    if (added.length === 0) return;
    for (const entry of added) {
      const at = typeof entry.id === 'number'
        ? r.messages.findIndex((e) => e.kind === 'msg' && typeof e.id === 'number' && e.id > entry.id)
        : -1;
      if (at < 0) r.messages.push(entry);
      else r.messages.splice(at, 0, entry);
    }
    trimRoom(r);
    if (r.name === state.current) {
      renderMessages();
    } else if (had) {
      r.unread += added.filter((e) => e.kind === 'msg').length;
      renderRooms();
      updateTitle();
    }
  }

  // nextPage asks for the page after ev when the server says more follow, up to
  // MAX_HISTORY_PAGES per join; beyond that the room says older ones are missing.
  function nextPage(r, ev) {
    if (ev.more !== true) return;
    let last = 0;
    for (const m of ev.messages) if (m && typeof m.id === 'number') last = Math.max(last, m.id);
    if (last === 0) return;
    if (r.pages >= MAX_HISTORY_PAGES) {
      r.messages.push({ kind: 'sys', text: 'Some messages from while you were away are not shown.', ts: Date.now() });
      return;
    }
    r.pages++;
    askHistory(r.name, last, 0);
  }

  // askHistory sends a history request and remembers it, to retry it when the
  // server says to slow down. after is an id, or undefined for the newest.
  function askHistory(name, after, tries) {
    const ref = 'h' + state.nextRef++;
    const req = { type: 'history', room: name, ref };
    if (typeof after === 'number') req.after = after;
    if (state.history.size > MAX_OPS) state.history.clear();
    state.history.set(ref, { room: name, after, tries });
    sendJSON(req);
  }

  // retryLater runs f after the server's retry hint (at least a second).
  function retryLater(ev, f) {
    const ms = typeof ev.retry_after_ms === 'number' && ev.retry_after_ms > 0 ? ev.retry_after_ms : 1000;
    setTimeout(f, Math.min(Math.max(ms, 1000), 60000));
  }

  // onHistoryRefused retries a refused history page later, a few times.
  function onHistoryRefused(ev, req) {
    if (ev.code !== 'rate_limited' || req.tries >= RETRY_MAX) return;
    retryLater(ev, () => {
      if (state.connected && state.rooms.has(req.room)) askHistory(req.room, req.after, req.tries + 1);
    });
  }

  // wantFile queues a history file for its bytes; one fetch runs at a time.
  function wantFile(f) {
    if (f.fetch || typeof f.id !== 'number' || state.fetchQueue.length >= MAX_FETCH_QUEUE) return;
    f.fetch = 'queued';
    state.fetchQueue.push(f);
    pumpFetch();
  }

  // pumpFetch sends the next fetch_file when none is in flight.
  function pumpFetch() {
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
  function onFetched(ev) {
    const f = state.fetching.file;
    state.fetching = null;
    f.data = str(ev.data);
    f.fetch = f.data ? '' : 'failed';
    if (f.room === state.current) renderMessages();
    pumpFetch();
  }

  // onFetchRefused retries a fetch the server asked to slow down, a few times;
  // any other refusal (the file is gone) shows the file as unavailable.
  function onFetchRefused(ev) {
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
  function forgetFetches() {
    if (state.fetching) state.fetching.file.fetch = '';
    for (const f of state.fetchQueue) f.fetch = '';
    state.fetching = null;
    state.fetchQueue = [];
    state.history.clear();
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
    if (Array.isArray(ev.perms)) state.perms = ev.perms.filter((x) => typeof x === 'string');
    renderHeader();
    renderMembers();
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

  // onAck forgets a delivered message's draft, or confirms a command the
  // server has carried out and stored.
  function onAck(ev) {
    const ref = str(ev.ref);
    state.pending.delete(ref);
    const op = state.ops.get(ref);
    if (!op) return;
    state.ops.delete(ref);
    if (op.ok) notify('ok', op.ok, OK_MS);
    if (op.after) op.after();
  }

  // onError shows the server's complaint and undoes what it refused.
  function onError(ev) {
    const code = str(ev.code, 'error') || 'error';
    const ref = str(ev.ref);
    const errRoom = str(ev.room);
    // Background requests of the page (history pages, file bytes) retry by
    // themselves and bother nobody.
    if (ref && state.fetching && ref === state.fetching.ref) return onFetchRefused(ev);
    if (ref && state.history.has(ref)) {
      const req = state.history.get(ref);
      state.history.delete(ref);
      return onHistoryRefused(ev, req);
    }
    if (code === 'rate_limited' && !ref && errRoom) {
      // A join or its history refused while the answers were over budget:
      // try again later instead of forgetting the room.
      retryLater(ev, () => {
        if (!state.connected) return;
        const r = state.rooms.get(errRoom);
        if (r) askHistory(errRoom, r.lastId > 0 ? r.lastId : undefined, 1);
        else if (state.wanted.has(errRoom)) sendJSON({ type: 'join', room: errRoom });
      });
      return undefined;
    }
    let text = errorText(code, str(ev.message), errRoom);
    let timeout = NOTICE_MS;
    if (ref) state.ops.delete(ref);
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
    if (errRoom && !text.includes('#' + errRoom)) text += ' (#' + errRoom + ')';
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

  // sentence turns a server message ("no such room") into one for people.
  function sentence(msg) {
    const t = msg.trim();
    if (!t) return '';
    return t.charAt(0).toUpperCase() + t.slice(1) + (/[.!?]$/.test(t) ? '' : '.');
  }

  // clause ends a server message with a full stop, to follow a colon.
  function clause(msg) {
    const t = msg.trim();
    return t && !/[.!?]$/.test(t) ? t + '.' : t;
  }

  // errorText says what a refusal means. The server's message is kept where
  // it carries the detail (which setting, which file type); codes whose
  // meaning does not depend on it get a fixed sentence.
  function errorText(code, msg, errRoom) {
    const where = errRoom ? '#' + errRoom : 'that room';
    switch (code) {
      case 'forbidden':
        return sentence(msg) || 'You are not allowed to do that.';
      case 'no_such_room':
        return 'There is no room ' + where + ', or it is private and you were not invited.';
      case 'banned':
        return sentence(msg) || 'You are banned from ' + where + '.';
      case 'room_exists':
        return 'The name ' + where + ' is taken; pick another one or join it.';
      case 'bad_setting':
        return 'The settings were not saved: ' + (clause(msg) || 'a value is out of range.');
      case 'file_type':
        return 'The file was refused: ' + (clause(msg) || 'this type of file is not accepted.');
      case 'file_too_big':
        return 'The file was refused: ' + (clause(msg) || 'it is too big.');
      case 'bad_filename':
        return 'The file was refused: ' + (clause(msg) || 'its name has special characters.');
      case 'bad_file':
        return 'The file was refused: ' + (clause(msg) || 'it is not what was announced.');
      case 'read_only':
        return where.charAt(0).toUpperCase() + where.slice(1) + ' is read-only: only its owner and moderators can write.';
      case 'room_limit':
        return sentence(msg) || 'The limit of rooms, invitations or roles is reached.';
      case 'store_failed':
        return 'The change is in effect but could not be saved; it may be lost at a restart.';
      case 'busy':
        return 'The server is busy; try again in a moment.';
      default:
        return sentence(msg) || sentence(code.replace(/_/g, ' '));
    }
  }

  // command sends a state-changing command with a ref; when the server acks
  // it (the change is stored) the page says ok and runs after. A refusal
  // comes back as an error with the same ref, shown as a notice.
  function command(obj, ok, after) {
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
  function request(obj) {
    const ref = 'q' + state.nextRef++;
    if (!sendJSON(Object.assign({}, obj, { ref }))) {
      notify('offline', 'Not connected.');
      return false;
    }
    return true;
  }

  // ---------------------------------------------------------------------
  // Rendering

  // pushEntry appends a message or system line to a room and, when the room
  // is open, to the page, keeping the view pinned to the bottom if it was.
  function pushEntry(r, entry) {
    r.messages.push(entry);
    trimRoom(r);
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

  // trimRoom keeps a room's timeline bounded and frees the blob URLs of
  // files that fall off it.
  function trimRoom(r) {
    if (r.messages.length <= MAX_MESSAGES_PER_ROOM) return;
    for (const e of r.messages.splice(0, r.messages.length - MAX_MESSAGES_PER_ROOM)) releaseEntry(e);
  }

  // releaseEntry frees what an entry holds outside the DOM.
  function releaseEntry(e) {
    if (e.file && e.file.url) {
      URL.revokeObjectURL(e.file.url);
      e.file.url = '';
    }
  }

  // renderMessages redraws the open room's timeline, staying at the bottom
  // if the reader was there.
  function renderMessages() {
    const r = state.rooms.get(state.current);
    const stick = atBottom();
    const frag = document.createDocumentFragment();
    if (r) r.messages.forEach((e, i) => frag.appendChild(entryNode(e, r.messages[i - 1])));
    ui.messages.replaceChildren(frag);
    if (stick) scrollToBottom();
  }

  // fileURL decodes a file's base64 bytes once into a blob: URL. Only the
  // inline image types keep their type; everything else becomes an opaque
  // download.
  function fileURL(f) {
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
  function fileSize(n) {
    if (n < 1024) return n + ' B';
    if (n < 1024 * 1024) return (n / 1024).toFixed(n < 10240 ? 1 : 0) + ' KB';
    return (n / 1024 / 1024).toFixed(1) + ' MB';
  }

  // fileNode shows a file message: an image inline, anything else as a
  // download link. The name is always text (caption or link text).
  function fileNode(f) {
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
  function pendingFileNode(f, box) {
    if (f.fetch === 'failed') {
      box.appendChild(make('span', 'msg-caption', f.name + ' (no longer available)'));
      return box;
    }
    wantFile(f);
    box.appendChild(make('span', 'msg-caption msg-loading', f.name + ' · ' + fileSize(f.size) + ' · loading…'));
    return box;
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
    body.appendChild(entry.file ? fileNode(entry.file) : make('div', 'msg-text', entry.text));
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
    renderMessages();
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
    ui.attach.hidden = !canSendFiles();
    renderControls();
  }

  // can tells whether the user holds a permission in a joined room (its
  // my_perms) or globally. The server decides; this only hides controls.
  function can(r, perm) {
    return state.perms.includes(perm) || !!(r && r.perms.includes(perm));
  }

  // myRank is the user's rank in a room for kick and ban, as the server
  // ranks it: admin 3, manage (owner) 2, expel (moderator) 1.
  function myRank(r) {
    if (can(r, 'admin')) return 3;
    if (can(r, 'manage')) return 2;
    if (can(r, 'expel')) return 1;
    return 0;
  }

  // renderControls shows the room, member and admin controls the user's
  // permissions allow, and hides the others.
  function renderControls() {
    const isAdmin = state.perms.includes('admin');
    ui.adminToggle.hidden = !isAdmin;
    if (!isAdmin && !ui.adminPanel.hidden) toggleAdmin(false);
    ui.createForm.hidden = !state.perms.includes('send');

    const r = state.rooms.get(state.current);
    ui.inviteForm.hidden = !can(r, 'invite') || !r;
    ui.inviteRoom.textContent = '#' + state.current;

    const manage = !!r && can(r, 'manage');
    const expel = !!r && can(r, 'expel');
    ui.manageToggle.hidden = !(manage || expel);
    if (ui.manageToggle.hidden && !ui.roomSettings.hidden) toggleRoomSettings(false);
    for (const el of ui.roomSettings.querySelectorAll('.manage-only')) el.hidden = !manage;
    ui.unbanForm.hidden = !expel;
    const locked = !!(r && r.info.locked);
    ui.lockToggle.textContent = locked ? 'Let everyone write' : 'Make read-only';
    ui.lockToggle.dataset.locked = String(locked);
    if (state.current === LOBBY || ui.deleteConfirm.dataset.room !== state.current) disarmDelete();
    if (r && document.activeElement !== ui.topicInput && ui.topicInput.dataset.room !== r.name + '\n' + r.info.topic) {
      ui.topicInput.value = r.info.topic;
      ui.topicInput.dataset.room = r.name + '\n' + r.info.topic;
    }
  }

  // toggleRoomSettings opens or closes the open room's settings.
  function toggleRoomSettings(open) {
    ui.roomSettings.hidden = !open;
    ui.manageToggle.setAttribute('aria-expanded', String(open));
    ui.manageToggle.classList.toggle('active', open);
    if (!open) disarmDelete();
  }

  // armDelete asks, inside the page, whether the room should really go.
  function armDelete() {
    ui.deleteConfirm.dataset.room = state.current;
    ui.deleteQuestion.textContent = 'Delete #' + state.current + ' and its history for everyone?';
    ui.deleteConfirm.hidden = false;
    ui.deleteRoom.hidden = true;
    ui.deleteNo.focus();
  }

  // disarmDelete puts the delete button back.
  function disarmDelete() {
    ui.deleteConfirm.hidden = true;
    ui.deleteConfirm.dataset.room = '';
    ui.deleteRoom.hidden = state.current === LOBBY;
  }

  // memberButton makes one member action. Its label is CSS generated content
  // (data-label), so the member's li still reads exactly the name.
  function memberButton(cls, label, aria, run) {
    const b = make('button', 'member-btn ' + cls);
    b.type = 'button';
    b.dataset.label = label;
    b.title = aria;
    b.setAttribute('aria-label', aria);
    b.addEventListener('click', run);
    return b;
  }

  // memberActions builds the kick, ban and moderator buttons for one member
  // of the open room, or null when the user may do none of it to them.
  function memberActions(r, u) {
    if (!r || isMe(u) || !u.id) return null;
    const room = r.name;
    const box = make('span', 'member-actions');
    const target = RANKS[u.role] || 0;
    if (can(r, 'manage') && target < 2) {
      const isMod = u.role === 'moderator';
      const b = memberButton('member-mod' + (isMod ? ' on' : ''), isMod ? 'Unmod' : 'Mod',
        (isMod ? 'Remove ' + u.name + ' as moderator of #' : 'Make ' + u.name + ' a moderator of #') + room,
        () => command({ type: 'set_room_role', room, user: u.id, role: isMod ? 'member' : 'moderator' },
          isMod ? u.name + ' is no longer a moderator of #' + room + '.' : u.name + ' is now a moderator of #' + room + '.'));
      b.dataset.user = u.id;
      box.appendChild(b);
    }
    if (can(r, 'expel') && target < myRank(r)) {
      const kick = memberButton('member-kick', 'Kick', 'Remove ' + u.name + ' from #' + room,
        () => command({ type: 'kick', room, user: u.id }, u.name + ' was removed from #' + room + '.'));
      kick.dataset.user = u.id;
      box.appendChild(kick);
      const ban = memberButton('member-ban', 'Ban', 'Ban ' + u.name + ' from #' + room,
        () => command({ type: 'ban', room, user: u.id }, u.name + ' is banned from #' + room + '.'));
      ban.dataset.user = u.id;
      box.appendChild(ban);
    }
    return box.childElementCount > 0 ? box : null;
  }

  // renderKnownUsers offers the ids of people in the joined rooms as
  // suggestions in the user id fields (invite, unban, roles, bans).
  function renderKnownUsers() {
    const known = new Map();
    for (const r of state.rooms.values()) {
      for (const [id, m] of r.members) {
        if (known.size >= MAX_KNOWN_USERS) break;
        if (id && !known.has(id) && !(state.me && id === state.me.id)) known.set(id, m.name);
      }
    }
    const ids = Array.from(known.keys()).sort();
    const key = ids.map((id) => id + '\u0000' + known.get(id)).join('\u0001');
    if (key === state.knownUsersKey) return;
    state.knownUsersKey = key;
    const frag = document.createDocumentFragment();
    for (const id of ids) {
      const opt = document.createElement('option');
      opt.value = id;
      opt.label = known.get(id);
      frag.appendChild(opt);
    }
    ui.knownUsers.replaceChildren(frag);
  }

  // canSendFiles tells whether the user may send files in the open room
  // (globally or by a role in the room); the server checks again.
  function canSendFiles() {
    const r = state.rooms.get(state.current);
    return state.perms.includes('send_binary') || !!(r && r.perms.includes('send_binary'));
  }

  // fileLimits is what the server takes: from the welcome when it says so,
  // else the server's defaults. Sending a file it would refuse for size can
  // cost the connection, so the page checks first.
  function fileLimits() {
    const l = state.limits || {};
    return {
      max: typeof l.file_max_bytes === 'number' && l.file_max_bytes > 0 ? l.file_max_bytes : DEFAULT_FILE_MAX,
      types: Array.isArray(l.file_types) ? l.file_types.filter((x) => typeof x === 'string') : DEFAULT_FILE_TYPES,
    };
  }

  // sendFile announces a file and sends its bytes as the one binary frame
  // that must follow the announcement.
  async function sendFile(file) {
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
    const ws = state.ws;
    if (!state.connected || !ws || ws.readyState !== WebSocket.OPEN) {
      notify('offline', 'Not connected; the file was not sent.');
      return;
    }
    const ref = String(state.nextRef++);
    ws.send(JSON.stringify({ type: 'file', room: state.current, name: file.name, mime, size: buf.byteLength, ref }));
    ws.send(buf);
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
      if (u.id) li.title = u.id;
      li.appendChild(avatar(u));
      li.appendChild(make('span', 'member-name', u.name));
      if (u.role && u.role !== 'member') li.appendChild(badge('tag role-' + (ROLES.has(u.role) ? u.role : 'other'), u.role));
      if (isMe(u)) li.appendChild(badge('tag you', 'you'));
      const actions = memberActions(r, u);
      if (actions) {
        li.classList.add('has-actions');
        li.appendChild(actions);
      }
      frag.appendChild(li);
    }
    ui.members.replaceChildren(frag);
    ui.memberCount.textContent = r ? String(list.length) : '';
    renderKnownUsers();
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

  // createRoom asks the server for a new room, public or private, and opens
  // it when it is joined.
  function createRoom() {
    const name = ui.createName.value.trim().toLowerCase();
    if (!ROOM_RE.test(name)) {
      notify('bad_room', 'Room names are 1–32 characters of a–z, 0–9, - and _, starting with a letter or digit.');
      return;
    }
    const priv = ui.createPrivate.checked;
    state.switchTo = name;
    const ok = priv
      ? 'Private room #' + name + ' created. Invite people from the members panel.'
      : 'Room #' + name + ' created.';
    if (command({ type: 'create', room: name, private: priv }, ok)) {
      ui.createName.value = '';
      ui.createPrivate.checked = false;
    }
  }

  // inviteUser invites a user id, or an email address, into the open room.
  function inviteUser() {
    const who = ui.inviteUser.value.trim();
    if (!who) return;
    const room = state.current;
    const msg = { type: 'invite', room };
    if (who.includes('@')) msg.email = who;
    else msg.user = who;
    if (command(msg, 'Invitation to #' + room + ' sent to ' + who + '.')) ui.inviteUser.value = '';
  }

  // ---------------------------------------------------------------------
  // Administration (global admin permission only; the server checks)

  // toggleAdmin opens or closes the admin panel; opening it loads the
  // current settings and the audit log.
  function toggleAdmin(open) {
    ui.adminPanel.hidden = !open;
    ui.adminToggle.setAttribute('aria-expanded', String(open));
    ui.adminToggle.classList.toggle('active', open);
    document.body.classList.toggle('show-admin', open);
    if (open) {
      request({ type: 'get_settings' });
      requestAudit();
    }
  }

  // requestAudit asks for the newest audit entries.
  function requestAudit() {
    if (!ui.adminPanel.hidden) request({ type: 'audit', limit: 50 });
  }

  // settingsField is the form control for one setting.
  function settingsField(name) {
    return ui.settingsForm.elements.namedItem(name);
  }

  // onSettings shows the server's settings in the admin form; they are
  // also the baseline that saving compares against.
  function onSettings(ev) {
    const set = ev.settings;
    if (!set || typeof set !== 'object' || Array.isArray(set)) return;
    state.settings = set;
    for (const name of SETTING_NUMBERS) {
      const el = settingsField(name);
      if (el) el.value = typeof set[name] === 'number' ? String(set[name]) : '';
    }
    const domains = Array.isArray(set.allowed_domains) ? set.allowed_domains.filter((d) => typeof d === 'string') : [];
    settingsField('allowed_domains').value = domains.join(', ');
    settingsField('motd').value = str(set.motd);
    settingsField('members_can_create_rooms').checked = set.members_can_create_rooms === true;
    ui.settingsState.textContent = 'Loaded at ' + hhmm(new Date());
  }

  // domainList splits the comma-separated domains field.
  function domainList(v) {
    return v.split(',').map((d) => d.trim()).filter((d) => d !== '');
  }

  // settingsChanges returns the settings the form changes, or an error.
  function settingsChanges() {
    const base = state.settings || {};
    const out = {};
    for (const name of SETTING_NUMBERS) {
      const raw = settingsField(name).value.trim();
      const v = Number(raw);
      if (raw === '' || !Number.isFinite(v)) return { error: name + ' must be a number.' };
      if (SETTING_INTS.has(name) && !Number.isInteger(v)) return { error: name + ' must be a whole number.' };
      if (v !== base[name]) out[name] = v;
    }
    const domains = domainList(settingsField('allowed_domains').value);
    const oldDomains = Array.isArray(base.allowed_domains) ? base.allowed_domains : [];
    if (domains.join(',') !== oldDomains.join(',')) out.allowed_domains = domains;
    const motd = settingsField('motd').value;
    if (motd !== str(base.motd)) out.motd = motd;
    const create = settingsField('members_can_create_rooms').checked;
    if (create !== (base.members_can_create_rooms === true)) out.members_can_create_rooms = create;
    return { changes: out };
  }

  // saveSettings sends only the changed settings; the server validates them
  // as a whole and answers with the new settings and an ack.
  function saveSettings() {
    if (!state.settings) {
      notify('bad_setting', 'The settings have not loaded yet.');
      request({ type: 'get_settings' });
      return;
    }
    const { changes, error } = settingsChanges();
    if (error) {
      notify('bad_setting', 'The settings were not saved: ' + error);
      return;
    }
    const names = Object.keys(changes);
    if (names.length === 0) {
      notify('ok', 'Nothing to save: no setting was changed.', OK_MS);
      return;
    }
    command({ type: 'set_settings', settings: changes }, 'Settings saved: ' + names.join(', ') + '.', requestAudit);
  }

  // shortJSON shows an audit value compactly, as text.
  function shortJSON(v) {
    if (v === undefined) return '—';
    let t;
    try {
      t = JSON.stringify(v);
    } catch (err) {
      t = '?';
    }
    return t.length > 160 ? t.slice(0, 157) + '…' : t;
  }

  // isPlain tells whether an audit value is a JSON object (not an array).
  function isPlain(v) {
    return !!v && typeof v === 'object' && !Array.isArray(v);
  }

  // describeChange says what an audit entry changed: for two objects (the
  // settings) only the fields that differ, otherwise old → new.
  function describeChange(oldV, newV) {
    if (isPlain(oldV) && isPlain(newV)) {
      const parts = [];
      for (const k of new Set([...Object.keys(oldV), ...Object.keys(newV)])) {
        if (JSON.stringify(oldV[k]) !== JSON.stringify(newV[k])) parts.push(k + ': ' + shortJSON(oldV[k]) + ' → ' + shortJSON(newV[k]));
      }
      return parts.length ? parts.join('; ') : 'no change';
    }
    const blank = (v) => v === undefined || v === null || v === '';
    if (blank(oldV) && blank(newV)) return '';
    if (blank(oldV)) return '→ ' + shortJSON(newV);
    if (blank(newV)) return 'was ' + shortJSON(oldV);
    return shortJSON(oldV) + ' → ' + shortJSON(newV);
  }

  // onAudit lists the audit log, newest first, every field as text.
  function onAudit(ev) {
    const entries = Array.isArray(ev.entries) ? ev.entries : [];
    const frag = document.createDocumentFragment();
    if (entries.length === 0) frag.appendChild(make('li', 'empty', 'Nothing recorded yet.'));
    for (const e of entries) {
      if (!isPlain(e)) continue;
      const li = make('li', 'audit-entry');
      li.dataset.action = str(e.action);
      const head = make('div', 'audit-head');
      const when = new Date(typeof e.ts === 'number' ? e.ts : NaN);
      const time = make('time', 'audit-time', Number.isNaN(when.getTime()) ? '' : when.toLocaleString());
      if (!Number.isNaN(when.getTime())) time.dateTime = when.toISOString();
      head.appendChild(time);
      head.appendChild(make('span', 'audit-actor', str(e.actor)));
      head.appendChild(make('span', 'audit-action', str(e.action)));
      if (str(e.target)) head.appendChild(make('span', 'audit-target', str(e.target)));
      li.appendChild(head);
      const change = describeChange(e.old, e.new);
      if (change) li.appendChild(make('div', 'audit-change', change));
      frag.appendChild(li);
    }
    ui.audit.replaceChildren(frag);
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
    ui.fileInput.addEventListener('change', () => {
      const file = ui.fileInput.files && ui.fileInput.files[0];
      ui.fileInput.value = '';
      if (file) sendFile(file);
    });
    ui.attach.addEventListener('click', () => ui.fileInput.click());
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
    ui.createForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      createRoom();
    });
    ui.createName.addEventListener('input', () => {
      const lower = ui.createName.value.toLowerCase();
      if (lower !== ui.createName.value) ui.createName.value = lower;
    });
    ui.inviteForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      inviteUser();
    });
    ui.manageToggle.addEventListener('click', () => toggleRoomSettings(ui.roomSettings.hidden));
    ui.topicForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const room = state.current;
      command({ type: 'topic', room, topic: ui.topicInput.value.trim() }, 'Topic of #' + room + ' saved.');
      ui.topicInput.blur();
    });
    ui.lockToggle.addEventListener('click', () => {
      const room = state.current;
      const r = state.rooms.get(room);
      const lock = !(r && r.info.locked);
      command({ type: 'lock', room, locked: lock },
        lock ? '#' + room + ' is read-only now.' : 'Everyone can write in #' + room + ' again.');
    });
    ui.deleteRoom.addEventListener('click', armDelete);
    ui.deleteNo.addEventListener('click', disarmDelete);
    ui.deleteYes.addEventListener('click', () => {
      const room = ui.deleteConfirm.dataset.room;
      disarmDelete();
      if (room && room === state.current) command({ type: 'delete_room', room }, '#' + room + ' was deleted.');
    });
    ui.unbanForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const user = ui.unbanUser.value.trim();
      const room = state.current;
      if (user && command({ type: 'unban', room, user }, user + ' may join #' + room + ' again.')) ui.unbanUser.value = '';
    });
    ui.adminToggle.addEventListener('click', () => toggleAdmin(ui.adminPanel.hidden));
    ui.adminClose.addEventListener('click', () => {
      toggleAdmin(false);
      ui.adminToggle.focus();
    });
    ui.settingsForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      saveSettings();
    });
    ui.settingsReload.addEventListener('click', () => request({ type: 'get_settings' }));
    ui.auditRefresh.addEventListener('click', requestAudit);
    ui.roleForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const user = ui.roleUser.value.trim();
      const role = ui.roleSelect.value;
      if (user) command({ type: 'set_role', user, role }, user + ' is now ' + role + '.', requestAudit);
    });
    ui.gbanForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const user = ui.gbanUser.value.trim();
      if (!user) return;
      if (ev.submitter && ev.submitter.value === 'ban') {
        const reason = ui.gbanReason.value.trim();
        const msg = { type: 'global_ban', user };
        if (reason) msg.reason = reason;
        command(msg, user + ' is banned from the server.', requestAudit);
      } else {
        command({ type: 'global_unban', user }, user + ' may sign in again.', requestAudit);
      }
    });
    document.addEventListener('keydown', (ev) => {
      if (ev.key === 'Escape' && !ui.adminPanel.hidden) toggleAdmin(false);
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

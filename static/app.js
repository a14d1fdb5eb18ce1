// The chat page's entry point: wires the controls and connects.
//
// Security rule for every module of the page: a string from the server (or from another
// user through the server) goes into the page with textContent, createTextNode or a
// dataset/attribute value, never parsed as HTML; no style attributes (the CSP forbids
// inline style), only classes. Plain JavaScript modules, no build step, no framework.

import { ui } from './dom.js';
import { room, state, user } from './state.js';
import { clearRetry, command, connect, request, sendJSON, setStatus } from './connection.js';
import { atBottom, scrollToBottom } from './messages.js';
import {
  armDelete, disarmDelete, renderBrowse, renderHeader, toggleRoomSettings, updateCounter,
} from './panels.js';
import { sendFile } from './files.js';
import { notify } from './notices.js';
import { createRoom, inviteUser, joinRoom, sendMessage } from './actions.js';
import { requestAudit, saveSettings, toggleAdmin } from './admin.js';
import { isE2EE, sendFileE2EE } from './e2ee.js';
import { bindUnread } from './unread.js';

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
    if (file && isE2EE(state.current)) sendFileE2EE(state.current, file);
    else if (file) sendFile(file);
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
bindUnread();
renderHeader();
renderBrowse();
connect();

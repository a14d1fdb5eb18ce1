// What the user has not read yet: each room's unread and mention counts, the "new
// messages" marker when they come back, and the notifications for mentions and direct
// messages that arrive while the tab is hidden. A message counts as unread when its room
// is not the open one, or when the tab is hidden (the open room is then not being read
// either, and the title's count must say so).
// (Security rule: see app.js.)

import { comeBack, isMe, roomLabel, state } from './state.js';
import { mentionsMe, renderMessages, showMarker } from './messages.js';
import { renderRooms, selectRoom, updateTitle } from './panels.js';
import { bindNotifications, showNotification } from './notify.js';

// pageHidden tells whether the user cannot see the page (another tab, a minimised
// window), as the Page Visibility API says.
export function pageHidden() {
  return document.visibilityState === 'hidden';
}

// noteArrival counts a new message of a room as unread if the user is not looking at
// it, apart when it mentions them, and remembers where the unread part begins. A live
// one (not a reconnect's catch-up) that mentions the user, or comes in a direct
// conversation, is notified while the tab is hidden. It returns whether it counted.
export function noteArrival(r, entry, live) {
  if (entry.kind !== 'msg' || isMe(entry.from)) return false;
  const hidden = pageHidden();
  if (r.name === state.current && !hidden) return false;
  r.unread++;
  if (typeof entry.id === 'number' && (r.unreadFrom === null || entry.id < r.unreadFrom)) r.unreadFrom = entry.id;
  const mention = !entry.file && mentionsMe(entry.text);
  if (mention) r.mentions++;
  const dm = r.info.kind === 'dm';
  if (live && hidden && (mention || dm)) {
    const name = r.name;
    // Who and where, never the text.
    const title = dm
      ? entry.from.name + ' sent you a direct message'
      : entry.from.name + ' mentioned you in ' + roomLabel(r);
    showNotification(title, 'room:' + name, () => {
      if (state.rooms.has(name)) selectRoom(name);
    });
  }
  return true;
}

// arrived updates the room list and title after messages were counted.
export function arrived() {
  renderRooms();
  updateTitle();
}

// onVisible is the tab coming back into view: the open room was not being read while
// it was hidden, so it gets its marker (or loses an old one) as if the user had just
// opened it.
function onVisible() {
  if (pageHidden()) return;
  const r = state.rooms.get(state.current);
  if (!r) return;
  const had = r.unread > 0 || r.marker !== null;
  comeBack(r);
  if (had) {
    renderMessages();
    showMarker();
  }
  arrived();
}

// bindUnread wires the visibility change and the notifications button.
export function bindUnread() {
  document.addEventListener('visibilitychange', onVisible);
  bindNotifications();
}

// The administration panel: settings, global roles and bans, the audit log (the server
// checks every command).
// (Security rule: see app.js.)

import { hhmm, make, ui } from './dom.js';
import { OK_MS, SETTING_INTS, SETTING_NUMBERS, state, str } from './state.js';
import { command, request } from './connection.js';
import { notify } from './notices.js';

// toggleAdmin opens or closes the admin panel; opening it loads the
// current settings and the audit log.
export function toggleAdmin(open) {
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
export function requestAudit() {
  if (!ui.adminPanel.hidden) request({ type: 'audit', limit: 50 });
}

// settingsField is the form control for one setting.
export function settingsField(name) {
  return ui.settingsForm.elements.namedItem(name);
}

// onSettings shows the server's settings in the admin form; they are
// also the baseline that saving compares against.
export function onSettings(ev) {
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
export function domainList(v) {
  return v.split(',').map((d) => d.trim()).filter((d) => d !== '');
}

// settingsChanges returns the settings the form changes, or an error.
export function settingsChanges() {
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
export function saveSettings() {
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
export function shortJSON(v) {
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
export function isPlain(v) {
  return !!v && typeof v === 'object' && !Array.isArray(v);
}

// describeChange says what an audit entry changed: for two objects (the
// settings) only the fields that differ, otherwise old → new.
export function describeChange(oldV, newV) {
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
export function onAudit(ev) {
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

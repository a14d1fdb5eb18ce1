// A Delivery Service in the test page, for the isolation tests of static/mls: it
// follows the DS rules of PROTOCOL.md ("End-to-end encrypted rooms") closely enough to
// drive several MLS clients in one page: the only external sender (index 0), hub-signed
// Add and Remove proposals, first commit per epoch wins (others stale_epoch), Welcomes
// only to their joiners after the commit, mls_app refused while a removal is pending,
// and one ordered log per room. tamper(type, ev) lets a test play a hostile server.
// Test code only: the Go test reads this file and evaluates it in the page (every
// `export ` is dropped there), and node can import it as a module.

export function b64(bytes) {
  let s = '';
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function unb64(s) {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

// makeDevice makes an identity.js-shaped device for user (non-extractable DIK and URK).
export async function makeDevice(user, urk) {
  const ed = { name: 'Ed25519' };
  const dik = await crypto.subtle.generateKey(ed, false, ['sign', 'verify']);
  urk = urk || await crypto.subtle.generateKey(ed, false, ['sign', 'verify']);
  const raw = async (k) => new Uint8Array(await crypto.subtle.exportKey('raw', k));
  return {
    user, device: 'dev-' + user + '-' + Math.random().toString(36).slice(2, 10),
    dik, urk, dikRaw: await raw(dik.publicKey), urkRaw: await raw(urk.publicKey), created: Date.now(),
  };
}

export class FakeDS {
  constructor(m, cs) {
    this.m = m;
    this.cs = cs;
    this.conns = [];
    this.rooms = new Map();
    this.kps = new Map(); // device -> [b64 KeyPackage]
    this.nextId = 1;
    this.tamper = null; // (type, ev, conn) -> ev, or null to drop
    this.hold = false; // true: queue deliveries until flush()
    this.held = [];
    this.errors = [];
  }

  async init() {
    const kp = await this.cs.signature.keygen();
    this.pub = kp.publicKey;
    this.priv = kp.signKey;
    this.externalSender = { signature_key: b64(this.pub), identity: b64(new TextEncoder().encode('modified-chat hub')) };
    return this;
  }

  // connect attaches a client (its handle) as a connection of dev.
  connect(dev, name) {
    const conn = { dev, name, client: null, inbox: [] };
    this.conns.push(conn);
    return conn;
  }

  deliver(conn, ev) {
    if (this.tamper) {
      ev = this.tamper(ev.type, JSON.parse(JSON.stringify(ev)), conn);
      if (!ev) return;
    }
    if (this.hold) {
      this.held.push([conn, ev]);
      return;
    }
    conn.inbox.push(ev);
    if (conn.client) conn.client.handle(ev);
  }

  // flush delivers what was held, in order.
  flush() {
    this.hold = false;
    const h = this.held;
    this.held = [];
    for (const [c, ev] of h) this.deliver(c, ev);
  }

  room(name) {
    const r = this.rooms.get(name);
    if (!r) throw new Error('no room ' + name);
    return r;
  }

  // log appends an event to the room's log and sends it to its members (but skip).
  broadcast(r, ev, skip) {
    r.log.push(ev);
    for (const c of r.members) if (c !== skip) this.deliver(c, ev);
  }

  // createRoom starts an E2EE room: what joined.e2ee carries.
  createRoom(name, owner) {
    const groupId = b64(crypto.getRandomValues(new Uint8Array(16)));
    this.rooms.set(name, { name, groupId, epoch: 0, groupInfo: null, log: [], members: [owner], pending: [], removal: false, joiners: [], leaving: [] });
    return { group_id: groupId, epoch: 0, ready: false };
  }

  // receive is a connection's send callback.
  async receive(conn, obj, bin) {
    if (bin) {
      // A bin frame: u32-length-prefixed parts in the fields' order (one part for mls_app).
      this.bins = (this.bins || 0) + 1;
      const fields = { mls_commit: ['commit', 'welcome', 'group_info'], mls_group_init: ['group_info', 'key_package'], mls_app: ['msg'] }[obj.type];
      if (obj.type === 'mls_app') obj.msg = b64(bin);
      else {
        const dv = new DataView(bin.buffer, bin.byteOffset, bin.byteLength);
        let at = 0;
        for (const f of fields) {
          const n = dv.getUint32(at);
          if (n) obj[f] = b64(bin.subarray(at + 4, at + 4 + n));
          at += 4 + n;
        }
      }
      if (bin.length !== obj.bin) throw new Error('bin length');
    }
    const ans = (ev) => this.deliver(conn, { ...ev, ref: obj.ref });
    const err = (code) => {
      this.errors.push(code);
      ans({ type: 'error', code, message: code, room: obj.room });
    };
    switch (obj.type) {
      case 'kp_upload':
        if (obj.device !== conn.dev.device) return err('unknown_device');
        this.kps.set(conn.dev.device, [...(this.kps.get(conn.dev.device) || []), ...obj.kps]);
        ans({ type: 'ack', count: this.kps.get(conn.dev.device).length });
        return;
      case 'mls_group_init': {
        const r = this.room(obj.room);
        if (r.groupInfo) return err('stale_epoch');
        if (!obj.key_package) return err('bad_mls');
        r.groupInfo = this.m.decodeMlsMessage(unb64(obj.group_info), 0)[0].groupInfo;
        r.epoch = Number(r.groupInfo.groupContext.epoch);
        ans({ type: 'ack' });
        this.broadcast(r, { type: 'mls_group_info', room: r.name, id: this.nextId++, ts: Date.now(), epoch: 0, group_info: obj.group_info });
        return;
      }
      case 'mls_commit': {
        const r = this.room(obj.room);
        if (obj.epoch !== r.epoch) return err('stale_epoch');
        const msg = this.m.decodeMlsMessage(unb64(obj.commit), 0)[0];
        const c = msg.publicMessage && msg.publicMessage.content;
        if (!c || c.contentType !== 'commit' || Number(c.epoch) !== r.epoch) return err('commit_invalid');
        const refs = c.commit.proposals.filter((p) => p.proposalOrRefType === 'reference').length;
        if (refs !== r.pending.length || refs !== c.commit.proposals.length) return err('commit_invalid');
        if (r.removal && !c.commit.path) return err('commit_invalid');
        const id = this.nextId++;
        r.epoch++;
        r.groupInfo = this.m.decodeMlsMessage(unb64(obj.group_info), 0)[0].groupInfo;
        r.pending = [];
        r.removal = false;
        ans({ type: 'ack', room: r.name, id, epoch: r.epoch });
        this.broadcast(r, { type: 'mls_commit', room: r.name, id, ts: Date.now(), from: { id: conn.dev.user, name: conn.name, dev: conn.dev.device }, epoch: r.epoch - 1, commit: obj.commit }, conn);
        for (const c2 of r.leaving) r.members = r.members.filter((x) => x !== c2);
        r.leaving = [];
        if (obj.welcome) {
          for (const j of r.joiners) {
            if (!r.members.includes(j)) r.members.push(j);
            this.deliver(j, { type: 'mls_welcome', room: r.name, id, epoch: r.epoch, welcome: obj.welcome });
          }
        }
        r.joiners = [];
        return;
      }
      case 'mls_app': {
        const r = this.room(obj.room);
        if (!r.members.includes(conn)) return err('not_in_room');
        if (obj.epoch !== r.epoch) return err('stale_epoch');
        if (r.pending.length) return err('commit_required');
        const id = this.nextId++;
        ans({ type: 'ack', room: r.name, id });
        this.broadcast(r, { type: 'mls_app', room: r.name, id, ts: Date.now(), from: { id: conn.dev.user, name: conn.name, dev: conn.dev.device }, epoch: obj.epoch, msg: obj.msg }, conn);
        return;
      }
      default:
        err('unknown_type');
    }
  }

  // propose signs an external proposal and broadcasts it to the room's members.
  async propose(r, proposal) {
    const msg = await this.m.proposeExternal(r.groupInfo, proposal, this.pub, this.priv, this.cs);
    const b = b64(this.m.encodeMlsMessage(msg));
    r.pending.push(b);
    this.broadcast(r, { type: 'mls_proposals', room: r.name, id: this.nextId++, epoch: r.epoch, proposals: [b] });
    return b;
  }

  // add proposes a connection's device (one of its KeyPackages) into the room.
  async add(name, conn) {
    const r = this.room(name);
    const list = this.kps.get(conn.dev.device) || [];
    if (!list.length) throw new Error('no_keypackage');
    const kp = this.m.decodeMlsMessage(unb64(list.shift()), 0)[0].keyPackage;
    r.joiners.push(conn);
    return this.propose(r, { proposalType: 'add', add: { keyPackage: kp } });
  }

  // remove proposes the removal of a connection's leaf (found in the latest GroupInfo's tree).
  async remove(name, conn, leafIndex) {
    const r = this.room(name);
    r.removal = true;
    r.leaving = [...(r.leaving || []), conn];
    return this.propose(r, { proposalType: 'remove', remove: { removed: leafIndex } });
  }
}

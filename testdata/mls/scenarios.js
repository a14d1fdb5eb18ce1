// Isolation scenarios for static/mls/client.js: several devices in one page talk
// through the FakeDS (fakeds.js). Each returns plain data the Go test compares
// exactly. mods = {m (ts-mls bundle), client (static/mls/client.js), store
// (static/mls/store.js)}. Test code only (see fakeds.js for how it is loaded).

// tofu is a pin table per viewer: the first root key seen for a user is theirs.
export function tofu() {
  const pins = new Map();
  const f = async (user, urk) => {
    if (!pins.has(user)) pins.set(user, urk);
    return pins.get(user) === urk;
  };
  f.pins = pins;
  return f;
}

// world sets up a FakeDS and a helper to add devices.
export async function world(mods) {
  const { m, client } = mods;
  const cs = await client.suite();
  const ds = await new FakeDS(m, cs).init();
  const people = {};
  const add = async (name, opts = {}) => {
    const dev = opts.dev || await makeDevice('dev:' + name, opts.urk);
    const conn = ds.connect(dev, name);
    const events = [];
    const c = await client.openClient({
      dev, store: opts.store || mods.store.memoryStore(), trust: opts.trust || tofu(),
      send: (obj, bin) => { ds.receive(conn, obj, bin); }, onEvent: (ev) => events.push(ev), textLimit: opts.textLimit,
    });
    c.setHub({ suite: 1, external_sender: ds.externalSender });
    conn.client = c;
    await c.bind();
    const p = { name, dev, conn, c, events };
    people[name] = p;
    return p;
  };
  // settle waits until no client has work queued and nothing new was delivered.
  const settle = async () => {
    for (let i = 0; i < 50; i++) {
      const before = ds.conns.reduce((n, x) => n + x.inbox.length, 0);
      await Promise.all(Object.values(people).map((p) => p.c.idle()));
      await new Promise((res) => setTimeout(res, 0));
      const after = ds.conns.reduce((n, x) => n + x.inbox.length, 0);
      if (after === before && Object.values(people).every((p) => [...p.c.rooms.values()].every((r) => !r.pending))) return;
    }
    throw new Error('the clients did not settle');
  };
  const texts = (p, room) => p.events.filter((e) => e.type === 'message' && e.room === room && !e.replayed).map((e) => e.body);
  const leafOf = (p, room, who) => p.c.info(room).members.find((x) => x.device === who.dev.device).leaf;
  return { ds, cs, add, settle, texts, people, leafOf };
}

// open makes a room of owner with members (each added by the hub, committed by whoever wins).
export async function open(w, room, owner, members) {
  const e2ee = w.ds.createRoom(room, owner.conn);
  await owner.c.createRoom(room, e2ee.group_id);
  await w.settle();
  for (const p of members) {
    p.c.expect(room, e2ee.group_id);
    await w.ds.add(room, p.conn);
    await w.settle();
  }
  return e2ee;
}

// attacks runs acceptance 1-5 and 8 against the fake DS.
export async function attacks(mods) {
  const { m } = mods;
  const w = await world(mods);
  const alice = await w.add('alice');
  const bob = await w.add('bob');
  const carol = await w.add('carol');
  const out = {};
  await open(w, 'r1', alice, [bob, carol]);
  out.epochs = [alice, bob, carol].map((p) => p.c.info('r1').epoch);
  out.codesEqual = new Set([alice, bob, carol].map((p) => p.c.info('r1').code)).size === 1;
  out.members = alice.c.info('r1').members.map((x) => x.user);
  out.addNotices = bob.events.filter((e) => e.type === 'epoch' && e.room === 'r1').map((e) => e.added.map((x) => x.user).join(','));

  await alice.c.send('r1', 'text', 'hello all');
  await w.settle();
  out.first = [w.texts(bob, 'r1'), w.texts(carol, 'r1'), w.texts(alice, 'r1')];
  out.authorBob = bob.events.filter((e) => e.type === 'message').map((e) => [e.author.user, e.mismatch]);

  // 2. the server flips a bit of the ciphertext: rejected, the genuine copy still decrypts.
  const genuine = [];
  w.ds.tamper = (type, ev, conn) => {
    if (type === 'mls_app' && conn === carol.conn) {
      genuine.push(JSON.parse(JSON.stringify(ev)));
      const b = unb64(ev.msg);
      b[b.length - 5] ^= 1;
      ev.msg = b64(b);
    }
    return ev;
  };
  await bob.c.send('r1', 'text', 'flip me');
  await w.settle();
  w.ds.tamper = null;
  out.flip = { rejected: carol.c.stats.rejected.decrypt_failed || 0, shown: w.texts(carol, 'r1').includes('flip me') };
  genuine[0].id = w.ds.nextId++;
  await carol.c.handle(genuine[0]);
  out.flip.genuine = w.texts(carol, 'r1').includes('flip me');

  // 3. replay: the same frame again under a new server id -> the generation is spent.
  const replay = { ...genuine[0], id: w.ds.nextId++ };
  await carol.c.handle(replay);
  out.replay = { decrypt: carol.c.stats.rejected.decrypt_failed, shown: w.texts(carol, 'r1').filter((t) => t === 'flip me').length };
  // 3b. an insider (bob) re-encrypts a payload he received, same msg_id, new generation.
  const seen = bob.events.find((e) => e.type === 'message' && e.body === 'hello all');
  const r = bob.c.rooms.get('r1');
  const payload = { v: 1, msg_id: seen.msgId, ts: Date.now(), kind: 'text', body: 'hello all' };
  const res = await m.createApplicationMessage(r.state, new TextEncoder().encode(JSON.stringify(payload)), w.cs);
  r.state = res.newState;
  const again = b64(m.encodeMlsMessage({ version: 'mls10', wireformat: 'mls_private_message', privateMessage: res.privateMessage }));
  await carol.c.handle({ type: 'mls_app', room: 'r1', id: w.ds.nextId++, ts: Date.now(), from: { id: bob.dev.user, dev: bob.dev.device }, epoch: out.epochs[0], msg: again });
  out.replay.insider = carol.c.stats.rejected.replayed || 0;
  out.replay.shownHello = w.texts(carol, 'r1').filter((t) => t === 'hello all').length;

  // 4. cross-room: a message of room r2 (same members, same epoch) injected into r1.
  await open(w, 'r2', alice, [bob, carol]);
  let cross = null;
  w.ds.tamper = (type, ev, conn) => {
    if (type === 'mls_app' && ev.room === 'r2' && conn === carol.conn) {
      cross = { ...ev, room: 'r1', id: w.ds.nextId++ };
      return null;
    }
    return ev;
  };
  await alice.c.send('r2', 'text', 'for r2 only');
  await w.settle();
  w.ds.tamper = null;
  await carol.c.handle(cross);
  out.cross = { wrongGroup: carol.c.stats.rejected.wrong_group || 0, shown: w.texts(carol, 'r1').includes('for r2 only') };

  // 5. the server names another sender than the MLS leaf: shown as the MLS author, flagged.
  w.ds.tamper = (type, ev) => {
    if (type === 'mls_app') ev.from = { id: alice.dev.user, name: 'alice', dev: alice.dev.device };
    return ev;
  };
  await bob.c.send('r1', 'text', 'who sent me');
  await w.settle();
  w.ds.tamper = null;
  const ev5 = carol.events.find((e) => e.type === 'message' && e.body === 'who sent me');
  out.from = { author: ev5.author.user, serverSaid: ev5.from.id, mismatch: ev5.mismatch, counted: carol.c.stats.rejected.from_mismatch || 0 };

  // 8. a Remove signed by another key than the hub's, and a member's own Remove proposal.
  const rogue = await w.cs.signature.keygen();
  // proposeExternal signs only with the key the group names, so name the rogue key in a
  // copy of the GroupInfo: the proposal claims external sender 0 but carries its signature.
  const gi = w.ds.room('r1').groupInfo;
  const rogueExt = m.encodeExternalSender({ signaturePublicKey: rogue.publicKey, credential: { credentialType: 'basic', identity: new TextEncoder().encode('modified-chat hub') } });
  const giRogue = { ...gi, groupContext: { ...gi.groupContext, extensions: gi.groupContext.extensions.map((e) => (e.extensionType === 'external_senders' ? { extensionType: e.extensionType, extensionData: rogueExt } : e)) } };
  const forged = await m.proposeExternal(giRogue, { proposalType: 'remove', remove: { removed: w.leafOf(alice, 'r1', bob) } }, rogue.publicKey, rogue.signKey, w.cs);
  const epochBefore = carol.c.info('r1').epoch;
  await carol.c.handle({ type: 'mls_proposals', room: 'r1', id: w.ds.nextId++, epoch: epochBefore, proposals: [b64(m.encodeMlsMessage(forged))] });
  const byMember = await m.createProposal(bob.c.rooms.get('r1').state, true, { proposalType: 'remove', remove: { removed: w.leafOf(bob, 'r1', alice) } }, w.cs);
  await carol.c.handle({ type: 'mls_proposals', room: 'r1', id: w.ds.nextId++, epoch: epochBefore, proposals: [b64(m.encodeMlsMessage(byMember.message))] });
  await w.settle();
  out.forged = { bad: carol.c.stats.rejected.bad_proposal || 0, member: carol.c.stats.rejected.member_proposal || 0,
    epoch: carol.c.info('r1').epoch === epochBefore, pending: Object.keys(carol.c.rooms.get('r1').state.unappliedProposals).length };

  // 1. the hub removes carol; her kept state cannot read the next epoch's message, and
  // nobody can send between the proposal and the commit.
  const carolKept = carol.c.rooms.get('r1').state;
  w.ds.hold = true;
  await w.ds.remove('r1', carol.conn, w.leafOf(alice, 'r1', carol));
  const sendDuring = await alice.c.send('r1', 'text', 'too early').then(() => 'sent', (e) => 'refused');
  w.ds.flush();
  await w.settle();
  // The refused message is encrypted again once the Remove is committed (the engine
  // retries commit_required), so bob gets it and nothing is refused for good.
  for (let i = 0; i < 50 && !w.texts(bob, 'r1').includes('too early'); i++) {
    await new Promise((res) => setTimeout(res, 100));
    await w.settle();
  }
  out.kick = { sendDuring, errors: w.ds.errors.filter((e) => e === 'commit_required').length,
    refused: alice.events.filter((e) => e.type === 'send_refused').map((e) => e.code),
    retried: w.texts(bob, 'r1').includes('too early') };

  out.kick.carolRemoved = carol.events.some((e) => e.type === 'removed' && e.room === 'r1');
  out.kick.removedNotice = bob.events.filter((e) => e.type === 'epoch' && e.room === 'r1' && e.removed.length).map((e) => e.removed.map((x) => x.user).join(','));
  out.kick.members = bob.c.info('r1').members.map((x) => x.user);
  let next = null;
  w.ds.tamper = (type, ev) => {
    if (type === 'mls_app' && ev.room === 'r1') next = ev;
    return ev;
  };
  await alice.c.send('r1', 'text', 'after the kick');
  await w.settle();
  w.ds.tamper = null;
  out.kick.bob = w.texts(bob, 'r1').includes('after the kick');
  // carol's page kept its old state: put it back and feed it the message.
  const cr = carol.c.room('r1');
  cr.state = carolKept;
  await carol.c.handle({ ...next, id: w.ds.nextId++ });
  out.kick.carolReads = w.texts(carol, 'r1').includes('after the kick');
  out.kick.carolRejected = carol.c.stats.rejected.decrypt_failed;
  out.stats = { alice: alice.c.stats.rejectedTotal, bob: bob.c.stats.rejectedTotal };
  return out;
}

// ghost runs acceptance 6 and 7: the hub proposes a device for bob whose credential is
// not certified by bob's pinned root key; no honest member commits it.
export async function ghost(mods) {
  const w = await world(mods);
  const alice = await w.add('alice');
  const bob = await w.add('bob');
  await open(w, 'g', alice, [bob]);
  const epoch = alice.c.info('g').epoch;
  // A second "bob" with another root key: a directory that swapped bob's keys.
  const fake = await w.add('bob-ghost', { dev: await makeDevice('dev:bob') });
  await w.ds.add('g', fake.conn);
  await w.settle();
  const out = {
    untrusted: [alice.c.stats.rejected.untrusted_device || 0, bob.c.stats.rejected.untrusted_device || 0],
    shown: alice.events.filter((e) => e.type === 'untrusted_device').map((e) => e.user),
    blocked: alice.events.some((e) => e.type === 'blocked'),
    epochSame: alice.c.info('g').epoch === epoch && bob.c.info('g').epoch === epoch,
    commits: w.ds.errors.length,
    members: alice.c.info('g').members.map((x) => x.user),
    ghostJoined: fake.c.info('g') !== null,
  };
  return out;
}

// race runs acceptance 9: two members commit the same proposal at once; the hub keeps
// the first, the other gets stale_epoch and processes the winner; everyone ends in the
// same epoch with the same room code.
export async function race(mods) {
  const w = await world(mods);
  const alice = await w.add('alice');
  const bob = await w.add('bob');
  const carol = await w.add('carol');
  const dave = await w.add('dave');
  await open(w, 'q', alice, [bob, carol]);
  const before = { stale: w.ds.errors.filter((e) => e === 'stale_epoch').length, commits: [alice, bob, carol].map((p) => p.c.stats.commits).reduce((a, b) => a + b, 0) };
  w.ds.hold = true;
  dave.c.expect('q', w.ds.room('q').groupId);
  await w.ds.add('q', dave.conn);
  w.ds.flush(); // alice, bob and carol all see the proposal before any commit lands
  await w.settle();
  await alice.c.send('q', 'text', 'after the race');
  await w.settle();
  const all = [alice, bob, carol, dave];
  return {
    stale: w.ds.errors.filter((e) => e === 'stale_epoch').length - before.stale,
    commits: all.map((p) => p.c.stats.commits).reduce((a, b) => a + b, 0) - before.commits,
    epochs: all.map((p) => p.c.info('q').epoch),
    sameCode: new Set(all.map((p) => p.c.info('q').code)).size === 1,
    daveReads: w.texts(dave, 'q'),
    codeShape: /^\d{5}( \d{5}){5}$/.test(alice.c.info('q').code),
  };
}

// catchup runs acceptance 12: bob is offline for three epochs (joins and a removal);
// replaying the room's log in order decrypts everything, and a second replay changes
// nothing.
export async function catchup(mods) {
  const w = await world(mods);
  const alice = await w.add('alice');
  const bob = await w.add('bob');
  const carol = await w.add('carol');
  const dave = await w.add('dave');
  await open(w, 'c', alice, [bob]);
  const startEpoch = bob.c.info('c').epoch;
  const bobConn = bob.conn;
  const offline = bob.c;
  bobConn.client = null; // bob's socket is gone; the hub logs on
  const mark = w.ds.room('c').log.length;
  await alice.c.send('c', 'text', 'm1');
  carol.c.expect('c', w.ds.room('c').groupId);
  await w.ds.add('c', carol.conn);
  await w.settle();
  await alice.c.send('c', 'text', 'm2');
  dave.c.expect('c', w.ds.room('c').groupId);
  await w.ds.add('c', dave.conn);
  await w.settle();
  await carol.c.send('c', 'text', 'm3');
  await w.ds.remove('c', carol.conn, w.leafOf(alice, 'c', carol));
  await w.settle();
  await dave.c.send('c', 'text', 'm4');
  await w.settle();
  const log = w.ds.room('c').log.slice(mark);
  bobConn.client = offline;
  for (const ev of log) offline.handle(ev);
  await offline.idle();
  const first = w.texts(bob, 'c').slice();
  for (const ev of log) offline.handle(ev);
  await offline.idle();
  return {
    epochsCrossed: offline.info('c').epoch - startEpoch,
    texts: first,
    again: w.texts(bob, 'c').length,
    fromCache: bob.events.filter((e) => e.type === 'message' && e.replayed).map((e) => e.body),
    sameCode: offline.info('c').code === alice.c.info('c').code,
    rejected: offline.stats.rejectedTotal,
  };
}

// bench measures the costs E2EE.md RECOMMENDATION budgets, in this browser: encrypt and
// decrypt of a chat message (2 members), and in a group of n members a Remove commit's
// creation and processing and a join (Welcome processing).
export async function bench(mods, n) {
  const { m, client } = mods;
  const cs = await client.suite();
  const enc = new TextEncoder();
  const kp = (i) => m.generateKeyPackage({ credentialType: 'basic', identity: enc.encode('member-' + i) }, m.defaultCapabilities(), m.defaultLifetime, [], cs);
  const now = () => performance.now();
  const a = await kp(0), b = await kp(1);
  let alice = await m.createGroup(enc.encode('bench'), a.publicPackage, a.privatePackage, [], cs);
  const addB = await m.createCommit({ state: alice, cipherSuite: cs }, { extraProposals: [{ proposalType: 'add', add: { keyPackage: b.publicPackage } }], ratchetTreeExtension: true, wireAsPublicMessage: true });
  alice = addB.newState;
  let bob = await m.joinGroup(addB.welcome, b.publicPackage, b.privatePackage, m.emptyPskIndex, cs);
  const rounds = 50;
  const payload = enc.encode(JSON.stringify({ v: 1, msg_id: 'AAAAAAAAAAAAAAAAAAAAAA==', ts: Date.now(), kind: 'text', body: 'a chat message of ordinary length' }));
  const t0 = now();
  for (let i = 0; i < rounds; i++) {
    const s = await m.createApplicationMessage(alice, payload, cs);
    alice = s.newState;
    const r = await m.processPrivateMessage(bob, s.privateMessage, m.emptyPskIndex, cs);
    bob = r.newState;
  }
  const roundTrip = (now() - t0) / rounds;
  // n-member group: one commit adds n-1 members.
  const kps = [];
  for (let i = 1; i < n; i++) kps.push(await kp(i));
  const c0 = await kp(0);
  let g = await m.createGroup(enc.encode('bench-n'), c0.publicPackage, c0.privatePackage, [], cs);
  const big = await m.createCommit({ state: g, cipherSuite: cs }, { extraProposals: kps.map((k) => ({ proposalType: 'add', add: { keyPackage: k.publicPackage } })), ratchetTreeExtension: true, wireAsPublicMessage: true });
  g = big.newState;
  const t1 = now();
  let joiner = await m.joinGroup(big.welcome, kps[0].publicPackage, kps[0].privatePackage, m.emptyPskIndex, cs);
  const join = now() - t1;
  const t2 = now();
  const rm = await m.createCommit({ state: g, cipherSuite: cs }, { extraProposals: [{ proposalType: 'remove', remove: { removed: n - 1 } }], wireAsPublicMessage: true });
  const removeCreate = now() - t2;
  const t3 = now();
  await m.processPublicMessage(joiner, rm.commit.publicMessage, m.emptyPskIndex, cs);
  const removeProcess = now() - t3;
  const t4 = now();
  const bytes = m.encodeGroupState(joiner);
  m.decodeGroupState(bytes, 0);
  const persist = now() - t4;
  const r2 = (x) => Math.round(x * 100) / 100;
  return { members: n, encryptDecryptMs: r2(roundTrip), joinMs: r2(join), removeCreateMs: r2(removeCreate), removeProcessMs: r2(removeProcess), stateBytes: bytes.length, stateRoundTripMs: r2(persist) };
}

// persistOne is the first half of the reload test, with the IndexedDB store: alice and
// bob (bob in memory) make a room and talk; bob's next message is kept aside for after
// the reload, with the room code alice saw.
export async function persistOne(mods) {
  const w = await world(mods);
  const alice = await w.add('alice', { store: mods.store.idbStore, dev: await makeDevice('dev:alice') });
  const bob = await w.add('bob');
  await open(w, 'p', alice, [bob]);
  await bob.c.send('p', 'text', 'before the reload');
  await w.settle();
  let later = null;
  w.ds.tamper = (type, ev) => {
    if (type === 'mls_app') later = ev;
    return null;
  };
  await bob.c.send('p', 'text', 'after the reload');
  await w.settle();
  const persisted = await mods.store.persist();
  return { dev: { user: alice.dev.user, device: alice.dev.device }, later, code: alice.c.info('p').code, epoch: alice.c.info('p').epoch,
    shown: w.texts(alice, 'p'), persisted: typeof persisted, externalSender: w.ds.externalSender };
}

// persistTwo runs after the page reloaded: the device's state comes back from IndexedDB
// (a fresh device object with the same ids: only the MLS store matters here), shows the
// message it had decrypted, and decrypts the one it had not seen.
export async function persistTwo(mods, saved) {
  const events = [];
  const dev = { user: saved.dev.user, device: saved.dev.device };
  const c = await mods.client.openClient({ dev, store: mods.store.idbStore, trust: tofu(), send: () => {}, onEvent: (e) => events.push(e) });
  c.setHub({ suite: 1, external_sender: saved.externalSender });
  const info = c.info('p');
  const r = c.rooms.get('p');
  for (const kept of r.plain) await c.handle({ type: 'mls_app', room: 'p', id: kept.id, msg: 'AAAA' });
  await c.handle(saved.later);
  await c.handle(saved.later);
  return { epoch: info.epoch, sameCode: info.code === saved.code, texts: events.filter((e) => e.type === 'message').map((e) => e.body + (e.replayed ? ' (cached)' : '')), rejected: c.stats.rejectedTotal };
}

// bridge puts the FakeDS behind the signed-in page's socket: what the page sends
// (sendJSON, and a bin frame after its announcement) goes to the DS as that page's
// device, and what the DS delivers goes through the page's own event dispatch. The
// page's chat, e2ee.js and its engine run unchanged; only the hub is simulated.
export async function bridge(mods, w) {
  const conn = await import('/static/connection.js');
  const st = await import('/static/state.js');
  const e2ee = await import('/static/e2ee.js');
  const identity = await import('/static/identity.js');
  const me = st.state.me;
  const d = await identity.loadDevice(me.id);
  const dev = { user: me.id, device: d.device };
  const pc = w.ds.connect(dev, me.name);
  let announced = null;
  st.state.ws = {
    readyState: WebSocket.OPEN,
    send(data) {
      if (typeof data === 'string') {
        for (const line of data.split('\n')) {
          const obj = JSON.parse(line);
          if (obj.bin) announced = obj;
          else w.ds.receive(pc, obj);
        }
      } else {
        const obj = announced;
        announced = null;
        w.ds.receive(pc, obj, new Uint8Array(data));
      }
    },
    close() {},
  };
  pc.client = { handle: (ev) => conn.handle(ev) };
  e2ee.startE2EE({ e2ee: { suite: 1, external_sender: w.ds.externalSender } });
  for (let i = 0; i < 200 && !e2ee.engine(); i++) await new Promise((res) => setTimeout(res, 25));
  const c = e2ee.engine();
  if (!c) throw new Error('the page\'s engine did not open');
  await c.idle();
  const p = { name: me.name, dev, conn: pc, c, events: [] };
  w.people[me.name] = p;
  // Wait until the page's KeyPackages reached the DS.
  for (let i = 0; i < 200 && !(w.ds.kps.get(dev.device) || []).length; i++) await new Promise((res) => setTimeout(res, 25));
  return { p, conn, st, e2ee };
}

// pageRoom: the signed-in page creates an E2EE room (as joined.e2ee says, with no
// group yet), the hub adds bob and carol (engine-only devices in the same page), they
// talk both ways, the hub flips a bit of a message to the page and then removes carol.
// The DOM and window.__mlsStats tell the rest (the Go test reads them).
export async function pageRoom(mods) {
  const w = await world(mods);
  const bob = await w.add('bob');
  const carol = await w.add('carol');
  const { p: me, conn, st } = await bridge(mods, w);
  const e2eeInfo = w.ds.createRoom('secret', me.conn);
  st.state.switchTo = 'secret';
  conn.handle({ type: 'joined', room: 'secret', kind: 'room', private: true, locked: false, topic: '', owner: me.dev.user,
    e2ee: true, mls: { ...e2eeInfo }, my_role: 'owner', my_perms: ['send', 'send_binary', 'invite', 'expel', 'manage'],
    member_count: 3, members: [{ id: me.dev.user, name: me.name, role: 'owner' }, { id: bob.dev.user, name: 'bob', role: '' }, { id: carol.dev.user, name: 'carol', role: '' }] });
  for (let i = 0; i < 200 && !me.c.info('secret'); i++) await new Promise((res) => setTimeout(res, 25));
  for (const x of [bob, carol]) {
    x.c.expect('secret', e2eeInfo.group_id);
    await w.ds.add('secret', x.conn);
    await w.settle();
  }
  await bob.c.send('secret', 'text', 'hi from bob, encrypted');
  await w.settle();
  window.__w = { w, bob, carol, me, b64, unb64 };
  return { code: me.c.info('secret').code, bobCode: bob.c.info('secret').code, members: me.c.info('secret').members.length };
}

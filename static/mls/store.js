// Where a device's MLS state lives between page loads: IndexedDB, in its own database so
// that its schema moves independently of identity.js's. Three stores:
//   signers  owner -> {owner, pub, priv, identity}      the device's MLS signature key
//   kps      ref   -> {ref, owner, pub, priv, made}      unused KeyPackages (private halves)
//   groups   owner\nroom -> {key, owner, room, state, lastId, seen, plain}
// owner is "user id\ndevice id". MLS private keys are raw bytes (ts-mls needs them so),
// unlike the DIK and URK, which WebCrypto keeps non-extractable (README threat model).
// This module never touches the DOM.

import { database } from '../idb.js';

const DB_NAME = 'modified-chat-mls';
const DB_VERSION = 1;
export const SIGNERS = 'signers';
export const KPS = 'kps';
export const GROUPS = 'groups';

// run runs fn on one store of the MLS database in one transaction and resolves with
// its request's result once the transaction has committed (so a resolved put is on disk).
const run = database(DB_NAME, DB_VERSION, (d) => {
  if (!d.objectStoreNames.contains(SIGNERS)) d.createObjectStore(SIGNERS, { keyPath: 'owner' });
  if (!d.objectStoreNames.contains(KPS)) d.createObjectStore(KPS, { keyPath: 'ref' }).createIndex('owner', 'owner');
  if (!d.objectStoreNames.contains(GROUPS)) d.createObjectStore(GROUPS, { keyPath: 'key' }).createIndex('owner', 'owner');
});

// idbStore is the persistence the MLS client uses in the page. Tests may pass another
// object with the same methods (an in-memory one) to run many clients side by side.
export const idbStore = {
  get: (store, key) => run(store, 'readonly', (s) => s.get(key)),
  put: (store, value) => run(store, 'readwrite', (s) => s.put(value)),
  del: (store, key) => run(store, 'readwrite', (s) => s.delete(key)),
  byOwner: (store, owner) => run(store, 'readonly', (s) => s.index('owner').getAll(owner)),
};

// memoryStore is a store that forgets everything when the page goes; used by tests
// that simulate several devices in one page, and by a page without IndexedDB.
export function memoryStore() {
  const maps = new Map([[SIGNERS, new Map()], [KPS, new Map()], [GROUPS, new Map()]]);
  const keyOf = (store, v) => (store === SIGNERS ? v.owner : store === KPS ? v.ref : v.key);
  return {
    get: async (store, key) => structuredClone(maps.get(store).get(key)),
    put: async (store, value) => { maps.get(store).set(keyOf(store, value), structuredClone(value)); },
    del: async (store, key) => { maps.get(store).delete(key); },
    byOwner: async (store, owner) => [...maps.get(store).values()].filter((v) => v.owner === owner).map((v) => structuredClone(v)),
  };
}

// persist asks the browser not to evict this origin's storage under pressure: losing
// the MLS state means losing the rooms' keys (a resync, and no old messages).
export async function persist() {
  try {
    return navigator.storage && navigator.storage.persist ? await navigator.storage.persist() : false;
  } catch (err) {
    return false;
  }
}

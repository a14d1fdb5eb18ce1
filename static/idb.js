// One small door to IndexedDB for the modules that keep state in the browser
// (identity.js: device keys and pins; mls/store.js: MLS state). Each keeps its own
// database, so their schemas move independently; this module only opens one and runs
// transactions on it. It never touches the DOM.

// database opens the named database (once, on first use) and returns transact:
// transact(store, mode, fn) runs fn on one object store in one transaction and
// resolves with the result of the request fn returns (undefined when it returns none)
// once the transaction has committed, so a resolved put is on disk. upgrade(db)
// creates the stores when the database is new or its version is higher.
export function database(name, version, upgrade) {
  let opened = null;
  const open = () => {
    if (!opened) {
      opened = new Promise((resolve, reject) => {
        const req = indexedDB.open(name, version);
        req.onupgradeneeded = () => upgrade(req.result);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
    }
    return opened;
  };
  return async function transact(store, mode, fn) {
    const d = await open();
    return new Promise((resolve, reject) => {
      const t = d.transaction(store, mode);
      const req = fn(t.objectStore(store));
      t.oncomplete = () => resolve(req ? req.result : undefined);
      t.onerror = () => reject(t.error);
      t.onabort = () => reject(t.error);
    });
  };
}

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store tunables.
const (
	// storeLockTimeout bounds how long opening the data file waits for its lock. A second
	// server pointed at the same data directory must fail fast with a clear error rather
	// than hang at start-up or, worse, share the file.
	storeLockTimeout = 2 * time.Second
	// storeFileMode keeps the data file readable by the server's user only: it holds
	// history and state that other local users have no business reading.
	storeFileMode = 0o600
	// storeMaxKey is the longest bucket name or key accepted, bbolt's own limit. Both
	// implementations refuse longer ones, so code tested on memStore behaves the same on disk.
	storeMaxKey = bolt.MaxKeySize
)

// storeWriter tunables.
const (
	// storeWriterQueue is the default number of requests the writer holds while a commit
	// is in flight. Past it Submit refuses, so a slow disk turns into "try again" errors
	// for clients instead of a stalled hub or unbounded memory.
	storeWriterQueue = 4096
	// storeBatchMaxRequests and storeBatchMaxBytes bound one commit. A commit costs one
	// fsync whatever its size, so batching is what makes durable writes cheap, but an
	// unbounded batch would hold memory and delay every callback in it.
	storeBatchMaxRequests = 512
	storeBatchMaxBytes    = 4 << 20
	// storeLinger is how long the writer for a disk store waits after a request for
	// others to share its commit (group commit). Chat messages arrive a few
	// milliseconds apart under load; without the wait each would cost its own fsync and
	// its own B+tree rewrite. Only the ack waits, well under what a person notices:
	// delivery never does. (At 200 messages a second, 10 ms gave about 3 messages a
	// commit, 50 ms about 10 and 5 % less server CPU than 10 ms.)
	storeLinger = 25 * time.Millisecond
)

// Errors a Store returns for writes it refuses. They are checked before anything is
// written, so a batch holding one of them is refused whole on every implementation.
var (
	errStoreBucket = errors.New("store: bucket name is empty or too long")
	errStoreKey    = errors.New("store: key is empty or too long")
	errStoreClosed = errors.New("store: closed")
	// errStoreLocked means another process holds the data file: most likely a second
	// server started on the same data directory.
	errStoreLocked = errors.New("store: data file is in use by another process")
)

// Store keeps durable state in named buckets of ordered keys. It is the seam between
// the server and its storage engine: bbolt on one machine today, something shared
// (Redis) when several instances serve the same rooms.
//
// Every read hands key and value to fn, which runs while the store holds a read
// transaction or lock. They are valid only until fn returns and must not be modified:
// fn copies (bytes.Clone) whatever it keeps. fn must not call back into the store, and
// an error returned by fn stops the read and is returned as is.
type Store interface {
	// Apply commits every write atomically and durably (fsync'd) before returning.
	Apply(batch []Write) error
	// Scan calls fn for every key in bucket, in key order (used at start-up).
	Scan(bucket string, fn func(key, value []byte) error) error
	// Last calls fn for the newest n keys of bucket, oldest first.
	Last(bucket string, n int, fn func(key, value []byte) error) error
	// After calls fn for up to limit keys strictly greater than after, in order.
	After(bucket string, after []byte, limit int, fn func(key, value []byte) error) error
	// Count returns the number of keys in bucket.
	Count(bucket string) (int, error)
	Close() error
}

// Write sets Bucket/Key to Value; a nil Value deletes the key (a non-nil empty Value
// stores an empty value). Bucket names may contain '/' (e.g. "history/lobby"): a bucket
// is a flat name, not a path, so "history" and "history/lobby" are unrelated. Buckets
// are created on first write; reading a bucket that does not exist yields nothing.
// Keys are ordered bytewise, which is why sequence numbers are stored with seqKey.
type Write struct {
	Bucket     string
	Key, Value []byte
}

// seqKey encodes a sequence number (a message id, say) as 8 bytes big-endian, so that
// the bytewise key order of a bucket is the numeric order of its sequence numbers.
func seqKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// keySeq decodes a key made by seqKey. Any other length yields 0, which is never a
// sequence number the server hands out (they start at 1).
func keySeq(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// validateWrite checks what the storage engines would otherwise refuse halfway through
// a batch, so both implementations refuse the same writes before writing anything.
func validateWrite(w Write) error {
	if w.Bucket == "" || len(w.Bucket) > storeMaxKey {
		return errStoreBucket
	}
	if len(w.Key) == 0 || len(w.Key) > storeMaxKey {
		return errStoreKey
	}
	return nil
}

// validateBatch checks every write of a batch; see validateWrite.
func validateBatch(batch []Write) error {
	for i, w := range batch {
		if err := validateWrite(w); err != nil {
			return fmt.Errorf("write %d (bucket %q): %w", i, w.Bucket, err)
		}
	}
	return nil
}

// boltStore is the embedded Store: one bbolt file, one writer at a time, readers in
// parallel. bbolt fsyncs every commit (NoSync stays false), so an Apply that returned
// nil survives a crash or a power cut. Values handed to read callbacks point into the
// memory-mapped file and are valid only during the callback, as Store says.
type boltStore struct {
	db *bolt.DB
}

// openBoltStore opens (creating if needed) the data file at path; its directory must
// exist. If another process holds the file it fails after storeLockTimeout with an
// error wrapping errStoreLocked.
func openBoltStore(path string) (*boltStore, error) {
	db, err := bolt.Open(path, storeFileMode, &bolt.Options{
		Timeout: storeLockTimeout,
		NoSync:  false,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w (lock not obtained within %s; is another server running on this data directory?)",
			path, errStoreLocked, storeLockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &boltStore{db: db}, nil
}

// Apply writes the batch in one bbolt transaction: one commit, one fsync.
func (s *boltStore) Apply(batch []Write) error {
	if err := validateBatch(batch); err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	return s.db.Update(func(tx *bolt.Tx) error {
		// Batches mostly write runs of the same bucket (one room's history), so the
		// last bucket looked up is kept.
		var b *bolt.Bucket
		name := ""
		for _, w := range batch {
			if b == nil || w.Bucket != name {
				name = w.Bucket
				b = tx.Bucket([]byte(name))
			}
			if w.Value == nil {
				// A delete must not create the bucket it deletes from.
				if b != nil {
					if err := b.Delete(w.Key); err != nil {
						return err
					}
				}
				continue
			}
			if b == nil {
				var err error
				if b, err = tx.CreateBucket([]byte(name)); err != nil {
					return err
				}
			}
			if err := b.Put(w.Key, w.Value); err != nil {
				return err
			}
		}
		return nil
	})
}

// view runs fn on bucket's cursor in a read transaction; a missing bucket reads as
// empty, so callers need no special case for a room that has never been written to.
func (s *boltStore) view(bucket string, fn func(c *bolt.Cursor) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return fn(b.Cursor())
	})
}

// Scan walks the whole bucket in key order.
func (s *boltStore) Scan(bucket string, fn func(key, value []byte) error) error {
	return s.view(bucket, func(c *bolt.Cursor) error {
		for k, v := c.First(); k != nil; k, v = c.Next() {
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// Last steps back n keys from the end, then walks forward, so the caller gets the
// newest n in order without reading the rest of the bucket.
func (s *boltStore) Last(bucket string, n int, fn func(key, value []byte) error) error {
	if n <= 0 {
		return nil
	}
	return s.view(bucket, func(c *bolt.Cursor) error {
		k, v := c.Last()
		for i := 1; k != nil && i < n; i++ {
			pk, pv := c.Prev()
			if pk == nil {
				// Fewer than n keys: start from the first one.
				k, v = c.First()
				break
			}
			k, v = pk, pv
		}
		for ; k != nil; k, v = c.Next() {
			if err := fn(k, v); err != nil {
				return err
			}
		}
		return nil
	})
}

// After seeks to after and walks forward; it is how a client pages through history
// it missed. A limit of 0 or less reads nothing.
func (s *boltStore) After(bucket string, after []byte, limit int, fn func(key, value []byte) error) error {
	if limit <= 0 {
		return nil
	}
	return s.view(bucket, func(c *bolt.Cursor) error {
		k, v := c.Seek(after)
		if k != nil && string(k) == string(after) {
			k, v = c.Next()
		}
		for ; k != nil && limit > 0; k, v = c.Next() {
			if err := fn(k, v); err != nil {
				return err
			}
			limit--
		}
		return nil
	})
}

// Count reads bbolt's bucket statistics, which walks the bucket's pages: it is meant
// for start-up and trimming decisions, not for every message.
func (s *boltStore) Count(bucket string) (int, error) {
	n := 0
	err := s.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket([]byte(bucket)); b != nil {
			n = b.Stats().KeyN
		}
		return nil
	})
	return n, err
}

// Close releases the file and its lock; later calls on the store return an error.
func (s *boltStore) Close() error {
	return s.db.Close()
}

// memStore is a Store in memory: for tests, and for running without a disk (nothing
// survives a restart). It follows boltStore's semantics exactly, including refusing the
// same writes and handing callbacks slices that are valid only during the callback (it
// copies into a buffer it reuses, so code that keeps them breaks here too, in tests,
// rather than only on disk). One RWMutex guards it; reads run in parallel.
type memStore struct {
	mu      sync.RWMutex
	buckets map[string][]memEntry
	closed  bool
}

// memEntry is one key of a memStore bucket; a bucket is a slice of them sorted by key,
// which makes appending increasing sequence keys cheap and ordered reads trivial.
type memEntry struct {
	key   string
	value []byte
}

// newMemStore returns an empty memStore.
func newMemStore() *memStore {
	return &memStore{buckets: make(map[string][]memEntry)}
}

// memFind returns where key is, or would be inserted, in entries.
func memFind(entries []memEntry, key string) (int, bool) {
	return slices.BinarySearchFunc(entries, key, func(e memEntry, k string) int {
		return strings.Compare(e.key, k)
	})
}

// Apply validates the whole batch first and only then changes anything, which is what
// makes it atomic: validation is its only way to fail. Keys and values are copied.
func (s *memStore) Apply(batch []Write) error {
	if err := validateBatch(batch); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errStoreClosed
	}
	for _, w := range batch {
		entries := s.buckets[w.Bucket]
		i, found := memFind(entries, string(w.Key))
		switch {
		case w.Value == nil && found:
			s.buckets[w.Bucket] = slices.Delete(entries, i, i+1)
		case w.Value == nil:
			// Deleting a missing key changes nothing and creates no bucket.
		case found:
			entries[i].value = slices.Clone(w.Value)
		default:
			s.buckets[w.Bucket] = slices.Insert(entries, i, memEntry{key: string(w.Key), value: slices.Clone(w.Value)})
		}
	}
	return nil
}

// read runs walk over bucket's entries under the read lock, with a yield that hands
// each entry to fn through reused buffers; see memStore for why.
func (s *memStore) read(bucket string, fn func(key, value []byte) error, walk func(entries []memEntry, yield func(memEntry) error) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStoreClosed
	}
	var kb, vb []byte
	return walk(s.buckets[bucket], func(e memEntry) error {
		kb = append(kb[:0], e.key...)
		vb = append(vb[:0], e.value...)
		return fn(kb, vb)
	})
}

// Scan walks the whole bucket in key order.
func (s *memStore) Scan(bucket string, fn func(key, value []byte) error) error {
	return s.read(bucket, fn, func(entries []memEntry, yield func(memEntry) error) error {
		for _, e := range entries {
			if err := yield(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// Last hands out the newest n entries, oldest first.
func (s *memStore) Last(bucket string, n int, fn func(key, value []byte) error) error {
	if n <= 0 {
		return nil
	}
	return s.read(bucket, fn, func(entries []memEntry, yield func(memEntry) error) error {
		for _, e := range entries[max(0, len(entries)-n):] {
			if err := yield(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// After hands out up to limit entries with keys strictly greater than after.
func (s *memStore) After(bucket string, after []byte, limit int, fn func(key, value []byte) error) error {
	if limit <= 0 {
		return nil
	}
	return s.read(bucket, fn, func(entries []memEntry, yield func(memEntry) error) error {
		i, found := memFind(entries, string(after))
		if found {
			i++
		}
		for _, e := range entries[i:min(len(entries), i+limit)] {
			if err := yield(e); err != nil {
				return err
			}
		}
		return nil
	})
}

// Count returns the number of keys in bucket.
func (s *memStore) Count(bucket string) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errStoreClosed
	}
	return len(s.buckets[bucket]), nil
}

// Close drops the contents; later calls return errStoreClosed, as a closed file would.
func (s *memStore) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.buckets = nil
	return nil
}

// storeRequest is one Submit waiting for its commit.
type storeRequest struct {
	writes []Write
	done   func(error)
}

// storeCommit describes one Apply made by a storeWriter, for metrics: how many requests
// and writes it carried, their bytes (keys plus values), how long it took and how it ended.
// Retry marks the per-request Applies made after a combined commit failed.
type storeCommit struct {
	Requests, Writes, Bytes int
	Took                    time.Duration
	Err                     error
	Retry                   bool
}

// storeWriter is how the hub writes without touching the disk. Submit only queues; one
// goroutine commits what has queued up in one Apply, so however many messages arrive
// while the disk is busy, they cost one fsync between them. Callbacks report each
// request's result once it is durable.
type storeWriter struct {
	store   Store
	observe func(storeCommit)

	// mu orders Submit against Close: a Submit holds it shared for its non-blocking
	// send, Close holds it exclusively to close reqs, so no send races the close.
	mu     sync.RWMutex
	closed bool
	reqs   chan storeRequest
	// linger is how long a batch waits for company (see storeLinger); 0: never.
	linger time.Duration
	// stopped is closed when the goroutine has committed everything and returned.
	stopped chan struct{}
}

// newStoreWriter starts a writer over s that holds up to queue requests (storeWriterQueue
// when queue <= 0) and lets each batch wait up to linger for more requests (0: commit
// at once). observe is optional (at most one, may be nil): it is called on the writer
// goroutine after every Apply and must be quick (update a metric). The writer owns no
// Store: close the writer first, then the store.
func newStoreWriter(s Store, queue int, linger time.Duration, observe ...func(storeCommit)) *storeWriter {
	if queue <= 0 {
		queue = storeWriterQueue
	}
	w := &storeWriter{
		store:   s,
		reqs:    make(chan storeRequest, queue),
		stopped: make(chan struct{}),
		linger:  linger,
	}
	if len(observe) > 0 {
		w.observe = observe[0]
	}
	go w.run()
	return w
}

// Submit queues writes without blocking; done (may be nil) is called with the commit's
// result once they are durable. Submit returns false when the queue is full or the writer
// is closed (the caller then refuses the operation with a "try again" error rather than
// block); done is then never called. Otherwise done is called exactly once, from the
// writer goroutine, in submission order: it must not block for long, since every later
// request waits behind it (hand the result off without blocking). The writer owns writes
// from here on: the caller must not change their slices. Writes of all requests are
// applied in submission order, so a later write to the same key wins. An empty writes
// is allowed: its done runs once everything submitted before it is durable.
func (w *storeWriter) Submit(writes []Write, done func(error)) bool {
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return false
	}
	select {
	case w.reqs <- storeRequest{writes: writes, done: done}:
		return true
	default:
		return false
	}
}

// Queued reports how many requests wait for a commit, for a metrics gauge.
func (w *storeWriter) Queued() int {
	return len(w.reqs)
}

// Close stops accepting, commits what is queued, calls the remaining callbacks, returns.
// It may be called more than once. Because it waits for those callbacks, a done that
// blocks on a goroutine which is itself waiting for Close (a stopped hub loop, say)
// deadlocks the shutdown: another reason done must hand off without blocking.
func (w *storeWriter) Close() {
	w.mu.Lock()
	if !w.closed {
		w.closed = true
		close(w.reqs)
	}
	w.mu.Unlock()
	<-w.stopped
}

// run is the writer goroutine: take one request, gather whatever else arrives within
// the linger (and the batch bounds), commit them together, report, repeat. A batch that
// fills up, or a writer being closed, commits at once.
func (w *storeWriter) run() {
	defer close(w.stopped)
	var batch []storeRequest
	var writes []Write
	var wait *time.Timer
	for {
		first, ok := <-w.reqs
		if !ok {
			return
		}
		batch = append(batch[:0], first)
		size := requestBytes(first)
		var deadline <-chan time.Time // nil: take only what is queued now
		if w.linger > 0 {
			if wait == nil {
				wait = time.NewTimer(w.linger)
			} else {
				wait.Reset(w.linger)
			}
			deadline = wait.C
		}
	gather:
		for len(batch) < storeBatchMaxRequests && size < storeBatchMaxBytes {
			var r storeRequest
			if deadline == nil {
				select {
				case r, ok = <-w.reqs:
				default:
					break gather
				}
			} else {
				select {
				case r, ok = <-w.reqs:
				case <-deadline:
					deadline = nil
					continue
				}
			}
			if !ok {
				break gather
			}
			batch = append(batch, r)
			size += requestBytes(r)
		}
		if deadline != nil {
			wait.Stop()
		}
		writes = w.commit(batch, writes[:0], size)
		// Drop references so committed values can be collected while the writer idles.
		clear(writes)
		clear(batch)
	}
}

// commit applies batch in one Apply and reports to every request. If that fails, each
// request is applied on its own, so one bad request (an invalid key, say) fails alone
// instead of taking its neighbours down with it; a combined Apply is atomic, so nothing
// of it was written and retrying in order keeps the order. It returns writes for reuse.
func (w *storeWriter) commit(batch []storeRequest, writes []Write, size int) []Write {
	for _, r := range batch {
		writes = append(writes, r.writes...)
	}
	err := w.apply(writes, len(batch), size, false)
	if err == nil || len(batch) == 1 {
		for _, r := range batch {
			if r.done != nil {
				r.done(err)
			}
		}
		return writes
	}
	for _, r := range batch {
		err := w.apply(r.writes, 1, requestBytes(r), true)
		if r.done != nil {
			r.done(err)
		}
	}
	return writes
}

// apply runs one Apply and reports it to observe.
func (w *storeWriter) apply(writes []Write, requests, size int, retry bool) error {
	start := time.Now()
	err := w.store.Apply(writes)
	if w.observe != nil {
		w.observe(storeCommit{Requests: requests, Writes: len(writes), Bytes: size, Took: time.Since(start), Err: err, Retry: retry})
	}
	return err
}

// requestBytes is the size a request adds to a batch: its keys and values.
func requestBytes(r storeRequest) int {
	n := 0
	for _, w := range r.writes {
		n += len(w.Key) + len(w.Value)
	}
	return n
}

// Package store keeps the server's durable state: the Store interface, its bbolt and
// in-memory implementations, and the batching Writer through which the hub writes
// without waiting on the disk.
package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// Store tunables.
const (
	// lockTimeout bounds how long opening the data file waits for its lock. A second
	// server pointed at the same data directory must fail fast with a clear error rather
	// than hang at start-up or, worse, share the file.
	lockTimeout = 2 * time.Second
	// fileMode keeps the data file readable by the server's user only: it holds
	// history and state that other local users have no business reading.
	fileMode = 0o600
	// MaxKey is the longest bucket name or key accepted, bbolt's own limit. Both
	// implementations refuse longer ones, so code tested on Mem behaves the same on disk.
	MaxKey = bolt.MaxKeySize
)

// Errors a Store returns for writes it refuses. They are checked before anything is
// written, so a batch holding one of them is refused whole on every implementation.
var (
	ErrBucket = errors.New("store: bucket name is empty or too long")
	ErrKey    = errors.New("store: key is empty or too long")
	ErrClosed = errors.New("store: closed")
	// ErrLocked means another process holds the data file: most likely a second
	// server started on the same data directory.
	ErrLocked = errors.New("store: data file is in use by another process")
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
// Keys are ordered bytewise, which is why sequence numbers are stored with SeqKey.
type Write struct {
	Bucket     string
	Key, Value []byte
}

// SeqKey encodes a sequence number (a message id, say) as 8 bytes big-endian, so that
// the bytewise key order of a bucket is the numeric order of its sequence numbers.
func SeqKey(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// KeySeq decodes a key made by SeqKey. Any other length yields 0, which is never a
// sequence number the server hands out (they start at 1).
func KeySeq(k []byte) uint64 {
	if len(k) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(k)
}

// validateWrite checks what the storage engines would otherwise refuse halfway through
// a batch, so both implementations refuse the same writes before writing anything.
func validateWrite(w Write) error {
	if w.Bucket == "" || len(w.Bucket) > MaxKey {
		return ErrBucket
	}
	if len(w.Key) == 0 || len(w.Key) > MaxKey {
		return ErrKey
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

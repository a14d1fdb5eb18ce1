package store

import (
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded Store: one bbolt file, one writer at a time, readers in
// parallel. bbolt fsyncs every commit (NoSync stays false), so an Apply that returned
// nil survives a crash or a power cut. Values handed to read callbacks point into the
// memory-mapped file and are valid only during the callback, as Store says.
type Bolt struct {
	db *bolt.DB
}

// OpenBolt opens (creating if needed) the data file at path; its directory must
// exist. If another process holds the file it fails after lockTimeout with an
// error wrapping ErrLocked.
func OpenBolt(path string) (*Bolt, error) {
	db, err := bolt.Open(path, fileMode, &bolt.Options{
		Timeout: lockTimeout,
		NoSync:  false,
	})
	if errors.Is(err, bolt.ErrTimeout) {
		return nil, fmt.Errorf("open store %s: %w (lock not obtained within %s; is another server running on this data directory?)",
			path, ErrLocked, lockTimeout)
	}
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	return &Bolt{db: db}, nil
}

// Apply writes the batch in one bbolt transaction: one commit, one fsync.
func (s *Bolt) Apply(batch []Write) error {
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
func (s *Bolt) view(bucket string, fn func(c *bolt.Cursor) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte(bucket))
		if b == nil {
			return nil
		}
		return fn(b.Cursor())
	})
}

// Scan walks the whole bucket in key order.
func (s *Bolt) Scan(bucket string, fn func(key, value []byte) error) error {
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
func (s *Bolt) Last(bucket string, n int, fn func(key, value []byte) error) error {
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
func (s *Bolt) After(bucket string, after []byte, limit int, fn func(key, value []byte) error) error {
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
func (s *Bolt) Count(bucket string) (int, error) {
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
func (s *Bolt) Close() error {
	return s.db.Close()
}

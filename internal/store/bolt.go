package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// Bolt is the embedded Store: one bbolt file, one writer at a time, readers in
// parallel. bbolt fsyncs every commit (NoSync stays false), so an Apply that returned
// nil survives a crash or a power cut. Values handed to read callbacks point into the
// memory-mapped file and are valid only during the callback, as Store says.
type Bolt struct {
	db *bolt.DB
	// mu makes Apply and its scrub one step: no other write may free pages between
	// the scrub's two transactions (see scrub.go).
	mu sync.Mutex
	// unscrubbed says a commit deleted something whose old pages are not zeroed
	// yet (a reader held them); the next Apply tries again.
	unscrubbed bool
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

// Apply writes the batch in one bbolt transaction: one commit, one fsync. After a
// batch that deletes, the pages bbolt freed are zeroed (scrub.go), so what was
// deleted is not left in the file.
func (s *Bolt) Apply(batch []Write) error {
	if err := validateBatch(batch); err != nil {
		return err
	}
	if len(batch) == 0 {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.update(batch); err != nil {
		return err
	}
	for _, w := range batch {
		if w.Value == nil {
			s.unscrubbed = true
			break
		}
	}
	if s.unscrubbed {
		// The batch is committed whatever the scrub does: an error here must not
		// make the caller think it failed. The next Apply tries again.
		ran, err := s.scrub()
		s.unscrubbed = err != nil || !ran
	}
	return nil
}

// update writes the batch in one bbolt transaction.
func (s *Bolt) update(batch []Write) error {
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

// Backup streams a consistent copy of the whole data file to w while the server keeps
// writing: one bbolt read transaction sees the state as of its start, and writers
// carry on beside it (bbolt readers never block writers, except while the file grows).
// size, known before the first byte, is what a complete copy holds, so the caller can
// announce it and the receiver can tell a whole copy from a cut-off one. A copy is a
// valid data file: restore it by putting it where OpenBolt looks.
func (s *Bolt) Backup(w io.Writer, size func(int64)) (int64, error) {
	var n int64
	err := s.db.View(func(tx *bolt.Tx) error {
		if size != nil {
			size(tx.Size())
		}
		var err error
		n, err = tx.WriteTo(w)
		return err
	})
	return n, err
}

// CheckBolt opens a data file read-only and runs bbolt's consistency check over every
// page, so a truncated or corrupted backup is refused before it replaces anything.
func CheckBolt(path string) error {
	// bbolt maps the file and trusts its meta pages: a file shorter than they say
	// faults the process on first touch, so the length is checked before bbolt sees it.
	if err := checkBoltLength(path); err != nil {
		return err
	}
	db, err := bolt.Open(path, fileMode, &bolt.Options{Timeout: lockTimeout, ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	defer db.Close()
	return db.View(func(tx *bolt.Tx) error {
		var errs []error
		for err := range tx.Check() {
			errs = append(errs, err)
		}
		return errors.Join(errs...)
	})
}

// Layout of a bbolt meta page (pages 0 and 1), as bbolt writes it on little-endian
// machines: a 16-byte page header, then magic, version, page size, flags, the root
// bucket (page, sequence), the freelist page, the high-water page id, the transaction
// id and an FNV-64a checksum of everything before it.
const (
	boltMagic       = 0xED0CDAED
	metaOffset      = 16
	metaChecksummed = 56
)

// checkBoltLength reads the newest valid meta page and refuses a file that ends before
// the pages it claims (a copy cut off by a full disk or a dropped connection).
func checkBoltLength(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	// The second meta page sits one page in; if the first is damaged, the page
	// size is unknown, and the usual one (the OS page size) is tried.
	best, err := readBoltMeta(f, 0)
	second := int64(os.Getpagesize())
	if err == nil {
		second = int64(best.pageSize)
	}
	if m, err := readBoltMeta(f, second); err == nil && (best == nil || m.txid > best.txid) {
		best = m
	}
	if best == nil {
		return fmt.Errorf("%s: not a data file (no valid meta page)", path)
	}
	if need := int64(best.highWater) * int64(best.pageSize); fi.Size() < need {
		return fmt.Errorf("%s: truncated: %d bytes, its meta page needs %d", path, fi.Size(), need)
	}
	return nil
}

// boltMeta is what checkBoltLength needs from a meta page.
type boltMeta struct {
	pageSize  uint32
	highWater uint64
	txid      uint64
}

// readBoltMeta reads and verifies the meta page at off.
func readBoltMeta(f *os.File, off int64) (*boltMeta, error) {
	buf := make([]byte, metaOffset+metaChecksummed+8)
	if _, err := f.ReadAt(buf, off); err != nil {
		return nil, err
	}
	m := buf[metaOffset:]
	le := binary.LittleEndian
	if le.Uint32(m[0:]) != boltMagic {
		return nil, errors.New("bad magic")
	}
	h := fnv.New64a()
	h.Write(m[:metaChecksummed])
	if h.Sum64() != le.Uint64(m[metaChecksummed:]) {
		return nil, errors.New("bad checksum")
	}
	ps := le.Uint32(m[8:])
	if ps < 512 || ps > 1<<20 || ps&(ps-1) != 0 {
		return nil, errors.New("bad page size")
	}
	return &boltMeta{pageSize: ps, highWater: le.Uint64(m[40:]), txid: le.Uint64(m[48:])}, nil
}

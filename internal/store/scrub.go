package store

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	bolt "go.etcd.io/bbolt"
)

// bbolt is copy-on-write: a transaction that changes a page writes a new copy of it
// and frees the old one, whose bytes stay in the file until the page is reused. A
// deleted message is gone from every page the database still uses, but the leaf page
// that held it, and every older copy of that leaf (one per commit that touched it),
// still hold its text. Measured: after deleting a message, its text was still in
// the file (TestDeletedGoneFromDisk in the server's tests). Overwriting the value
// before deleting it does not help, for the same reason.
//
// So after a commit that deletes, the Bolt store zeroes the pages bbolt holds free.
// It may only touch a page no reader can still reach: bbolt keeps a freed page
// "pending" while a read transaction older than the commit that freed it is open, and
// those pending pages are indistinguishable from free ones in its public API. The
// scrub therefore first lets bbolt release what it can (an empty write transaction,
// rolled back) and reads the pending count that transaction leaves in the stats; only
// when nothing is pending is every freed page unreachable, and then a second empty
// write transaction (holding the writer lock, so nothing is allocated meanwhile)
// lists them and the scrub overwrites them through its own file handle and fsyncs.
// When a reader still holds pages, the scrub waits for the next commit.

// errRollback ends a write transaction that must not commit.
var errRollback = errors.New("store: roll back")

// scrub zeroes the freed pages that are not zero yet (each is read first: a page may
// have been used and freed again since the last scrub, so no memory of what was zeroed
// can be trusted). It reports whether it ran (false when a reader still held pages).
func (s *Bolt) scrub() (bool, error) {
	// Let bbolt release the pending pages no reader needs any more.
	if err := s.db.Update(func(*bolt.Tx) error { return errRollback }); !errors.Is(err, errRollback) {
		return false, err
	}
	if s.db.Stats().PendingPageN > 0 {
		return false, nil
	}
	f, err := os.OpenFile(s.db.Path(), os.O_RDWR, 0)
	if err != nil {
		return false, fmt.Errorf("scrub: %w", err)
	}
	defer f.Close()
	size := s.db.Info().PageSize
	zero, page := make([]byte, size), make([]byte, size)
	wrote := false
	err = s.db.Update(func(tx *bolt.Tx) error {
		pages := int(tx.Size() / int64(size))
		for id := 2; id < pages; id++ { // pages 0 and 1 are the meta pages
			info, err := tx.Page(id)
			if err != nil {
				return err
			}
			if info == nil || info.Type != "free" {
				continue
			}
			off := int64(id) * int64(size)
			if _, err := f.ReadAt(page, off); err != nil {
				return err
			}
			if bytes.Equal(page, zero) {
				continue
			}
			if _, err := f.WriteAt(zero, off); err != nil {
				return err
			}
			wrote = true
		}
		return errRollback
	})
	if !errors.Is(err, errRollback) {
		return false, fmt.Errorf("scrub: %w", err)
	}
	if !wrote {
		return true, nil
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("scrub: %w", err)
	}
	return true, nil
}

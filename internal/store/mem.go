package store

import (
	"slices"
	"strings"
	"sync"
)

// Mem is a Store in memory: for tests, and for running without a disk (nothing
// survives a restart). It follows Bolt's semantics exactly, including refusing the
// same writes and handing callbacks slices that are valid only during the callback (it
// copies into a buffer it reuses, so code that keeps them breaks here too, in tests,
// rather than only on disk). One RWMutex guards it; reads run in parallel.
type Mem struct {
	mu      sync.RWMutex
	buckets map[string][]memEntry
	closed  bool
}

// memEntry is one key of a Mem bucket; a bucket is a slice of them sorted by key,
// which makes appending increasing sequence keys cheap and ordered reads trivial.
type memEntry struct {
	key   string
	value []byte
}

// NewMem returns an empty Mem.
func NewMem() *Mem {
	return &Mem{buckets: make(map[string][]memEntry)}
}

// memFind returns where key is, or would be inserted, in entries.
func memFind(entries []memEntry, key string) (int, bool) {
	return slices.BinarySearchFunc(entries, key, func(e memEntry, k string) int {
		return strings.Compare(e.key, k)
	})
}

// Apply validates the whole batch first and only then changes anything, which is what
// makes it atomic: validation is its only way to fail. Keys and values are copied.
func (s *Mem) Apply(batch []Write) error {
	if err := validateBatch(batch); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
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
// each entry to fn through reused buffers; see Mem for why.
func (s *Mem) read(bucket string, fn func(key, value []byte) error, walk func(entries []memEntry, yield func(memEntry) error) error) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	var kb, vb []byte
	return walk(s.buckets[bucket], func(e memEntry) error {
		kb = append(kb[:0], e.key...)
		vb = append(vb[:0], e.value...)
		return fn(kb, vb)
	})
}

// Scan walks the whole bucket in key order.
func (s *Mem) Scan(bucket string, fn func(key, value []byte) error) error {
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
func (s *Mem) Last(bucket string, n int, fn func(key, value []byte) error) error {
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
func (s *Mem) After(bucket string, after []byte, limit int, fn func(key, value []byte) error) error {
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
func (s *Mem) Count(bucket string) (int, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, ErrClosed
	}
	return len(s.buckets[bucket]), nil
}

// Close drops the contents; later calls return ErrClosed, as a closed file would.
func (s *Mem) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.buckets = nil
	return nil
}

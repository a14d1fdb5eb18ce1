package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"modified-chat/internal/store"
)

// Revocations: where they are kept, how many, how often they are pruned.
const (
	// bucketRevoked maps a logged-out session id to its cookie's expiry (store.SeqKey of
	// Unix seconds). One key per revoked session: a logout writes one key, never the
	// whole list.
	bucketRevoked = "revoked"
	// bucketSessionCutoffs maps a user id to a time (store.SeqKey of Unix milliseconds):
	// every session of that user issued at or before it is dead. A global ban sets it,
	// so a cookie captured before the ban stays dead after global_unban.
	bucketSessionCutoffs = "session_cutoffs"
	// maxRevoked bounds the revocation list (DoS hardening: every login followed by a
	// logout adds a key that lives for up to a session lifetime). About 100 bytes each
	// in memory and on disk, so some 10 MB at the cap. At the cap a logout ends all of
	// its user's sessions instead (a cutoff, one key per user): it still fails closed,
	// and it costs only the user who logs out, who loses their other devices' sessions.
	maxRevoked = 100_000
	// revokedFileName is the file in the data directory where revocations were kept
	// before they moved into the store. Start-up migrates it once and removes it.
	revokedFileName = "revoked.json"
)

// dead reports whether a session was logged out, or issued before its user's cutoff.
func (s *sessions) dead(sid, uid string, issuedMs int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.revoked[sid]; ok {
		return true
	}
	cut, ok := s.cutoffs[uid]
	return ok && issuedMs <= cut
}

// revoke makes id's session unusable: at once in memory, then durably through the
// store writer; it returns once the write is committed. Memory first is the safe order:
// if the write fails the session is still refused until a restart, and the error
// says so. With the list at maxRevoked, the user's cutoff moves to now instead.
func (s *sessions) revoke(id identity) error {
	s.mu.Lock()
	var w store.Write
	if _, ok := s.revoked[id.SessionID]; ok || len(s.revoked) < maxRevoked {
		exp := id.Expires.Unix()
		s.revoked[id.SessionID] = exp
		w = store.Write{Bucket: bucketRevoked, Key: []byte(id.SessionID), Value: store.SeqKey(uint64(exp))}
	} else {
		w = s.cutoffLocked(id.ID, s.now())
	}
	if s.remote != nil {
		// Cluster mode: the control log keeps it and tells the other nodes.
		s.mu.Unlock()
		cut, err := s.remote(id)
		if cut {
			s.endSessions(id.ID, s.now())
		}
		return err
	}
	// Submitted under the lock, so a sweep's deletes and this write reach the writer
	// in the order memory saw them.
	done, err := s.submitLocked([]store.Write{w})
	s.mu.Unlock()
	if err != nil {
		return err
	}
	return <-done
}

// remember adds a revocation another node made (cluster mode) to memory, or, with the
// list at maxRevoked, moves its user's cutoff to now instead (fail closed).
func (s *sessions) remember(sid, uid string, exp int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.revoked[sid]; ok || len(s.revoked) < maxRevoked {
		s.revoked[sid] = exp
		return
	}
	s.cutoffLocked(uid, s.now())
}

// endSessions kills every session of uid issued up to at, in memory at once, and
// returns the write that keeps this durable, for the caller to commit with its own
// change (a global ban commits it with the ban record).
func (s *sessions) endSessions(uid string, at time.Time) store.Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cutoffLocked(uid, at)
}

// cutoffWrite is the store write endSessions(uid, at) would make, without changing
// memory: a global ban commits it with the ban and calls endSessions only once both
// are durable, so a ban the store refuses ends nobody's sessions (durable.go).
func (s *sessions) cutoffWrite(uid string, at time.Time) store.Write {
	s.mu.Lock()
	defer s.mu.Unlock()
	ms := max(at.UnixMilli(), s.cutoffs[uid])
	return store.Write{Bucket: bucketSessionCutoffs, Key: []byte(uid), Value: store.SeqKey(uint64(ms))}
}

// cutoffLocked moves uid's cutoff to at (never back) and returns its store write.
func (s *sessions) cutoffLocked(uid string, at time.Time) store.Write {
	ms := max(at.UnixMilli(), s.cutoffs[uid])
	s.cutoffs[uid] = ms
	return store.Write{Bucket: bucketSessionCutoffs, Key: []byte(uid), Value: store.SeqKey(uint64(ms))}
}

// submitLocked hands writes to the store writer and returns where its result arrives.
// Without a writer (a sessions value used on its own) nothing is written.
func (s *sessions) submitLocked(writes []store.Write) (<-chan error, error) {
	done := make(chan error, 1)
	if s.writer == nil {
		done <- nil
		return done, nil
	}
	if !s.writer.Submit(writes, func(err error) { done <- err }) {
		return nil, errStoreBusy
	}
	return done, nil
}

// sweep forgets revocations whose cookies have expired and cutoffs older than a
// session lifetime (every session they could kill has expired by then), in memory and
// in the store. The history janitor calls it every janitorEvery. It does not wait for
// the deletes: an entry whose delete was lost is loaded again at the next start-up and
// swept then. It returns how many entries it dropped.
func (s *sessions) sweep(now time.Time) int {
	ttl := s.ttl()
	s.mu.Lock()
	defer s.mu.Unlock()
	var dels []store.Write
	for sid, exp := range s.revoked {
		if now.Unix() >= exp {
			delete(s.revoked, sid)
			dels = append(dels, store.Write{Bucket: bucketRevoked, Key: []byte(sid)})
		}
	}
	for uid, ms := range s.cutoffs {
		// A second of slack: cookies carry their issue time in whole seconds too.
		if now.UnixMilli() > ms+ttl.Milliseconds()+1000 {
			delete(s.cutoffs, uid)
			dels = append(dels, store.Write{Bucket: bucketSessionCutoffs, Key: []byte(uid)})
		}
	}
	if len(dels) > 0 {
		s.submitLocked(dels)
	}
	return len(dels)
}

// loadRevocations reads both buckets into memory at start-up, before any request.
// An unreadable entry stops start-up: forgetting a revocation would bring a
// logged-out cookie back to life.
func (s *sessions) loadRevocations(st store.Store) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := st.Scan(bucketRevoked, func(k, v []byte) error {
		if len(v) != 8 {
			return errors.New("revoked session: bad expiry")
		}
		s.revoked[string(k)] = int64(store.KeySeq(v))
		return nil
	})
	if err != nil {
		return err
	}
	return st.Scan(bucketSessionCutoffs, func(k, v []byte) error {
		if len(v) != 8 {
			return errors.New("session cutoff: bad time")
		}
		s.cutoffs[string(k)] = int64(store.KeySeq(v))
		return nil
	})
}

// migrateRevokedFile moves the revocations of an older version's revoked.json (session
// id -> expiry, Unix seconds) into the store, dropping expired ones, and then removes
// the file, so it happens once. With a store that does not outlive the process the
// file is left alone: it is still the only durable copy. A missing file is nothing to
// do; an unreadable one stops start-up, as it did before the move.
func migrateRevokedFile(path string, st store.Store, durable bool, now time.Time) (int, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var kept map[string]int64
	if err := json.Unmarshal(b, &kept); err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	var writes []store.Write
	for sid, exp := range kept {
		if exp > now.Unix() && sid != "" && len(sid) <= store.MaxKey {
			writes = append(writes, store.Write{Bucket: bucketRevoked, Key: []byte(sid), Value: store.SeqKey(uint64(exp))})
		}
	}
	if len(writes) > 0 {
		if err := st.Apply(writes); err != nil {
			return 0, fmt.Errorf("%s: %w", path, err)
		}
	}
	if durable {
		if err := os.Remove(path); err != nil {
			return 0, err
		}
	}
	return len(writes), nil
}

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"modified-chat/internal/store"
)

// storeQueue is how many write batches may wait for the store writer. The hub never
// waits: beyond this, a change is refused with `busy`.
const storeQueue = 8192

// storeFileName is the embedded database in the data directory.
const storeFileName = "chat.db"

// hubState is the durable state the hub starts from, read before its loop runs (the
// loop itself never reads the disk).
type hubState struct {
	rooms    map[string]*roomInfo
	grants   map[string]string
	bans     map[string]banInfo
	settings *Settings
	audit    []auditEntry
	auditSeq uint64
	lastID   uint64
	users    map[string]knownUser
	dmPrefs  map[string]*dmPrefs
	// mlsGroups and kps are the E2EE Delivery Service's groups and KeyPackages.
	mlsGroups map[string]*mlsGroup
	kps       *kpDirectory
	// welcomes are the single node's kept Welcomes (e2ee_welcomes.go); welcomeUpgrade
	// the writes that move those older group records still carry into their own
	// buckets and delete the group records no room holds (dropStaleGroups), which the
	// server applies before its hub runs.
	welcomes       *welcomeStore
	welcomeUpgrade []store.Write
}

// openStore opens the configured store.
func openStore(cfg *Config) (store.Store, error) {
	if cfg.Store == "memory" {
		return store.NewMem(), nil
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	s, err := store.OpenBolt(filepath.Join(cfg.DataDir, storeFileName))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return s, nil
}

// loadHubState reads rooms, grants, bans, settings, known users and the newest audit
// entries.
func loadHubState(s store.Store) (*hubState, error) {
	st := &hubState{rooms: map[string]*roomInfo{}, grants: map[string]string{}, bans: map[string]banInfo{}}
	err := s.Scan(bucketRooms, func(k, v []byte) error {
		var ri roomInfo
		if err := json.Unmarshal(v, &ri); err != nil {
			return fmt.Errorf("room %q: %w", k, err)
		}
		if ri.Roles == nil {
			ri.Roles = map[string]string{}
		}
		if ri.Invites == nil {
			ri.Invites = map[string]int64{}
		}
		if ri.Bans == nil {
			ri.Bans = map[string]int64{}
		}
		st.rooms[ri.Name] = &ri
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.Scan(bucketGrants, func(k, v []byte) error {
		var role string
		if err := json.Unmarshal(v, &role); err != nil || !validGlobalRole(role) {
			return fmt.Errorf("grant for %q is not a role", k)
		}
		st.grants[string(k)] = role
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.Scan(bucketBans, func(k, v []byte) error {
		var b banInfo
		if err := json.Unmarshal(v, &b); err != nil {
			return fmt.Errorf("ban of %q: %w", k, err)
		}
		st.bans[string(k)] = b
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.Scan(bucketSettings, func(k, v []byte) error {
		if string(k) != "current" {
			return nil
		}
		var set Settings
		if err := json.Unmarshal(v, &set); err != nil {
			return fmt.Errorf("settings: %w", err)
		}
		st.settings = &set
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = s.Scan(bucketMeta, func(k, v []byte) error {
		if string(k) == keyLastID {
			st.lastID = store.KeySeq(v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.users, err = loadKnownUsers(s); err != nil {
		return nil, err
	}
	if st.dmPrefs, err = loadDMPrefs(s); err != nil {
		return nil, err
	}
	err = s.Last(bucketAudit, auditMemory, func(k, v []byte) error {
		var e auditEntry
		if err := json.Unmarshal(v, &e); err != nil {
			return fmt.Errorf("audit entry: %w", err)
		}
		st.audit = append(st.audit, e)
		st.auditSeq = store.KeySeq(k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if st.mlsGroups, err = loadMLSGroups(s); err != nil {
		return nil, err
	}
	if st.welcomes, st.welcomeUpgrade, err = loadWelcomes(s, st.mlsGroups); err != nil {
		return nil, err
	}
	st.welcomeUpgrade = append(st.welcomeUpgrade, dropStaleGroups(st)...)
	st.kps, err = loadKPDirectory(s)
	return st, err
}

// userSet is a set of user ids safe for concurrent use. It mirrors the hub's global
// bans for HTTP handlers, which must answer without a round trip through the hub.
type userSet struct {
	mu  sync.RWMutex
	ids map[string]struct{}
}

// newUserSet makes an empty set.
func newUserSet() *userSet { return &userSet{ids: map[string]struct{}{}} }

// add puts id in the set.
func (s *userSet) add(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ids[id] = struct{}{}
}

// remove takes id out of the set.
func (s *userSet) remove(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.ids, id)
}

// has reports whether id is in the set.
func (s *userSet) has(id string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	_, ok := s.ids[id]
	return ok
}

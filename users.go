package main

import (
	"cmp"
	"container/list"
	"encoding/json"
	"slices"
	"strings"
	"time"

	"modified-chat/internal/store"
)

// Known-user directory tunables.
const (
	// bucketUsers keeps user id -> knownUser for users who have connected.
	bucketUsers = "users"
	// maxKnownUsers bounds the directory (DoS hardening: every new account adds a
	// record); beyond it the least recently seen user is forgotten, in memory and on disk.
	maxKnownUsers = 100000
	// knownSeenRefresh is how stale a stored last-seen time may get before a connect
	// rewrites it: often enough to keep the eviction order right to a day, rare enough
	// that reconnects cost no writes.
	knownSeenRefresh = 24 * time.Hour
)

// knownUser is what the hub remembers of a user who has connected: enough to decide
// about them while they are offline. Start-up roles may name a user by email or
// domain; without the email, an offline admin would look like a member to rank checks
// (a moderator could kick them, an admin could ban them).
type knownUser struct {
	Name  string `json:"name"`
	Email string `json:"email,omitempty"`
	Seen  int64  `json:"seen"`
}

// knownEntry is one directory entry in the recency list.
type knownEntry struct {
	id string
	knownUser
}

// userDirectory is the bounded directory of known users, most recently seen first.
// The hub owns it.
type userDirectory struct {
	byID map[string]*list.Element
	// byEmail maps a lower-cased email to the id of the user last seen with it, so a
	// direct message can be opened by email without a walk over the directory.
	byEmail map[string]string
	order   *list.List
	max     int
}

// newUserDirectory builds the directory from the stored records.
func newUserDirectory(stored map[string]knownUser, max int) *userDirectory {
	d := &userDirectory{byID: map[string]*list.Element{}, byEmail: map[string]string{}, order: list.New(), max: max}
	entries := make([]*knownEntry, 0, len(stored))
	for id, u := range stored {
		entries = append(entries, &knownEntry{id: id, knownUser: u})
	}
	// Most recently seen first; ties by id, so a restart keeps the same order.
	slices.SortFunc(entries, func(a, b *knownEntry) int {
		if c := cmp.Compare(b.Seen, a.Seen); c != 0 {
			return c
		}
		return strings.Compare(a.id, b.id)
	})
	for _, ke := range entries {
		d.byID[ke.id] = d.order.PushBack(ke)
		if ke.Email != "" {
			if _, newer := d.byEmail[lowerEmail(ke.Email)]; !newer {
				d.byEmail[lowerEmail(ke.Email)] = ke.id
			}
		}
	}
	return d
}

// byMail returns the id of the known user with this email (most recently seen).
func (d *userDirectory) byMail(email string) (string, bool) {
	id, ok := d.byEmail[lowerEmail(email)]
	return id, ok
}

// unmail forgets an entry's email in the email index, if the index points at it.
func (d *userDirectory) unmail(ke *knownEntry) {
	if ke.Email != "" && d.byEmail[lowerEmail(ke.Email)] == ke.id {
		delete(d.byEmail, lowerEmail(ke.Email))
	}
}

// lookup returns what is known of a user.
func (d *userDirectory) lookup(id string) (knownUser, bool) {
	if e := d.byID[id]; e != nil {
		return e.Value.(*knownEntry).knownUser, true
	}
	return knownUser{}, false
}

// see records that a user connected and returns the store writes that keep the
// directory durable: the user's record when it is new, changed or stale, and the
// deletion of whoever falls off the end.
func (d *userDirectory) see(id identity, now time.Time) []store.Write {
	var writes []store.Write
	e := d.byID[id.ID]
	if e == nil {
		e = d.order.PushFront(&knownEntry{id: id.ID})
		d.byID[id.ID] = e
		for d.order.Len() > d.max {
			last := d.order.Back()
			gone := d.order.Remove(last).(*knownEntry)
			delete(d.byID, gone.id)
			d.unmail(gone)
			writes = append(writes, store.Write{Bucket: bucketUsers, Key: []byte(gone.id)})
		}
	} else {
		d.order.MoveToFront(e)
	}
	ke := e.Value.(*knownEntry)
	if ke.Name == id.Name && ke.Email == id.Email && now.Unix()-ke.Seen < int64(knownSeenRefresh/time.Second) {
		if ke.Email != "" {
			d.byEmail[lowerEmail(ke.Email)] = ke.id // the newest user with an email wins
		}
		return writes
	}
	d.unmail(ke)
	ke.Name, ke.Email, ke.Seen = id.Name, id.Email, now.Unix()
	if ke.Email != "" {
		d.byEmail[lowerEmail(ke.Email)] = ke.id
	}
	b, _ := json.Marshal(ke.knownUser)
	return append(writes, store.Write{Bucket: bucketUsers, Key: []byte(id.ID), Value: b})
}

// loadKnownUsers reads the directory from the store at start-up.
func loadKnownUsers(s store.Store) (map[string]knownUser, error) {
	users := map[string]knownUser{}
	err := s.Scan(bucketUsers, func(k, v []byte) error {
		var u knownUser
		if err := json.Unmarshal(v, &u); err != nil {
			return nil // a damaged record only costs what it remembered
		}
		users[string(k)] = u
		return nil
	})
	return users, err
}

// identityOf is the best identity the hub has for a user id: a connected user's own,
// else what the directory remembers, else the bare id. Role and rank decisions about
// a target go through it, so a user named by email in the start-up policy keeps their
// rank while offline.
func (h *Hub) identityOf(userID string) identity {
	for c := range h.clientsOf(userID) {
		return c.user
	}
	if u, ok := h.known.lookup(userID); ok {
		return identity{ID: userID, Name: u.Name, Email: u.Email}
	}
	return identity{ID: userID}
}

package keydir

import (
	"crypto/ed25519"
	"slices"
)

// Records kept elsewhere. In cluster mode (the server's clusterkeys.go) a user's
// record is the cluster's: it lives in Redis under a revision that grows by one with
// every change, whichever node made it, and every node publishes the newest it has
// heard of. These are the seams for that; a single node never calls them.

// Rev is the revision of user's record this directory holds (0: none from the
// cluster). Call it on the directory's goroutine.
func (d *Directory) Rev(user string) uint64 { return d.revs[user] }

// Advance records rev as user's revision if it is newer than the one held, and reports
// whether it was: only then may the record of that revision be published (a record
// older than one already published is never put back). Call it on the directory's
// goroutine.
func (d *Directory) Advance(user string, rev uint64) bool {
	if rev <= d.revs[user] {
		return false
	}
	d.revs[user] = rev
	return true
}

// Publish puts a record read from the cluster in place of user's, for every reader.
// The caller checked it (seal, user, revision); u is not modified afterwards. Call it
// on the directory's goroutine.
func (d *Directory) Publish(u *User) {
	if _, had := d.users.Swap(u.ID, u); !had {
		d.count++
	}
}

// Replace drops every record and publishes users (user id -> record, revision) in
// their place: at start-up in cluster mode the cluster's records replace the local
// store's copy. Call it before the directory's goroutine starts.
func (d *Directory) Replace(users map[string]*User, revs map[string]uint64) {
	d.users.Range(func(k, _ any) bool { d.users.Delete(k); return true })
	d.count = 0
	d.revs = map[string]uint64{}
	for id, u := range users {
		d.users.Store(id, u)
		d.count++
		d.revs[id] = revs[id]
	}
}

// AddLink records a link request another node took for user, within this
// directory's bounds (waiting requests per user and users with requests; a request
// for a device in the directory is dropped) but without spending the user's rate
// limit, which the other node spent. It reports whether the request is now waiting
// here. Call it on the directory's goroutine.
func (d *Directory) AddLink(user string, l Link) bool {
	u := d.User(user)
	if u == nil || !ValidDeviceID(l.Device) || len(l.DIK) != ed25519.PublicKeySize || u.find(l.Device) >= 0 {
		return false
	}
	links := d.pendingLinks(user, d.now())
	i := slices.IndexFunc(links, func(w Link) bool { return w.Device == l.Device })
	switch {
	case i >= 0:
		links = slices.Delete(links, i, i+1)
	case len(links) >= maxLinksPerUser:
		return false
	case len(links) == 0 && len(d.links) >= maxLinkUsers:
		return false
	}
	d.links[user] = append(links, l)
	return true
}

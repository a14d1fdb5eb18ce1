package main

import (
	"time"

	"golang.org/x/time/rate"
)

// How often a device may commit a room's group with no proposals outstanding (a
// self-update, which only refreshes its own keys). Honest pages need about one a week
// (E2EE.md, "Limits" 4: every 7 days or 100 messages); each accepted commit makes every
// member process it and moves the room's epoch, which voids every message in flight,
// so a member committing over and over would stall the room for everyone.
const (
	// selfUpdateBurst self-updates may come at once (a page that retries after a
	// reload), then one every selfUpdateEvery, per device and room.
	selfUpdateBurst = 3
	selfUpdateEvery = 10 * time.Minute
	// maxSelfUpdateBuckets bounds the buckets kept; beyond it, full ones (a device
	// that has not self-updated lately) are dropped, which forgets nothing.
	maxSelfUpdateBuckets = 4096
)

// selfUpdateKey names a device's bucket in a room.
func selfUpdateKey(room, user, device string) string {
	return room + "\n" + user + "\n" + device
}

// selfUpdateBucket returns the device's bucket in a room, made on first use.
func (h *Hub) selfUpdateBucket(room, user, device string) *rate.Limiter {
	m := h.mls.updates
	if m == nil {
		m = map[string]*rate.Limiter{}
		h.mls.updates = m
	}
	k := selfUpdateKey(room, user, device)
	if l := m[k]; l != nil {
		return l
	}
	if len(m) >= maxSelfUpdateBuckets {
		now := h.now()
		for key, l := range m {
			if l.TokensAt(now) >= selfUpdateBurst {
				delete(m, key)
			}
		}
	}
	l := rate.NewLimiter(rate.Every(selfUpdateEvery), selfUpdateBurst)
	m[k] = l
	return l
}

// selfUpdateAllowed reports whether c's device may self-update the room's group now;
// it spends nothing (selfUpdated does, once the commit is accepted), so that stale or
// invalid commits cost no budget.
func (h *Hub) selfUpdateAllowed(c *Client, room string) bool {
	return h.selfUpdateBucket(room, c.user.ID, c.device).TokensAt(h.now()) >= 1
}

// selfUpdated spends one self-update of c's device in the room.
func (h *Hub) selfUpdated(c *Client, room string) {
	h.selfUpdateBucket(room, c.user.ID, c.device).AllowN(h.now(), 1)
}

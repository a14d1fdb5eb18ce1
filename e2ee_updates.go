package main

import (
	"time"
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
)

// mlsBudget is a device's self-update budget in one group: Tokens as of At (Unix
// milliseconds), refilled at one per selfUpdateEvery up to selfUpdateBurst. It is part
// of the group's state (mlsGroup.Updates), so it survives a restart and, in cluster
// mode, is one budget on every node: it changes only with an accepted commit, which
// the room's revision check orders.
type mlsBudget struct {
	Tokens float64 `json:"t"`
	At     int64   `json:"at"`
}

// selfUpdateTokens is what is left of a device's budget in g at now.
func (g *mlsGroup) selfUpdateTokens(dev string, now time.Time) float64 {
	b, ok := g.Updates[dev]
	if !ok {
		return selfUpdateBurst
	}
	t := b.Tokens + float64(now.UnixMilli()-b.At)/float64(selfUpdateEvery.Milliseconds())
	return min(t, selfUpdateBurst)
}

// selfUpdateAllowed reports whether c's device may self-update the group now; it
// spends nothing (spendSelfUpdate does, once the commit is accepted), so that stale or
// invalid commits cost no budget.
func (h *Hub) selfUpdateAllowed(c *Client, g *mlsGroup) bool {
	return g.selfUpdateTokens(devKey(c.user.ID, c.device), h.now()) >= 1
}

// spendSelfUpdate spends one self-update of a device in g (the group's next state).
// A budget that has refilled is forgotten, so the map holds only devices that
// self-updated lately, at most one per leaf.
func (g *mlsGroup) spendSelfUpdate(dev string, now time.Time) {
	if g.Updates == nil {
		g.Updates = map[string]mlsBudget{}
	}
	for k := range g.Updates {
		if g.selfUpdateTokens(k, now) >= selfUpdateBurst {
			delete(g.Updates, k)
		}
	}
	g.Updates[dev] = mlsBudget{Tokens: g.selfUpdateTokens(dev, now) - 1, At: now.UnixMilli()}
}

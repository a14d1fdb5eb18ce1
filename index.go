package main

// The hub's indexes, so that finding a user's connections and listing a user's private
// rooms cost what they return instead of a scan of every client or every room. They
// are kept exact at the few places the indexed state changes: a connection is added or
// dropped (indexClient, unindexClient), a room record is installed or dropped
// (putRoom, dropRoom in durable.go call indexRoom and unindexRoom). Nothing else
// writes h.clients or h.meta.

// clientSet is a set of connections.
type clientSet map[*Client]struct{}

// nameSet is a set of room names.
type nameSet map[string]struct{}

// indexClient adds a new connection to the by-id and by-email indexes.
func (h *Hub) indexClient(c *Client) {
	addClientTo(h.byUser, c.user.ID, c)
	if c.user.Email != "" {
		addClientTo(h.byEmail, lowerEmail(c.user.Email), c)
	}
}

// unindexClient removes a dropped connection from the indexes.
func (h *Hub) unindexClient(c *Client) {
	removeClientFrom(h.byUser, c.user.ID, c)
	if c.user.Email != "" {
		removeClientFrom(h.byEmail, lowerEmail(c.user.Email), c)
	}
}

// addClientTo puts c in idx[key].
func addClientTo(idx map[string]clientSet, key string, c *Client) {
	set := idx[key]
	if set == nil {
		set = clientSet{}
		idx[key] = set
	}
	set[c] = struct{}{}
}

// removeClientFrom takes c out of idx[key], dropping the key when its set is empty so
// the index holds only users who are connected.
func removeClientFrom(idx map[string]clientSet, key string, c *Client) {
	if set := idx[key]; set != nil {
		delete(set, c)
		if len(set) == 0 {
			delete(idx, key)
		}
	}
}

// privateKeys are the index keys under which a private room is found: "user:<id>" for
// every user holding a room role (members) and the room's invitation keys as they are
// ("user:<id>" or "email:<address>").
func privateKeys(ri *roomInfo, yield func(string)) {
	for id := range ri.Roles {
		yield("user:" + id)
	}
	for key := range ri.Invites {
		yield(key)
	}
}

// indexRoom adds a room record to the private-room indexes.
func (h *Hub) indexRoom(ri *roomInfo) {
	if !ri.Private {
		return
	}
	h.privateAll[ri.Name] = struct{}{}
	privateKeys(ri, func(key string) {
		set := h.privateOf[key]
		if set == nil {
			set = nameSet{}
			h.privateOf[key] = set
		}
		set[ri.Name] = struct{}{}
	})
}

// unindexRoom removes a room record from the private-room indexes.
func (h *Hub) unindexRoom(ri *roomInfo) {
	if !ri.Private {
		return
	}
	delete(h.privateAll, ri.Name)
	privateKeys(ri, func(key string) {
		if set := h.privateOf[key]; set != nil {
			delete(set, ri.Name)
			if len(set) == 0 {
				delete(h.privateOf, key)
			}
		}
	})
}

// privateRoomsOf lists up to limit private rooms visible to a user: for an admin any
// private room, for others those they belong to or hold a live invitation to (an
// expired invitation stays in the index until its room is next changed, so each hit
// is checked with visible).
func (h *Hub) privateRoomsOf(id identity, limit int) []*roomInfo {
	var out []*roomInfo
	add := func(names nameSet) bool {
		for name := range names {
			if len(out) == limit {
				return false
			}
			if ri := h.visible(id, name); ri != nil && !containsRoom(out, ri) {
				out = append(out, ri)
			}
		}
		return true
	}
	if h.globalRole(id) == roleAdmin {
		add(h.privateAll)
		return out
	}
	if add(h.privateOf["user:"+id.ID]) && id.Email != "" {
		add(h.privateOf["email:"+lowerEmail(id.Email)])
	}
	return out
}

// containsRoom reports whether ri is in infos (a user may be both a member and
// invited by email; the lists are short).
func containsRoom(infos []*roomInfo, ri *roomInfo) bool {
	for _, x := range infos {
		if x == ri {
			return true
		}
	}
	return false
}

// clientsOf returns the open connections of a user (nil when none). The caller must
// not change the set.
func (h *Hub) clientsOf(userID string) clientSet { return h.byUser[userID] }

// clientsWithEmail returns the open connections whose verified email is email.
func (h *Hub) clientsWithEmail(email string) clientSet { return h.byEmail[lowerEmail(email)] }

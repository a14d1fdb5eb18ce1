package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// The rooms index: which rooms and conversations exist, for every node (its `rooms`
// list, and the rooms a node starting up knows). Each room's record is in the room's own keys and changes
// only through the room's log (feed.go); what the index adds is the set of names, kept
// in <prefix>:{g}:rooms and announced through the control log, so a room made or
// deleted on one node is known to every node within about a second, whether or not
// anyone there is in it. A conversation (dm:<hash>) is listed like a room: it is a
// room record like any other, and counts toward -max-rooms as it does on one node.

// OpRoom says a room was made or deleted: Room names it, and every node reads the
// room's record again.
const OpRoom = "room"

// IndexRoom records that room exists (or, with exists false, no longer does) and tells
// every node through the control log.
func (c *Ctl) IndexRoom(ctx context.Context, room string, exists bool) (string, error) {
	if !ValidRoomKey(room) {
		return "", fmt.Errorf("%w: %q", ErrBadRoom, room)
	}
	op := stateOp{"hset", c.keys.Rooms(), room}
	if !exists {
		op.name = "hdel"
	}
	return c.append(ctx, CtlEntry{Op: OpRoom, Room: room}, op)
}

// ErrRoomsFull says the rooms index holds -max-rooms rooms already: ReserveRoom
// listed nothing.
var ErrRoomsFull = errors.New("cluster: the rooms index is at -max-rooms")

// ReserveRoom lists room in the index before its first record is written, unless the
// index already holds max other rooms (ErrRoomsFull): the cap is checked and the name
// listed by one script, so nodes creating rooms at once cannot pass it together. A
// name already listed (a room made again, or one another node made first) takes no
// new place.
func (c *Ctl) ReserveRoom(ctx context.Context, room string, max int) error {
	if !ValidRoomKey(room) {
		return fmt.Errorf("%w: %q", ErrBadRoom, room)
	}
	_, err := c.appendCapped(ctx, max, ErrRoomsFull, CtlEntry{Op: OpRoom, Room: room}, stateOp{"hsetcap", c.keys.Rooms(), room})
	return err
}

// LoadRooms reads the names in the rooms index. A value that fails its check, or is
// filed under another name, is left out and counted.
func (c *Ctl) LoadRooms(ctx context.Context, log *slog.Logger) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, ctlTimeout)
	defer cancel()
	m, err := c.client.Do(ctx, c.client.B().Hgetall().Key(c.keys.Rooms()).Build()).AsStrMap()
	if err != nil {
		return nil, fmt.Errorf("cluster: reading the rooms index: %w", err)
	}
	var names []string
	for field, raw := range m {
		_, e, err := c.open(raw)
		if err == nil && (e.Op != OpRoom || e.Room != field) {
			c.bad.Add(1)
			err = errors.New("filed under another room")
		}
		if err != nil {
			log.Warn("rooms index value dropped", "room", field, "err", err)
			continue
		}
		names = append(names, field)
	}
	return names, nil
}

// OpInvite says someone was invited into Room (Value: whom, and by whom): the invitee's
// connections on every node are told, wherever the room's log is followed.
const OpInvite = "invite"

// OpDM says a message is on its way into conversation Room: every node brings the
// connections of its two members there into it, as one node does (dm.go pullIntoDM),
// though nobody there follows its log yet.
const OpDM = "dm"

// Announce appends an entry about room that changes no state: every node hears of it.
func (c *Ctl) Announce(ctx context.Context, op, room string, value []byte) (string, error) {
	if !ValidRoomKey(room) {
		return "", fmt.Errorf("%w: %q", ErrBadRoom, room)
	}
	return c.append(ctx, CtlEntry{Op: op, Room: room, Value: value})
}

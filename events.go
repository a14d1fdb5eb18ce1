package main

import (
	"encoding/json"
	"strconv"
	"time"
)

// Server-to-client events are built by appending to byte slices rather than by
// marshalling maps: they are on the hot path, and each is encoded once and shared by
// every recipient. Strings that come from users always go through appendJSONString.

// appendJSONString appends s as a JSON string. encoding/json escapes <, > and & as
// well, so even a client that wrongly pastes the JSON into HTML gets no markup.
func appendJSONString(b []byte, s string) []byte {
	enc, _ := json.Marshal(s) // a string always marshals
	return append(b, enc...)
}

// appendObject starts {"type":typ,"room":room, lets fill append more fields, and
// closes the object. An empty room is left out.
func appendObject(b []byte, typ, room string, fill func([]byte) []byte) []byte {
	b = append(b, `{"type":"`...)
	b = append(b, typ...)
	b = append(b, '"')
	if room != "" {
		b = append(b, `,"room":`...)
		b = appendJSONString(b, room)
	}
	b = fill(b)
	return append(b, '}')
}

// errorEvent encodes an `error` event. ref and room are included when set.
func errorEvent(code, message, ref, room string) []byte {
	return appendObject(nil, "error", room, func(b []byte) []byte {
		b = append(b, `,"code":"`...)
		b = append(b, code...)
		b = append(b, `","message":`...)
		b = appendJSONString(b, message)
		if ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, ref)
		}
		return b
	})
}

// rateLimitedEvent is an `error` with code rate_limited and the time to wait.
func rateLimitedEvent(ref string, retry time.Duration) []byte {
	return rateLimitedRoomEvent(ref, "", retry)
}

// rateLimitedRoomEvent is rateLimitedEvent naming the room of the refused request
// (left out when empty).
func rateLimitedRoomEvent(ref, room string, retry time.Duration) []byte {
	return appendObject(nil, "error", room, func(b []byte) []byte {
		b = append(b, `,"code":"`...)
		b = append(b, codeRateLimited...)
		b = append(b, `","message":"slow down","retry_after_ms":`...)
		b = strconv.AppendInt(b, retryMillis(retry), 10)
		if ref != "" {
			b = append(b, `,"ref":`...)
			b = appendJSONString(b, ref)
		}
		return b
	})
}

// retryMillis is a retry hint in milliseconds: at least 1, at most an hour.
func retryMillis(retry time.Duration) int64 {
	ms := retry.Milliseconds()
	if retry < 0 || ms > 3600_000 {
		ms = 3600_000
	}
	return max(ms, 1)
}

// ackEvent confirms a say to its sender with the server's id for it.
func ackEvent(ref, room string, id uint64) []byte {
	return appendObject(nil, "ack", room, func(b []byte) []byte {
		b = append(b, `,"ref":`...)
		b = appendJSONString(b, ref)
		b = append(b, `,"id":`...)
		return strconv.AppendUint(b, id, 10)
	})
}

// presenceEvent announces that a user joined or left a room.
func presenceEvent(room, event string, user []byte) []byte {
	return appendObject(nil, "presence", room, func(b []byte) []byte {
		b = append(b, `,"event":"`...)
		b = append(b, event...)
		b = append(b, `","user":`...)
		return append(b, user...)
	})
}

// userJSON encodes a public identity as {"id":..,"name":..}; it is computed once per
// connection and reused in every message and presence event.
func userJSON(id, name string) []byte {
	return append(appendUserFields(nil, id, name), '}')
}

// appendUserFields appends `{"id":..,"name":..` (the object left open for more fields).
func appendUserFields(b []byte, id, name string) []byte {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, id)
	b = append(b, `,"name":`...)
	return appendJSONString(b, name)
}

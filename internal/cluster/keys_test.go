package cluster

import (
	"errors"
	"strings"
	"testing"
)

// TestKeysUserIDsAreEncoded: user ids from an identity provider may hold braces and
// glob characters (acceptance 16). Two such ids give distinct keys, every key stays
// under the prefix in its own hash tag, and no key holds the raw id.
func TestKeysUserIDsAreEncoded(t *testing.T) {
	k, err := NewKeys("mc")
	if err != nil {
		t.Fatal(err)
	}
	a, b := "https://issuer|a{b}*c", "https://issuer|a{b}*d"
	seen := map[string]bool{}
	for _, id := range []string{a, b} {
		for _, f := range []func(string) (string, error){k.UserConns, k.UserRate} {
			key, err := f(id)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(key, "mc:{u:") || strings.Contains(key, "a{b}") || strings.Count(key, "{") != 1 || strings.Count(key, "}") != 1 {
				t.Errorf("key %q: want one hash tag under mc: and no raw id", key)
			}
			if seen[key] {
				t.Errorf("key %q made twice for different ids", key)
			}
			seen[key] = true
		}
	}
	if _, err := k.UserConns(""); !errors.Is(err, ErrBadUser) {
		t.Errorf("empty user id: %v, want ErrBadUser", err)
	}
}

// TestKeysRecheckRoomNames: a room name that could open a hash tag, a pattern or
// another key kind is refused by every room key builder, although the hub has checked
// it already.
func TestKeysRecheckRoomNames(t *testing.T) {
	k, _ := NewKeys("mc")
	builders := []func(string) (string, error){k.RoomMeta, k.RoomLog, k.RoomChannel, k.RoomInfo, k.RoomRoles, k.RoomBans, k.RoomInvites, k.RoomPresence}
	for _, bad := range []string{"", "a}b", "a{b", "a*", "x:y", "UPPER", strings.Repeat("a", 33), "-lead"} {
		for i, f := range builders {
			if key, err := f(bad); !errors.Is(err, ErrBadRoom) {
				t.Errorf("builder %d accepted room %q as %q (err %v)", i, bad, key, err)
			}
		}
	}
	key, err := k.RoomLog("dev-room_1")
	if err != nil || key != "mc:{r:dev-room_1}:log" {
		t.Fatalf("RoomLog = %q, %v", key, err)
	}
	ch, _ := k.RoomChannel("lobby")
	if room, ok := k.RoomOfChannel(ch); !ok || room != "lobby" {
		t.Errorf("RoomOfChannel(%q) = %q, %v", ch, room, ok)
	}
	for _, ch := range []string{"mc:{r:a*}", "mc:{g}:ctl", "other:{r:lobby}", "mc:{r:}"} {
		if room, ok := k.RoomOfChannel(ch); ok {
			t.Errorf("RoomOfChannel(%q) accepted %q", ch, room)
		}
	}
	for _, p := range []string{"", "m{c", "mc:", "a*"} {
		if _, err := NewKeys(p); !errors.Is(err, ErrBadPrefix) {
			t.Errorf("prefix %q accepted", p)
		}
	}
}

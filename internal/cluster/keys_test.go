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
	for _, ch := range []string{"mc:{r:a*}", "mc:{g}:ctl", "other:{r:lobby}", "mc:{r:}", "mc:{r:dm:0123456789abcdef0123456789ab}"} {
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

// TestKeysConversations: a conversation (dm:<28 hex>) has keys in its own tag {d:<hash>},
// which no room name can make (a room's tag is {r:...}, and a room name holds no ':');
// a name with the prefix but any other hash, or a hash that would open a tag or a
// pattern, is refused by every builder; its channel matches the one pattern and maps
// back to the same name.
func TestKeysConversations(t *testing.T) {
	k, _ := NewKeys("mc")
	const dm = "dm:0123456789abcdef0123456789ab"
	key, err := k.RoomLog(dm)
	if err != nil || key != "mc:{d:0123456789abcdef0123456789ab}:log" {
		t.Fatalf("RoomLog(%q) = %q, %v", dm, key, err)
	}
	ch, _ := k.RoomChannel(dm)
	if room, ok := k.RoomOfChannel(ch); !ok || room != dm {
		t.Errorf("RoomOfChannel(%q) = %q, %v", ch, room, ok)
	}
	if !ValidRoomKey(dm) || !ValidRoomKey("lobby") {
		t.Error("ValidRoomKey refused a conversation or a room")
	}
	builders := []func(string) (string, error){k.RoomMeta, k.RoomLog, k.RoomChannel, k.RoomInfo, k.RoomRoles, k.RoomBans, k.RoomInvites, k.RoomPresence}
	for _, bad := range []string{
		"dm:", "dm:0123456789abcdef0123456789a", "dm:0123456789abcdef0123456789abc",
		"dm:0123456789ABCDEF0123456789ab", "dm:0123456789abcdef0123456789a}", "dm:{123456789abcdef0123456789ab",
		"dm:0123456789abcdef012345678*ab", "d:0123456789abcdef0123456789ab", "dm-0123456789abcdef0123456789ab:",
	} {
		if ValidRoomKey(bad) {
			t.Errorf("ValidRoomKey accepted %q", bad)
		}
		for i, f := range builders {
			if key, err := f(bad); !errors.Is(err, ErrBadRoom) {
				t.Errorf("builder %d accepted %q as %q (err %v)", i, bad, key, err)
			}
		}
	}
	// A room named like the hash is still a room, in the other tag.
	if key, _ := k.RoomLog("0123456789abcdef0123456789ab"); key != "mc:{r:0123456789abcdef0123456789ab}:log" {
		t.Errorf("room named like a hash: %q", key)
	}
	for _, ch := range []string{"mc:{d:0123}", "mc:{d:}", "mc:{x:lobby}", "mc:{d:0123456789abcdef0123456789ab", "mc:{d:0123456789abcdef0123456789a*}"} {
		if room, ok := k.RoomOfChannel(ch); ok {
			t.Errorf("RoomOfChannel(%q) accepted %q", ch, room)
		}
	}
}

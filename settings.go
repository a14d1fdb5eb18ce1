package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Upper bounds on what an admin may set at run time. Zero and negative values are
// refused by Config.validate; these refuse the absurd in the other direction, so a
// typo cannot switch a defence off by making it enormous.
const (
	maxSettingRate     = 1000
	maxSettingBurst    = 10000
	maxSettingByteRate = 16 << 20
	maxSettingChars    = 100000
	maxMOTDChars       = 500
	maxAllowedDomains  = 100
)

// Settings are the server properties an admin may change while it runs. Each change is
// validated as a whole, applied to live connections at once, persisted (it overrides
// the flags after a restart) and written to the audit log.
type Settings struct {
	MsgRate               float64  `json:"msg_rate"`
	MsgBurst              int      `json:"msg_burst"`
	ByteRate              float64  `json:"byte_rate"`
	ByteBurst             int      `json:"byte_burst"`
	UserMsgRate           float64  `json:"user_msg_rate"`
	UserMsgBurst          int      `json:"user_msg_burst"`
	ReadLimit             int64    `json:"read_limit"`
	TextMaxChars          int      `json:"text_max_chars"`
	MembersCanCreateRooms bool     `json:"members_can_create_rooms"`
	AllowedDomains        []string `json:"allowed_domains"`
	MOTD                  string   `json:"motd"`
}

// settingsOf extracts the run-time settings from a configuration.
func settingsOf(c *Config) Settings {
	return Settings{
		MsgRate: c.MsgRate, MsgBurst: c.MsgBurst, ByteRate: c.ByteRate, ByteBurst: c.ByteBurst,
		UserMsgRate: c.UserMsgRate, UserMsgBurst: c.UserMsgBurst, ReadLimit: c.ReadLimit,
		TextMaxChars: c.TextMaxChars, MembersCanCreateRooms: c.MembersCanCreateRooms,
		AllowedDomains: append([]string{}, c.AllowedDomains...), MOTD: c.MOTD,
	}
}

// applyTo returns a copy of c with these settings, validated. c itself is never
// changed: readers hold it without locks.
func (s Settings) applyTo(c *Config) (*Config, error) {
	if s.MsgRate > maxSettingRate || s.UserMsgRate > maxSettingRate {
		return nil, fmt.Errorf("message rates above %d per second are refused", maxSettingRate)
	}
	if s.MsgBurst > maxSettingBurst || s.UserMsgBurst > maxSettingBurst {
		return nil, fmt.Errorf("bursts above %d are refused", maxSettingBurst)
	}
	if s.ByteRate > maxSettingByteRate || s.ByteBurst > maxSettingByteRate {
		return nil, fmt.Errorf("byte rates and bursts above %d are refused", maxSettingByteRate)
	}
	if s.TextMaxChars > maxSettingChars {
		return nil, fmt.Errorf("text_max_chars above %d is refused", maxSettingChars)
	}
	if len([]rune(s.MOTD)) > maxMOTDChars || !isPrintableText(s.MOTD) {
		return nil, fmt.Errorf("motd must be at most %d printable characters", maxMOTDChars)
	}
	if len(s.AllowedDomains) > maxAllowedDomains {
		return nil, fmt.Errorf("at most %d allowed domains", maxAllowedDomains)
	}
	var domains []string
	for _, d := range s.AllowedDomains {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" || strings.ContainsAny(d, " @/\\") || !isPrintable(d) {
			return nil, fmt.Errorf("allowed domain %q is not a domain", d)
		}
		domains = append(domains, d)
	}
	n := *c
	n.MsgRate, n.MsgBurst, n.ByteRate, n.ByteBurst = s.MsgRate, s.MsgBurst, s.ByteRate, s.ByteBurst
	n.UserMsgRate, n.UserMsgBurst = s.UserMsgRate, s.UserMsgBurst
	n.ReadLimit, n.TextMaxChars = s.ReadLimit, s.TextMaxChars
	n.MembersCanCreateRooms, n.AllowedDomains, n.MOTD = s.MembersCanCreateRooms, domains, s.MOTD
	if err := n.validate(); err != nil {
		return nil, err
	}
	return &n, nil
}

// settingFlags pairs each run-time setting with the flag it overrides, to tell the
// operator at start-up when a stored setting beats a flag they gave (see
// warnOverriddenFlags). The MOTD's text is not logged, only that it differs.
var settingFlags = []struct {
	flag  string
	value func(Settings) any
	hide  bool
}{
	{"msg-rate", func(s Settings) any { return s.MsgRate }, false},
	{"msg-burst", func(s Settings) any { return s.MsgBurst }, false},
	{"byte-rate", func(s Settings) any { return s.ByteRate }, false},
	{"byte-burst", func(s Settings) any { return s.ByteBurst }, false},
	{"user-msg-rate", func(s Settings) any { return s.UserMsgRate }, false},
	{"user-msg-burst", func(s Settings) any { return s.UserMsgBurst }, false},
	{"read-limit", func(s Settings) any { return s.ReadLimit }, false},
	{"text-max-chars", func(s Settings) any { return s.TextMaxChars }, false},
	{"members-create-rooms", func(s Settings) any { return s.MembersCanCreateRooms }, false},
	{"allowed-domains", func(s Settings) any { return strings.Join(s.AllowedDomains, ",") }, false},
	{"motd", func(s Settings) any { return s.MOTD }, true},
}

// warnOverriddenFlags logs, at Warn, every setting stored by an admin at run time
// that replaces a different value the operator gave explicitly as a flag (or its
// environment twin): otherwise a changed flag would seem to be ignored without a word.
func warnOverriddenFlags(log *slog.Logger, flags, stored *Config) {
	given, got := settingsOf(flags), settingsOf(stored)
	for _, sf := range settingFlags {
		if !flags.explicit[sf.flag] {
			continue
		}
		want, have := sf.value(given), sf.value(got)
		if fmt.Sprint(want) == fmt.Sprint(have) {
			continue
		}
		if sf.hide {
			log.Warn("a setting stored at run time overrides the flag", "flag", sf.flag)
			continue
		}
		log.Warn("a setting stored at run time overrides the flag", "flag", sf.flag, "flag_value", want, "stored_value", have)
	}
}

// isPrintableText allows newlines and tabs but no other control or bidi characters.
func isPrintableText(s string) bool {
	return isPrintable(strings.NewReplacer("\n", "", "\t", "").Replace(s))
}

// auditEntry is one line of the audit log: who changed what, when, from what to what.
type auditEntry struct {
	Time   int64           `json:"ts"`
	Actor  string          `json:"actor"`
	Action string          `json:"action"`
	Target string          `json:"target,omitempty"`
	Old    json.RawMessage `json:"old,omitempty"`
	New    json.RawMessage `json:"new,omitempty"`
}

// newAudit builds an audit entry, encoding old and new values as JSON.
func newAudit(now time.Time, actor, action, target string, old, new any) auditEntry {
	enc := func(v any) json.RawMessage {
		if v == nil {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		return b
	}
	return auditEntry{Time: now.UnixMilli(), Actor: actor, Action: action, Target: target, Old: enc(old), New: enc(new)}
}

// errSettingsJSON is returned for a settings object that is not well-formed.
var errSettingsJSON = errors.New("settings must be an object of known fields")

// mergeSettings overlays the fields present in raw onto base, refusing unknown fields,
// so an admin can change one value without restating the others.
func mergeSettings(base Settings, raw json.RawMessage) (Settings, error) {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&base); err != nil {
		return base, errSettingsJSON
	}
	return base, nil
}

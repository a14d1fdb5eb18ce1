package main

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// testFilter is a filter with the default limits and one blocked pattern.
func testFilter() *filter {
	cfg := defaultConfig()
	cfg.TextMaxChars = 20
	cfg.BlockedPatterns = []string{`buy\s+cheap`}
	return newFilter(cfg, nil)
}

// TestParseEnvelopeRefusals attacks the parser with malformed and hostile envelopes and
// checks each gets its stable error code.
func TestParseEnvelopeRefusals(t *testing.T) {
	f := testFilter()
	cases := []struct {
		name, line, code string
	}{
		{"not json", `hello`, codeBadJSON},
		{"array", `[1,2]`, codeBadJSON},
		{"truncated", `{"type":"say"`, codeBadJSON},
		{"empty", ``, codeBadJSON},
		{"number text", `{"type":"say","room":"lobby","text":5}`, codeBadEnvelope},
		{"object type", `{"type":{},"room":"lobby"}`, codeBadEnvelope},
		{"missing type", `{"room":"lobby"}`, codeBadEnvelope},
		{"unknown type", `{"type":"shutdown"}`, codeUnknownType},
		{"long ref", `{"type":"rooms","ref":"` + strings.Repeat("r", maxRef+1) + `"}`, codeBadEnvelope},
		{"control in ref", `{"type":"rooms","ref":"a\u0007b"}`, codeBadEnvelope},
		{"no room", `{"type":"join"}`, codeBadRoom},
		{"upper room", `{"type":"join","room":"Lobby"}`, codeBadRoom},
		{"path room", `{"type":"join","room":"../etc"}`, codeBadRoom},
		{"long room", `{"type":"join","room":"` + strings.Repeat("a", maxRoomName+1) + `"}`, codeBadRoom},
		{"dash first", `{"type":"leave","room":"-x"}`, codeBadRoom},
		{"html room", `{"type":"say","room":"<b>","text":"hi"}`, codeBadRoom},
		{"empty text", `{"type":"say","room":"lobby","text":""}`, codeEmptyText},
		{"only controls", `{"type":"say","room":"lobby","text":"\u0000\u0001 \u202e"}`, codeEmptyText},
		{"too long", `{"type":"say","room":"lobby","text":"` + strings.Repeat("é", 21) + `"}`, codeTextTooLong},
		{"blocked", `{"type":"say","room":"lobby","text":"BUY   cheap pills"}`, codeBlockedContent},
		{"no user", `{"type":"kick","room":"lobby"}`, codeBadEnvelope},
		{"user with space", `{"type":"kick","room":"lobby","user":"dev:a b"}`, codeBadEnvelope},
		{"user with control", `{"type":"ban","room":"lobby","user":"dev:a\u0007"}`, codeBadEnvelope},
		{"user with bidi", `{"type":"set_role","user":"dev:\u202eb","role":"member"}`, codeBadEnvelope},
		{"long user", `{"type":"global_ban","user":"` + strings.Repeat("u", maxUserID+1) + `"}`, codeBadEnvelope},
		// One refusal per row rule the cases above do not reach (the rows in commands.go).
		{"internal type", `{"type":"file_data","room":"lobby"}`, codeUnknownType},
		{"create a dm name", `{"type":"create","room":"dm:a"}`, codeBadRoom},
		{"lock without locked", `{"type":"lock","room":"lobby"}`, codeBadEnvelope},
		{"topic without topic", `{"type":"topic","room":"lobby"}`, codeBadEnvelope},
		{"long topic", `{"type":"create","room":"x","topic":"` + strings.Repeat("t", maxTopicChars+1) + `"}`, codeBadEnvelope},
		{"bad room role", `{"type":"set_room_role","room":"lobby","user":"dev:a","role":"owner"}`, codeBadEnvelope},
		{"bad global role", `{"type":"set_role","user":"dev:a","role":"owner"}`, codeBadEnvelope},
		{"long reason", `{"type":"global_ban","user":"dev:a","reason":"` + strings.Repeat("r", maxReason+1) + `"}`, codeBadEnvelope},
		{"settings not an object", `{"type":"set_settings","settings":[1]}`, codeBadEnvelope},
		{"invite both", `{"type":"invite","room":"lobby","user":"dev:a","email":"a@b"}`, codeBadEnvelope},
		{"open_dm neither", `{"type":"open_dm"}`, codeBadEnvelope},
		{"open_dm bad email", `{"type":"open_dm","email":"nobody"}`, codeBadEnvelope},
		{"delete without id", `{"type":"delete","room":"lobby"}`, codeBadEnvelope},
		{"fetch_file without id", `{"type":"fetch_file","room":"lobby"}`, codeBadEnvelope},
		{"bad block", `{"type":"dm_prefs","block":"dev:a b"}`, codeBadEnvelope},
		{"bad device to revoke", `{"type":"revoke_device","device":"x"}`, codeBadDevice},
		{"devices user and users", `{"type":"devices","user":"dev:a","users":["dev:b"]}`, codeBadEnvelope},
		{"certify without dik", `{"type":"certify_device","device":"abcdefgh"}`, codeBadEnvelope},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := f.parseEnvelope([]byte(tc.line))
			if err == nil {
				t.Fatalf("accepted %q", tc.line)
			}
			if err.Code != tc.code {
				t.Fatalf("code %s, want %s", err.Code, tc.code)
			}
		})
	}
}

// TestParseEnvelopeAccepts checks valid envelopes pass, and that a client-supplied
// sender has nowhere to go.
func TestParseEnvelopeAccepts(t *testing.T) {
	f := testFilter()
	env, err := f.parseEnvelope([]byte(`{"type":"say","room":"dev-talk_2","text":"  hi\r\nthere\t!  ","ref":"7","from":{"id":"admin"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if env.Text != "hi\nthere\t!" || env.Room != "dev-talk_2" || env.Ref != "7" {
		t.Fatalf("got %+v", env)
	}
	for _, line := range []string{`{"type":"join","room":"a"}`, `{"type":"leave","room":"z9"}`, `{"type":"rooms"}`} {
		if _, err := f.parseEnvelope([]byte(line)); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
	}
}

// TestCleanText checks control and bidi characters are removed and newline and tab kept.
func TestCleanText(t *testing.T) {
	f := testFilter()
	cases := map[string]string{
		"a\u0000b\u001bc":     "abc",
		"line1\nline2\ttab":   "line1\nline2\ttab",
		"x\r\ny\rz":           "x\nyz",
		"evil\u202egnp.exe":   "evilgnp.exe",
		"\u2066iso\u2069late": "isolate",
		"del\u007fc1\u0085":   "delc1",
		"  spaced  ":          "spaced",
		"<b>markup</b> stays": "<b>markup</b> stays",
	}
	for in, want := range cases {
		got, err := f.cleanText(in)
		if err != nil || got != want {
			t.Errorf("cleanText(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// FuzzParseEnvelope checks the parser never panics and that whatever it accepts is
// safe to relay. The oracle is written from PROTOCOL.md, not from filter.go: its own
// list of types, its own room pattern, its own text cleaning and cap (testFilter's 20
// characters and pattern), so a bug in a production helper cannot hide itself.
func FuzzParseEnvelope(f *testing.F) {
	seeds := []string{
		`{"type":"say","room":"lobby","text":"hello"}`,
		`{"type":"join","room":"a-b_c"}`,
		`{"type":"say","room":"lobby","text":"\u202eabc\u0000"}`,
		`{"type":"say","room":"lobby","text":"x","from":{"id":"root"}}`,
		`{"type":"say","room":"lobby","text":"\r\n\r\n"}`,
		`{"type":"say","room":"lobby","text":"buy  CHEAP"}`,
		`{"type":"say","room":"lobby","text":"\u2067x\u0085y\u007f"}`,
		`{"type":1}`, `{`, `null`, `{"type":"say","type":"join","room":"x"}`,
		`{"type":"rooms","ref":"\u0007"}`, `{"type":"leave","room":"_x"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	flt := testFilter()
	roomRe := regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,31}$`)
	blocked := regexp.MustCompile(`(?i)buy\s+cheap`)
	namesRoom := map[string]bool{"join": true, "leave": true, "say": true, "create": true, "invite": true,
		"kick": true, "ban": true, "unban": true, "set_room_role": true, "lock": true, "topic": true,
		"delete_room": true, "file": true}
	clientTypes := map[string]bool{"rooms": true, "set_role": true, "global_ban": true, "global_unban": true,
		"get_settings": true, "set_settings": true, "audit": true}
	for typ := range namesRoom {
		clientTypes[typ] = true
	}
	// unsafe reports the runes PROTOCOL.md says never reach another client: C0 and C1
	// controls and DEL (but newline and tab in text), and the bidi embeddings,
	// overrides and isolates.
	unsafe := func(r rune, inText bool) bool {
		switch {
		case inText && (r == '\n' || r == '\t'):
			return false
		case r <= 0x1f, r >= 0x7f && r <= 0x9f:
			return true
		case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return true
		}
		return false
	}
	clean := func(s string) string {
		var out []rune
		for _, r := range s {
			if !unsafe(r, true) {
				out = append(out, r)
			}
		}
		return strings.TrimSpace(string(out))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		if !utf8.Valid(line) {
			return // readPump closes with 1007 before parsing
		}
		env, err := flt.parseEnvelope(line)
		if err != nil {
			if err.Code == "" || err.Message == "" {
				t.Fatalf("error without code or message: %+v", err)
			}
			return
		}
		var raw struct {
			Type string `json:"type"`
			Room string `json:"room"`
			Text string `json:"text"`
			Ref  string `json:"ref"`
		}
		if json.Unmarshal(bytes.TrimSpace(line), &raw) != nil {
			t.Fatalf("accepted %q, which does not decode as an envelope", line)
		}
		if !clientTypes[env.Type] || env.Type != raw.Type {
			t.Fatalf("accepted type %q", env.Type)
		}
		if env.Ref != raw.Ref || utf8.RuneCountInString(env.Ref) > 64 {
			t.Fatalf("accepted ref %q", env.Ref)
		}
		for _, r := range env.Ref {
			if unsafe(r, false) {
				t.Fatalf("accepted a ref with %U", r)
			}
		}
		if namesRoom[env.Type] && !roomRe.MatchString(env.Room) {
			t.Fatalf("accepted room %q for %s", env.Room, env.Type)
		}
		if env.Type == "say" {
			want := clean(raw.Text)
			if env.Text != want {
				t.Fatalf("text %q cleaned to %q, want %q", raw.Text, env.Text, want)
			}
			if want == "" || utf8.RuneCountInString(want) > 20 || blocked.MatchString(want) {
				t.Fatalf("accepted text %q: empty, over 20 characters or blocked", want)
			}
		}
	})
}

// TestParseEnvelopeCleansOneLineFields: topics and ban reasons reach other clients, so
// they lose control, bidi and newline characters like message text does, and their
// caps hold after cleaning.
func TestParseEnvelopeCleansOneLineFields(t *testing.T) {
	f := testFilter()
	env, err := f.parseEnvelope([]byte(`{"type":"topic","room":"lobby","topic":" new\u202e topic\n\u0007 "}`))
	if err != nil || *env.Topic != "new topic" {
		t.Fatalf("topic cleaned to %q (%v), want %q", *env.Topic, err, "new topic")
	}
	env, err = f.parseEnvelope([]byte(`{"type":"create","room":"r","topic":"\u2066a\u2069\tb"}`))
	if err != nil || *env.Topic != "ab" {
		t.Fatalf("create topic cleaned to %q (%v), want %q", *env.Topic, err, "ab")
	}
	env, err = f.parseEnvelope([]byte(`{"type":"global_ban","user":"dev:x","reason":"spam\r\n\u202eevil"}`))
	if err != nil || env.Reason != "spamevil" {
		t.Fatalf("reason cleaned to %q (%v), want %q", env.Reason, err, "spamevil")
	}
	long := `{"type":"topic","room":"lobby","topic":"` + strings.Repeat("t", maxTopicChars+1) + `"}`
	if _, err := f.parseEnvelope([]byte(long)); err == nil || err.Code != codeBadEnvelope {
		t.Fatalf("a topic over %d characters: %v, want bad_envelope", maxTopicChars, err)
	}
}

package main

import (
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
// safe to relay: valid UTF-8, within the length cap, free of control and bidi
// characters other than newline and tab, with a valid room.
func FuzzParseEnvelope(f *testing.F) {
	seeds := []string{
		`{"type":"say","room":"lobby","text":"hello"}`,
		`{"type":"join","room":"a-b_c"}`,
		`{"type":"say","room":"lobby","text":"\u202eabc\u0000"}`,
		`{"type":"say","room":"lobby","text":"x","from":{"id":"root"}}`,
		`{"type":"say","room":"lobby","text":"\r\n\r\n"}`,
		`{"type":1}`, `{`, `null`, `{"type":"say","type":"join","room":"x"}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	flt := testFilter()
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
		if env.Type == "say" {
			if env.Text == "" || utf8.RuneCountInString(env.Text) > flt.textMaxChars() || !utf8.ValidString(env.Text) {
				t.Fatalf("accepted bad text %q", env.Text)
			}
			for _, r := range env.Text {
				if (isControl(r) && r != '\n' && r != '\t') || isBidiControl(r) {
					t.Fatalf("accepted text with %U", r)
				}
			}
		}
		if needsRoom[env.Type] && validRoom(env.Room) != nil {
			t.Fatalf("accepted bad room %q", env.Room)
		}
	})
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"
)

// Validation limits that are part of the protocol rather than operator settings.
const (
	// maxRoomName is the longest room name, in bytes (room names are ASCII).
	maxRoomName = 32
	// maxRef is the longest client-chosen ref, in characters.
	maxRef = 64
)

// Error codes sent in `error` events. They are part of the protocol (PROTOCOL.md):
// clients switch on them, so they are never renamed.
const (
	codeBadJSON        = "bad_json"
	codeBadEnvelope    = "bad_envelope"
	codeUnknownType    = "unknown_type"
	codeBadRoom        = "bad_room"
	codeNotInRoom      = "not_in_room"
	codeTooManyRooms   = "too_many_rooms"
	codeRoomFull       = "room_full"
	codeEmptyText      = "empty_text"
	codeTextTooLong    = "text_too_long"
	codeBlockedContent = "blocked_content"
	codeRateLimited    = "rate_limited"
)

// protoError is a refusal that goes back to the client as an `error` event.
type protoError struct {
	Code    string
	Message string
}

func (e *protoError) Error() string { return e.Code + ": " + e.Message }

// newProtoError builds a protoError with a formatted human message.
func newProtoError(code, format string, args ...any) *protoError {
	return &protoError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// envelope is one client-to-server object as it arrives. Fields the server owns
// (from, id, ts) are deliberately absent, so a client cannot set them.
type envelope struct {
	Type string `json:"type"`
	Room string `json:"room"`
	Text string `json:"text"`
	Ref  string `json:"ref"`
}

// filter validates and cleans what clients send. It is immutable after construction
// and shared by every readPump, so filtering runs on all cores, not in the hub.
type filter struct {
	textMaxChars int
	blocked      []*regexp.Regexp
}

// compilePatterns compiles the operator's blocked patterns, case-insensitively.
func compilePatterns(patterns []string) ([]*regexp.Regexp, error) {
	var out []*regexp.Regexp
	for _, p := range patterns {
		re, err := regexp.Compile("(?i)" + p)
		if err != nil {
			return nil, fmt.Errorf("blocked pattern %q: %w", p, err)
		}
		out = append(out, re)
	}
	return out, nil
}

// newFilter builds a filter from the configuration (already validated).
func newFilter(cfg *Config) *filter {
	blocked, _ := compilePatterns(cfg.BlockedPatterns)
	return &filter{textMaxChars: cfg.TextMaxChars, blocked: blocked}
}

// parseEnvelope decodes and validates one line from a client. The line is known to be
// valid UTF-8 (readPump checks the whole frame first). On success the envelope's text,
// when present, is already cleaned.
func (f *filter) parseEnvelope(line []byte) (*envelope, *protoError) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 || line[0] != '{' {
		return nil, newProtoError(codeBadJSON, "expected a JSON object")
	}
	var env envelope
	if err := json.Unmarshal(line, &env); err != nil {
		if _, ok := err.(*json.UnmarshalTypeError); ok {
			return nil, newProtoError(codeBadEnvelope, "a field has the wrong type")
		}
		return nil, newProtoError(codeBadJSON, "not valid JSON")
	}
	if utf8.RuneCountInString(env.Ref) > maxRef || !isPrintable(env.Ref) {
		// Drop the bad ref so the error we send does not echo it.
		env.Ref = ""
		return &env, newProtoError(codeBadEnvelope, "ref must be at most %d printable characters", maxRef)
	}
	switch env.Type {
	case "join", "leave":
		if err := validRoom(env.Room); err != nil {
			return &env, err
		}
	case "say":
		if err := validRoom(env.Room); err != nil {
			return &env, err
		}
		text, err := f.cleanText(env.Text)
		if err != nil {
			return &env, err
		}
		env.Text = text
	case "rooms":
	case "":
		return &env, newProtoError(codeBadEnvelope, "missing type")
	default:
		return &env, newProtoError(codeUnknownType, "unknown type")
	}
	return &env, nil
}

// validRoom accepts 1-32 characters of a-z, 0-9, '-' and '_', starting with a letter or
// digit. Lower case only, so "Lobby" and "lobby" cannot be two look-alike rooms.
func validRoom(name string) *protoError {
	if len(name) == 0 || len(name) > maxRoomName {
		return newProtoError(codeBadRoom, "room names are 1 to %d characters", maxRoomName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return newProtoError(codeBadRoom, "room names use a-z, 0-9, - and _, and start with a letter or digit")
		}
	}
	return nil
}

// isPrintable reports whether s has no control or bidi-control characters.
func isPrintable(s string) bool {
	for _, r := range s {
		if isControl(r) || isBidiControl(r) {
			return false
		}
	}
	return true
}

// isControl reports C0 and C1 control characters and DEL.
func isControl(r rune) bool {
	return r < 0x20 || (r >= 0x7f && r <= 0x9f)
}

// isBidiControl reports the embedding, override and isolate characters that can make
// text display in a different order than it is stored ("Trojan Source").
func isBidiControl(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
}

// cleanText normalises line endings, removes control characters (keeping newline and
// tab) and bidi controls, trims, then enforces the length cap and blocked patterns.
func (f *filter) cleanText(s string) (string, *protoError) {
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == '\n' || r == '\t':
			b.WriteRune(r)
		case isControl(r), isBidiControl(r):
			// Dropped. This includes '\r', so "\r\n" keeps only its "\n".
		default:
			b.WriteRune(r)
		}
	}
	text := strings.TrimSpace(b.String())
	if text == "" {
		return "", newProtoError(codeEmptyText, "message is empty")
	}
	if n := utf8.RuneCountInString(text); n > f.textMaxChars {
		return "", newProtoError(codeTextTooLong, "message has %d characters; the limit is %d", n, f.textMaxChars)
	}
	for _, re := range f.blocked {
		if re.MatchString(text) {
			return "", newProtoError(codeBlockedContent, "message contains blocked content")
		}
	}
	return text, nil
}

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"unicode/utf8"

	"modified-chat/internal/keydir"
)

// Validation limits that are part of the protocol rather than operator settings.
const (
	// maxRoomName is the longest room name, in bytes (room names are ASCII).
	maxRoomName = 32
	// maxRef is the longest client-chosen ref, in characters.
	maxRef = 64
)

// protoError is a refusal that goes back to the client as an `error` event.
type protoError struct {
	Code    string
	Message string
}

// Error makes a protoError usable as an error in logs.
func (e *protoError) Error() string { return e.Code + ": " + e.Message }

// newProtoError builds a protoError with a formatted human message.
func newProtoError(code, format string, args ...any) *protoError {
	return &protoError{Code: code, Message: fmt.Sprintf(format, args...)}
}

// envelope is one client-to-server object as it arrives. Fields the server owns
// (from, id, ts) are deliberately absent, so a client cannot set them.
type envelope struct {
	Type     string          `json:"type"`
	Room     string          `json:"room"`
	Text     string          `json:"text"`
	Ref      string          `json:"ref"`
	Private  bool            `json:"private"`
	User     string          `json:"user"`
	Email    string          `json:"email"`
	Role     string          `json:"role"`
	Topic    *string         `json:"topic"`
	Locked   *bool           `json:"locked"`
	Reason   string          `json:"reason"`
	Limit    int             `json:"limit"`
	Settings json.RawMessage `json:"settings"`
	// Block, Unblock and RefuseStrangers change whom the user takes direct
	// messages from (dm_prefs).
	Block           string `json:"block"`
	Unblock         string `json:"unblock"`
	RefuseStrangers *bool  `json:"refuse_strangers"`
	// After, on a join or history, asks for the messages after this id (a
	// reconnecting client, or the next page).
	After *uint64 `json:"after"`
	// ID names a message, on a fetch_file or a delete.
	ID uint64 `json:"id"`
	// Name, Mime and Size announce a file whose bytes follow in one binary frame.
	Name string `json:"name"`
	Mime string `json:"mime"`
	Size int64  `json:"size"`
	// Sig signs a say or file (devices.go); URK, Device, DIK, Created and Cert are a
	// device registration, Device alone names a device to revoke.
	Sig     *sigEnvelope `json:"sig"`
	URK     string       `json:"urk"`
	Device  string       `json:"device"`
	DIK     string       `json:"dik"`
	Created uint64       `json:"created"`
	Cert    string       `json:"cert"`
	// Users asks `devices` about several users at once.
	Users []string `json:"users"`
	// E2EE rooms (e2ee.go): E2EE on create and open_dm (a pointer: open_dm tells an
	// absent e2ee, which means "when both can", from false); Epoch, the MLS bytes in
	// base64 (or Bin, their length in the binary frame that follows), KPs for kp_upload.
	E2EE       *bool    `json:"e2ee"`
	Epoch      *uint64  `json:"epoch"`
	KPs        []string `json:"kps"`
	GroupInfo  string   `json:"group_info"`
	KeyPackage string   `json:"key_package"`
	Commit     string   `json:"commit"`
	Welcome    string   `json:"welcome"`
	Msg        string   `json:"msg"`
	Bin        int      `json:"bin"`
	// sig and upload are Sig and the registration, decoded by checkDeviceFields;
	// mls the MLS bytes, decoded by checkMLSFields.
	sig    *signature
	upload *keydir.Upload
	mls    *mlsPayload
}

// Field limits for commands.
const (
	maxUserID     = 256
	maxEmail      = 254
	maxReason     = 200
	maxAuditLimit = 200
	maxSettings   = 4 << 10
)

// filter validates and cleans what clients send. It is immutable after construction
// and shared by every readPump, so filtering runs on all cores, not in the hub.
type filter struct {
	// textMaxChars reads the live limit, which an admin may change at run time.
	textMaxChars func() int
	fileMaxBytes func() int64
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

// newFilter builds a filter from the configuration (already validated). settings,
// when not nil, supplies the live limits.
func newFilter(cfg *Config, settings func() *Config) *filter {
	blocked, _ := compilePatterns(cfg.BlockedPatterns)
	if settings == nil {
		settings = func() *Config { return cfg }
	}
	return &filter{
		textMaxChars: func() int { return settings().TextMaxChars },
		fileMaxBytes: func() int64 { return settings().FileMaxBytes },
		blocked:      blocked,
	}
}

// parseEnvelope decodes and validates one line from a client. The line is known to be
// valid UTF-8 (readPump checks the whole frame first). On success the envelope's text,
// when present, is already cleaned. Permissions are not checked here: that needs the
// hub's state and happens in its command table.
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
	if err := f.checkFields(&env); err != nil {
		return &env, err
	}
	return &env, nil
}

// checkFields validates, bounds and cleans the fields of a command, as its row in the
// command table lists them (fields.go), in the row's order: the first refusal is the
// answer. A type with no row, or an internal one, is unknown_type.
func (f *filter) checkFields(env *envelope) *protoError {
	if env.Type == "" {
		return newProtoError(codeBadEnvelope, "missing type")
	}
	spec, ok := commandTable[env.Type]
	if !ok || spec.internal {
		return newProtoError(codeUnknownType, "unknown type")
	}
	for _, fs := range spec.fields {
		if fs.check == nil {
			continue
		}
		if err := fs.check(f, env); err != nil {
			return err
		}
	}
	return nil
}

// checkEmail accepts what could be an email address, bounded.
func checkEmail(e string) *protoError {
	if len(e) > maxEmail || !strings.Contains(e, "@") || !isPrintable(e) || strings.ContainsAny(e, " ,") {
		return newProtoError(codeBadEnvelope, "email is not an address")
	}
	return nil
}

// validUserID accepts a user id as the server hands them out: printable, bounded.
func validUserID(id string) *protoError {
	if id == "" || len(id) > maxUserID || !isPrintable(id) || strings.ContainsAny(id, " \n") {
		return newProtoError(codeBadEnvelope, "user must be a user id")
	}
	return nil
}

// cleanLine is cleanText for one-line fields (topics, reasons): controls, bidi
// controls and newlines removed, space trimmed.
func cleanLine(s string) string {
	var b strings.Builder
	for _, r := range s {
		if !isControl(r) && !isBidiControl(r) {
			b.WriteRune(r)
		}
	}
	return strings.TrimSpace(b.String())
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
	if n, limit := utf8.RuneCountInString(text), f.textMaxChars(); n > limit {
		return "", newProtoError(codeTextTooLong, "message has %d characters; the limit is %d", n, limit)
	}
	for _, re := range f.blocked {
		if re.MatchString(text) {
			return "", newProtoError(codeBlockedContent, "message contains blocked content")
		}
	}
	return text, nil
}

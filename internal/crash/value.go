package crash

import (
	"fmt"
	"unicode/utf8"
)

// ValueMax caps the text of a panic's value in a log line, in bytes.
const ValueMax = 200

// Value is how a recovered panic value goes into a log line: its Go type, and for an
// error or a string (what panics are built from: panic(err), panic("..."), the
// runtime's own errors such as an index out of range) its text cut to ValueMax bytes,
// at a character boundary, with "…" when cut. Any other value is logged by its type
// alone: a struct, a map or a []byte may hold what a user sent (message text, a
// record), and printing it whole would put that in the log. A string or error built
// from user data can still carry some of it, but at most ValueMax bytes, and the stack
// (logged beside) says where it came from, which is what a report needs.
func Value(v any) (kind, text string) {
	kind = fmt.Sprintf("%T", v)
	switch x := v.(type) {
	case error:
		text = x.Error()
	case string:
		text = x
	default:
		return kind, ""
	}
	if len(text) <= ValueMax {
		return kind, text
	}
	cut := ValueMax
	for cut > 0 && !utf8.RuneStart(text[cut]) {
		cut--
	}
	return kind, text[:cut] + "…"
}

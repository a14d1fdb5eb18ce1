package crash

import (
	"errors"
	"strings"
	"testing"
)

// TestValue: a panic's value is logged by its type, with the text of an error or a
// string cut to ValueMax bytes at a character boundary ("…" marks the cut), and
// nothing of any other value: a struct or a []byte built from what a user sent leaves
// only its type in the log. A runtime error keeps its message whole.
func TestValue(t *testing.T) {
	type record struct{ Text string }
	var runtimeErr error
	func() {
		defer func() { runtimeErr = recover().(error) }()
		var s []int
		_ = s[3]
	}()
	long := strings.Repeat("a", ValueMax-1) + "é and the rest of a message"
	for _, tc := range []struct {
		v          any
		kind, text string
	}{
		{"plain", "string", "plain"},
		{errors.New("bad record"), "*errors.errorString", "bad record"},
		{runtimeErr, "runtime.boundsError", "runtime error: index out of range [3] with length 0"},
		{long, "string", strings.Repeat("a", ValueMax-1) + "…"},
		{errors.New(long), "*errors.errorString", strings.Repeat("a", ValueMax-1) + "…"},
		{record{Text: "secret message"}, "crash.record", ""},
		{[]byte("secret bytes"), "[]uint8", ""},
		{42, "int", ""},
	} {
		kind, text := Value(tc.v)
		if kind != tc.kind || text != tc.text {
			t.Errorf("Value(%T) = %q, %q; want %q, %q", tc.v, kind, text, tc.kind, tc.text)
		}
		if len(text) > ValueMax+len("…") {
			t.Errorf("Value(%T) text is %d bytes, over the cap", tc.v, len(text))
		}
	}
}

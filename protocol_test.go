package main

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestCloseCodesMatchProtocol: the close codes PROTOCOL.md documents are exactly the
// ones the server's code sends, so a client is never promised a close it cannot get
// (the server-wide cap is refused before the upgrade with 503, never with 1013) and
// never gets one the contract does not name.
func TestCloseCodesMatchProtocol(t *testing.T) {
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	section := string(doc[strings.Index(string(doc), "## Close codes"):])
	documented := map[int]bool{}
	for _, m := range regexp.MustCompile(`(?m)^\| (\d{4}) \|`).FindAllStringSubmatch(section, -1) {
		n, _ := strconv.Atoi(m[1])
		documented[n] = true
	}
	if strings.Contains(string(doc), "1013") {
		t.Error("PROTOCOL.md still mentions 1013")
	}

	// Every websocket.Close* code named in the server's own files, except where it
	// only classifies a close the peer sent.
	codes := map[string]int{
		"CloseNormalClosure": websocket.CloseNormalClosure, "CloseGoingAway": websocket.CloseGoingAway,
		"CloseUnsupportedData": websocket.CloseUnsupportedData, "CloseInvalidFramePayloadData": websocket.CloseInvalidFramePayloadData,
		"ClosePolicyViolation": websocket.ClosePolicyViolation, "CloseMessageTooBig": websocket.CloseMessageTooBig,
		"CloseTryAgainLater": websocket.CloseTryAgainLater, "CloseInternalServerErr": websocket.CloseInternalServerErr,
		"CloseServiceRestart": websocket.CloseServiceRestart, "CloseProtocolError": websocket.CloseProtocolError,
	}
	sent := map[int]bool{}
	files, _ := filepath.Glob("*.go")
	name := regexp.MustCompile(`websocket\.(Close[A-Za-z]+)`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(src), "\n") {
			code := strings.TrimSpace(strings.SplitN(line, "//", 2)[0])
			if strings.Contains(code, "IsUnexpectedCloseError") {
				continue
			}
			for _, m := range name.FindAllStringSubmatch(code, -1) {
				if m[1] == "CloseMessage" {
					continue // a frame type, not a code
				}
				n, ok := codes[m[1]]
				if !ok {
					t.Fatalf("%s:%d: unknown close constant %s", f, i+1, m[1])
				}
				sent[n] = true
			}
		}
	}
	keys := func(m map[int]bool) []int {
		var out []int
		for k := range m {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	// The application's own codes (4000–4999) are named constants close<Name>.
	own := regexp.MustCompile(`(?m)^\s*close[A-Z][A-Za-z]* *= *(4\d{3})\b`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, _ := os.ReadFile(f)
		for _, m := range own.FindAllStringSubmatch(string(src), -1) {
			n, _ := strconv.Atoi(m[1])
			sent[n] = true
		}
	}
	if !slices.Equal(keys(documented), keys(sent)) {
		t.Fatalf("PROTOCOL.md documents close codes %v, the server sends %v", keys(documented), keys(sent))
	}
}

// protocolSection returns the text of PROTOCOL.md from a heading to the next heading
// of the same or a higher level.
func protocolSection(t *testing.T, heading string) string {
	t.Helper()
	doc, err := os.ReadFile("PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(doc)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("PROTOCOL.md has no %q", heading)
	}
	s = s[i+len(heading)+2:]
	level := heading[:strings.IndexByte(heading, ' ')+1]
	for j := 0; j < len(s); {
		k := strings.Index(s[j:], "\n#")
		if k < 0 {
			break
		}
		j += k + 1
		rest := s[j:]
		if strings.HasPrefix(rest, level) || (len(level) > 2 && strings.HasPrefix(rest, level[1:])) {
			return s[:j]
		}
	}
	return s
}

// tableRows returns the cells of a markdown table's body rows in a section, split on
// the column bars (cells keep their inner markup; none holds a bar).
func tableRows(section string) [][]string {
	var rows [][]string
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "| ") || strings.HasPrefix(line, "|---") {
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|") {
			cells = append(cells, strings.TrimSpace(c))
		}
		rows = append(rows, cells)
	}
	if len(rows) > 0 {
		rows = rows[1:] // the header
	}
	return rows
}

// backticked lists the `code` spans of a cell, leaving out those in parentheses
// (which describe values, not fields).
func backticked(cell string) []string {
	for paren := regexp.MustCompile(`\([^()]*\)`); paren.MatchString(cell); {
		cell = paren.ReplaceAllString(cell, "")
	}
	var out []string
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(cell, -1) {
		out = append(out, m[1])
	}
	return out
}

// TestCommandTableMatchesProtocol walks the command table against PROTOCOL.md's
// client-to-server table: every client-facing row is documented and every documented
// type has a client-facing row; each row takes exactly the fields documented for it;
// and every permission a row demands is named in the type's "needs" column. Internal
// rows (file_data) are not in the contract, and a client naming one gets unknown_type.
func TestCommandTableMatchesProtocol(t *testing.T) {
	// Documented ahead of their code (none now). Each entry must go when its row
	// lands; the test fails while a row and its pending entry both exist.
	var pendingTypes []string
	pendingFields := map[string][]string{}
	documented := map[string][]string{}
	for _, cells := range tableRows(protocolSection(t, "### Client to server")) {
		if len(cells) != 4 {
			t.Fatalf("client-to-server row %q: want 4 columns, got %d", cells, len(cells))
		}
		typ := backticked(cells[0])
		if len(typ) != 1 {
			t.Fatalf("client-to-server row %q does not name one type", cells[0])
		}
		documented[typ[0]] = cells
	}
	if len(documented) < 20 {
		t.Fatalf("found only %d documented commands: is the table still parsed?", len(documented))
	}
	f := newFilter(testConfig(t), nil)
	for typ, spec := range commandTable {
		cells, ok := documented[typ]
		if spec.internal {
			if ok {
				t.Errorf("%s is internal but PROTOCOL.md documents it", typ)
			}
			if _, perr := f.parseEnvelope([]byte(`{"type":"` + typ + `"}`)); perr == nil || perr.Code != codeUnknownType {
				t.Errorf("a client sending internal %s got %v, want unknown_type", typ, perr)
			}
			continue
		}
		if !ok {
			t.Errorf("command %s has a row but PROTOCOL.md does not document it", typ)
			continue
		}
		var fields []string
		for _, fs := range spec.fields {
			fields = append(fields, fs.names...)
		}
		want := slices.DeleteFunc(backticked(cells[1]), func(f string) bool {
			if slices.Contains(pendingFields[typ], f) {
				if slices.Contains(fields, f) {
					t.Errorf("%s: field %s has landed; remove it from pendingFields", typ, f)
				}
				return true
			}
			return false
		})
		slices.Sort(fields)
		fields = slices.Compact(fields)
		slices.Sort(want)
		if !slices.Equal(fields, want) {
			t.Errorf("%s: the row takes fields %v, PROTOCOL.md documents %v", typ, fields, want)
		}
		needs := backticked(cells[2])
		for _, p := range spec.needs.names() {
			if !slices.Contains(needs, p) {
				t.Errorf("%s: the row needs %s, PROTOCOL.md's needs column says %q", typ, p, cells[2])
			}
		}
	}
	for typ := range documented {
		spec, ok := commandTable[typ]
		if slices.Contains(pendingTypes, typ) {
			if ok {
				t.Errorf("%s has landed; remove it from pendingTypes", typ)
			}
			continue
		}
		if !ok || spec.internal {
			t.Errorf("PROTOCOL.md documents %s but the command table has no client-facing row for it", typ)
		}
	}
}

package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestCloseCodesMatchProtocol: PROTOCOL.md's close-code table and the closes defined
// in codes.go agree both ways. Every defined close has a row for its code that says
// when it is sent (its when phrase), and every documented code is one the server
// defines, so a client is never promised a close it cannot get (the server-wide cap is
// refused before the upgrade with 503, never with 1013) nor gets one the contract
// does not name. TestCodesNotScattered keeps closes from being sent any other way.
func TestCloseCodesMatchProtocol(t *testing.T) {
	documented := map[int]string{}
	for _, cells := range tableRows(protocolSection(t, "## Close codes")) {
		n, err := strconv.Atoi(cells[0])
		if err != nil || len(cells) != 2 {
			t.Fatalf("close-code row %q is not | number | when |", cells)
		}
		documented[n] = cells[1]
	}
	if doc, _ := os.ReadFile("PROTOCOL.md"); strings.Contains(string(doc), "1013") {
		t.Error("PROTOCOL.md still mentions 1013")
	}
	defined := map[int]bool{}
	for _, f := range closeFrames {
		defined[f.code] = true
		when, ok := documented[f.code]
		switch {
		case !ok:
			t.Errorf("close %d %q is defined but PROTOCOL.md has no row for %d", f.code, f.reason, f.code)
		case f.when == "" || !strings.Contains(when, f.when):
			t.Errorf("close %d %q: PROTOCOL.md's row for %d does not say %q", f.code, f.reason, f.code, f.when)
		}
	}
	for n := range documented {
		if !defined[n] {
			t.Errorf("PROTOCOL.md documents close %d but codes.go defines no close with it", n)
		}
	}
	if len(defined) < 5 {
		t.Fatalf("only %d close codes defined: is closeFrames filled?", len(defined))
	}
}

// pendingErrorCodes are documented (the E2EE errors) ahead of their code. Each must
// go from this list when codes.go defines it; the tests fail while both hold.
var pendingErrorCodes []string

// documentedErrorCodes reads PROTOCOL.md's error-code tables: code to meaning. A row
// naming several codes and saying "see ..." points to another table, which must
// document each of them.
func documentedErrorCodes(t *testing.T) map[string]string {
	t.Helper()
	documented := map[string]string{}
	var pointers []string
	for _, heading := range []string{"### Error codes", "### Errors (E2EE)"} {
		for _, cells := range tableRows(protocolSection(t, heading)) {
			code := backticked(cells[0])
			if len(cells) == 2 && len(code) > 1 && strings.HasPrefix(cells[1], "see ") {
				// A row pointing to the section that documents these codes.
				pointers = append(pointers, code...)
				continue
			}
			if len(cells) != 2 || len(code) != 1 {
				t.Fatalf("error-code row %q is not | `code` | meaning |", cells)
			}
			if _, dup := documented[code[0]]; dup {
				t.Errorf("PROTOCOL.md documents %s twice", code[0])
			}
			documented[code[0]] = cells[1]
		}
	}
	for _, code := range pointers {
		if _, ok := documented[code]; !ok {
			t.Errorf("PROTOCOL.md points to %s but no table documents it", code)
		}
	}
	return documented
}

// TestErrorCodesMatchProtocol: PROTOCOL.md's error-code tables and the codes defined
// in codes.go agree both ways, each code with the same meaning word for word; and
// every code the key directory package returns is among them.
func TestErrorCodesMatchProtocol(t *testing.T) {
	documented := documentedErrorCodes(t)
	for code, meaning := range errorCodes {
		doc, ok := documented[code]
		switch {
		case !ok:
			t.Errorf("error code %s is defined but PROTOCOL.md does not document it", code)
		case doc != meaning:
			t.Errorf("error code %s: codes.go says %q, PROTOCOL.md says %q", code, meaning, doc)
		}
		if slices.Contains(pendingErrorCodes, code) {
			t.Errorf("error code %s is defined now; remove it from pendingErrorCodes", code)
		}
	}
	for code := range documented {
		if _, ok := errorCodes[code]; !ok && !slices.Contains(pendingErrorCodes, code) {
			t.Errorf("PROTOCOL.md documents error code %s but codes.go does not define it", code)
		}
	}
	if len(errorCodes) < 30 {
		t.Fatalf("only %d error codes defined: is errorCodes filled?", len(errorCodes))
	}
	// The key directory's codes, read from its source: it returns them in its errors.
	fset := token.NewFileSet()
	files, _ := filepath.Glob("internal/keydir/*.go")
	found := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			vs, ok := n.(*ast.ValueSpec)
			if !ok {
				return true
			}
			for i, id := range vs.Names {
				if !strings.HasPrefix(id.Name, "Code") || i >= len(vs.Values) {
					continue
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					code, _ := strconv.Unquote(lit.Value)
					found++
					if _, ok := errorCodes[code]; !ok {
						t.Errorf("%s: keydir.%s = %q is not defined in codes.go", fset.Position(lit.Pos()), id.Name, code)
					}
				}
			}
			return true
		})
	}
	if found == 0 {
		t.Fatal("found no Code constants in internal/keydir")
	}
}

// loginVocabulary are strings that happen to equal an error code but belong to
// another vocabulary: the reasons a login is refused (oidc.go) and the login outcome
// metric (auth.go), which the login page and dashboards read, not WebSocket clients.
var loginVocabulary = map[string][]string{
	"oidc.go": {"busy", "banned"},
	"auth.go": {"banned"},
}

// TestCodesNotScattered reads the server's own Go files (not tests, not codes.go): no
// string literal there is an error code or carries one ("code":"..."), no integer
// literal is a close code the server could send (1001 to 1015), and no websocket
// close constant appears except where it classifies a close the peer sent. Codes are
// used by name, so the protocol tests above see every one.
func TestCodesNotScattered(t *testing.T) {
	documented := documentedErrorCodes(t)
	isCode := func(s string) bool {
		_, def := errorCodes[s]
		_, doc := documented[s]
		return def || doc
	}
	inJSON := regexp.MustCompile(`"code":"([a-z_]+)"`)
	fset := token.NewFileSet()
	files, _ := filepath.Glob("*.go")
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") || name == "codes.go" {
			continue
		}
		file, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				// Classifying the peer's close names codes the server never sends.
				if sel, ok := n.Fun.(*ast.SelectorExpr); ok && isPkg(sel.X, "websocket") &&
					(sel.Sel.Name == "IsUnexpectedCloseError" || sel.Sel.Name == "IsCloseError") {
					return false
				}
			case *ast.SelectorExpr:
				if isPkg(n.X, "websocket") && strings.HasPrefix(n.Sel.Name, "Close") && n.Sel.Name != "CloseMessage" && n.Sel.Name != "CloseError" {
					t.Errorf("%s: websocket.%s: send a close defined in codes.go", fset.Position(n.Pos()), n.Sel.Name)
				}
			case *ast.BasicLit:
				switch n.Kind {
				case token.INT:
					if v, err := strconv.Atoi(n.Value); err == nil && v >= 1001 && v <= 1015 {
						t.Errorf("%s: close code %d written as a number: use its closeFrame from codes.go", fset.Position(n.Pos()), v)
					}
				case token.STRING:
					s, err := strconv.Unquote(n.Value)
					if err != nil {
						break
					}
					if isCode(s) && !slices.Contains(loginVocabulary[name], s) {
						t.Errorf("%s: error code %q written as a string: use its name from codes.go", fset.Position(n.Pos()), s)
					}
					for _, m := range inJSON.FindAllStringSubmatch(s, -1) {
						if isCode(m[1]) {
							t.Errorf("%s: error code %q inside a string: use its name from codes.go", fset.Position(n.Pos()), m[1])
						}
					}
				}
			}
			return true
		})
	}
}

// isPkg reports whether x is the identifier of the named package.
func isPkg(x ast.Expr, name string) bool {
	id, ok := x.(*ast.Ident)
	return ok && id.Name == name
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

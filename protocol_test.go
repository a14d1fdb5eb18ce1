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
	if !slices.Equal(keys(documented), keys(sent)) {
		t.Fatalf("PROTOCOL.md documents close codes %v, the server sends %v", keys(documented), keys(sent))
	}
}

package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"strings"
	"testing"
)

// The vendored MLS library, as embedded in the binary (see `make vendor`).
const (
	vendorBundle    = "static/vendor/ts-mls-1.6.4.min.js"
	vendorBundleSum = vendorBundle + ".sha256"
)

// TestVendorBundle checks the embedded ts-mls bundle without node: its SHA-256 is the
// one recorded when `make vendor` built it (so an edited or swapped file fails), the
// licence of every inlined package sits beside it, its banner names the pinned 1.6.4,
// and it holds nothing that would need the CSP weakened or could load code at run
// time (eval, new Function, WebAssembly, a dynamic import).
func TestVendorBundle(t *testing.T) {
	code, err := assets.ReadFile(vendorBundle)
	if err != nil {
		t.Fatalf("bundle not embedded: %v", err)
	}
	recorded, err := assets.ReadFile(vendorBundleSum)
	if err != nil {
		t.Fatalf("recorded hash not embedded: %v", err)
	}
	fields := strings.Fields(string(recorded))
	if len(fields) != 2 || fields[1] != "ts-mls-1.6.4.min.js" {
		t.Fatalf("%s = %q, want \"<sha256>  ts-mls-1.6.4.min.js\"", vendorBundleSum, recorded)
	}
	sum := sha256.Sum256(code)
	if got := hex.EncodeToString(sum[:]); got != fields[0] {
		t.Errorf("bundle SHA-256 %s, recorded %s: rebuild with make vendor and review the change", got, fields[0])
	}
	if !strings.HasPrefix(string(code), "/* ts-mls 1.6.4 (MIT") {
		t.Errorf("bundle banner %q does not name ts-mls 1.6.4", string(code[:min(len(code), 60)]))
	}
	for _, bad := range []string{"eval(", "new Function", "WebAssembly", "import(", "innerHTML"} {
		if strings.Contains(string(code), bad) {
			t.Errorf("bundle contains %q", bad)
		}
	}
	for _, name := range []string{"ts-mls.txt", "hpke-core.txt", "hpke-common.txt"} {
		lic, err := fs.ReadFile(assets, "static/vendor/LICENSES/"+name)
		if err != nil {
			t.Errorf("licence %s: %v", name, err)
			continue
		}
		if !strings.Contains(string(lic), "MIT License") || !strings.Contains(string(lic), "Permission is hereby granted") {
			t.Errorf("licence %s is not the MIT text (%d bytes)", name, len(lic))
		}
	}
}

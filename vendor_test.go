package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"strings"
	"testing"
)

// vendoredBundle is one third-party library embedded in the binary (see `make vendor`):
// the file, the banner that names its pinned version, and the licence files of every
// package inlined in it with a phrase each must hold.
type vendoredBundle struct {
	name     string
	banner   string
	licences map[string][]string
}

// vendoredBundles are the page's two vendored libraries: ts-mls for MLS and
// qrcode-generator for the safety number's QR code.
var vendoredBundles = []vendoredBundle{
	{
		name:   "ts-mls-1.6.4.min.js",
		banner: "/* ts-mls 1.6.4 (MIT",
		licences: map[string][]string{
			"ts-mls.txt":      {"MIT License", "Permission is hereby granted"},
			"hpke-core.txt":   {"MIT License", "Permission is hereby granted"},
			"hpke-common.txt": {"MIT License", "Permission is hereby granted"},
		},
	},
	{
		name:   "qrcode-generator-2.0.4.min.js",
		banner: "/* qrcode-generator 2.0.4 (MIT",
		licences: map[string][]string{
			// The package ships its licence as this notice, not as a LICENSE file.
			"qrcode-generator.txt": {"Copyright (c) 2009 Kazuhiko Arase", "Licensed under the MIT license"},
		},
	},
}

// TestVendorBundle checks each embedded vendored bundle without node: its SHA-256 is
// the one recorded when `make vendor` built it (so an edited or swapped file fails), the
// licence of every inlined package sits beside it, its banner names the pinned version,
// and it holds nothing that would need the CSP weakened or could load code at run
// time (eval, new Function, WebAssembly, a dynamic import) or write markup (innerHTML).
func TestVendorBundle(t *testing.T) {
	for _, b := range vendoredBundles {
		t.Run(b.name, func(t *testing.T) {
			path := "static/vendor/" + b.name
			code, err := assets.ReadFile(path)
			if err != nil {
				t.Fatalf("bundle not embedded: %v", err)
			}
			recorded, err := assets.ReadFile(path + ".sha256")
			if err != nil {
				t.Fatalf("recorded hash not embedded: %v", err)
			}
			fields := strings.Fields(string(recorded))
			if len(fields) != 2 || fields[1] != b.name {
				t.Fatalf("%s.sha256 = %q, want \"<sha256>  %s\"", path, recorded, b.name)
			}
			sum := sha256.Sum256(code)
			if got := hex.EncodeToString(sum[:]); got != fields[0] {
				t.Errorf("bundle SHA-256 %s, recorded %s: rebuild with make vendor and review the change", got, fields[0])
			}
			if !strings.HasPrefix(string(code), b.banner) {
				t.Errorf("bundle banner %q does not start %q", string(code[:min(len(code), 60)]), b.banner)
			}
			for _, bad := range []string{"eval(", "new Function", "WebAssembly", "import(", "innerHTML"} {
				if strings.Contains(string(code), bad) {
					t.Errorf("bundle contains %q", bad)
				}
			}
			for name, phrases := range b.licences {
				lic, err := fs.ReadFile(assets, "static/vendor/LICENSES/"+name)
				if err != nil {
					t.Errorf("licence %s: %v", name, err)
					continue
				}
				for _, p := range phrases {
					if !strings.Contains(string(lic), p) {
						t.Errorf("licence %s lacks %q (%d bytes)", name, p, len(lic))
					}
				}
			}
		})
	}
}

package main

import (
	"runtime/debug"
	"testing"
)

// TestGCDefault: without GOGC the server runs its collector at defaultGCPercent; an
// operator's GOGC is left as the runtime read it.
func TestGCDefault(t *testing.T) {
	was := debug.SetGCPercent(100)
	t.Cleanup(func() { debug.SetGCPercent(was) })

	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	if p, fromEnv := applyGCDefault(getenv); p != "50" || fromEnv {
		t.Fatalf("without GOGC: got %q fromEnv=%v, want \"50\" false", p, fromEnv)
	}
	if got := debug.SetGCPercent(100); got != defaultGCPercent {
		t.Fatalf("without GOGC the collector runs at %d, want %d", got, defaultGCPercent)
	}

	env["GOGC"] = "200"
	if p, fromEnv := applyGCDefault(getenv); p != "200" || !fromEnv {
		t.Fatalf("with GOGC=200: got %q fromEnv=%v, want \"200\" true", p, fromEnv)
	}
	if got := debug.SetGCPercent(100); got != 100 {
		t.Fatalf("with GOGC set the collector was changed to %d; it must stay as the runtime set it", got)
	}
}

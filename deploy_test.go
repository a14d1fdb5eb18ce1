package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// maxExposure is the highest `systemd-analyze security` exposure the unit may have
// (0 is locked down, 10 is fully exposed; systemd calls up to 2.0 "OK").
const maxExposure = 2.0

// exposureLine is systemd-analyze's verdict line.
var exposureLine = regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)

// TestSystemdUnit: deploy/modified-chat.service passes `systemd-analyze verify` and is
// rated at most 2.0 by `systemd-analyze security`, alone and with the low-ports drop-in,
// and keeps the hardening the README promises.
func TestSystemdUnit(t *testing.T) {
	analyze := needProgram(t, "systemd-analyze")
	unit, err := os.ReadFile("deploy/modified-chat.service")
	if err != nil {
		t.Fatal(err)
	}
	dropIn, err := os.ReadFile("deploy/low-ports.conf")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"DynamicUser=yes", "StateDirectory=modified-chat", "NoNewPrivileges=yes", "ProtectSystem=strict",
		"PrivateTmp=yes", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX", "SystemCallFilter=@system-service",
		"\nCapabilityBoundingSet=\n", "\nAmbientCapabilities=\n", "KillSignal=SIGTERM",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit lost %q", strings.TrimSpace(want))
		}
	}
	// verify checks that the program exists; any executable stands in for the
	// installed binary.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	plain := strings.ReplaceAll(string(unit), "/usr/local/bin/modified-chat", self)
	variants := map[string]string{
		"modified-chat.service":           plain,
		"modified-chat-low-ports.service": plain + "\n" + string(dropIn),
	}
	for name, text := range variants {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(analyze, "verify", path).CombinedOutput()
		if err != nil || len(strings.TrimSpace(string(out))) > 0 {
			t.Fatalf("systemd-analyze verify %s: %v\n%s", name, err, out)
		}
		out, err = exec.Command(analyze, "security", "--offline=true", path).CombinedOutput()
		m := exposureLine.FindSubmatch(out)
		if m == nil {
			// Old systemd without offline analysis: it cannot judge a unit file here.
			t.Skipf("systemd-analyze security cannot run here: %v\n%s", err, out)
		}
		exposure, _ := strconv.ParseFloat(string(m[1]), 64)
		t.Logf("%s: exposure %.1f", name, exposure)
		if exposure > maxExposure {
			t.Errorf("%s: exposure %.1f, want at most %.1f\n%s", name, exposure, maxExposure, out)
		}
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"modified-chat/internal/store"
)

// TestConfigEnvTwins: every flag has a CHAT_ twin, and an explicit flag wins over it.
func TestConfigEnvTwins(t *testing.T) {
	env := map[string]string{"CHAT_MSG_RATE": "7.5", "CHAT_ADDR": "127.0.0.1:9999", "CHAT_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.1"}
	cfg, err := parseConfig([]string{"-addr", "127.0.0.1:1234"}, func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MsgRate != 7.5 || cfg.Addr != "127.0.0.1:1234" || len(cfg.TrustedProxies) != 2 || cfg.TrustedProxies[1].String() != "192.0.2.1/32" {
		t.Fatalf("got %+v", cfg)
	}
	if envName("max-conns-per-ip") != "CHAT_MAX_CONNS_PER_IP" {
		t.Fatal(envName("max-conns-per-ip"))
	}
}

// TestConfigRefusesDisabledDefences: zero, negative or inconsistent limits are refused
// rather than silently turning a defence off.
func TestConfigRefusesDisabledDefences(t *testing.T) {
	for _, args := range [][]string{
		{"-msg-rate", "0"}, {"-max-conns", "-1"}, {"-read-limit", "0"}, {"-read-limit", "100000000"},
		{"-byte-burst", "100"}, {"-tls-cert", "x"}, {"-blocked-patterns", "(unclosed"},
		{"-allowed-origins", "ftp://x"}, {"-trusted-proxies", "not-an-ip"}, {"stray"},
		{"-send-queue-bytes", "0"}, {"-send-queue-bytes", "1048576"},
		{"-file-max-bytes", "8388608", "-file-burst", "8388608"}, // two 11 MB events outgrow 16 MiB
		{"-reply-byte-rate", "0"}, {"-reply-byte-burst", "65536"},
	} {
		if _, err := parseConfig(args, func(string) string { return "" }); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
	if _, err := parseConfig(nil, func(k string) string {
		if k == "CHAT_MSG_BURST" {
			return "abc"
		}
		return ""
	}); err == nil {
		t.Error("bad environment value accepted")
	}
}

// TestConfigHelpListsEveryFlag: -h documents each flag and the environment rule.
func TestConfigHelpListsEveryFlag(t *testing.T) {
	cfg := defaultConfig()
	fs := newFlagSet(cfg)
	var out bytes.Buffer
	fs.SetOutput(&out)
	fs.PrintDefaults()
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.Contains(out.String(), "-"+f.Name) {
			t.Errorf("-h lacks -%s", f.Name)
		}
	})
	if _, err := parseConfig([]string{"-h"}, func(string) string { return "" }); err != flag.ErrHelp {
		t.Fatalf("-h: %v", err)
	}
}

// TestReadmeListsEveryFlag keeps the README's configuration table true.
func TestReadmeListsEveryFlag(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	newFlagSet(defaultConfig()).VisitAll(func(f *flag.Flag) {
		if !strings.Contains(string(readme), "`-"+f.Name+"`") {
			t.Errorf("README does not document -%s", f.Name)
		}
	})
}

// TestStoredSettingsOverridingFlagsAreLogged: a setting an admin stored at run time
// that replaces a different value given explicitly (flag or environment twin) is
// logged at Warn with both values (the MOTD without its text); settings that agree, or
// whose flag was left at its default, are not.
func TestStoredSettingsOverridingFlagsAreLogged(t *testing.T) {
	dir := t.TempDir()
	env := map[string]string{"CHAT_TEXT_MAX_CHARS": "100", "CHAT_BYTE_BURST": "70000"}
	cfg, err := parseConfig([]string{"-data-dir", dir, "-metrics-addr", "", "-msg-burst", "7", "-motd", "from the flag"},
		func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	stored := settingsOf(defaultConfig())
	stored.MsgBurst, stored.TextMaxChars, stored.ReadLimit, stored.MOTD = 3, 100, 9000, "stored motd"
	stored.ByteBurst = 80000
	b, _ := json.Marshal(stored)
	st := store.NewMem()
	if err := st.Apply([]store.Write{{Bucket: bucketSettings, Key: []byte("current"), Value: b}}); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	app, err := newAppWithStore(cfg, slog.New(slog.NewJSONHandler(&logs, nil)), time.Now, st)
	if err != nil {
		t.Fatal(err)
	}
	app.shutdown(time.Second)
	warned := map[string]map[string]any{}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		var rec map[string]any
		if line == "" {
			continue
		}
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["level"] == "WARN" && rec["flag"] != nil {
			warned[rec["flag"].(string)] = rec
		}
	}
	if w := warned["msg-burst"]; w == nil || w["flag_value"] != 7.0 || w["stored_value"] != 3.0 {
		t.Errorf("msg-burst: %v", w)
	}
	if w := warned["byte-burst"]; w == nil || w["flag_value"] != 70000.0 || w["stored_value"] != 80000.0 {
		t.Errorf("byte-burst (from the environment): %v", w)
	}
	if w := warned["motd"]; w == nil || strings.Contains(logs.String(), "stored motd") {
		t.Errorf("motd: %v (its text must not be logged)", w)
	}
	for _, quiet := range []string{"text-max-chars", "read-limit", "msg-rate"} {
		if w := warned[quiet]; w != nil {
			t.Errorf("%s warned: %v", quiet, w)
		}
	}
	if len(warned) != 3 {
		t.Errorf("warnings %v", warned)
	}
}

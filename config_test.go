package main

import (
	"bytes"
	"flag"
	"os"
	"strings"
	"testing"
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

package main

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"modified-chat/internal/keydir"
	"modified-chat/internal/sigmsg"
)

// TestSignerFrames: the registration's certificate verifies under its root key for
// this user, device and key, and each signed say decodes as JSON whose signature
// verifies over sigmsg's bytes for exactly its room, user, device, counter, id, time
// and text, with the counter growing; a say with one character changed does not.
func TestSignerFrames(t *testing.T) {
	s, err := newSigner("dev:load-000001")
	if err != nil {
		t.Fatal(err)
	}
	var reg struct {
		Type, Ref, URK, Device, DIK, Cert string
		Created                           uint64
	}
	frame, err := s.registration()
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(frame, &reg); err != nil {
		t.Fatal(err)
	}
	if reg.Type != "register_device" || reg.Ref != registerRef || reg.Device != s.device || !keydir.ValidDeviceID(reg.Device) {
		t.Fatalf("registration %s", frame)
	}
	urk, _ := base64.StdEncoding.DecodeString(reg.URK)
	dik, _ := base64.StdEncoding.DecodeString(reg.DIK)
	cert, _ := base64.StdEncoding.DecodeString(reg.Cert)
	c := sigmsg.DeviceCert{User: "dev:load-000001", Device: reg.Device, Created: reg.Created}
	copy(c.DIK[:], dik)
	if !c.Verify(urk, cert) {
		t.Fatalf("the certificate does not verify: %s", frame)
	}
	c.User = "dev:load-000002"
	if c.Verify(urk, cert) {
		t.Fatal("the certificate verifies for another user")
	}

	for want := uint64(1); want <= 3; want++ {
		text := EncodePayload(nil, 0, int(want), 1, 64)
		line := s.appendSay(nil, "lobby", text)
		var say struct {
			Type, Room, Text string
			Sig              struct {
				Device    string `json:"device"`
				Counter   uint64 `json:"counter"`
				MsgID     string `json:"msg_id"`
				TS        uint64 `json:"ts"`
				Signature string `json:"signature"`
			}
		}
		if err := json.Unmarshal(line, &say); err != nil {
			t.Fatalf("%s: %v", line, err)
		}
		if say.Type != "say" || say.Room != "lobby" || say.Text != string(text) || say.Sig.Counter != want || say.Sig.Device != s.device {
			t.Fatalf("say %s", line)
		}
		m := &sigmsg.Message{Kind: "say", Room: say.Room, User: "dev:load-000001", Device: say.Sig.Device,
			Counter: say.Sig.Counter, TS: say.Sig.TS, Text: say.Text}
		id, _ := base64.StdEncoding.DecodeString(say.Sig.MsgID)
		copy(m.ID[:], id)
		sig, _ := base64.StdEncoding.DecodeString(say.Sig.Signature)
		if len(id) != sigmsg.MsgIDLen || !m.Verify(ed25519.PublicKey(dik), sig) {
			t.Fatalf("the say's signature does not verify: %s", line)
		}
		m.Text = strings.Replace(m.Text, "x", "y", 1)
		if m.Verify(ed25519.PublicKey(dik), sig) {
			t.Fatal("the signature verifies for another text")
		}
	}
}

// TestSignNeedsDevLogin: -sign is refused with a shared cookie, the original
// protocol, or -idle, before anything touches the network.
func TestSignNeedsDevLogin(t *testing.T) {
	base := Config{Target: "http://127.0.0.1:1", Proto: protoModified, Clients: 2, Senders: 1, Rate: 1,
		Size: 64, Duration: 1e9, Room: "lobby", ConnectRate: 10, Sign: true}
	if _, err := base.validate(); err != nil {
		t.Fatalf("a plain -sign run: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"cookie":   func(c *Config) { c.Cookie = "x" },
		"original": func(c *Config) { c.Proto = protoOriginal },
		"idle":     func(c *Config) { c.Idle = true },
	} {
		c := base
		mutate(&c)
		if _, err := c.validate(); err == nil || !strings.Contains(err.Error(), "-sign") {
			t.Errorf("%s: validate = %v, want a -sign error", name, err)
		}
	}
}

// TestSummarizeSigned: with -sign runs among the reports the columns are modified
// (unsigned) and signed, and the ratio is signed/modified.
func TestSummarizeSigned(t *testing.T) {
	mk := func(signed bool, dps float64) *Report {
		return &Report{Tag: "W1", Proto: protoModified, Signed: signed, Clients: 10, Senders: 2, Rate: 1, Size: 64,
			DurationS: 5, DeliveryRatio: 1, DeliveriesPerS: dps, Connected: 10}
	}
	reps := []*Report{mk(false, 1000), mk(true, 960), mk(false, 1100), mk(true, 990), mk(false, 900), mk(true, 1020)}
	var out strings.Builder
	if err := Summarize(reps, &out); err != nil {
		t.Fatal(err)
	}
	s := out.String()
	for _, want := range []string{"sig/mod", " signed ", " 1000 ", " 990 ", "0.99", "rounds 3/3"} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
	if strings.Contains(s, protoOriginal) {
		t.Errorf("a signed comparison shows the original column:\n%s", s)
	}
}

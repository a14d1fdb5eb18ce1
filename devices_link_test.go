package main

import (
	"crypto/ed25519"
	"encoding/json"
	"testing"
)

// keysSnapshot is the key directory's record of each user, encoded, as every reader
// (the readPumps, `devices`) sees it.
func keysSnapshot(t *testing.T, app *App, users ...string) string {
	t.Helper()
	settleHub(t, app.hub)
	var out []byte
	app.hub.do(func() {
		recs := map[string]any{}
		for _, u := range users {
			recs[u] = app.keys.Describe(u)
		}
		var err error
		if out, err = json.Marshal(recs); err != nil {
			t.Error(err)
		}
	})
	return string(out)
}

// certification is a certify_device for dev, made with root's root key.
func certification(root, dev *testIdentity) map[string]any {
	dev.urk = root.urk
	m := dev.registration(root.user)
	m["type"] = "certify_device"
	delete(m, "urk")
	return m
}

// TestKeyDirectoryFailsClosed: a device registration, certification, root key reset
// or revocation the store refuses (queue full, or the write failing) is answered with
// busy or store_failed and changes nothing: not the directory every reader sees, not
// after a restart, and no contact hears of it.
func TestKeyDirectoryFailsClosed(t *testing.T) {
	type keysCase struct {
		name string
		cmd  func(laptop *testIdentity) map[string]any
	}
	cases := []keysCase{
		{"register_first", nil},
		{"certify", func(laptop *testIdentity) map[string]any {
			return certification(laptop, newTestIdentity("dev:alice", "alice-phone"))
		}},
		{"reset", func(*testIdentity) map[string]any {
			m := newTestIdentity("dev:alice", "alice-fresh").registration("dev:alice")
			m["type"] = "reset_identity"
			return m
		}},
		{"revoke", func(laptop *testIdentity) map[string]any {
			return map[string]any{"type": "revoke_device", "device": laptop.device}
		}},
	}
	for _, mode := range faultModes {
		for _, tc := range cases {
			t.Run(mode.name+"/"+tc.name, func(t *testing.T) {
				fs := newFaultStore()
				boot := func() *testServer { return startServerOn(t, fs, generousLimits) }
				ts := boot()
				alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
				laptop := newTestIdentity("dev:alice", "alice-laptop")
				cmd := laptop.registration(laptop.user)
				if tc.cmd != nil {
					alice.mustAck(cmd)
					bob.expect("device_added")
					cmd = tc.cmd(laptop)
				}
				before := keysSnapshot(t, ts.App, "dev:alice")

				disarm := mode.arm(t, fs, ts.App)
				ev := alice.cmd(cmd)
				disarm()
				if ev["type"] != "error" || ev["code"] != mode.code {
					t.Fatalf("%s answered %v, want error %s", tc.name, ev, mode.code)
				}
				if after := keysSnapshot(t, ts.App, "dev:alice"); after != before {
					t.Fatalf("directory changed by a refused %s:\nbefore %s\nafter  %s", tc.name, before, after)
				}
				for _, ev := range bob.barrier() {
					if ev["type"] == "device_added" || ev["type"] == "device_revoked" || ev["type"] == "key_changed" {
						t.Fatalf("a contact heard of a refused change: %v", ev)
					}
				}
				ts.stop()
				ts = boot()
				if restarted := keysSnapshot(t, ts.App, "dev:alice"); restarted != before {
					t.Fatalf("restart shows another directory:\nbefore  %s\nrestart %s", before, restarted)
				}
				// The same command succeeds on a healthy store: the refusal left no
				// half-applied state in its way.
				alice = ts.user(t, "alice")
				alice.mustAck(cmd)
			})
		}
	}
}

// linkRequest is a link_request for id's device.
func (id *testIdentity) linkRequest() map[string]any {
	return map[string]any{"type": "link_request", "device": id.device,
		"dik": b64(id.dik.Public().(ed25519.PublicKey)), "created": 1700000000000}
}

// TestLinkRequest: a new device of a user with a root key asks to be linked; only
// that user's connections hear of it (and see it in their own `devices`), and the
// certificate that follows adds the device and ends the request. Requests are bound
// to the session's user, bounded and rate-limited, each refusal with its code.
func TestLinkRequest(t *testing.T) {
	ts := startServer(t, generousLimits)
	alice, bob := ts.user(t, "alice"), ts.user(t, "bob")
	newAlice := ts.user(t, "alice") // the new browser profile, same account

	fresh := newTestIdentity("dev:alice", "alice-newphone")
	newAlice.mustRefuse(fresh.linkRequest(), "bad_certificate") // no root key yet: register instead

	laptop := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(laptop.registration(laptop.user))
	bob.expect("device_added")
	newAlice.mustAck(fresh.linkRequest())
	ev := alice.expect("link_request")
	if ev["user"] != "dev:alice" || ev["device"] != fresh.device || ev["dik"] != b64(fresh.dik.Public().(ed25519.PublicKey)) || ev["created"] != 1700000000000.0 {
		t.Fatalf("link_request %v", ev)
	}
	noneOfType(t, bob.barrier(), "link_request")
	alice.send(map[string]any{"type": "devices"})
	if got := alice.expect("devices")["links"].([]any); len(got) != 1 || got[0].(map[string]any)["device"] != fresh.device {
		t.Fatalf("own devices lists links %v", got)
	}
	bob.send(map[string]any{"type": "devices", "user": "dev:alice"})
	if ev := bob.expect("devices"); ev["links"] != nil {
		t.Fatalf("another user sees alice's link requests: %v", ev["links"])
	}

	// Refusals, each changing nothing.
	newAlice.mustRefuse(laptop.linkRequest(), codeBadDevice) // already a device
	bad := fresh.linkRequest()
	bad["dik"] = "AAAA"
	newAlice.mustRefuse(bad, codeBadEnvelope)
	others := []*testIdentity{newTestIdentity("dev:alice", "alice-tablet"), newTestIdentity("dev:alice", "alice-tv")}
	for _, o := range others {
		newAlice.mustAck(o.linkRequest())
	}
	newAlice.mustRefuse(newTestIdentity("dev:alice", "alice-fridge").linkRequest(), "too_many_links")

	// The laptop certifies the new device: it is added, the request is gone.
	alice.mustAck(certification(laptop, fresh))
	if ev := newAlice.expect("device_added"); ev["device"].(map[string]any)["device"] != fresh.device {
		t.Fatalf("device_added %v", ev)
	}
	alice.send(map[string]any{"type": "devices"})
	ev = alice.expect("devices")
	if links, _ := ev["links"].([]any); len(links) != 2 || len(ev["devices"].([]any)) != 2 {
		t.Fatalf("after linking: %d links, devices %v", len(links), ev["devices"])
	}
	newAlice.mustAck(fresh.signedSay("lobby", "from the linked device"))
	// The rate limit of device changes covers link requests too (burst 5: one
	// registration, three requests and a certificate so far).
	newAlice.mustRefuse(newTestIdentity("dev:alice", "alice-watch").linkRequest(), "rate_limited")
}

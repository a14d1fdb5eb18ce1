package main

import (
	"bytes"
	"crypto/ed25519"
	"strings"
	"testing"

	"modified-chat/internal/keydir"
	"modified-chat/internal/mls"
	"modified-chat/internal/sigmsg"
)

// benchPrivateMessage is an application PrivateMessage of the size a short padded
// text makes (about 330 bytes, E2EE.md §1.5): the hub checks its header only.
func benchPrivateMessage(gid []byte) []byte {
	e := (&wire{}).u16(1).u16(mls.WirePrivate).vec(gid).u64(0).u8(mls.ContentApplication).vec(nil)
	return e.vec(bytes.Repeat([]byte{5}, 40)).vec(bytes.Repeat([]byte{6}, 256)).b
}

// BenchmarkHubFanoutE2EE compares relaying an E2EE room's mls_app with a plain say, in
// the same room of 1000 clients with the same readers: ns per delivery and allocations
// per message, side by side (say: sub-benchmark "say", E2EE: "mls_app").
func BenchmarkHubFanoutE2EE(b *testing.B) {
	for _, kind := range []string{"say", "mls_app"} {
		b.Run(kind, func(b *testing.B) {
			const members = 1000
			h, clients := fanoutBench(b, members)
			cmd := sayCmd(clients[0], lobby, strings.Repeat("x", 64))
			if kind == "mls_app" {
				gid := bytes.Repeat([]byte{1}, groupIDLen)
				sender := clients[0]
				_, urk, _ := ed25519.GenerateKey(nil)
				_, dik, _ := ed25519.GenerateKey(nil)
				dc := sigmsg.DeviceCert{User: sender.user.ID, Device: "bench-device", Created: 1}
				copy(dc.DIK[:], dik.Public().(ed25519.PublicKey))
				h.do(func() {
					ch, kerr := h.app.keys.Register(sender.user.ID, &keydir.Upload{URK: urk.Public().(ed25519.PublicKey),
						Device: dc.Device, DIK: dik.Public().(ed25519.PublicKey), Created: 1, Cert: ed25519.Sign(urk, dc.Encode())})
					if kerr != nil {
						b.Error(kerr)
						return
					}
					ch.Apply()
					ri := h.meta[lobby]
					ri.E2EE, ri.MLSGroup = true, gid
					g := h.group(ri)
					g.Ready, g.Leaves = true, []mlsLeaf{{User: sender.user.ID, Device: dc.Device}}
					sender.device = dc.Device
				})
				epoch := uint64(0)
				cmd = command{client: sender, env: &envelope{Type: "mls_app", Room: lobby, Epoch: &epoch,
					mls: &mlsPayload{msg: benchPrivateMessage(gid)}}}
			}
			runFanout(b, h, cmd, members)
		})
	}
}

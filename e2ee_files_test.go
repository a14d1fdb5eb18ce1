package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"testing"
)

// e2eeFileServer has files up to 64 KiB, history keeping those up to 16 KiB, and
// alice owning the E2EE room vault (so she holds send_binary there) with bob, a plain
// member, in it, and the plain room plain of hers beside it.
func e2eeFileServer(t *testing.T, mutate func(*Config)) (ts *testServer, alice, bob *wsClient) {
	t.Helper()
	ts = startServer(t, func(c *Config) {
		generousLimits(c)
		c.FileMaxBytes, c.FileBurst, c.HistoryFileMax = 64<<10, 1<<20, 16<<10
		if mutate != nil {
			mutate(c)
		}
	})
	alice, bob = ts.user(t, "alice"), ts.user(t, "bob")
	alice.mustAck(map[string]any{"type": "create", "room": "vault", "private": true, "e2ee": true})
	alice.mustAck(map[string]any{"type": "create", "room": "plain", "private": true})
	for _, room := range []string{"vault", "plain"} {
		alice.mustAck(map[string]any{"type": "invite", "room": room, "user": "dev:bob"})
		bob.mustAck(map[string]any{"type": "join", "room": room})
	}
	return ts, alice, bob
}

// sealedBytes stand for an encrypted file: random bytes after a PNG header and a
// script tag, which the sniffer would refuse in a plain room, so that storing them
// as they came shows the server did not sniff them.
func sealedBytes(t *testing.T, n int) []byte {
	b := append(testPNG(t), []byte("<script>alert(1)</script>")...)
	tail := make([]byte, n-len(b))
	rand.Read(tail)
	return append(b, tail...)
}

// TestE2EEFileRules: in an E2EE room the server takes only opaque (encrypted) files,
// unsigned and small enough for history, from members allowed to send files, and an
// opaque file nowhere else; each refusal has its code and delivers nothing. The one
// it takes is delivered, kept in history as metadata and fetched back byte for byte,
// never sniffed: the files bucket holds exactly the bytes that came (ciphertext),
// typed application/octet-stream.
func TestE2EEFileRules(t *testing.T) {
	ts, alice, bob := e2eeFileServer(t, nil)
	sealed := sealedBytes(t, 4<<10)
	id := newTestIdentity("dev:alice", "alice-laptop")
	alice.mustAck(id.registration(id.user))
	for _, tc := range []struct {
		what, room, mime string
		data             []byte
		signed           bool
		code             string
	}{
		{"a plaintext image in the E2EE room", "vault", "image/png", testPNG(t), false, codeFileType},
		{"a signed opaque file", "vault", opaqueFileType, sealed, true, codeBadEnvelope},
		{"an opaque file over -history-file-max", "vault", opaqueFileType, sealedBytes(t, 20<<10), false, codeFileTooBig},
		{"an opaque file in a plain room", "plain", opaqueFileType, sealed, false, codeFileType},
	} {
		if tc.signed {
			alice.send(id.signedFile(tc.room, "encrypted", tc.mime, tc.data, "r"))
			alice.sendRaw(2, tc.data)
		} else {
			alice.sendFile(tc.room, "encrypted", tc.mime, tc.data, "r")
		}
		if ev := alice.answerTo("r"); ev["type"] != "error" || ev["code"] != tc.code {
			t.Errorf("%s: got %v %v, want %s", tc.what, ev["code"], ev["message"], tc.code)
		}
	}
	bob.sendFile("vault", "encrypted", opaqueFileType, sealed, "b")
	if ev := bob.answerTo("b"); ev["code"] != codeForbidden {
		t.Errorf("a member without send_binary: %v", ev)
	}
	noneOfType(t, bob.barrier(), "file")

	alice.sendFile("vault", "encrypted", opaqueFileType, sealed, "ok")
	ack := alice.answerTo("ok")
	if ack["type"] != "ack" {
		t.Fatalf("the opaque file in the E2EE room: %v", ack)
	}
	live := bob.expect("file")
	if got, _ := base64.StdEncoding.DecodeString(live["data"].(string)); !bytes.Equal(got, sealed) || live["mime"] != opaqueFileType || live["id"] != ack["id"] {
		t.Fatalf("bob's live file: mime %v id %v, bytes equal %v", live["mime"], live["id"], bytes.Equal(got, sealed))
	}
	fetched := bob.sendAwait(map[string]any{"type": "fetch_file", "room": "vault", "id": ack["id"]}, "g", func(ev map[string]any) bool {
		return ev["type"] == "file" || ev["type"] == "error"
	})
	if got, _ := base64.StdEncoding.DecodeString(fetched["data"].(string)); !bytes.Equal(got, sealed) || fetched["mime"] != opaqueFileType {
		t.Fatalf("fetched: %v %v", fetched["type"], fetched["mime"])
	}
	var stored []byte
	ts.App.store.After(filesBucket("vault"), nil, 10, func(_, v []byte) error {
		stored = append(stored, v...)
		return nil
	})
	if want := base64.StdEncoding.EncodeToString(sealed); string(stored) != want {
		t.Fatalf("the files bucket holds %d bytes, not the %d of the ciphertext as it came", len(stored), len(want))
	}
}

// TestE2EEFileBucket: an opaque file costs the file-bytes bucket like any other.
func TestE2EEFileBucket(t *testing.T) {
	_, alice, _ := e2eeFileServer(t, func(c *Config) { c.FileRate, c.FileBurst, c.FileMaxBytes = 1, 24<<10, 24<<10 })
	sealed := sealedBytes(t, 16<<10)
	alice.sendFile("vault", "encrypted", opaqueFileType, sealed, "1")
	if ev := alice.answerTo("1"); ev["type"] != "ack" {
		t.Fatalf("first file: %v", ev)
	}
	alice.sendFile("vault", "encrypted", opaqueFileType, sealed, "2")
	if ev := alice.answerTo("2"); ev["code"] != codeRateLimited {
		t.Fatalf("second file: %v", ev)
	}
}

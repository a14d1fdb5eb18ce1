package main

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"

	"modified-chat/internal/sigmsg"
)

// fileSig is the badge of the file message with this id in the open room.
func fileSig(id int) string {
	return fmt.Sprintf(`document.querySelector('#messages .msg[data-id="%d"] .msg-sig')?.dataset.sig`, id)
}

// TestBrowserSignedFiles: the page signs the files it sends (the page's file encoding
// equals Go's byte for byte, and the hub verified it, or it would not be delivered);
// the receiving page checks the SHA-256 of the bytes that arrived against the signed
// one: a genuine file shows signed, also from history once its bytes are fetched, and
// the same announcement with one byte of the file changed (a server altering it in
// transit) shows invalid.
func TestBrowserSignedFiles(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Moderators = []string{"dev:alice", "dev:carol"}; generousLimits(c) })
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	for _, u := range []*browserUser{alice, bob} {
		u.waitJS(t, "signing to be on", `document.body.dataset.signing === 'on'`)
	}

	golden := &sigmsg.Message{Kind: "file", Room: "lobby", User: "dev:alice", Device: "d1", Counter: 7, TS: 1700000000000, Name: "a.png", Mime: "image/png"}
	for i := range golden.ID {
		golden.ID[i] = byte(i)
	}
	for i := range golden.SHA256 {
		golden.SHA256[i] = byte(255 - i)
	}
	got := evalAsync[string](t, alice, `import('/static/sigbytes.js').then((s) => s.hex(s.fileBytes({
		room: 'lobby', user: 'dev:alice', device: 'd1', counter: 7, ts: 1700000000000, name: 'a.png', mime: 'image/png',
		msgId: Uint8Array.from({ length: 16 }, (_, i) => i), sha256: Uint8Array.from({ length: 32 }, (_, i) => 255 - i) })))`)
	if want := hex.EncodeToString(golden.Encode()); got != want {
		t.Fatalf("page encodes\n%s\nGo encodes\n%s", got, want)
	}

	// alice's page sends a file: signed, and shown signed on bob's page.
	img := testPNG(t)
	path := filepath.Join(t.TempDir(), "dot.png")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(alice.ctx, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{path})); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "alice's file to show signed", `Array.from(document.querySelectorAll('#messages .msg')).some((m) => m.querySelector('.msg-image') && m.querySelector('.msg-sig')?.dataset.sig === 'signed')`)
	if stored := storedMessage(t, ts, lobby); stored["sig"] == nil || stored["type"] != "file" {
		t.Fatalf("the page sent the file unsigned: %v", stored["sig"])
	}

	// carol is a Go device: what she signs but never sends lets the test play a
	// server that alters a file on its way.
	carol := ts.user(t, "carol")
	carolID := newTestIdentity("dev:carol", "carol-laptop")
	carol.mustAck(carolID.registration(carolID.user))
	frame := func(id int, data []byte, sig any) map[string]any {
		return map[string]any{"type": "file", "room": lobby, "id": id, "ts": 1700000000000,
			"from": map[string]any{"id": "dev:carol", "name": "carol"}, "name": "dot.png", "mime": "image/png",
			"size": len(data), "data": b64(data), "sig": sig}
	}
	genuine := carolID.signedFile(lobby, "dot.png", "image/png", img, "")
	inject(t, ts, lobby, frame(1e6, img, genuine["sig"]))
	bob.waitJS(t, "the genuine file to show signed", fileSig(1e6)+` === 'signed'`)

	tampered := append([]byte(nil), img...)
	tampered[len(tampered)-5] ^= 1
	altered := carolID.signedFile(lobby, "dot.png", "image/png", img, "")
	inject(t, ts, lobby, frame(1e6+1, tampered, altered["sig"]))
	bob.waitJS(t, "the altered file to show invalid", fileSig(1e6+1)+` === 'invalid'`)

	// From history: the bytes come later (fetch_file) and are checked then.
	if err := chromedp.Do(bob.ctx, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	bob.waitJS(t, "the history file to show signed", `Array.from(document.querySelectorAll('#messages .msg')).some((m) => m.querySelector('.msg-image') && m.querySelector('.msg-sig')?.dataset.sig === 'signed')`)
	bob.watch.assertClean(t, "bob")
	alice.watch.assertClean(t, "alice")
}

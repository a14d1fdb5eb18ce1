package main

import (
	"bytes"
	"encoding/base64"
	"image"
	"image/color"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
)

// noisePNG is a 32x32 PNG of random pixels: incompressible, so its bytes (and their
// base64) are a canary no other data in the store can hold by chance.
func noisePNG(t *testing.T) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, 32, 32))
	r := rand.New(rand.NewPCG(7, 13))
	for i := range img.Pix {
		img.Pix[i] = byte(r.Uint32())
	}
	img.Set(0, 0, color.RGBA{1, 2, 3, 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestBrowserE2EEFile: files in an E2EE room, two real pages and the real hub (on the
// bbolt store). Alice picks an image exactly as a person would; her page encrypts it,
// bob's page decrypts, checks and shows it (both pages show the image). Then alice's
// page sends two files that lie (a GIF that claims to be a PNG, and a PNG with a
// script inside): bob's page shows neither, counts each refusal (type, active), says
// so in a notice and in the room. The data file holds the ciphertexts, typed
// application/octet-stream, and no byte of the image, raw or in base64.
func TestBrowserE2EEFile(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.Store = "bolt" })
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	e2eeMembers(t, "vault", alice, bob)
	alice.waitJS(t, "the attach button", `!!document.querySelector('#attach')?.checkVisibility()`)

	img := noisePNG(t)
	path := filepath.Join(t.TempDir(), "cat.png")
	if err := os.WriteFile(path, img, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(alice.ctx, chromedp.SetUploadFiles(chromedp.ID("file-input"), []string{path})); err != nil {
		t.Fatal(err)
	}
	const shown = `[...document.querySelectorAll('#messages .msg img.msg-image')].some((i) => i.alt === 'cat.png' && i.complete && i.naturalWidth === 32)`
	bob.waitJS(t, "alice's image at bob", shown+` && window.__e2eeFiles.shown === 1`)
	alice.waitJS(t, "alice's own image", shown+` && window.__e2eeFiles.sent === 1`)

	lie := func(name, typ, dataB64 string) {
		evalAsync[bool](t, alice, `(async () => {
  const f = await import('/static/e2eefiles.js');
  const e = await import('/static/e2ee.js');
  const bytes = Uint8Array.from(atob(`+strconvQuote(dataB64)+`), (c) => c.charCodeAt(0));
  await f.sendSealed('vault', bytes, { name: `+strconvQuote(name)+`, type: `+strconvQuote(typ)+` }, (room, meta) => e.engine().send(room, 'file', meta));
  return true;
})()`)
	}
	gif := []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
	lie("liar.png", "image/png", base64.StdEncoding.EncodeToString(gif))
	bob.waitJS(t, "the GIF that claims PNG refused", `window.__e2eeFiles.refused.type === 1 &&
		!!document.querySelector('#notices .notice[data-code="e2ee_file_type"]') &&
		[...document.querySelectorAll('#messages .msg-refused')].some((c) => /^liar\.png \(not shown: its content is not the type it claims\)$/.test(c.textContent))`)
	lie("script.png", "image/png", base64.StdEncoding.EncodeToString(append(testPNG(t), []byte("<script>alert(1)</script>")...)))
	bob.waitJS(t, "the PNG with a script refused", `window.__e2eeFiles.refused.active === 1 &&
		!!document.querySelector('#notices .notice[data-code="e2ee_file_active"]')`)
	if n := eval[int](t, bob, `[...document.querySelectorAll('#messages img.msg-image')].filter((i) => i.alt !== 'cat.png').length + window.__e2eeFiles.shown`); n != 1 {
		t.Fatalf("bob's page previewed %d files, want only cat.png", n)
	}

	shot, err := chromedp.Run(bob.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/e2ee-file.png", shot)

	var sealed [][]byte
	ts.App.store.After(filesBucket("vault"), nil, 10, func(_, v []byte) error {
		sealed = append(sealed, bytes.Clone(v))
		return nil
	})
	db, err := os.ReadFile(filepath.Join(ts.App.cfg.Load().DataDir, storeFileName))
	if err != nil {
		t.Fatal(err)
	}
	if len(sealed) != 3 || !bytes.Contains(db, sealed[0]) {
		t.Fatalf("the store holds %d E2EE files (want 3), the first in the data file: %v", len(sealed), len(sealed) > 0 && bytes.Contains(db, sealed[0]))
	}
	if ct, _ := base64.StdEncoding.DecodeString(string(sealed[0])); len(ct) != len(img)+16 {
		t.Errorf("the stored file has %d bytes, want the ciphertext's %d", len(ct), len(img)+16)
	}
	b64img := []byte(base64.StdEncoding.EncodeToString(img))
	for _, probe := range [][]byte{img[len(img)/2 : len(img)/2+64], b64img[len(b64img)/2 : len(b64img)/2+64]} {
		if bytes.Contains(db, probe) {
			t.Fatal("the data file holds bytes of the image")
		}
	}
	if !bytes.Contains(db, []byte(`"mime":"application/octet-stream"`)) || bytes.Contains(db, []byte("cat.png")) {
		t.Error("history should hold the file as application/octet-stream, and not its name")
	}
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

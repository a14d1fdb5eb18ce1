package main

import (
	"fmt"
	"image"
	"image/color"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/makiuchi-d/gozxing"
	"github.com/makiuchi-d/gozxing/qrcode"
)

// qrPixels is how many pixels one module becomes when the test draws a code for the
// decoder: enough that the decoder's binariser sees clean edges.
const qrPixels = 4

// drawnQR is what the page drew for a safety number: the digits its text shows, the
// module count it recorded and the dark modules' path, plus the vendored encoder's
// own matrix for those digits and for a number one digit away.
type drawnQR struct {
	Text    string   `json:"text"`
	Modules int      `json:"modules"`
	Path    string   `json:"path"`
	Matrix  []string `json:"matrix"`
	Other   []string `json:"other"`
	Label   string   `json:"label"`
}

// readQR reads back the QR code in a safety number toast, and asks the page's qr.js
// for the matrix of the same digits and of the digits with the last one changed.
func readQR(t *testing.T, u *browserUser, other string) drawnQR {
	t.Helper()
	sel := `#notices .notice[data-code="safety:` + other + `"]`
	u.waitJS(t, "the safety number's QR code", `(sel) => !!document.querySelector(sel + ' svg.safety-qr path.qr-dark')`, sel)
	return evalAsync[drawnQR](t, u, `(async (sel) => {
		const box = document.querySelector(sel);
		const svg = box.querySelector('svg.safety-qr');
		const text = box.querySelector('.notice-text').textContent;
		const digits = (text.match(/(\d{5} ){11}\d{5}/) || [''])[0].replace(/ /g, '');
		const { qrMatrix } = await import('/static/qr.js');
		const other = digits.slice(0, -1) + String((Number(digits.slice(-1)) + 1) % 10);
		return { text: digits, modules: Number(svg.dataset.modules), path: svg.querySelector('path.qr-dark').getAttribute('d'),
			label: svg.getAttribute('aria-label'), matrix: qrMatrix(digits), other: qrMatrix(other) };
	})(`+"`"+sel+"`"+`)`)
}

// pathMatrix turns the SVG path the page drew (one "Mx yh1v1h-1z" square per dark
// module, offset by the quiet zone) back into rows of '1' and '0'.
func pathMatrix(t *testing.T, n int, d string) []string {
	t.Helper()
	cells := make([][]byte, n)
	for r := range cells {
		cells[r] = []byte(strings.Repeat("0", n))
	}
	squares := regexp.MustCompile(`M(\d+) (\d+)h1v1h-1z`).FindAllStringSubmatch(d, -1)
	if strings.Join(regexp.MustCompile(`M(\d+) (\d+)h1v1h-1z`).Split(d, -1), "") != "" {
		t.Fatalf("the QR path holds something else than unit squares: %.80q", d)
	}
	for _, s := range squares {
		var x, y int
		fmt.Sscan(s[1], &x)
		fmt.Sscan(s[2], &y)
		x, y = x-4, y-4 // the quiet zone qr.js leaves
		if x < 0 || y < 0 || x >= n || y >= n {
			t.Fatalf("a dark module at %d,%d is outside the %d×%d code", x, y, n, n)
		}
		cells[y][x] = '1'
	}
	rows := make([]string, n)
	for r := range cells {
		rows[r] = string(cells[r])
	}
	return rows
}

// decodeQR renders a module matrix as a black-on-white image with a quiet zone and
// decodes it with ZXing's QR reader (the Go port): an independent decoder, so a
// wrong encoding or a wrong drawing shows as a wrong or failed read.
func decodeQR(t *testing.T, rows []string) string {
	t.Helper()
	n := len(rows)
	side := (n + 8) * qrPixels
	img := image.NewGray(image.Rect(0, 0, side, side))
	for y := range side {
		for x := range side {
			img.SetGray(x, y, color.Gray{Y: 255})
		}
	}
	for r, row := range rows {
		for c := range row {
			if row[c] != '1' {
				continue
			}
			for dy := range qrPixels {
				for dx := range qrPixels {
					img.SetGray((c+4)*qrPixels+dx, (r+4)*qrPixels+dy, color.Gray{Y: 0})
				}
			}
		}
	}
	bmp, err := gozxing.NewBinaryBitmapFromImage(img)
	if err != nil {
		t.Fatal(err)
	}
	res, err := qrcode.NewQRCodeReader().Decode(bmp, map[gozxing.DecodeHintType]any{gozxing.DecodeHintType_PURE_BARCODE: true})
	if err != nil {
		t.Fatalf("the drawn QR code does not decode: %v", err)
	}
	return res.GetText()
}

// TestBrowserSafetyQR: the safety number's toast shows a QR code beside the digits;
// read back from the SVG the page drew, it decodes (with ZXing, not the page's
// encoder) to exactly the 60 digits both users see, it is the vendored encoder's
// matrix for those digits, and another number gives another code.
func TestBrowserSafetyQR(t *testing.T) {
	ts := startServer(t, generousLimits)
	browser := newBrowser(t)
	alice := loginUser(t, browser, ts.URL, "alice")
	bob := loginUser(t, browser, ts.URL, "bob")
	for _, u := range []*browserUser{alice, bob} {
		u.waitJS(t, "signing to be on", `document.body.dataset.signing === 'on'`)
	}
	alice.say(t, "hello bob")
	bob.say(t, "hello alice")
	click := func(u *browserUser, text string) {
		u.waitSig(t, text, "signed")
		if err := chromedp.Do(u.ctx, chromedp.Evaluate[chromedp.Void](`Array.from(document.querySelectorAll('#messages .msg')).find((m) => m.querySelector('.msg-text')?.textContent === '`+text+`').querySelector('button.msg-sig').click()`)); err != nil {
			t.Fatal(err)
		}
	}
	click(alice, "hello alice")
	click(bob, "hello bob")
	a, b := readQR(t, alice, "dev:bob"), readQR(t, bob, "dev:alice")
	if len(a.Text) != 60 || a.Text != b.Text {
		t.Fatalf("safety numbers: alice %q, bob %q", a.Text, b.Text)
	}
	for who, q := range map[string]drawnQR{"alice": a, "bob": b} {
		drawn := pathMatrix(t, q.Modules, q.Path)
		if got := decodeQR(t, drawn); got != q.Text {
			t.Fatalf("%s's QR code decodes to %q, the toast shows %q", who, got, q.Text)
		}
		if strings.Join(drawn, "\n") != strings.Join(q.Matrix, "\n") {
			t.Fatalf("%s's page drew a code that is not the encoder's matrix for the digits", who)
		}
		if strings.Join(q.Other, "\n") == strings.Join(q.Matrix, "\n") {
			t.Fatalf("another number gives the same code")
		}
		if got := decodeQR(t, q.Other); got == q.Text {
			t.Fatalf("the other number's code decodes to this number %q", got)
		}
		if !strings.Contains(q.Label, "safety number") {
			t.Fatalf("%s's QR code has no label for screen readers: %q", who, q.Label)
		}
	}
	// Clicking again replaces the code rather than adding a second one.
	click(alice, "hello alice")
	alice.waitJS(t, "one QR code", `document.querySelectorAll('#notices svg.safety-qr').length === 1`)

	shot, err := chromedp.Run(alice.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	saveScreenshot(t, os.Getenv("CHAT_SCREENSHOTS") == "1", "/tmp/safety-qr-screenshot.png", shot)
	alice.watch.assertClean(t, "alice")
	bob.watch.assertClean(t, "bob")
}

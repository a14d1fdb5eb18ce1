package main

import (
	"bytes"
	"encoding/base64"
	"errors"
	"image"
	"image/color"
	"image/jpeg"
	"image/png"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// testPNG and testJPEG are small real images.
func testPNG(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 8, 8))
	img.Set(1, 1, color.RGBA{255, 0, 0, 255})
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func testJPEG(t *testing.T) []byte {
	var b bytes.Buffer
	if err := jpeg.Encode(&b, image.NewGray(image.Rect(0, 0, 8, 8)), nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// sendFile announces a file and sends its bytes, as the page does.
func (c *wsClient) sendFile(room, name, mime string, data []byte, ref string) {
	c.t.Helper()
	c.send(map[string]any{"type": "file", "room": room, "name": name, "mime": mime, "size": len(data), "ref": ref})
	c.sendRaw(websocket.BinaryMessage, data)
}

// answerTo returns the ack or error that names ref, failing with ref in the message
// when none comes within 5 s.
func (c *wsClient) answerTo(ref string) map[string]any {
	c.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		ev, err := c.next(time.Until(deadline))
		if err != nil {
			c.t.Fatalf("%s: no answer: %v", ref, err)
		}
		if ev["ref"] == ref && (ev["type"] == "ack" || ev["type"] == "error") {
			return ev
		}
	}
}

// fileServer has dev:mod as a global moderator (who may send files) and a small file
// limit.
func fileServer(t *testing.T, mutate func(*Config)) *testServer {
	return startServer(t, func(c *Config) {
		c.Moderators = []string{"dev:mod"}
		c.FileMaxBytes, c.FileBurst = 64<<10, 1<<20
		generousLimits(c)
		if mutate != nil {
			mutate(c)
		}
	})
}

// TestFileDeliveredByteForByte: a user with send_binary sends a PNG; it arrives at the
// other member with its sniffed type and exactly its bytes.
func TestFileDeliveredByteForByte(t *testing.T) {
	ts := fileServer(t, nil)
	mod, bob := ts.user(t, "mod"), ts.user(t, "bob")
	img := testPNG(t)
	mod.sendFile("lobby", "red dot.png", "image/png", img, "f1")
	f := bob.expect("file")
	got, err := base64.StdEncoding.DecodeString(f["data"].(string))
	if err != nil || !bytes.Equal(got, img) {
		t.Fatalf("file bytes differ (err %v)", err)
	}
	if f["mime"] != "image/png" || f["name"] != "red dot.png" || f["size"] != float64(len(img)) || f["from"].(map[string]any)["id"] != "dev:mod" {
		t.Fatalf("file event %v", f)
	}
	if ack := mod.expect("ack"); ack["ref"] != "f1" || ack["id"] != f["id"] {
		t.Fatalf("ack %v", ack)
	}
}

// TestFileRefusedWithoutPermission: a member without send_binary is refused with
// forbidden, the bytes are discarded, nothing is delivered, the connection lives on.
func TestFileRefusedWithoutPermission(t *testing.T) {
	ts := fileServer(t, nil)
	bob, carol := ts.user(t, "bob"), ts.user(t, "carol")
	bob.sendFile("lobby", "x.png", "image/png", testPNG(t), "f")
	bob.expectError(codeForbidden)
	noneOfType(t, carol.barrier(), "file")
	bob.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "still connected"})
}

// TestFileRefusals attacks the sniffer and the name checks; each is refused with its
// code and nothing reaches the other member.
func TestFileRefusals(t *testing.T) {
	ts := fileServer(t, nil)
	mod, bob := ts.user(t, "mod"), ts.user(t, "bob")
	gifScript := append([]byte("GIF89a\x01\x00\x01\x00\x00\x00\x00;"), []byte("<script>alert(1)</script>")...)
	pngHTML := append(testPNG(t), []byte("<html><body onload=alert(1)>")...)
	cases := []struct {
		name, file, mime string
		data             []byte
		code             string
	}{
		{"declared png, is jpeg", "a.png", "image/png", testJPEG(t), codeFileType},
		{"svg", "a.svg", "image/svg+xml", []byte(`<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>`), codeFileType},
		{"svg as text", "a.txt", "text/plain", []byte(`<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"></svg>`), codeFileType},
		{"html", "a.html", "text/html", []byte("<!DOCTYPE html><script>alert(1)</script>"), codeFileType},
		{"html as text", "a.txt", "text/plain", []byte("<html><script>alert(1)</script></html>"), codeFileType},
		{"executable", "a.exe", "application/octet-stream", append([]byte("MZ\x90\x00\x03\x00\x00\x00"), make([]byte, 100)...), codeFileType},
		{"executable as png", "a.png", "image/png", append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 100)...), codeFileType},
		{"gif with script", "a.gif", "image/gif", gifScript, codeFileType},
		{"png with html", "a.png", "image/png", pngHTML, codeFileType},
		{"pdf with javascript", "a.pdf", "application/pdf", []byte("%PDF-1.4\n1 0 obj << /OpenAction << /S /JavaScript /JS (app.alert(1)) >> >>"), codeFileType},
		{"path name", "../../etc/passwd.png", "image/png", testPNG(t), codeBadFileName},
		{"backslash name", `..\x.png`, "image/png", testPNG(t), codeBadFileName},
		{"control name", "a\x00b.png", "image/png", testPNG(t), codeBadFileName},
		{"bidi name", "evil\u202egnp.exe", "image/png", testPNG(t), codeBadFileName},
		{"dot name", ".htaccess", "text/plain", []byte("hello"), codeBadFileName},
		{"long name", strings.Repeat("n", 200) + ".png", "image/png", testPNG(t), codeBadFileName},
		{"padded name", " a.png ", "image/png", testPNG(t), codeBadFileName},
		{"slash name", "a/b.png", "image/png", testPNG(t), codeBadFileName},
		{"drive name", "c:b.png", "image/png", testPNG(t), codeBadFileName},
		{"markup name", "<b>.png", "image/png", testPNG(t), codeBadFileName},
		{"latin-1 text", "a.txt", "text/plain", []byte("caf\xe9 cr\xe8me"), codeFileType},
		{"utf-16 text", "a.txt", "text/plain", []byte("\xff\xfeh\x00i\x00"), codeFileType},
	}
	for _, tc := range cases {
		mod.sendFile("lobby", tc.file, tc.mime, tc.data, tc.name)
		if ev := mod.answerTo(tc.name); ev["type"] != "error" || ev["code"] != tc.code {
			t.Fatalf("%s: answered %v %v, want error %s", tc.name, ev["type"], ev["code"], tc.code)
		}
	}
	for _, ev := range bob.barrier() {
		if ev["type"] == "file" {
			t.Fatalf("a refused file reached the other member: %v (%v)", ev["name"], ev["mime"])
		}
	}
	// An announcement over the size limit is refused before any byte is sent.
	mod.send(map[string]any{"type": "file", "room": "lobby", "name": "big.txt", "mime": "text/plain", "size": 65 << 10, "ref": "over the limit"})
	if ev := mod.expect("error"); ev["code"] != codeFileTooBig {
		t.Fatalf("announcement over the size limit: got %v, want %s", ev["code"], codeFileTooBig)
	}
	// A frame of a different size than announced.
	mod.send(map[string]any{"type": "file", "room": "lobby", "name": "a.txt", "mime": "text/plain", "size": 3})
	mod.sendRaw(websocket.BinaryMessage, []byte("four"))
	if ev := mod.expect("error"); ev["code"] != codeBadFile {
		t.Fatalf("four bytes announced as three: got %v, want %s", ev["code"], codeBadFile)
	}
	// A binary frame larger than the file limit, whatever was announced, closes 1009.
	mod.send(map[string]any{"type": "file", "room": "lobby", "name": "a.txt", "mime": "text/plain", "size": 10})
	mod.sendRaw(websocket.BinaryMessage, bytes.Repeat([]byte("a"), 70<<10))
	mod.expectClose(websocket.CloseMessageTooBig)
}

// TestFileNeedsRoomRole: a room owner may send files in their room but a plain member
// may not, and a plain file in text is fine.
func TestFileNeedsRoomRole(t *testing.T) {
	ts := fileServer(t, nil)
	owner, bob := ts.user(t, "olga"), ts.user(t, "bob")
	owner.mustAck(map[string]any{"type": "create", "room": "pics"})
	bob.mustAck(map[string]any{"type": "join", "room": "pics"})
	owner.sendFile("pics", "notes.txt", "text/plain", []byte("plain UTF-8 text ✓\n"), "o")
	if f := bob.expect("file"); f["mime"] != "text/plain" || f["room"] != "pics" {
		t.Fatalf("file %v", f)
	}
	owner.sendFile("lobby", "notes.txt", "text/plain", []byte("hi"), "o2")
	owner.expectError(codeForbidden)
}

// TestFileFileBucket: the separate file-bytes bucket limits how fast files may come.
func TestFileFileBucket(t *testing.T) {
	ts := fileServer(t, func(c *Config) { c.FileRate, c.FileBurst = 1, 64<<10 })
	mod := ts.user(t, "mod")
	data := bytes.Repeat([]byte("abcdefgh"), 5<<10) // 40 KiB
	mod.sendFile("lobby", "a.txt", "text/plain", data, "1")
	mod.expect("ack")
	mod.sendFile("lobby", "b.txt", "text/plain", data, "2")
	mod.expectError(codeRateLimited)
}

// TestFileRateLimitedAnnouncementDiscards: an announcement dropped by the message
// bucket still has its binary frame discarded instead of closing the connection 1003.
func TestFileRateLimitedAnnouncementDiscards(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) {
		c.Moderators = []string{"dev:mod"}
		c.MsgBurst, c.MsgRate = 1, 0.001
	})
	mod := ts.user(t, "mod")
	mod.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "uses the burst"})
	mod.sendFile("lobby", "a.png", "image/png", testPNG(t), "f")
	mod.expectError(codeRateLimited)
	clock.Advance(time.Hour)
	mod.mustAck(map[string]any{"type": "say", "room": "lobby", "text": "still connected"})
}

// TestAbuseCloseKeepsErrors: the rate_limited errors queued before an abuse close
// reach the client, then the 1008 close frame.
func TestAbuseCloseKeepsErrors(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) { c.MsgBurst, c.MsgRate, c.AbuseDrops = 1, 0.001, 3 })
	a := ts.user(t, "flooder")
	for i := 0; i < 4; i++ {
		a.send(map[string]any{"type": "say", "room": "lobby", "text": "x"})
	}
	errs := 0
	for {
		ev, err := a.next(5 * time.Second)
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != websocket.ClosePolicyViolation {
				t.Fatalf("want 1008, got %v", err)
			}
			break
		}
		if ev["type"] == "error" && ev["code"] == codeRateLimited {
			errs++
		}
	}
	if errs != 2 {
		t.Fatalf("%d rate_limited errors before the close, want 2", errs)
	}
}

// TestRefusedFileBytesCost: a member who may not send files cannot use refused
// announcements for free bandwidth: the discarded bytes draw from the file bucket,
// and keeping it up ends in 1008.
func TestRefusedFileBytesCost(t *testing.T) {
	clock := newFakeClock()
	ts := startServerAt(t, clock.Now, func(c *Config) {
		generousLimits(c)
		c.FileRate, c.FileBurst, c.FileMaxBytes, c.AbuseDrops = 1, 64<<10, 64<<10, 3
	})
	bob := ts.user(t, "bob")
	data := bytes.Repeat([]byte("a"), 60<<10)
	for i := 0; i < 6; i++ {
		bob.send(map[string]any{"type": "file", "room": "lobby", "name": "a.txt", "mime": "text/plain", "size": len(data)})
		bob.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if bob.conn.WriteMessage(websocket.BinaryMessage, data) != nil {
			break
		}
	}
	bob.expectClose(websocket.ClosePolicyViolation)
}

// TestFileGateAnnouncement: the first send_binary gate answers the announcement
// itself: a member without the permission is refused before sending a single byte
// (the refusal is there before a barrier), and the bytes that follow are discarded
// without a second answer.
func TestFileGateAnnouncement(t *testing.T) {
	ts := fileServer(t, nil)
	bob, carol := ts.user(t, "bob"), ts.user(t, "carol")
	img := testPNG(t)
	bob.send(map[string]any{"type": "file", "room": "lobby", "name": "x.png", "mime": "image/png", "size": len(img), "ref": "f"})
	if code := errorCode(bob.barrier()); code != codeForbidden {
		t.Fatalf("announcement without send_binary: before any byte got %q, want forbidden", code)
	}
	bob.sendRaw(websocket.BinaryMessage, img)
	if evs := bob.barrier(); len(evs) != 0 {
		t.Fatalf("the discarded bytes were answered: %v", evs)
	}
	noneOfType(t, carol.barrier(), "file")
}

// TestFileGateBytes: the second send_binary gate checks again when the bytes arrive,
// for the announcement was accepted under a role or a membership that may be gone:
// demoted, or out of the room, in between, the sender's file is refused and nobody
// gets it.
func TestFileGateBytes(t *testing.T) {
	ts := fileServer(t, func(c *Config) { c.Admins = []string{"dev:root"} })
	root, mod, bob := ts.user(t, "root"), ts.user(t, "mod"), ts.user(t, "bob")
	img := testPNG(t)
	announce := func(ref string) {
		mod.send(map[string]any{"type": "file", "room": "lobby", "name": "x.png", "mime": "image/png", "size": len(img), "ref": ref})
		if evs := mod.barrier(); errorCode(evs) != "" {
			t.Fatalf("announcement refused: %v", evs)
		}
	}
	// Out of the room between the announcement and the bytes.
	announce("left")
	mod.mustAck(map[string]any{"type": "leave", "room": "lobby"})
	mod.sendRaw(websocket.BinaryMessage, img)
	if ev := mod.expectError(codeNotInRoom); ev["ref"] != "left" {
		t.Fatalf("refusal without the file's ref: %v", ev)
	}
	mod.mustAck(map[string]any{"type": "join", "room": "lobby"})
	// Demoted between the announcement and the bytes.
	announce("demoted")
	root.mustAck(map[string]any{"type": "set_role", "user": "dev:mod", "role": "member"})
	mod.sendRaw(websocket.BinaryMessage, img)
	if ev := mod.expectError(codeForbidden); ev["ref"] != "demoted" {
		t.Fatalf("refusal without the file's ref: %v", ev)
	}
	noneOfType(t, bob.barrier(), "file")
	noneOfType(t, root.barrier(), "file")
}

// TestFileTypesAllowList: the operator's -file-types narrows what is accepted: a type
// the server could recognise but the list leaves out is refused with file_type, after
// the bytes are sniffed, and nothing is delivered.
func TestFileTypesAllowList(t *testing.T) {
	ts := fileServer(t, func(c *Config) { c.FileTypes = []string{"image/png"} })
	mod, bob := ts.user(t, "mod"), ts.user(t, "bob")
	mod.sendFile("lobby", "notes.txt", "text/plain", []byte("plain text, but not allowed here"), "txt")
	if ev := mod.expect("error"); ev["code"] != codeFileType || ev["ref"] != "txt" {
		t.Fatalf("a text file with only PNG allowed: %v", ev)
	}
	mod.sendFile("lobby", "dot.png", "image/png", testPNG(t), "png")
	if ack := mod.expect("ack"); ack["ref"] != "png" {
		t.Fatalf("the allowed type was not acknowledged: %v", ack)
	}
	for _, ev := range bob.barrier() {
		if ev["type"] == "file" && ev["mime"] != "image/png" {
			t.Fatalf("a file outside the allow-list was delivered: %v", ev)
		}
	}
}

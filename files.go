package main

import (
	"bytes"
	"encoding/base64"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxFileName bounds a file name, in characters.
const maxFileName = 128

// sniffableTypes are the content types http.DetectContentType can recognise and that
// an operator may put on the allow-list. Types that a browser could run (HTML, SVG and
// other XML, scripts) and what the sniffer cannot name (executables end up as
// application/octet-stream) are deliberately absent: they can never be allowed.
var sniffableTypes = map[string]bool{
	"image/png": true, "image/jpeg": true, "image/gif": true, "image/webp": true,
	"image/bmp": true, "application/pdf": true, "text/plain": true, "audio/mpeg": true,
	"audio/wave": true, "audio/ogg": true, "video/mp4": true, "video/webm": true,
	"application/zip": true,
}

// opaqueFileType is the declared type of every file in an end-to-end encrypted room:
// its bytes are ciphertext (the key travels inside an MLS message the server cannot
// read), so there is nothing to sniff. The hub accepts it only in such rooms
// (e2eeFileRule); it is never on the -file-types allow-list, and pages never show such
// a file from the server's event, only from what they decrypt.
const opaqueFileType = "application/octet-stream"

// knownFileType reports whether t may appear on the -file-types allow-list.
func knownFileType(t string) bool { return sniffableTypes[t] }

// activeMarkers are byte sequences that make content dangerous if any program ever
// treats it as markup or as an active PDF: an image header followed by HTML (a
// polyglot), SVG, scripts, PDF actions. Their presence anywhere refuses the file.
var activeMarkers = [][]byte{
	[]byte("<script"), []byte("<html"), []byte("<svg"), []byte("<iframe"), []byte("<object"),
	[]byte("<embed"), []byte("<body"), []byte("<!doctype"), []byte("<?xml"), []byte("<meta"),
	[]byte("javascript:"), []byte("onerror="), []byte("onload="),
	[]byte("/javascript"), []byte("/launch"), []byte("/embeddedfile"), []byte("/openaction"), []byte("/aa "),
}

// sniffFile decides what a file is from its bytes alone and refuses it unless that is
// an allowed type, the declared type matches, and nothing active hides inside.
func sniffFile(data []byte, declared string, allowed []string) (string, *protoError) {
	sniffed, params, err := mime.ParseMediaType(http.DetectContentType(data))
	if err != nil {
		return "", newProtoError(codeFileType, "the file's type cannot be recognised")
	}
	if sniffed == "text/plain" && (params["charset"] != "utf-8" || !utf8.Valid(data)) {
		return "", newProtoError(codeFileType, "text files must be UTF-8")
	}
	ok := false
	for _, a := range allowed {
		ok = ok || a == sniffed
	}
	if !ok || !sniffableTypes[sniffed] {
		return "", newProtoError(codeFileType, "files of type %s are not accepted", sniffed)
	}
	if declared != sniffed {
		return "", newProtoError(codeFileType, "the file says %s but its content is %s", declared, sniffed)
	}
	lower := bytes.ToLower(data)
	for _, m := range activeMarkers {
		if bytes.Contains(lower, m) {
			return "", newProtoError(codeFileType, "the file contains markup or active content")
		}
	}
	return sniffed, nil
}

// validFileName refuses names that could be paths, hide their extension (bidi
// controls), break a download dialog, or be too long. Refusing, rather than quietly
// repairing, tells the sender what happened.
func validFileName(name string) *protoError {
	if name == "" || utf8.RuneCountInString(name) > maxFileName {
		return newProtoError(codeBadFileName, "file names are 1 to %d characters", maxFileName)
	}
	if strings.ContainsAny(name, `/\:*?"<>|`) || strings.Contains(name, "..") || strings.HasPrefix(name, ".") || strings.TrimSpace(name) != name {
		return newProtoError(codeBadFileName, "file names may not contain paths or special characters")
	}
	if !isPrintable(name) {
		return newProtoError(codeBadFileName, "file names may not contain control characters")
	}
	return nil
}

// fileBody encodes the sender, name, type, size, signature (when signed) and bytes of a
// file message (the tail after id and ts), base64 in JSON, so it travels in the same
// text frames as chat. The bytes come last: meta is the length of the tail before
// them, so the hub can keep the metadata (with the signature, which recipients check
// once they have fetched the bytes) in history and the bytes apart (see Hub.stamp)
// without searching.
func fileBody(user []byte, name, mimeType string, data []byte, sig *signature) (body []byte, meta int) {
	b := make([]byte, 0, len(user)+len(name)+80+base64.StdEncoding.EncodedLen(len(data)))
	b = append(b, `"from":`...)
	b = append(b, user...)
	b = append(b, `,"name":`...)
	b = appendJSONString(b, name)
	b = append(b, `,"mime":"`...)
	b = append(b, mimeType...)
	b = append(b, `","size":`...)
	b = strconv.AppendInt(b, int64(len(data)), 10)
	if sig != nil {
		b = sig.appendSig(b)
	}
	meta = len(b)
	b = append(b, dataField...)
	b = base64.StdEncoding.AppendEncode(b, data)
	return append(b, `"}`...), meta
}

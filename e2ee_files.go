package main

// e2eeFileRule is the part of a file's permission that depends on whether the room is
// end-to-end encrypted (PROTOCOL.md, "Files in E2EE rooms"). There the page encrypts
// the file with a fresh key it sends inside an MLS message, so the server gets
// ciphertext it cannot sniff: the announcement must say opaqueFileType (anything
// else would be a plaintext file the server could not check), carry no `sig` (the MLS
// sender authenticates the file's key and hash), and fit in history, because members
// fetch the bytes once the message with the key arrives. In a plain room the opaque
// type is refused as before: there the server sniffs every file. It runs for the
// announcement and again for the bytes, as maySendFile does.
func (h *Hub) e2eeFileRule(env *envelope, ri *roomInfo) *protoError {
	if !ri.E2EE {
		if env.Mime == opaqueFileType {
			return newProtoError(codeFileType, "files of type %q are not accepted", env.Mime)
		}
		return nil
	}
	switch limit := h.settings().HistoryFileMax; {
	case env.Mime != opaqueFileType:
		return newProtoError(codeFileType, "an end-to-end encrypted room takes encrypted files only, announced as %s", opaqueFileType)
	case env.Sig != nil:
		return newProtoError(codeBadEnvelope, "files in an end-to-end encrypted room are authenticated inside MLS: no sig")
	case env.Size > limit:
		return newProtoError(codeFileTooBig, "files in an end-to-end encrypted room are at most %d bytes, so that members can fetch them", limit)
	}
	return nil
}

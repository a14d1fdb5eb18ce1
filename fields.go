package main

import (
	"unicode/utf8"

	"modified-chat/internal/keydir"
)

// The fields a command takes, as its row in the command table (commands.go) lists
// them. Each entry names the JSON fields it covers, exactly as PROTOCOL.md's
// client-to-server table names them (a test compares the two), and carries the check
// that validates, bounds and cleans them. The checks run in the readPump, before the
// command reaches the hub, in the row's order; the first refusal is the answer. The
// JSON decoder has already refused a field of the wrong kind (bad_envelope), so a
// field whose value any of its Go type may take has no check. Fields the envelope
// carries but a row does not list are ignored, as they always were.

// fieldSpec is one entry of a row's field list: the fields it covers (several when
// they are checked together, as "user or email") and their check, nil when any value
// the decoder accepts will do.
type fieldSpec struct {
	names []string
	check func(f *filter, env *envelope) *protoError
}

// field is a fieldSpec of one field.
func field(name string, check func(*filter, *envelope) *protoError) fieldSpec {
	return fieldSpec{names: []string{name}, check: check}
}

// Field specs shared by several rows.
var (
	// roomRefField names an existing room: a room name, or a conversation's dm: name.
	roomRefField = field("room", func(_ *filter, env *envelope) *protoError { return validRoomRef(env.Room) })
	// newRoomField names a room to make: never a conversation's name.
	newRoomField = field("room", func(_ *filter, env *envelope) *protoError { return validRoom(env.Room) })
	// userField names a target user, required.
	userField = field("user", func(_ *filter, env *envelope) *protoError { return validUserID(env.User) })
	// optUserField names a user when present.
	optUserField = field("user", func(_ *filter, env *envelope) *protoError { return optUserID(env.User) })
	// afterField asks for the messages after an id (a reconnect's catch-up, a page).
	afterField = field("after", nil)
	// userOrEmailField names exactly one of a user id or an email address.
	userOrEmailField = fieldSpec{names: []string{"user", "email"}, check: checkUserOrEmail}
	// sigField is the optional signature of a say or file, decoded for the hub.
	sigField = field("sig", checkSig)
	// deviceField names a device (revoke_device).
	deviceField = field("device", func(_ *filter, env *envelope) *protoError { return checkDeviceID(env.Device) })
)

// idField is a required message id; what says what it must name, in the refusal.
func idField(what string) fieldSpec {
	return field("id", func(_ *filter, env *envelope) *protoError {
		if env.ID == 0 {
			return newProtoError(codeBadEnvelope, "%s", what)
		}
		return nil
	})
}

// topicField bounds and cleans a topic; required says whether it must be there.
func topicField(required bool) fieldSpec {
	return field("topic", func(_ *filter, env *envelope) *protoError {
		if env.Topic == nil {
			if required {
				return newProtoError(codeBadEnvelope, "topic needs a topic")
			}
			return nil
		}
		t := cleanLine(*env.Topic)
		if utf8.RuneCountInString(t) > maxTopicChars {
			return newProtoError(codeBadEnvelope, "topics are at most %d characters", maxTopicChars)
		}
		env.Topic = &t
		return nil
	})
}

// uploadFields are a device registration: the root key (unless withURK is false, for
// certify_device, which uses the one on record), the device's id and key, its creation
// time and the root key's certificate, decoded into env.upload.
func uploadFields(withURK bool) fieldSpec {
	names := []string{"device", "dik", "created", "cert"}
	if withURK {
		names = append([]string{"urk"}, names...)
	}
	return fieldSpec{names: names, check: func(_ *filter, env *envelope) *protoError {
		return checkUpload(env, withURK)
	}}
}

// optUserID accepts an absent user, or a user id.
func optUserID(id string) *protoError {
	if id == "" {
		return nil
	}
	return validUserID(id)
}

// checkUserOrEmail accepts exactly one of user (a user id) or email (an address).
func checkUserOrEmail(_ *filter, env *envelope) *protoError {
	if (env.User == "") == (env.Email == "") {
		return newProtoError(codeBadEnvelope, "%s names exactly one of user or email", env.Type)
	}
	if env.User != "" {
		return validUserID(env.User)
	}
	return checkEmail(env.Email)
}

// checkSayText cleans a say's text; a signed text must already be clean, since the
// server must not change what was signed.
func checkSayText(f *filter, env *envelope) *protoError {
	text, err := f.cleanText(env.Text)
	if err != nil {
		return err
	}
	if env.Sig != nil && text != env.Text {
		return newProtoError(codeBadSignedText, "signed text must already be clean (no control or bidi characters, no surrounding space)")
	}
	env.Text = text
	return nil
}

// checkFileFields checks a file announcement's name, size and declared type.
func checkFileFields(f *filter, env *envelope) *protoError {
	if err := validFileName(env.Name); err != nil {
		return err
	}
	if env.Size <= 0 {
		return newProtoError(codeBadFile, "size must be the file's length in bytes")
	}
	if limit := f.fileMaxBytes(); env.Size > limit {
		return newProtoError(codeFileTooBig, "files are at most %d bytes", limit)
	}
	if !sniffableTypes[env.Mime] && env.Mime != opaqueFileType { // opaque: decided by the room (e2eeFileRule)
		return newProtoError(codeFileType, "files of type %q are not accepted", env.Mime)
	}
	return nil
}

// checkSig decodes a `sig` when there is one, for the readPump's verification and the
// hub's counter check.
func checkSig(_ *filter, env *envelope) *protoError {
	if env.Sig == nil {
		return nil
	}
	s, perr := parseSig(env.Sig)
	if perr != nil {
		return perr
	}
	env.sig = s
	return nil
}

// checkDMPrefs accepts user ids (or nothing) in block and unblock.
func checkDMPrefs(_ *filter, env *envelope) *protoError {
	for _, id := range []string{env.Block, env.Unblock} {
		if err := optUserID(id); err != nil {
			return err
		}
	}
	return nil
}

// checkUpload decodes a device registration into env.upload, so the hub only sees
// well-formed keys.
func checkUpload(env *envelope, withURK bool) *protoError {
	up := &keydir.Upload{Device: env.Device}
	var ok bool
	if withURK {
		if up.URK, ok = decodeB64(env.URK, 32); !ok {
			return newProtoError(codeBadEnvelope, "urk must be a base64 32-byte Ed25519 public key")
		}
	}
	if up.DIK, ok = decodeB64(env.DIK, 32); !ok {
		return newProtoError(codeBadEnvelope, "dik must be a base64 32-byte Ed25519 public key")
	}
	if up.Cert, ok = decodeB64(env.Cert, 64); !ok {
		return newProtoError(codeBadEnvelope, "cert must be a base64 64-byte Ed25519 signature")
	}
	if env.Created > maxJSSafe {
		return newProtoError(codeBadEnvelope, "created must be a time in Unix milliseconds")
	}
	up.Created = env.Created
	if perr := checkDeviceID(up.Device); perr != nil {
		return perr
	}
	env.upload = up
	return nil
}

// checkDeviceID accepts a device id as the key directory hands them out.
func checkDeviceID(id string) *protoError {
	if !keydir.ValidDeviceID(id) {
		return newProtoError(codeBadDevice, "device ids are 8 to 64 characters of A-Z, a-z, 0-9, - and _")
	}
	return nil
}

// checkDevicesQuery accepts one user, or a bounded list of users, or neither (one's
// own record).
func checkDevicesQuery(_ *filter, env *envelope) *protoError {
	if len(env.Users) > maxDevicesQuery || (len(env.Users) > 0 && env.User != "") {
		return newProtoError(codeBadEnvelope, "devices names one user, or at most %d users", maxDevicesQuery)
	}
	for _, u := range env.Users {
		if perr := validUserID(u); perr != nil {
			return perr
		}
	}
	return optUserID(env.User)
}

// checkRoomRole accepts the roles set_room_role may give.
func checkRoomRole(_ *filter, env *envelope) *protoError {
	if env.Role != roomModerator && env.Role != roomMember {
		return newProtoError(codeBadEnvelope, "room role must be moderator or member")
	}
	return nil
}

// checkGlobalRole accepts the roles set_role may grant.
func checkGlobalRole(_ *filter, env *envelope) *protoError {
	if !validGlobalRole(env.Role) {
		return newProtoError(codeBadEnvelope, "role must be admin, moderator, member or readonly")
	}
	return nil
}

// checkLocked requires lock's locked flag: absent is not "false".
func checkLocked(_ *filter, env *envelope) *protoError {
	if env.Locked == nil {
		return newProtoError(codeBadEnvelope, "lock needs locked: true or false")
	}
	return nil
}

// checkReason bounds and cleans a global ban's reason, which goes into the audit log.
func checkReason(_ *filter, env *envelope) *protoError {
	env.Reason = cleanLine(env.Reason)
	if utf8.RuneCountInString(env.Reason) > maxReason {
		return newProtoError(codeBadEnvelope, "reasons are at most %d characters", maxReason)
	}
	return nil
}

// checkSettings accepts a bounded JSON object; its fields are checked as a whole in
// the hub, against the current settings.
func checkSettings(_ *filter, env *envelope) *protoError {
	if len(env.Settings) == 0 || len(env.Settings) > maxSettings || env.Settings[0] != '{' {
		return newProtoError(codeBadEnvelope, "settings must be an object")
	}
	return nil
}

// clampAuditLimit defaults audit's limit to 50 and caps it, so one answer stays small.
func clampAuditLimit(_ *filter, env *envelope) *protoError {
	if env.Limit <= 0 {
		env.Limit = 50
	}
	env.Limit = min(env.Limit, maxAuditLimit)
	return nil
}

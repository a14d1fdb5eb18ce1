package main

import (
	"encoding/base64"
	"encoding/binary"
	"io"
	"strconv"
	"time"

	"modified-chat/internal/keydir"
)

// Wire bounds of the E2EE commands.
const (
	// maxKPsPerUpload bounds one kp_upload, the same as the per-device store: a page
	// fills its directory in one go (over several lines if the read limit needs).
	maxKPsPerUpload = 20
	// mlsMaxFrame bounds one announced MLS binary frame. A 100-member room's Welcome
	// is about 35 kB and its GroupInfo with the ratchet tree about as much; 256 KiB
	// leaves room for growth while keeping what one frame can cost the hub small.
	mlsMaxFrame = 256 << 10
)

// mlsBinTypes are the E2EE commands that may carry their MLS bytes in a binary frame
// announced with `bin`.
var mlsBinTypes = map[string]bool{"mls_group_init": true, "mls_commit": true, "mls_app": true}

// e2eeCreateField is create's e2ee: only a private room may be end-to-end encrypted.
var e2eeCreateField = field("e2ee", func(_ *filter, env *envelope) *protoError {
	if env.wantsE2EE() && !env.Private {
		return newProtoError(codeBadEnvelope, "an end-to-end encrypted room must be private")
	}
	return nil
})

// wantsE2EE reports whether the command carries "e2ee":true.
func (env *envelope) wantsE2EE() bool { return env.E2EE != nil && *env.E2EE }

// mlsFields are the MLS fields of each E2EE command, checked and decoded together.
func mlsFields(names ...string) fieldSpec { return fieldSpec{names: names, check: checkMLSFields} }

// mlsPayload holds an E2EE command's MLS bytes, decoded from base64 in the readPump
// (or split from its binary frame), so the hub only parses and checks.
type mlsPayload struct {
	kps                                         [][]byte
	groupInfo, keyPackage, commit, welcome, msg []byte
	// entries are kps checked (checkKeyPackages), creator the checked keyPackage
	// of a mls_group_init.
	entries []*kpEntry
	creator *kpEntry
}

// decodeMLS decodes one base64 field (standard, padded), bounded by the frame limit.
func decodeMLS(field, s string, required bool) ([]byte, *protoError) {
	if s == "" {
		if required {
			return nil, newProtoError(codeBadEnvelope, "%s is required", field)
		}
		return nil, nil
	}
	if len(s) > base64.StdEncoding.EncodedLen(mlsMaxFrame) {
		return nil, newProtoError(codeBadMLS, "%s is too long", field)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, newProtoError(codeBadMLS, "%s is not base64", field)
	}
	return b, nil
}

// checkMLSFields validates the fields of the E2EE commands and decodes their bytes.
// It runs in the readPump (from checkFields). A command announcing `bin` carries no
// MLS field: its bytes come in the next binary frame (splitMLSFrame).
func checkMLSFields(_ *filter, env *envelope) *protoError {
	if env.Bin != 0 {
		if !mlsBinTypes[env.Type] || env.Bin < 0 || env.Bin > mlsMaxFrame {
			return newProtoError(codeBadEnvelope, "bin is 1 to %d bytes, on mls_group_init, mls_commit and mls_app", mlsMaxFrame)
		}
		if env.GroupInfo != "" || env.KeyPackage != "" || env.Commit != "" || env.Welcome != "" || env.Msg != "" {
			return newProtoError(codeBadEnvelope, "with bin, the MLS bytes come in the binary frame only")
		}
	}
	if (env.Type == "mls_commit" || env.Type == "mls_app") && env.Epoch == nil {
		return newProtoError(codeBadEnvelope, "%s needs the epoch", env.Type)
	}
	p := &mlsPayload{}
	var perr *protoError
	inline := env.Bin == 0
	switch env.Type {
	case "kp_upload":
		if !keydir.ValidDeviceID(env.Device) {
			return newProtoError(codeUnknownDevice, "device ids are 8 to 64 characters of A-Z, a-z, 0-9, - and _")
		}
		if len(env.KPs) > maxKPsPerUpload {
			return newProtoError(codeBadEnvelope, "at most %d KeyPackages per kp_upload", maxKPsPerUpload)
		}
		for i, s := range env.KPs {
			b, perr := decodeMLS("kps["+strconv.Itoa(i)+"]", s, true)
			if perr != nil {
				return perr
			}
			p.kps = append(p.kps, b)
		}
	case "mls_group_init":
		if inline {
			if p.groupInfo, perr = decodeMLS("group_info", env.GroupInfo, true); perr == nil {
				p.keyPackage, perr = decodeMLS("key_package", env.KeyPackage, true)
			}
		}
	case "mls_commit":
		if inline {
			if p.commit, perr = decodeMLS("commit", env.Commit, true); perr == nil {
				if p.welcome, perr = decodeMLS("welcome", env.Welcome, false); perr == nil {
					p.groupInfo, perr = decodeMLS("group_info", env.GroupInfo, true)
				}
			}
		}
	case "mls_app":
		if inline {
			p.msg, perr = decodeMLS("msg", env.Msg, true)
		}
	}
	if perr != nil {
		return perr
	}
	env.mls = p
	return nil
}

// splitMLSFrame fills an announced command's payload from its binary frame: for
// mls_app the message itself; otherwise u32-length-prefixed parts in the order
// PROTOCOL.md gives ("Large MLS messages"), nothing left over.
func splitMLSFrame(env *envelope, data []byte) *protoError {
	if env.Type == "mls_app" {
		env.mls = &mlsPayload{msg: data}
		return nil
	}
	n := 2
	if env.Type == "mls_commit" {
		n = 3
	}
	parts := make([][]byte, 0, n)
	for range n {
		if len(data) < 4 || binary.BigEndian.Uint32(data) > uint32(len(data)-4) {
			return newProtoError(codeBadMLS, "the binary frame's parts do not add up")
		}
		l := binary.BigEndian.Uint32(data)
		parts = append(parts, data[4:4+l:4+l])
		data = data[4+l:]
	}
	if len(data) != 0 {
		return newProtoError(codeBadMLS, "the binary frame's parts do not add up")
	}
	if env.Type == "mls_commit" {
		env.mls = &mlsPayload{commit: parts[0], welcome: parts[1], groupInfo: parts[2]}
		if len(parts[1]) == 0 {
			env.mls.welcome = nil
		}
	} else {
		env.mls = &mlsPayload{groupInfo: parts[0], keyPackage: parts[1]}
	}
	return nil
}

// checkKeyPackages checks a kp_upload's or mls_group_init's KeyPackages for the
// session's user, on the readPump (the key directory is safe to read there), so the
// hub only looks up duplicates and counts.
func (c *Client) checkKeyPackages(env *envelope) *protoError {
	p := env.mls
	switch env.Type {
	case "kp_upload":
		for i, b := range p.kps {
			e, perr := c.app.checkKeyPackage(c.user.ID, env.Device, b)
			if perr != nil {
				return newProtoError(perr.Code, "kps[%d]: %s", i, perr.Message)
			}
			p.entries = append(p.entries, e)
		}
	case "mls_group_init":
		e, perr := c.app.checkKeyPackage(c.user.ID, "", p.keyPackage)
		if perr != nil {
			return newProtoError(perr.Code, "key_package: %s", perr.Message)
		}
		p.creator = e
	}
	return nil
}

// announceMLS asks the hub whether an E2EE command announced with `bin` would be
// taken (its room checks, up to the epoch), then readies the readPump for its binary
// frame: read if accepted, read and dropped if refused. Either way the read limit is
// raised for that one frame only, to the announced length (accepted) or mlsMaxFrame.
func (c *Client) announceMLS(env *envelope) {
	reply := make(chan []byte, 1)
	c.hub.post(command{fn: func() { reply <- c.hub.announceCheck(c, env) }})
	var refusal []byte
	wait := time.NewTimer(fileAnswerWait)
	defer wait.Stop()
	select {
	case refusal = <-reply:
	case <-c.hub.stopped:
		refusal = errorEvent(codeBusy, "the server is busy; try again", env.Ref, env.Room)
	case <-wait.C:
		refusal = errorEvent(codeBusy, "the server is busy; try again", env.Ref, env.Room)
	}
	if refusal != nil {
		c.reply(refusal)
		c.conn.SetReadLimit(mlsMaxFrame)
		c.pendingMLS, c.discardMLS = nil, true
		return
	}
	c.conn.SetReadLimit(int64(env.Bin))
	c.pendingMLS, c.discardMLS = env, false
}

// readMLSFrame reads the binary frame of an E2EE announcement. Every byte costs the
// file-bytes bucket, as files do, dropped ones too; a frame longer than its limit has
// already been refused by the library (1009). The parts are split and checked as the
// inline command's would be, then the command goes to the hub.
func (c *Client) readMLSFrame(r io.Reader, cfg *Config) bool {
	env, discard := c.pendingMLS, c.discardMLS
	c.pendingMLS, c.discardMLS = nil, false
	defer c.conn.SetReadLimit(cfg.ReadLimit)
	limit := int64(mlsMaxFrame)
	if env != nil {
		limit = int64(env.Bin)
	}
	data, ok, retry, live := c.readAnnounced(r, limit, closeMLSTooBig)
	if !live {
		return false
	}
	if discard {
		return true
	}
	if !ok {
		c.reply(rateLimitedEvent(env.Ref, retry))
		return true
	}
	refuse := func(perr *protoError) bool { return c.refuseFrame(env, perr) }
	if len(data) != env.Bin {
		return refuse(newProtoError(codeBadMLS, "the binary frame has %d bytes, not the %d announced", len(data), env.Bin))
	}
	full := *env
	if perr := splitMLSFrame(&full, data); perr != nil {
		return refuse(perr)
	}
	if perr := c.checkKeyPackages(&full); perr != nil {
		return refuse(perr)
	}
	c.hub.post(command{client: c, env: &full})
	return true
}

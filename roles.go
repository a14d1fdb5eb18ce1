package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// perm is a set of permissions. The server checks them on every command; the page only
// hides the buttons a user could not use anyway.
type perm uint16

// The permissions.
const (
	// permSend: say in a room.
	permSend perm = 1 << iota
	// permSendBinary: send files (binary frames).
	permSendBinary
	// permInvite: invite users into a room.
	permInvite
	// permExpel: kick and ban from a room.
	permExpel
	// permManage: a room owner's powers: appoint moderators, lock, topic, delete.
	permManage
	// permAdmin: server settings, global roles and bans, every room.
	permAdmin
)

// permNames are the permissions' names on the wire (welcome, you).
var permNames = []struct {
	p    perm
	name string
}{
	{permSend, "send"}, {permSendBinary, "send_binary"}, {permInvite, "invite"},
	{permExpel, "expel"}, {permManage, "manage"}, {permAdmin, "admin"},
}

// names lists the permissions in p.
func (p perm) names() []string {
	out := []string{}
	for _, n := range permNames {
		if p&n.p != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

// Global roles.
const (
	roleAdmin     = "admin"
	roleModerator = "moderator"
	roleMember    = "member"
	roleReadOnly  = "readonly"
)

// Room roles.
const (
	roomOwner     = "owner"
	roomModerator = "moderator"
	roomMember    = "member"
)

// globalPerms is what each global role grants in every room. A moderator moderates
// everywhere; a member may talk; read-only users may only read. Files (binary data)
// are for moderators, admins, and owners and moderators of a room, in that room.
var globalPerms = map[string]perm{
	roleAdmin:     permSend | permSendBinary | permInvite | permExpel | permManage | permAdmin,
	roleModerator: permSend | permSendBinary | permInvite | permExpel,
	roleMember:    permSend,
	roleReadOnly:  0,
}

// roomPerms is what a room role adds in that room only.
var roomPerms = map[string]perm{
	roomOwner:     permSend | permSendBinary | permInvite | permExpel | permManage,
	roomModerator: permSend | permSendBinary | permInvite | permExpel,
	roomMember:    0,
}

// validGlobalRole reports whether r names a global role.
func validGlobalRole(r string) bool {
	_, ok := globalPerms[r]
	return ok
}

// effectivePerms combines a global and a room role. A read-only user stays read-only
// whatever room role they hold: the global restriction wins.
func effectivePerms(global, room string) perm {
	if global == roleReadOnly {
		return 0
	}
	return globalPerms[global] | roomPerms[room]
}

// policy assigns global roles at start-up by email, by email domain or by user id. It
// comes from flags and an optional policy file (reloaded on SIGHUP) and is immutable;
// a reload swaps in a new one.
type policy struct {
	// byKey maps a lower-cased email, "@domain" or user id to a role.
	byKey map[string]string
}

// policyFile is the JSON shape of -policy-file.
type policyFile struct {
	Admins     []string `json:"admins"`
	Moderators []string `json:"moderators"`
	ReadOnly   []string `json:"readonly"`
}

// newPolicy builds a policy from lists of entries per role. An entry is an email
// (alice@example.org), a domain (@example.org or example.org), or a user id
// (dev:alice, or issuer|subject). Later roles in the order readonly, moderator, admin
// win, so an explicit admin entry beats a domain-wide moderator entry.
func newPolicy(admins, moderators, readonly []string) *policy {
	p := &policy{byKey: make(map[string]string)}
	add := func(entries []string, role string) {
		for _, e := range entries {
			e = strings.TrimSpace(e)
			if e == "" {
				continue
			}
			if !strings.ContainsAny(e, "@:|") {
				e = "@" + e // a bare domain
			}
			if strings.Contains(e, "@") {
				e = strings.ToLower(e)
			}
			p.byKey[e] = role
		}
	}
	add(readonly, roleReadOnly)
	add(moderators, roleModerator)
	add(admins, roleAdmin)
	return p
}

// loadPolicy builds the policy from the flags plus, when set, the policy file.
func loadPolicy(cfg *Config) (*policy, error) {
	admins, mods, ro := cfg.Admins, cfg.Moderators, cfg.ReadOnlyUsers
	if cfg.PolicyFile != "" {
		b, err := os.ReadFile(cfg.PolicyFile)
		if err != nil {
			return nil, fmt.Errorf("policy file: %w", err)
		}
		var pf policyFile
		if err := json.Unmarshal(b, &pf); err != nil {
			return nil, fmt.Errorf("policy file %s: %w", cfg.PolicyFile, err)
		}
		admins = append(append([]string(nil), admins...), pf.Admins...)
		mods = append(append([]string(nil), mods...), pf.Moderators...)
		ro = append(append([]string(nil), ro...), pf.ReadOnly...)
	}
	return newPolicy(admins, mods, ro), nil
}

// roleFor finds the policy role of a user: by user id, then exact email, then the
// email's domain. Only verified emails reach here (the login refuses unverified ones).
func (p *policy) roleFor(id identity) (string, bool) {
	if r, ok := p.byKey[id.ID]; ok {
		return r, true
	}
	if id.Email == "" {
		return "", false
	}
	email := strings.ToLower(id.Email)
	if r, ok := p.byKey[email]; ok {
		return r, true
	}
	if at := strings.LastIndexByte(email, '@'); at >= 0 {
		if r, ok := p.byKey[email[at:]]; ok {
			return r, true
		}
	}
	return "", false
}

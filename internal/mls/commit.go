package mls

import (
	"bytes"
	"errors"
)

// RuleError is a commit, GroupInfo or Welcome that parses but breaks a Delivery
// Service rule (PROTOCOL.md, "Commits"); Reason says which, for the sender and logs.
type RuleError struct{ Reason string }

// Error returns the reason; it never quotes the input.
func (e *RuleError) Error() string { return "mls: " + e.Reason }

// broken makes a RuleError.
func broken(reason string) error { return &RuleError{Reason: reason} }

// CommitRules is what the hub requires of a member's commit in one epoch.
type CommitRules struct {
	GroupID []byte
	Epoch   uint64
	// Leaf is the committing device's leaf; SignatureKey and Identity are that leaf's
	// as the hub accepted them, which a path may not change.
	Leaf         uint32
	SignatureKey []byte
	Identity     []byte
	// Outstanding are the references of the hub's proposals not yet committed; the
	// commit must name exactly these, by reference.
	Outstanding [][]byte
	// PathRequired: some outstanding proposal needs a path (a Remove), or there are
	// none (an empty commit is a self-update, which is its path).
	PathRequired bool
}

// CheckCommit parses a commit and applies the rules, in the order PROTOCOL.md lists
// them. A parse failure is returned as the parser's *Error, a broken rule as a
// *RuleError; the hub answers both with commit_invalid.
func CheckCommit(b []byte, want *CommitRules) (*PublicMessage, error) {
	m, err := ParseMessage(b)
	if err != nil {
		return nil, err
	}
	p := m.Public
	switch {
	case p == nil:
		return nil, broken("a commit must be a PublicMessage")
	case p.ContentType != ContentCommit:
		return nil, broken("not a commit")
	case !bytes.Equal(p.GroupID, want.GroupID):
		return nil, broken("the commit is for another group")
	case p.Epoch != want.Epoch:
		return nil, broken("the commit's epoch is not the announced one")
	case p.Sender.Type != SenderMember || p.Sender.Index != want.Leaf:
		return nil, broken("the commit's sender is not your device's leaf")
	}
	c := p.Commit
	seen := make([]bool, len(want.Outstanding))
	for _, e := range c.Proposals {
		if e.Proposal != nil {
			return nil, broken("proposals must be committed by reference")
		}
		i := indexRef(want.Outstanding, e.Ref)
		if i < 0 {
			return nil, broken("the commit names a proposal that is not outstanding")
		}
		if seen[i] {
			return nil, broken("the commit names a proposal twice")
		}
		seen[i] = true
	}
	if len(c.Proposals) != len(want.Outstanding) {
		return nil, broken("the commit omits an outstanding proposal")
	}
	if want.PathRequired && !c.HasPath {
		return nil, broken("this commit needs a path")
	}
	if c.HasPath && (!bytes.Equal(c.PathLeaf.SignatureKey, want.SignatureKey) ||
		c.PathLeaf.Credential.Type != CredentialBasic || !bytes.Equal(c.PathLeaf.Credential.Identity, want.Identity)) {
		return nil, broken("the commit changes the committer's key or credential")
	}
	return p, nil
}

// indexRef returns the index of ref in refs, or -1.
func indexRef(refs [][]byte, ref []byte) int {
	for i, r := range refs {
		if bytes.Equal(r, ref) {
			return i
		}
	}
	return -1
}

// CheckGroupInfo parses a GroupInfo and checks it describes this group at this epoch.
func CheckGroupInfo(b, groupID []byte, epoch uint64) (*GroupInfo, error) {
	m, err := ParseMessage(b)
	if err != nil {
		return nil, err
	}
	g := m.GroupInfo
	switch {
	case g == nil:
		return nil, broken("not a GroupInfo")
	case g.CipherSuite != Suite1:
		return nil, broken("the GroupInfo is not of ciphersuite 1")
	case !bytes.Equal(g.GroupID, groupID):
		return nil, broken("the GroupInfo is for another group")
	case g.Epoch != epoch:
		return nil, broken("the GroupInfo is not of the new epoch")
	}
	return g, nil
}

// CheckWelcome parses a Welcome and checks it is addressed to every one of the given
// KeyPackageRefs (the KeyPackages the commit adds).
func CheckWelcome(b []byte, refs [][]byte) (*Welcome, error) {
	m, err := ParseMessage(b)
	if err != nil {
		return nil, err
	}
	w := m.Welcome
	if w == nil || w.CipherSuite != Suite1 {
		return nil, broken("not a Welcome of ciphersuite 1")
	}
	for _, r := range refs {
		if indexRef(w.Recipients, r) < 0 {
			return nil, broken("the Welcome misses an added device")
		}
	}
	return w, nil
}

// IsRuleError reports whether err is a broken rule (rather than malformed bytes).
func IsRuleError(err error) bool {
	var re *RuleError
	return errors.As(err, &re)
}

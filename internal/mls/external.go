package mls

import (
	"crypto/ed25519"
	"encoding/binary"
)

// ExternalSenderIdentity is the basic credential identity of the hub as external
// sender (PROTOCOL.md, "The server's external sender").
const ExternalSenderIdentity = "modified-chat hub"

// ExternalProposal is a proposal the hub sends as the group's external sender
// (RFC 9420 §12.1.8.1): the encoded MLSMessage and its proposal reference, by which
// members' commits must name it.
type ExternalProposal struct {
	Message []byte
	Ref     []byte
}

// AddProposal is the body of an Add proposal (§12.1.1) of an already parsed KeyPackage.
func AddProposal(kp *KeyPackage) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(kp.Raw)), ProposalAdd)
	return append(b, kp.Raw...)
}

// RemoveProposal is the body of a Remove proposal (§12.1.3) of one leaf.
func RemoveProposal(leaf uint32) []byte {
	b := binary.BigEndian.AppendUint16(make([]byte, 0, 6), ProposalRemove)
	return binary.BigEndian.AppendUint32(b, leaf)
}

// SignExternalProposal frames proposal (from AddProposal or RemoveProposal) as a
// PublicMessage of the group at epoch from external sender 0, signed by priv, and
// returns it with its reference. An external sender's FramedContentTBS has no group
// context (§6.1), so the hub needs none of the group's secrets; a PublicMessage from a
// non-member has no membership tag (§6.2).
func SignExternalProposal(priv ed25519.PrivateKey, groupID []byte, epoch uint64, proposal []byte) ExternalProposal {
	// FramedContent: group_id, epoch, sender, authenticated_data, content_type, body.
	content := appendOpaque(make([]byte, 0, len(groupID)+len(proposal)+32), groupID)
	content = binary.BigEndian.AppendUint64(content, epoch)
	content = append(content, SenderExternal)
	content = binary.BigEndian.AppendUint32(content, 0)
	content = appendOpaque(content, nil)
	content = append(content, ContentProposal)
	content = append(content, proposal...)

	tbs := binary.BigEndian.AppendUint16(make([]byte, 0, 4+len(content)), Version10)
	tbs = binary.BigEndian.AppendUint16(tbs, WirePublic)
	tbs = append(tbs, content...)
	sig := SignWithLabel(priv, LabelFramedContent, tbs)

	// AuthenticatedContent = wire_format ‖ FramedContent ‖ FramedContentAuthData
	// (only the signature: a proposal has no confirmation tag).
	auth := appendOpaque(nil, sig)
	ac := binary.BigEndian.AppendUint16(make([]byte, 0, 2+len(content)+len(auth)), WirePublic)
	ac = append(append(ac, content...), auth...)

	msg := binary.BigEndian.AppendUint16(make([]byte, 0, 4+len(content)+len(auth)), Version10)
	msg = binary.BigEndian.AppendUint16(msg, WirePublic)
	msg = append(append(msg, content...), auth...)
	return ExternalProposal{Message: msg, Ref: refHash(refProposal, ac)}
}

// ProposalRef computes the reference of a PublicMessage proposal as received (the
// whole MLSMessage bytes): what a member's commit names it by. It lets tests and the
// hub check that a proposal someone else framed has the reference they claim.
func ProposalRef(msg []byte) ([]byte, bool) {
	m, err := ParseMessage(msg)
	if err != nil || m.Public == nil || m.Public.ContentType != ContentProposal || m.Public.Sender.Type == SenderMember {
		return nil, false
	}
	// Without a membership tag, AuthenticatedContent is the message after the version.
	return refHash(refProposal, msg[2:]), true
}

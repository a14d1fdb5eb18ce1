package mls

// Codes from RFC 9420 §17 that this parser knows.
const (
	// Version10 is ProtocolVersion mls10, the only version there is.
	Version10 = 1

	WirePublic     = 1 // mls_public_message
	WirePrivate    = 2 // mls_private_message
	WireWelcome    = 3 // mls_welcome
	WireGroupInfo  = 4 // mls_group_info
	WireKeyPackage = 5 // mls_key_package

	ContentApplication = 1
	ContentProposal    = 2
	ContentCommit      = 3

	SenderMember            = 1
	SenderExternal          = 2
	SenderNewMemberProposal = 3
	SenderNewMemberCommit   = 4

	ProposalAdd                    = 1
	ProposalUpdate                 = 2
	ProposalRemove                 = 3
	ProposalPSK                    = 4
	ProposalReInit                 = 5
	ProposalExternalInit           = 6
	ProposalGroupContextExtensions = 7

	CredentialBasic = 1
	CredentialX509  = 2

	leafSourceKeyPackage = 1
	leafSourceUpdate     = 2
	leafSourceCommit     = 3
)

// maxListEntries bounds the lists the parser keeps (a commit's proposals, a Welcome's
// recipients, a credential's certificates): far above any real group's (about one per
// member), so a message of tiny entries cannot make the hub hold a list many times
// its own size.
const maxListEntries = 4096

// Message is an MLSMessage (§6): the version, the wire format, and exactly one of the
// bodies, the one the wire format names.
type Message struct {
	Version    uint16
	WireFormat uint16
	Public     *PublicMessage
	Private    *PrivateMessage
	Welcome    *Welcome
	GroupInfo  *GroupInfo
	KeyPackage *KeyPackage
}

// Sender is who framed a message (§6.1): a member's leaf index, an external sender's
// index in the group's external_senders, or a new member (no index).
type Sender struct {
	Type  uint8
	Index uint32
}

// PublicMessage is a signed, unencrypted message (§6.2): what the hub can check.
// Exactly one of ApplicationData, Proposal and Commit is set, per ContentType.
type PublicMessage struct {
	GroupID           []byte
	Epoch             uint64
	Sender            Sender
	AuthenticatedData []byte
	ContentType       uint8
	ApplicationData   []byte
	Proposal          *Proposal
	Commit            *Commit
	Signature         []byte
	ConfirmationTag   []byte // commits only
	MembershipTag     []byte // member senders only
}

// PrivateMessage is an encrypted message (§6.3); only its clear header is visible.
type PrivateMessage struct {
	GroupID             []byte
	Epoch               uint64
	ContentType         uint8
	AuthenticatedData   []byte
	EncryptedSenderData []byte
	Ciphertext          []byte
}

// Commit lists the proposals it applies (§12.4) and whether it carries an UpdatePath,
// which a commit removing a member must.
type Commit struct {
	Proposals []ProposalOrRef
	HasPath   bool
	PathLeaf  *LeafNode // the committer's new leaf, when HasPath
}

// ProposalOrRef is one entry of a Commit: either a proposal reference (a hash of a
// proposal sent before) or a proposal inline.
type ProposalOrRef struct {
	Ref      []byte
	Proposal *Proposal
}

// Proposal is the part of a proposal the hub inspects: its type, and for Add the key
// package, for Update the new leaf, for Remove the removed leaf index.
type Proposal struct {
	Type    uint16
	Add     *KeyPackage
	Update  *LeafNode
	Removed uint32
}

// Credential is a leaf's credential (§5.3): a basic identity, or an X.509 chain.
type Credential struct {
	Type         uint16
	Identity     []byte
	Certificates [][]byte
}

// LeafNode is the part of a leaf (§7.2) the hub needs: its keys and credential.
type LeafNode struct {
	EncryptionKey []byte
	SignatureKey  []byte
	Credential    Credential
	Source        uint8
	// NotBefore and NotAfter are the lifetime (Unix seconds) of a KeyPackage's leaf.
	NotBefore, NotAfter uint64
	Signature           []byte
}

// KeyPackage is a client's published offer to be added (§10).
type KeyPackage struct {
	Version     uint16
	CipherSuite uint16
	InitKey     []byte
	Leaf        LeafNode
	Signature   []byte
	// Raw is the whole encoded KeyPackage (what KeyPackageRef hashes and an Add
	// carries); TBS is its signed part, everything before the signature.
	Raw, TBS []byte
}

// Welcome carries group secrets to new members (§12.4.3.1); the hub needs only to
// know which KeyPackages (by reference) it is for, to deliver it to them alone.
type Welcome struct {
	CipherSuite uint16
	Recipients  [][]byte // KeyPackageRef of each new member
}

// GroupInfo is a group's public description (§12.4.3); the hub checks its group and
// epoch.
type GroupInfo struct {
	Version     uint16
	CipherSuite uint16
	GroupID     []byte
	Epoch       uint64
	Signer      uint32
}

// ParseMessage parses one whole MLSMessage. Every byte must belong to it.
func ParseMessage(b []byte) (*Message, error) {
	r := &reader{b: b}
	m := &Message{Version: r.u16("version")}
	if r.err == nil && m.Version != Version10 {
		r.off -= 2
		r.fail("version", ErrUnsupported)
	}
	m.WireFormat = r.u16("wire_format")
	if r.err != nil {
		return nil, r.err
	}
	switch m.WireFormat {
	case WirePublic:
		m.Public = parsePublic(r)
	case WirePrivate:
		m.Private = parsePrivate(r)
	case WireWelcome:
		m.Welcome = parseWelcome(r)
	case WireGroupInfo:
		m.GroupInfo = parseGroupInfo(r)
	case WireKeyPackage:
		m.KeyPackage = parseKeyPackage(r)
	default:
		r.off -= 2
		r.fail("wire_format", ErrUnsupported)
	}
	r.end("MLSMessage")
	if r.err != nil {
		return nil, r.err
	}
	return m, nil
}

// parsePublic reads a PublicMessage: FramedContent, its auth data, and the
// membership tag that member senders carry.
func parsePublic(r *reader) *PublicMessage {
	p := &PublicMessage{GroupID: r.opaque("group_id"), Epoch: r.u64("epoch")}
	p.Sender = parseSender(r)
	p.AuthenticatedData = r.opaque("authenticated_data")
	p.ContentType = r.u8("content_type")
	switch p.ContentType {
	case ContentApplication:
		p.ApplicationData = r.opaque("application_data")
	case ContentProposal:
		p.Proposal = parseProposal(r)
	case ContentCommit:
		p.Commit = parseCommit(r)
	default:
		if r.err == nil {
			r.off--
			r.fail("content_type", ErrUnsupported)
		}
	}
	p.Signature = r.opaque("signature")
	if p.ContentType == ContentCommit {
		p.ConfirmationTag = r.opaque("confirmation_tag")
	}
	if p.Sender.Type == SenderMember {
		p.MembershipTag = r.opaque("membership_tag")
	}
	return p
}

// parseSender reads a Sender; only member and external senders carry an index.
func parseSender(r *reader) Sender {
	s := Sender{Type: r.u8("sender_type")}
	switch s.Type {
	case SenderMember, SenderExternal:
		s.Index = r.u32("sender_index")
	case SenderNewMemberProposal, SenderNewMemberCommit:
	default:
		if r.err == nil {
			r.off--
			r.fail("sender_type", ErrUnsupported)
		}
	}
	return s
}

// parsePrivate reads a PrivateMessage's header and keeps the two encrypted fields as
// opaque bytes.
func parsePrivate(r *reader) *PrivateMessage {
	p := &PrivateMessage{GroupID: r.opaque("group_id"), Epoch: r.u64("epoch")}
	p.ContentType = r.u8("content_type")
	if r.err == nil && (p.ContentType < ContentApplication || p.ContentType > ContentCommit) {
		r.off--
		r.fail("content_type", ErrUnsupported)
	}
	p.AuthenticatedData = r.opaque("authenticated_data")
	p.EncryptedSenderData = r.opaque("encrypted_sender_data")
	p.Ciphertext = r.opaque("ciphertext")
	return p
}

// parseCommit reads the ProposalOrRef list and the optional UpdatePath.
func parseCommit(r *reader) *Commit {
	c := &Commit{}
	list := r.vector("proposals")
	for list.more() {
		var e ProposalOrRef
		switch kind := list.u8("proposal_or_ref.type"); kind {
		case 1:
			e.Proposal = parseProposal(list)
		case 2:
			e.Ref = list.opaque("proposal_ref")
		default:
			if list.err == nil {
				list.off--
				list.fail("proposal_or_ref.type", ErrUnsupported)
			}
		}
		if len(c.Proposals) == maxListEntries {
			list.fail("proposals", ErrInvalid)
			break
		}
		c.Proposals = append(c.Proposals, e)
	}
	r.join(list)
	c.HasPath = r.optional("path")
	if c.HasPath {
		leaf := parseLeafNode(r)
		c.PathLeaf = &leaf
		nodes := r.vector("path.nodes") // UpdatePathNode list: not inspected here
		_ = nodes
	}
	if r.err != nil {
		return nil
	}
	return c
}

// parseProposal reads one Proposal. Each type's body has its own layout with no
// overall length, so an unknown type cannot be skipped and is refused.
func parseProposal(r *reader) *Proposal {
	p := &Proposal{Type: r.u16("proposal_type")}
	switch p.Type {
	case ProposalAdd:
		p.Add = parseKeyPackage(r)
	case ProposalUpdate:
		leaf := parseLeafNode(r)
		p.Update = &leaf
	case ProposalRemove:
		p.Removed = r.u32("removed")
	case ProposalPSK:
		parsePSKID(r)
	case ProposalReInit:
		r.opaque("reinit.group_id")
		r.u16("reinit.version")
		r.u16("reinit.cipher_suite")
		skipExtensions(r, "reinit.extensions")
	case ProposalExternalInit:
		r.opaque("kem_output")
	case ProposalGroupContextExtensions:
		skipExtensions(r, "group_context_extensions")
	default:
		if r.err == nil {
			r.off -= 2
			r.fail("proposal_type", ErrUnsupported)
		}
	}
	return p
}

// parsePSKID reads a PreSharedKeyID (§8.4) only to find where it ends.
func parsePSKID(r *reader) {
	switch t := r.u8("psktype"); t {
	case 1: // external
		r.opaque("psk_id")
	case 2: // resumption
		r.u8("usage")
		r.opaque("psk_group_id")
		r.u64("psk_epoch")
	default:
		if r.err == nil {
			r.off--
			r.fail("psktype", ErrUnsupported)
		}
	}
	r.opaque("psk_nonce")
}

// skipExtensions walks an Extension list, checking each entry's framing.
func skipExtensions(r *reader, field string) {
	list := r.vector(field)
	for list.more() {
		list.u16(field + ".extension_type")
		list.opaque(field + ".extension_data")
	}
	r.join(list)
}

// skipU16List checks a vector of uint16 values (Capabilities' lists).
func skipU16List(r *reader, field string) {
	list := r.vector(field)
	if len(list.b)%2 != 0 {
		list.fail(field, ErrTrailing)
	}
	r.join(list)
}

// parseCredential reads a basic or X.509 credential.
func parseCredential(r *reader) Credential {
	c := Credential{Type: r.u16("credential_type")}
	switch c.Type {
	case CredentialBasic:
		c.Identity = r.opaque("identity")
	case CredentialX509:
		list := r.vector("certificates")
		for list.more() {
			if len(c.Certificates) == maxListEntries {
				list.fail("certificates", ErrInvalid)
				break
			}
			c.Certificates = append(c.Certificates, list.opaque("cert_data"))
		}
		r.join(list)
	default:
		if r.err == nil {
			r.off -= 2
			r.fail("credential_type", ErrUnsupported)
		}
	}
	return c
}

// parseLeafNode reads a LeafNode (§7.2).
func parseLeafNode(r *reader) LeafNode {
	l := LeafNode{EncryptionKey: r.opaque("encryption_key"), SignatureKey: r.opaque("signature_key")}
	l.Credential = parseCredential(r)
	for _, f := range []string{"capabilities.versions", "capabilities.cipher_suites", "capabilities.extensions", "capabilities.proposals", "capabilities.credentials"} {
		skipU16List(r, f)
	}
	l.Source = r.u8("leaf_node_source")
	switch l.Source {
	case leafSourceKeyPackage:
		l.NotBefore = r.u64("lifetime.not_before")
		l.NotAfter = r.u64("lifetime.not_after")
	case leafSourceUpdate:
	case leafSourceCommit:
		r.opaque("parent_hash")
	default:
		if r.err == nil {
			r.off--
			r.fail("leaf_node_source", ErrUnsupported)
		}
	}
	skipExtensions(r, "leaf_node.extensions")
	l.Signature = r.opaque("leaf_node.signature")
	return l
}

// parseKeyPackage reads a KeyPackage (§10).
func parseKeyPackage(r *reader) *KeyPackage {
	start := r.off
	k := &KeyPackage{Version: r.u16("key_package.version"), CipherSuite: r.u16("key_package.cipher_suite")}
	if r.err == nil && k.Version != Version10 {
		r.off -= 4
		r.fail("key_package.version", ErrUnsupported)
	}
	k.InitKey = r.opaque("init_key")
	k.Leaf = parseLeafNode(r)
	skipExtensions(r, "key_package.extensions")
	signed := r.off
	k.Signature = r.opaque("key_package.signature")
	if r.err == nil {
		k.Raw, k.TBS = r.b[start:r.off:r.off], r.b[start:signed:signed]
	}
	return k
}

// parseWelcome reads a Welcome's recipients; the encrypted parts stay opaque.
func parseWelcome(r *reader) *Welcome {
	w := &Welcome{CipherSuite: r.u16("cipher_suite")}
	list := r.vector("secrets")
	for list.more() {
		if len(w.Recipients) == maxListEntries {
			list.fail("secrets", ErrInvalid)
			break
		}
		w.Recipients = append(w.Recipients, list.opaque("new_member"))
		list.opaque("kem_output")
		list.opaque("encrypted_group_secrets")
	}
	r.join(list)
	r.opaque("encrypted_group_info")
	return w
}

// parseGroupInfo reads a GroupInfo's GroupContext and signer.
func parseGroupInfo(r *reader) *GroupInfo {
	g := &GroupInfo{Version: r.u16("group_context.version"), CipherSuite: r.u16("group_context.cipher_suite")}
	if r.err == nil && g.Version != Version10 {
		r.off -= 4
		r.fail("group_context.version", ErrUnsupported)
	}
	g.GroupID = r.opaque("group_id")
	g.Epoch = r.u64("epoch")
	r.opaque("tree_hash")
	r.opaque("confirmed_transcript_hash")
	skipExtensions(r, "group_context.extensions")
	skipExtensions(r, "group_info.extensions")
	r.opaque("confirmation_tag")
	g.Signer = r.u32("signer")
	r.opaque("group_info.signature")
	return g
}

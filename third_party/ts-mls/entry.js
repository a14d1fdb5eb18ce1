// The public surface of the vendored ts-mls 1.6.4 bundle. It lists deep imports
// rather than the package root, because the root's index.js re-exports the noble
// provider, which statically imports @noble/hashes, a package ts-mls does not declare.
// decryptSenderData is here because 1.6.4 does not report an application message's
// sender leaf (E2EE.md §1.2): the page reads the sender data itself.
export { defaultProposalTypes } from "ts-mls/defaultProposalType.js";
export { defaultExtensionTypes } from "ts-mls/defaultExtensionType.js";
export { acceptAll } from "ts-mls/incomingMessageAction.js";
export { proposeAddExternal, proposeExternal } from "ts-mls/externalProposal.js";
export { decodeExternalSender, encodeExternalSender } from "ts-mls/externalSender.js";
export { decodeRequiredCapabilities, encodeRequiredCapabilities } from "ts-mls/requiredCapabilities.js";
export { defaultAuthenticationService } from "ts-mls/authenticationService.js";
export { defaultPaddingConfig } from "ts-mls/paddingConfig.js";
export { defaultKeyPackageEqualityConfig } from "ts-mls/keyPackageEqualityConfig.js";
export { defaultLifetimeConfig } from "ts-mls/lifetimeConfig.js";
export { generateKeyPackage, generateKeyPackageWithKey } from "ts-mls/keyPackage.js";
export { defaultKeyRetentionConfig } from "ts-mls/keyRetentionConfig.js";
export { createGroup, makePskIndex, joinGroup, joinGroupWithExtensions, decodeGroupState, encodeGroupState } from "ts-mls/clientState.js";
export { createApplicationMessage, createProposal } from "ts-mls/createMessage.js";
export { zeroOutUint8Array, bytesToBase64 } from "ts-mls/util/byteArray.js";
export { joinGroupExternal, createCommit, createGroupInfoWithExternalPub, createGroupInfoWithExternalPubAndRatchetTree } from "ts-mls/createCommit.js";
export { processPrivateMessage, processMessage, processPublicMessage } from "ts-mls/processMessages.js";
export { emptyPskIndex } from "ts-mls/pskIndex.js";
export { mlsExporter } from "ts-mls/keySchedule.js";
export { ciphersuites, getCiphersuiteFromName } from "ts-mls/crypto/ciphersuite.js";
export { getCiphersuiteImpl } from "ts-mls/crypto/getCiphersuiteImpl.js";
export { defaultCryptoProvider } from "ts-mls/crypto/implementation/default/provider.js";
export { decodeMlsMessage, encodeMlsMessage } from "ts-mls/message.js";
export { defaultLifetime } from "ts-mls/lifetime.js";
export { defaultCapabilities } from "ts-mls/defaultCapabilities.js";
export { contentTypes } from "ts-mls/contentType.js";
export { credentialTypes } from "ts-mls/credentialType.js";
export { protocolVersions } from "ts-mls/protocolVersion.js";
export { senderTypes } from "ts-mls/sender.js";
export { decryptSenderData } from "ts-mls/privateMessage.js";

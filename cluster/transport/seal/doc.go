// Package seal protects the node-to-node connections of a cluster that
// has a cluster key and no TLS. After the transport's handshake each
// direction of a connection is a sequence of records:
//
//	uint32 length of what follows (big endian), then
//	AES-256-GCM ciphertext and tag of up to MaxRecord plaintext bytes
//
// sealed under a key of that direction alone. SessionKeys derives the two
// keys with HKDF-SHA256 from the cluster key and both hellos of the
// handshake, which carry a fresh random nonce of each side, so every
// connection has keys of its own. A record's nonce is its position in its
// direction (a counter starting at zero, never sent) and the length
// prefix is authenticated with it: a record altered, dropped, replayed,
// reordered or moved to another connection fails to open, and the
// connection ends.
//
// AES-GCM rather than ChaCha20-Poly1305: the standard library has it,
// servers have AES instructions, and memberlist's gossip encryption uses
// it too, so one cipher covers the node's traffic.
package seal

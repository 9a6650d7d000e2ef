package transport

import (
	"bytes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// The handshake opens every connection (inside TLS when the transport has
// TLS), keyed or not, so that a node with a key and one without refuse
// each other with a clear message:
//
//	dialer   -> hello:  magic "PRSN", version, flags (bit 0: keyed), 32-byte nonce
//	acceptor -> hello, then its proof (32 bytes)
//	dialer   -> verdict on the acceptor's proof (1 byte), then its own proof
//	acceptor -> verdict on the dialer's proof (1 byte)
//
// A proof is HMAC-SHA256 over a role label and both hellos, keyed by a key
// derived from a cluster key, so it proves knowledge of the key, is fresh
// for both sides' nonces and cannot be reflected back. Without a key proofs
// are zero and not checked. With a key and without TLS, what follows is
// sealed (package seal) under keys derived from the cluster key and both
// hellos.
//
// A node may hold several cluster keys while they are rotated: its primary
// key and keys it accepts. The acceptor proves with its primary key; the
// dialler finds which of its keys that is and proves with the same, and
// the connection is sealed under it. So two nodes connect when the dialler
// holds the acceptor's primary key, which every step of a rotation keeps
// true (add the new key everywhere, make it primary everywhere, drop the
// old one everywhere; see docs/operations.md). Version 2 added that sealing and the connection kind that opens
// every connection after the handshake; a version 1 node is refused.
const (
	magic           = "PRSN"
	protocolVersion = 2
	flagKeyed       = 1
	nonceLen        = 32
	helloLen        = len(magic) + 2 + nonceLen
	proofLen        = sha256.Size
	verdictOK       = 0
	verdictWrong    = 1
)

// tlsRecordHandshake is the first byte of a TLS ClientHello, which a node
// without TLS reads where it expects a hello.
const tlsRecordHandshake = 0x16

// handshake runs the handshake with the node's cluster keys, the primary
// first; none when the cluster has no key.
type handshake struct {
	keys []ringKey
}

// ringKey is a cluster key and the key of its proofs, derived from it so
// that the cluster key (also the gossip encryption key) is never used
// directly for a second purpose.
type ringKey struct {
	cluster, proof []byte
}

// session is what a handshake agreed on: the two hellos, the transcript
// that session keys are derived from, and the cluster key both proved
// (nil without keys).
type session struct {
	dialer, acceptor []byte
	key              []byte
}

func newHandshake(primary []byte, accepted [][]byte) handshake {
	if len(primary) == 0 {
		return handshake{}
	}
	var a handshake
	for _, k := range append([][]byte{primary}, accepted...) {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte("presence transport handshake v1"))
		a.keys = append(a.keys, ringKey{cluster: k, proof: mac.Sum(nil)})
	}
	return a
}

func (a handshake) keyed() bool { return len(a.keys) > 0 }

func (a handshake) hello() []byte {
	b := make([]byte, 0, helloLen)
	b = append(b, magic...)
	flags := byte(0)
	if a.keyed() {
		flags = flagKeyed
	}
	b = append(b, protocolVersion, flags)
	var nonce [nonceLen]byte
	rand.Read(nonce[:])
	return append(b, nonce[:]...)
}

// proof is k's proof for role over both hellos; zero without keys.
func (a handshake) proof(k int, role string, dialerHello, acceptorHello []byte) []byte {
	if !a.keyed() {
		return make([]byte, proofLen)
	}
	mac := hmac.New(sha256.New, a.keys[k].proof)
	mac.Write([]byte(role))
	mac.Write(dialerHello)
	mac.Write(acceptorHello)
	return mac.Sum(nil)
}

// sessionKey is the cluster key a session is sealed under.
func (a handshake) sessionKey(k int) []byte {
	if !a.keyed() {
		return nil
	}
	return a.keys[k].cluster
}

// checkHello validates the peer's hello against our own settings.
func (a handshake) checkHello(h []byte) error {
	if h[0] == tlsRecordHandshake {
		return fmt.Errorf("%w: the peer speaks TLS and this node has no TLS certificate (--tls-*)", ErrAuth)
	}
	if !bytes.Equal(h[:len(magic)], []byte(magic)) {
		return errors.New("peer does not speak the presence transport protocol")
	}
	if v := h[len(magic)]; v != protocolVersion {
		return fmt.Errorf("peer speaks transport version %d, this node %d", v, protocolVersion)
	}
	peerKeyed := h[len(magic)+1]&flagKeyed != 0
	switch {
	case peerKeyed && !a.keyed():
		return fmt.Errorf("%w: peer has a cluster key and this node has none", ErrAuth)
	case !peerKeyed && a.keyed():
		return fmt.Errorf("%w: this node has a cluster key and the peer has none", ErrAuth)
	}
	return nil
}

// acceptorKey returns which of this node's keys made the acceptor's proof,
// -1 for none; 0 without keys.
func (a handshake) acceptorKey(dialerHello, acceptorHello, proof []byte) int {
	if !a.keyed() {
		return 0
	}
	for k := range a.keys {
		if hmac.Equal(a.proof(k, "acceptor", dialerHello, acceptorHello), proof) {
			return k
		}
	}
	return -1
}

// dial runs the dialer's side of the handshake on nc, within deadline
// (which it leaves set: the caller clears it once the connection is set up).
func (a handshake) dial(nc net.Conn, deadline time.Time) (session, error) {
	if err := nc.SetDeadline(deadline); err != nil {
		return session{}, err
	}
	mine := a.hello()
	if _, err := nc.Write(mine); err != nil {
		return session{}, err
	}
	buf := make([]byte, helloLen+proofLen)
	if _, err := io.ReadFull(nc, buf); err != nil {
		return session{}, fmt.Errorf("read peer hello: %w (a peer refusing our cluster key or TLS setting closes here)", err)
	}
	peer, peerProof := buf[:helloLen], buf[helloLen:]
	if err := a.checkHello(peer); err != nil {
		return session{}, err
	}
	reply := make([]byte, 1, 1+proofLen)
	k := a.acceptorKey(mine, peer, peerProof)
	if k < 0 {
		reply[0] = verdictWrong
		_, _ = nc.Write(append(reply, make([]byte, proofLen)...))
		return session{}, fmt.Errorf("%w: the peer's cluster key is none of this node's", ErrAuth)
	}
	if _, err := nc.Write(append(reply, a.proof(k, "dialer", mine, peer)...)); err != nil {
		return session{}, err
	}
	if _, err := io.ReadFull(nc, reply[:1]); err != nil {
		return session{}, fmt.Errorf("read handshake verdict: %w", err)
	}
	if reply[0] != verdictOK {
		return session{}, fmt.Errorf("%w: the peer rejected this node's cluster key", ErrAuth)
	}
	return session{dialer: mine, acceptor: peer, key: a.sessionKey(k)}, nil
}

// accept runs the acceptor's side of the handshake on nc, within deadline
// (left set, as by dial).
func (a handshake) accept(nc net.Conn, deadline time.Time) (session, error) {
	if err := nc.SetDeadline(deadline); err != nil {
		return session{}, err
	}
	peer := make([]byte, helloLen)
	if _, err := io.ReadFull(nc, peer); err != nil {
		return session{}, fmt.Errorf("read peer hello: %w", err)
	}
	mine := a.hello()
	if err := a.checkHello(peer); err != nil {
		if peer[0] != tlsRecordHandshake {
			// Answer with our hello so the dialer can name the mismatch too.
			_, _ = nc.Write(append(mine, make([]byte, proofLen)...))
		}
		return session{}, err
	}
	if _, err := nc.Write(append(mine, a.proof(0, "acceptor", peer, mine)...)); err != nil {
		return session{}, err
	}
	msg := make([]byte, 1+proofLen)
	if _, err := io.ReadFull(nc, msg); err != nil {
		return session{}, fmt.Errorf("read peer proof: %w", err)
	}
	if msg[0] != verdictOK {
		return session{}, fmt.Errorf("%w: the peer does not hold this node's primary cluster key", ErrAuth)
	}
	verdict := []byte{verdictOK}
	ok := !a.keyed() || hmac.Equal(a.proof(0, "dialer", peer, mine), msg[1:])
	if !ok {
		verdict[0] = verdictWrong
	}
	if _, err := nc.Write(verdict); err != nil {
		return session{}, err
	}
	if !ok {
		return session{}, fmt.Errorf("%w: the peer's cluster key differs from this node's", ErrAuth)
	}
	return session{dialer: peer, acceptor: mine, key: a.sessionKey(0)}, nil
}

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
// derived from the cluster key, so it proves knowledge of the key, is fresh
// for both sides' nonces and cannot be reflected back. Without a key proofs
// are zero and not checked. With a key and without TLS, what follows is
// sealed (package seal) under keys derived from the cluster key and both
// hellos. Version 2 added that sealing and the connection kind that opens
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

// handshake runs the handshake; key is nil when the cluster has none.
type handshake struct {
	key []byte
}

// hellos are the two hellos of a handshake, the transcript that session
// keys are derived from.
type hellos struct {
	dialer, acceptor []byte
}

// newHandshake derives the handshake key, so the cluster key (also the
// gossip encryption key) is never used directly for a second purpose.
func newHandshake(clusterKey []byte) handshake {
	if len(clusterKey) == 0 {
		return handshake{}
	}
	mac := hmac.New(sha256.New, clusterKey)
	mac.Write([]byte("presence transport handshake v1"))
	return handshake{key: mac.Sum(nil)}
}

func (a handshake) hello() []byte {
	b := make([]byte, 0, helloLen)
	b = append(b, magic...)
	flags := byte(0)
	if a.key != nil {
		flags = flagKeyed
	}
	b = append(b, protocolVersion, flags)
	var nonce [nonceLen]byte
	rand.Read(nonce[:])
	return append(b, nonce[:]...)
}

func (a handshake) proof(role string, dialerHello, acceptorHello []byte) []byte {
	if a.key == nil {
		return make([]byte, proofLen)
	}
	mac := hmac.New(sha256.New, a.key)
	mac.Write([]byte(role))
	mac.Write(dialerHello)
	mac.Write(acceptorHello)
	return mac.Sum(nil)
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
	case peerKeyed && a.key == nil:
		return fmt.Errorf("%w: peer has a cluster key and this node has none", ErrAuth)
	case !peerKeyed && a.key != nil:
		return fmt.Errorf("%w: this node has a cluster key and the peer has none", ErrAuth)
	}
	return nil
}

func (a handshake) verify(want, got []byte) bool {
	return a.key == nil || hmac.Equal(want, got)
}

// dial runs the dialer's side of the handshake on nc, within deadline
// (which it leaves set: the caller clears it once the connection is set up).
func (a handshake) dial(nc net.Conn, deadline time.Time) (hellos, error) {
	if err := nc.SetDeadline(deadline); err != nil {
		return hellos{}, err
	}
	mine := a.hello()
	if _, err := nc.Write(mine); err != nil {
		return hellos{}, err
	}
	buf := make([]byte, helloLen+proofLen)
	if _, err := io.ReadFull(nc, buf); err != nil {
		return hellos{}, fmt.Errorf("read peer hello: %w (a peer refusing our cluster key or TLS setting closes here)", err)
	}
	peer, peerProof := buf[:helloLen], buf[helloLen:]
	if err := a.checkHello(peer); err != nil {
		return hellos{}, err
	}
	reply := make([]byte, 1, 1+proofLen)
	if !a.verify(a.proof("acceptor", mine, peer), peerProof) {
		reply[0] = verdictWrong
		_, _ = nc.Write(append(reply, make([]byte, proofLen)...))
		return hellos{}, fmt.Errorf("%w: the peer does not know this node's cluster key", ErrAuth)
	}
	if _, err := nc.Write(append(reply, a.proof("dialer", mine, peer)...)); err != nil {
		return hellos{}, err
	}
	if _, err := io.ReadFull(nc, reply[:1]); err != nil {
		return hellos{}, fmt.Errorf("read handshake verdict: %w", err)
	}
	if reply[0] != verdictOK {
		return hellos{}, fmt.Errorf("%w: the peer rejected this node's cluster key", ErrAuth)
	}
	return hellos{dialer: mine, acceptor: peer}, nil
}

// accept runs the acceptor's side of the handshake on nc, within deadline
// (left set, as by dial).
func (a handshake) accept(nc net.Conn, deadline time.Time) (hellos, error) {
	if err := nc.SetDeadline(deadline); err != nil {
		return hellos{}, err
	}
	peer := make([]byte, helloLen)
	if _, err := io.ReadFull(nc, peer); err != nil {
		return hellos{}, fmt.Errorf("read peer hello: %w", err)
	}
	mine := a.hello()
	if err := a.checkHello(peer); err != nil {
		if peer[0] != tlsRecordHandshake {
			// Answer with our hello so the dialer can name the mismatch too.
			_, _ = nc.Write(append(mine, make([]byte, proofLen)...))
		}
		return hellos{}, err
	}
	if _, err := nc.Write(append(mine, a.proof("acceptor", peer, mine)...)); err != nil {
		return hellos{}, err
	}
	msg := make([]byte, 1+proofLen)
	if _, err := io.ReadFull(nc, msg); err != nil {
		return hellos{}, fmt.Errorf("read peer proof: %w", err)
	}
	if msg[0] != verdictOK {
		return hellos{}, fmt.Errorf("%w: the peer does not know this node's cluster key", ErrAuth)
	}
	verdict := []byte{verdictOK}
	ok := a.verify(a.proof("dialer", peer, mine), msg[1:])
	if !ok {
		verdict[0] = verdictWrong
	}
	if _, err := nc.Write(verdict); err != nil {
		return hellos{}, err
	}
	if !ok {
		return hellos{}, fmt.Errorf("%w: the peer's cluster key differs from this node's", ErrAuth)
	}
	return hellos{dialer: peer, acceptor: mine}, nil
}

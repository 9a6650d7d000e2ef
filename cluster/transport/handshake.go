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

// The handshake opens every connection, keyed or not, so that a node with a
// key and one without refuse each other with a clear message:
//
//	dialer   -> hello:  magic "PRSN", version, flags (bit 0: keyed), 32-byte nonce
//	acceptor -> hello, then its proof (32 bytes)
//	dialer   -> verdict on the acceptor's proof (1 byte), then its own proof
//	acceptor -> verdict on the dialer's proof (1 byte)
//
// A proof is HMAC-SHA256 over a role label and both hellos, keyed by a key
// derived from the cluster key, so it proves knowledge of the key, is fresh
// for both sides' nonces and cannot be reflected back. Without a key proofs
// are zero and not checked.
const (
	magic           = "PRSN"
	protocolVersion = 1
	flagKeyed       = 1
	nonceLen        = 32
	helloLen        = len(magic) + 2 + nonceLen
	proofLen        = sha256.Size
	verdictOK       = 0
	verdictWrong    = 1
)

// handshake runs the handshake; key is nil when the cluster has none.
type handshake struct {
	key []byte
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

// dial runs the dialer's side of the handshake on nc.
func (a handshake) dial(nc net.Conn, timeout time.Duration) error {
	if err := nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	mine := a.hello()
	if _, err := nc.Write(mine); err != nil {
		return err
	}
	buf := make([]byte, helloLen+proofLen)
	if _, err := io.ReadFull(nc, buf); err != nil {
		return fmt.Errorf("read peer hello: %w (a peer refusing our cluster key setting closes here)", err)
	}
	peer, peerProof := buf[:helloLen], buf[helloLen:]
	if err := a.checkHello(peer); err != nil {
		return err
	}
	reply := make([]byte, 1, 1+proofLen)
	if !a.verify(a.proof("acceptor", mine, peer), peerProof) {
		reply[0] = verdictWrong
		_, _ = nc.Write(append(reply, make([]byte, proofLen)...))
		return fmt.Errorf("%w: the peer does not know this node's cluster key", ErrAuth)
	}
	if _, err := nc.Write(append(reply, a.proof("dialer", mine, peer)...)); err != nil {
		return err
	}
	if _, err := io.ReadFull(nc, reply[:1]); err != nil {
		return fmt.Errorf("read handshake verdict: %w", err)
	}
	if reply[0] != verdictOK {
		return fmt.Errorf("%w: the peer rejected this node's cluster key", ErrAuth)
	}
	return nc.SetDeadline(time.Time{})
}

// accept runs the acceptor's side of the handshake on nc.
func (a handshake) accept(nc net.Conn, timeout time.Duration) error {
	if err := nc.SetDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	peer := make([]byte, helloLen)
	if _, err := io.ReadFull(nc, peer); err != nil {
		return fmt.Errorf("read peer hello: %w", err)
	}
	mine := a.hello()
	if err := a.checkHello(peer); err != nil {
		// Answer with our hello so the dialer can name the mismatch too.
		_, _ = nc.Write(append(mine, make([]byte, proofLen)...))
		return err
	}
	if _, err := nc.Write(append(mine, a.proof("acceptor", peer, mine)...)); err != nil {
		return err
	}
	msg := make([]byte, 1+proofLen)
	if _, err := io.ReadFull(nc, msg); err != nil {
		return fmt.Errorf("read peer proof: %w", err)
	}
	if msg[0] != verdictOK {
		return fmt.Errorf("%w: the peer does not know this node's cluster key", ErrAuth)
	}
	verdict := []byte{verdictOK}
	ok := a.verify(a.proof("dialer", peer, mine), msg[1:])
	if !ok {
		verdict[0] = verdictWrong
	}
	if _, err := nc.Write(verdict); err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: the peer's cluster key differs from this node's", ErrAuth)
	}
	return nc.SetDeadline(time.Time{})
}

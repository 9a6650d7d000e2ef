package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/presencehq/presence/cluster/transport/seal"
)

// A connection is set up in layers, each on the one before:
//
//  1. TCP;
//  2. TLS 1.3, both sides presenting a certificate, when the transport has
//     TLS (Config.ServerTLS and ClientTLS);
//  3. the handshake (handshake.go), which with a cluster key proves that
//     both sides know it, inside TLS too: a peer then needs both a
//     certificate of the cluster's CA and the key;
//  4. with a cluster key and without TLS, sealed records (package seal),
//     so that the stream is encrypted and tamper-proof, not only
//     authenticated;
//  5. one byte saying what the connection carries: calls (this package's
//     frames) or a raw stream handed to Streams (Raft).
//
// Nothing is served before all of it succeeded.
const (
	connCalls  byte = 1
	connStream byte = 2
)

// connect dials addr and sets up a connection of the given kind within
// DialTimeout, or earlier when ctx or the transport ends.
func (t *Transport) connect(ctx context.Context, addr string, kind byte) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	stopOnClose := context.AfterFunc(t.ctx, cancel)
	defer stopOnClose()
	d := net.Dialer{KeepAlive: keepAlive}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		if t.closed.Load() {
			return nil, ErrClosed
		}
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	// Closing the connection is what interrupts a handshake blocked on I/O.
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	conn, err := t.secureDialled(ctx, nc, kind)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		if t.closed.Load() {
			return nil, ErrClosed
		}
		t.logHandshakeFailure("outgoing", addr, err)
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	return conn, nil
}

// secureDialled runs layers 2 to 5 on a dialled connection.
func (t *Transport) secureDialled(ctx context.Context, nc net.Conn, kind byte) (net.Conn, error) {
	deadline, _ := ctx.Deadline()
	conn := nc
	if t.cfg.ClientTLS != nil {
		tc := tls.Client(nc, t.cfg.ClientTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, tlsError(err)
		}
		conn = tc
	}
	h, err := t.auth.dial(conn, deadline)
	if err != nil {
		if conn != nc && refusedByTLS(err) {
			err = tlsError(err)
		}
		return nil, err
	}
	if conn, err = t.seal(conn, h, true); err != nil {
		return nil, err
	}
	if _, err := conn.Write([]byte{kind}); err != nil {
		return nil, err
	}
	return conn, conn.SetDeadline(time.Time{})
}

// secureAccepted runs layers 2 to 5 on an accepted connection and returns
// it with the kind the dialler announced.
func (t *Transport) secureAccepted(ctx context.Context, nc net.Conn) (net.Conn, byte, error) {
	ctx, cancel := context.WithTimeout(ctx, t.cfg.DialTimeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	conn := nc
	if t.cfg.ServerTLS != nil {
		tc := tls.Server(nc, t.cfg.ServerTLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			return nil, 0, tlsError(err)
		}
		conn = tc
	}
	h, err := t.auth.accept(conn, deadline)
	if err != nil {
		return nil, 0, err
	}
	if conn, err = t.seal(conn, h, false); err != nil {
		return nil, 0, err
	}
	var kind [1]byte
	if _, err := io.ReadFull(conn, kind[:]); err != nil {
		return nil, 0, fmt.Errorf("read connection kind: %w", err)
	}
	if kind[0] != connCalls && kind[0] != connStream {
		return nil, 0, fmt.Errorf("unknown connection kind %d", kind[0])
	}
	if err := conn.SetDeadline(time.Time{}); err != nil {
		return nil, 0, err
	}
	return conn, kind[0], nil
}

// seal protects conn with records keyed from the handshake when the
// transport has a cluster key and no TLS (TLS protects the stream itself).
func (t *Transport) seal(conn net.Conn, h session, dialer bool) (net.Conn, error) {
	if h.key == nil || t.cfg.ClientTLS != nil {
		return conn, nil
	}
	d2a, a2d, err := seal.SessionKeys(h.key, h.dialer, h.acceptor)
	if err != nil {
		return nil, err
	}
	if dialer {
		return seal.NewConn(conn, d2a, a2d)
	}
	return seal.NewConn(conn, a2d, d2a)
}

// tlsError marks TLS failures that mean "not a peer of this cluster" with
// ErrAuth: a certificate this side or the peer does not trust, or a peer
// without TLS. Network failures during the TLS handshake stay plain.
func tlsError(err error) error {
	if refusedByTLS(err) {
		return fmt.Errorf("%w: tls: %w (is every node's certificate signed by a CA in every node's --tls-ca?)", ErrAuth, err)
	}
	return fmt.Errorf("tls: %w", err)
}

// refusedByTLS reports a certificate this side refused, a TLS alert from
// the peer (which refused ours; in TLS 1.3 the dialler learns it on its
// first read, after its handshake returned) or a peer speaking no TLS.
func refusedByTLS(err error) bool {
	var (
		verify *tls.CertificateVerificationError
		record tls.RecordHeaderError
		op     *net.OpError
	)
	return errors.As(err, &verify) || errors.As(err, &record) || (errors.As(err, &op) && op.Op == "remote error")
}

package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrStreamsClosed is returned by Streams.Accept and DialContext after
// Streams.Close.
var ErrStreamsClosed = errors.New("transport: streams closed")

// Streams carries raw byte streams over the transport's connections, next
// to the calls: a consumer with a protocol of its own (Raft) gets
// connections that went through the same TLS, cluster key handshake and
// sealing as the calls, on the same port. It is the listener and the
// dialler of that consumer; the transport owns the connections, and its
// Close closes every one of them.
type Streams struct {
	t      *Transport
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
	ctx    context.Context // ends with Close: aborts dials in progress
	cancel context.CancelFunc
	addr   net.Addr
}

func newStreams(t *Transport) *Streams {
	s := &Streams{t: t, conns: make(chan net.Conn), done: make(chan struct{}), addr: t.ln.Addr()}
	s.ctx, s.cancel = context.WithCancel(t.ctx)
	return s
}

// Streams returns the transport's streams. Until Close, incoming streams
// wait for Accept; after Close they are refused.
func (t *Transport) Streams() *Streams { return t.streams }

// Accept waits for the next incoming stream. It returns ErrStreamsClosed
// after Close, and keeps waiting when the transport closes (no stream
// arrives then) so that a consumer stops on its own Close, not on an error.
func (s *Streams) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.done:
		return nil, ErrStreamsClosed
	}
}

// Addr is the address the transport listens on.
func (s *Streams) Addr() net.Addr { return s.addr }

// Close stops accepting streams, refuses those waiting, and aborts the
// dials in progress. Streams already handed out stay open. Calling Close
// again returns nil.
func (s *Streams) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.cancel()
		for {
			select {
			case c := <-s.conns:
				c.Close()
			default:
				return
			}
		}
	})
	return nil
}

// DialContext opens a stream to the transport at addr. The dial and the
// handshake end at ctx's deadline or DialTimeout, whichever comes first, and
// at once when Close or the transport's Close is called.
func (s *Streams) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	select {
	case <-s.done:
		return nil, ErrStreamsClosed
	default:
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	nc, err := s.t.connect(ctx, addr, connStream)
	if err != nil {
		if s.ctx.Err() != nil && !s.t.closed.Load() {
			return nil, ErrStreamsClosed
		}
		return nil, fmt.Errorf("%w: stream to %s: %w", ErrPeerUnavailable, addr, err)
	}
	c := &streamConn{Conn: nc, t: s.t}
	if !s.t.track(c) {
		nc.Close()
		return nil, ErrClosed
	}
	return c, nil
}

// deliver hands an accepted stream to Accept, or closes it when nobody
// accepts: Close was called, the transport closes, or no Accept came
// within DialTimeout.
func (s *Streams) deliver(nc net.Conn) {
	c := &streamConn{Conn: nc, t: s.t}
	if !s.t.track(c) {
		nc.Close()
		return
	}
	timer := time.NewTimer(s.t.cfg.DialTimeout)
	defer timer.Stop()
	select {
	case s.conns <- c:
		return
	case <-s.done:
	case <-s.t.ctx.Done():
	case <-timer.C:
		s.t.log.Warn("transport stream refused: nothing accepts streams on this node", "remote", nc.RemoteAddr().String())
	}
	c.Close()
}

// streamConn is a stream the transport tracks, so that its Close closes it.
type streamConn struct {
	net.Conn
	t    *Transport
	once sync.Once
	err  error
}

// Close closes the connection and forgets it.
func (c *streamConn) Close() error {
	c.once.Do(func() {
		c.t.untrack(c)
		c.err = c.Conn.Close()
	})
	return c.err
}

func (c *streamConn) close(error) { c.Close() }

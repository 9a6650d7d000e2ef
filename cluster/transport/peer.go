package transport

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// peerConns holds the outgoing connections to one address. Calls are
// spread over its slots round-robin.
type peerConns struct {
	addr  string
	next  atomic.Uint32
	slots []slot
}

// slot is one connection to a peer, dialled lazily. At most one
// dial runs per slot; after a failed dial the slot refuses calls for a
// growing back-off instead of hammering a peer that is down.
type slot struct {
	conn atomic.Pointer[clientConn] // nil until dialled

	mu        sync.Mutex
	dialing   chan struct{} // closed when the running dial ends; nil when none runs
	notBefore time.Time     // no dial before this after a failure
	backoff   time.Duration
	lastErr   error
}

// peer returns the peer entry for addr, creating it on first use.
func (t *Transport) peer(addr string) *peerConns {
	if v, ok := t.peers.Load(addr); ok {
		return v.(*peerConns)
	}
	v, _ := t.peers.LoadOrStore(addr, &peerConns{addr: addr, slots: make([]slot, t.cfg.ConnsPerPeer)})
	return v.(*peerConns)
}

// conn returns a live connection to addr, dialling one if needed.
func (t *Transport) conn(ctx context.Context, addr string) (*clientConn, error) {
	p := t.peer(addr)
	s := &p.slots[0]
	if len(p.slots) > 1 {
		s = &p.slots[int(p.next.Add(1))%len(p.slots)]
	}
	if c := s.conn.Load(); c != nil && c.alive() {
		return c, nil
	}
	for {
		wait, c, err := t.slotState(p.addr, s)
		if c != nil || err != nil {
			return c, err
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("transport: connect to %s: %w", addr, ctx.Err())
		case <-t.ctx.Done():
			return nil, ErrClosed
		}
		s.mu.Lock()
		failed := s.lastErr
		s.mu.Unlock()
		if c := s.conn.Load(); c != nil && c.alive() {
			return c, nil
		}
		if failed != nil {
			return nil, failed
		}
	}
}

// slotState returns the slot's live connection, or the error to fail fast
// with while backing off, or a channel closed when a dial (started here if
// none runs) ends.
func (t *Transport) slotState(addr string, s *slot) (<-chan struct{}, *clientConn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if c := s.conn.Load(); c != nil && c.alive() {
		return nil, c, nil
	}
	if s.dialing == nil {
		if time.Now().Before(s.notBefore) {
			return nil, nil, s.lastErr
		}
		done := make(chan struct{})
		if !t.spawn(func() { t.dial(addr, s, done) }) {
			return nil, nil, ErrClosed
		}
		s.dialing, s.lastErr = done, nil
	}
	return s.dialing, nil, nil
}

// dial connects a slot, runs the handshake and records the outcome.
func (t *Transport) dial(addr string, s *slot, done chan struct{}) {
	defer close(done)
	c, err := t.dialConn(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = nil
	if err != nil {
		s.backoff = min(max(2*s.backoff, minBackoff), maxBackoff)
		s.notBefore = time.Now().Add(s.backoff)
		s.lastErr = fmt.Errorf("%w: %w", ErrPeerUnavailable, err)
		return
	}
	s.backoff, s.notBefore = 0, time.Time{}
	s.conn.Store(c)
}

// dialConn opens, secures and starts a connection for calls to addr.
func (t *Transport) dialConn(addr string) (*clientConn, error) {
	nc, err := t.connect(t.ctx, addr, connCalls)
	if err != nil {
		return nil, err
	}
	c := newClientConn(t, nc, addr)
	if !t.track(c) {
		c.close(ErrClosed)
		return nil, ErrClosed
	}
	c.start()
	return c, nil
}

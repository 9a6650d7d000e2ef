package cluster

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// transportPeer holds the outgoing connections to one address. Calls are
// spread over its slots round-robin.
type transportPeer struct {
	addr  string
	next  atomic.Uint32
	slots []transportSlot
}

// transportSlot is one connection to a peer, dialled lazily. At most one
// dial runs per slot; after a failed dial the slot refuses calls for a
// growing back-off instead of hammering a peer that is down.
type transportSlot struct {
	conn atomic.Pointer[transportClientConn] // nil until dialled

	mu        sync.Mutex
	dialing   chan struct{} // closed when the running dial ends; nil when none runs
	notBefore time.Time     // no dial before this after a failure
	backoff   time.Duration
	lastErr   error
}

// peer returns the peer entry for addr, creating it on first use.
func (t *Transport) peer(addr string) *transportPeer {
	if v, ok := t.peers.Load(addr); ok {
		return v.(*transportPeer)
	}
	v, _ := t.peers.LoadOrStore(addr, &transportPeer{addr: addr, slots: make([]transportSlot, t.cfg.ConnsPerPeer)})
	return v.(*transportPeer)
}

// conn returns a live connection to addr, dialling one if needed.
func (t *Transport) conn(ctx context.Context, addr string) (*transportClientConn, error) {
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
			return nil, fmt.Errorf("cluster: connect to %s: %w", addr, ctx.Err())
		case <-t.ctx.Done():
			return nil, ErrTransportClosed
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
func (t *Transport) slotState(addr string, s *transportSlot) (<-chan struct{}, *transportClientConn, error) {
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
			return nil, nil, ErrTransportClosed
		}
		s.dialing, s.lastErr = done, nil
	}
	return s.dialing, nil, nil
}

// dial connects a slot, runs the handshake and records the outcome.
func (t *Transport) dial(addr string, s *transportSlot, done chan struct{}) {
	defer close(done)
	c, err := t.dialConn(addr)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dialing = nil
	if err != nil {
		s.backoff = min(max(2*s.backoff, transportMinBackoff), transportMaxBackoff)
		s.notBefore = time.Now().Add(s.backoff)
		s.lastErr = fmt.Errorf("%w: %w", ErrPeerUnavailable, err)
		return
	}
	s.backoff, s.notBefore = 0, time.Time{}
	s.conn.Store(c)
}

// dialConn opens, authenticates and starts a connection to addr.
func (t *Transport) dialConn(addr string) (*transportClientConn, error) {
	ctx, cancel := context.WithTimeout(t.ctx, t.cfg.DialTimeout)
	defer cancel()
	d := net.Dialer{KeepAlive: transportKeepAlive}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	err = t.auth.dial(nc, t.cfg.DialTimeout)
	if !stop() && err == nil {
		err = ctx.Err()
	}
	if err != nil {
		nc.Close()
		if !t.closed.Load() {
			t.logHandshakeFailure("outgoing", addr, err)
		}
		return nil, fmt.Errorf("handshake with %s: %w", addr, err)
	}
	c := newTransportClientConn(t, nc, addr)
	if !t.track(c) {
		c.close(ErrTransportClosed)
		return nil, ErrTransportClosed
	}
	c.start()
	return c, nil
}

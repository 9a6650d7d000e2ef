package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// pendingCall is one outstanding request. Calls are pooled: the reply
// channel has room for exactly one result, so whoever removes the call from
// the pending map can always deliver without blocking.
type pendingCall struct {
	ch    chan callResult
	timer *time.Timer // stopped while pooled
}

type callResult struct {
	body []byte
	err  error
}

// callPool recycles calls and their timers. One pool per Transport.
type callPool struct{ p sync.Pool }

func (cp *callPool) get() *pendingCall {
	if c, ok := cp.p.Get().(*pendingCall); ok {
		return c
	}
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &pendingCall{ch: make(chan callResult, 1), timer: t}
}

func (cp *callPool) put(c *pendingCall) {
	c.timer.Stop() // since Go 1.23 no stale tick can be received after Stop
	cp.p.Put(c)
}

// clientConn is an outgoing connection carrying this node's calls.
type clientConn struct {
	wire
	t      *Transport
	addr   string
	nextID atomic.Uint64

	mu      sync.Mutex
	pending map[uint64]*pendingCall // nil once the connection failed
}

func newClientConn(t *Transport, nc net.Conn, addr string) *clientConn {
	return &clientConn{
		wire:    newWire(nc, t.cfg.MaxFrameBytes, t.cfg.CallTimeout, &t.bufs),
		t:       t,
		addr:    addr,
		pending: make(map[uint64]*pendingCall),
	}
}

// start launches the reader and writer goroutines, owned by the transport.
func (c *clientConn) start() {
	c.t.wg.Add(2)
	go func() {
		defer c.t.wg.Done()
		c.writeLoop()
	}()
	go func() {
		defer c.t.wg.Done()
		defer c.t.untrack(c)
		c.readLoop()
	}()
}

// close fails the connection and every call waiting on it.
func (c *clientConn) close(err error) {
	c.fail(err)
	c.failPending()
}

// failPending hands the wire's error to every waiting call. Later calls
// find the map gone and fail at registration.
func (c *clientConn) failPending() {
	c.mu.Lock()
	calls := c.pending
	c.pending = nil
	c.mu.Unlock()
	for _, call := range calls {
		call.ch <- callResult{err: c.err}
	}
}

// callTimeout returns how long a call may take, and whether a timer must
// enforce it (false when ctx's own deadline comes first).
func (c *clientConn) callTimeout(ctx context.Context) (time.Duration, bool) {
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left <= c.t.cfg.CallTimeout {
			return left, false
		}
	}
	return c.t.cfg.CallTimeout, true
}

// call sends one request and waits for its reply, ctx, or the timeout.
func (c *clientConn) call(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	timeout, useTimer := c.callTimeout(ctx)
	if timeout <= 0 {
		return nil, fmt.Errorf("transport: call %s: %w", c.addr, context.DeadlineExceeded)
	}
	call := c.t.calls.get()
	id := c.nextID.Add(1)
	if !c.register(id, call) {
		c.t.calls.put(call)
		return nil, c.err
	}
	h := header{length: uint32(len(body)), kind: kindRequest, code: method, id: id, timeout: roundMillis(timeout)}
	if err := c.enqueue(ctx, c.bufs.frame(h, body)); err != nil {
		c.abandon(id, call)
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			return nil, fmt.Errorf("transport: call %s method %d: %w", c.addr, method, err)
		}
		return nil, err // the wire's error, which names the peer
	}
	var expired <-chan time.Time
	if useTimer {
		call.timer.Reset(timeout)
		expired = call.timer.C
	}
	select {
	case r := <-call.ch:
		c.t.calls.put(call)
		return r.body, r.err
	case <-ctx.Done():
		c.abandon(id, call)
		return nil, fmt.Errorf("transport: call %s method %d: %w", c.addr, method, ctx.Err())
	case <-expired:
		c.abandon(id, call)
		return nil, fmt.Errorf("transport: call %s method %d: no reply within %v: %w", c.addr, method, timeout, context.DeadlineExceeded)
	}
}

func (c *clientConn) register(id uint64, call *pendingCall) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pending == nil {
		return false
	}
	c.pending[id] = call
	return true
}

// abandon withdraws a call the caller stopped waiting for. If a reply is
// already being delivered, it is drained first so the pooled call is clean.
func (c *clientConn) abandon(id uint64, call *pendingCall) {
	c.mu.Lock()
	_, waiting := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if !waiting {
		<-call.ch
	}
	c.t.calls.put(call)
}

// complete delivers a reply to its call, if the caller still waits.
func (c *clientConn) complete(id uint64, r callResult) {
	c.mu.Lock()
	call := c.pending[id]
	delete(c.pending, id)
	c.mu.Unlock()
	if call != nil {
		call.ch <- r
	}
}

// readLoop dispatches replies until the connection fails.
func (c *clientConn) readLoop() {
	for {
		h, body, err := c.readFrame()
		if err != nil {
			c.close(fmt.Errorf("%w: connection to %s: %w", ErrPeerUnavailable, c.addr, err))
			return
		}
		switch h.kind {
		case kindReply:
			c.complete(h.id, callResult{body: body})
		case kindError:
			c.complete(h.id, callResult{err: c.t.errs.decode(c.addr, h.code, body)})
		default:
			c.close(fmt.Errorf("%w: connection to %s: unexpected frame kind %d", ErrPeerUnavailable, c.addr, h.kind))
			return
		}
	}
}

// roundMillis rounds a positive duration up to whole milliseconds, so
// the peer never sees a zero ("no deadline") or a shorter deadline.
func roundMillis(d time.Duration) uint32 {
	ms := (d + time.Millisecond - 1) / time.Millisecond
	return uint32(min(max(ms, 1), 1<<32-1))
}

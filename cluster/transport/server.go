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

// errNoHandler answers calls to a transport built without Handler.
var errNoHandler = errors.New("transport: this node serves no transport calls")

// serverConn is an accepted connection whose peer sends calls.
// Each call is served on a goroutine of the transport's pool; replies go
// through the shared writer, so they leave in completion order, not arrival
// order.
type serverConn struct {
	wire
	t         *Transport
	remote    string
	ctx       context.Context // cancelled when the connection closes
	cancel    context.CancelFunc
	deadlines *stepDeadlines // shared per-step contexts for served calls
	inflight  chan struct{}  // semaphore bounding concurrent calls
	served    sync.WaitGroup
}

func newServerConn(t *Transport, nc net.Conn) *serverConn {
	ctx, cancel := context.WithCancel(t.ctx)
	return &serverConn{
		wire:      newWire(nc, t.cfg.MaxFrameBytes, t.cfg.CallTimeout, &t.bufs),
		t:         t,
		remote:    nc.RemoteAddr().String(),
		ctx:       ctx,
		cancel:    cancel,
		deadlines: newStepDeadlines(ctx),
		inflight:  make(chan struct{}, t.cfg.MaxInflight),
	}
}

func (c *serverConn) close(err error) {
	c.fail(err)
	c.cancel()
}

// run serves the connection until it fails, then waits for its calls.
func (c *serverConn) run() {
	c.t.wg.Add(1)
	go func() {
		defer c.t.wg.Done()
		c.writeLoop()
	}()
	err := c.readLoop()
	c.close(err)
	c.served.Wait()
	if c.t.closed.Load() || errors.Is(err, ErrClosed) {
		return
	}
	c.t.log.Debug("transport connection closed", "remote", c.remote, "err", err)
}

// readLoop reads requests and hands each to a serving goroutine, waiting
// for a free slot when MaxInflight calls are already running.
func (c *serverConn) readLoop() error {
	for {
		h, body, err := c.readFrame()
		if err != nil {
			if errors.Is(err, ErrFrameTooLarge) {
				c.t.log.Warn("transport peer sent an oversized frame; dropping the connection", "remote", c.remote, "err", err)
			}
			return err
		}
		if h.kind != kindRequest {
			return fmt.Errorf("unexpected frame kind %d", h.kind)
		}
		select {
		case c.inflight <- struct{}{}:
		case <-c.done:
			return c.err
		}
		c.served.Add(1)
		c.t.workers.dispatch(c.t, job{c: c, h: h, body: body})
	}
}

// job is one request waiting for a serving goroutine.
type job struct {
	c    *serverConn
	h    header
	body []byte
}

// maxIdleWorkers bounds the serving goroutines kept waiting for
// work between bursts.
const maxIdleWorkers = 64

// workerPool serves calls on long-lived goroutines. A goroutine per
// call cost an allocation and grew its stack afresh through the handlers'
// deep call chains every time; workers keep their grown stacks. A call that
// finds no idle worker starts one, so a blocked handler never holds others
// up, and workers beyond maxIdleWorkers exit once idle.
type workerPool struct {
	jobs chan job     // unbuffered: a send succeeds only into an idle worker
	idle atomic.Int32 // workers waiting for a job
	live atomic.Int32 // workers, busy or idle
}

// dispatch hands j to an idle worker, or starts one.
func (ws *workerPool) dispatch(t *Transport, j job) {
	select {
	case ws.jobs <- j:
		return
	default:
	}
	t.wg.Add(1)
	ws.live.Add(1)
	go ws.work(t, j)
}

// work serves j, then further jobs until Close or until enough other
// workers are idle.
func (ws *workerPool) work(t *Transport, j job) {
	defer t.wg.Done()
	defer ws.live.Add(-1)
	for {
		j.c.serve(j.h, j.body)
		j = job{} // let the body go while idle
		if ws.idle.Add(1) > maxIdleWorkers {
			ws.idle.Add(-1)
			return
		}
		select {
		case j = <-ws.jobs:
			ws.idle.Add(-1)
		case <-t.ctx.Done():
			ws.idle.Add(-1)
			return
		}
	}
}

// serve runs the handler for one request and queues its reply.
func (c *serverConn) serve(h header, body []byte) {
	defer func() {
		<-c.inflight
		c.served.Done()
	}()
	ctx := c.ctx
	if h.timeout > 0 {
		ctx = c.deadlines.context(time.Duration(h.timeout) * time.Millisecond)
	}
	resp, err := c.handle(ctx, h.code, body)
	if err == nil && len(resp) > c.maxFrame {
		err = fmt.Errorf("%w: reply of %d bytes exceeds %d", ErrFrameTooLarge, len(resp), c.maxFrame)
	}
	out := header{kind: kindReply, id: h.id}
	if err != nil {
		out.kind, out.code = kindError, c.t.errs.code(err)
		resp = errorMessage(err)
	}
	out.length = uint32(len(resp))
	f := outFrame{body: resp}
	out.encode(&f.hdr)
	// A failed enqueue means the connection is gone; the caller learns it
	// from its own side.
	_ = c.enqueue(nil, f)
}

// handle calls the handler, turning a panic into an error reply so one bad
// request cannot take the node down.
func (c *serverConn) handle(ctx context.Context, method uint16, body []byte) (resp []byte, err error) {
	if c.t.cfg.Handler == nil {
		return nil, errNoHandler
	}
	defer func() {
		if r := recover(); r != nil {
			c.t.log.Error("transport handler panicked", "method", method, "remote", c.remote, "panic", r)
			resp, err = nil, fmt.Errorf("transport: handler for method %d panicked", method)
		}
	}()
	return c.t.cfg.Handler(ctx, method, body)
}

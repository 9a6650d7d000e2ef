package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// errTransportNoHandler answers calls to a transport built without Handler.
var errTransportNoHandler = errors.New("cluster: this node serves no transport calls")

// transportServerConn is an accepted connection whose peer sends calls.
// Each call is served on a goroutine of the transport's pool; replies go
// through the shared writer, so they leave in completion order, not arrival
// order.
type transportServerConn struct {
	transportWire
	t         *Transport
	remote    string
	ctx       context.Context // cancelled when the connection closes
	cancel    context.CancelFunc
	deadlines *transportDeadlines // shared per-step contexts for served calls
	inflight  chan struct{}       // semaphore bounding concurrent calls
	served    sync.WaitGroup
}

func newTransportServerConn(t *Transport, nc net.Conn) *transportServerConn {
	ctx, cancel := context.WithCancel(t.ctx)
	return &transportServerConn{
		transportWire: newTransportWire(nc, t.cfg.MaxFrameBytes, t.cfg.CallTimeout, &t.bufs),
		t:             t,
		remote:        nc.RemoteAddr().String(),
		ctx:           ctx,
		cancel:        cancel,
		deadlines:     newTransportDeadlines(ctx),
		inflight:      make(chan struct{}, t.cfg.MaxInflight),
	}
}

func (c *transportServerConn) close(err error) {
	c.fail(err)
	c.cancel()
}

// run serves the connection until it fails, then waits for its calls.
func (c *transportServerConn) run() {
	c.t.wg.Add(1)
	go func() {
		defer c.t.wg.Done()
		c.writeLoop()
	}()
	err := c.readLoop()
	c.close(err)
	c.served.Wait()
	if c.t.closed.Load() || errors.Is(err, ErrTransportClosed) {
		return
	}
	c.t.log.Debug("transport connection closed", "remote", c.remote, "err", err)
}

// readLoop reads requests and hands each to a serving goroutine, waiting
// for a free slot when MaxInflight calls are already running.
func (c *transportServerConn) readLoop() error {
	for {
		h, body, err := c.readFrame()
		if err != nil {
			if errors.Is(err, ErrTransportFrameTooLarge) {
				c.t.log.Warn("transport peer sent an oversized frame; dropping the connection", "remote", c.remote, "err", err)
			}
			return err
		}
		if h.kind != transportKindRequest {
			return fmt.Errorf("unexpected frame kind %d", h.kind)
		}
		select {
		case c.inflight <- struct{}{}:
		case <-c.done:
			return c.err
		}
		c.served.Add(1)
		c.t.workers.dispatch(c.t, transportJob{c: c, h: h, body: body})
	}
}

// transportJob is one request waiting for a serving goroutine.
type transportJob struct {
	c    *transportServerConn
	h    transportHeader
	body []byte
}

// transportMaxIdleWorkers bounds the serving goroutines kept waiting for
// work between bursts.
const transportMaxIdleWorkers = 64

// transportWorkers serves calls on long-lived goroutines. A goroutine per
// call cost an allocation and grew its stack afresh through the handlers'
// deep call chains every time; workers keep their grown stacks. A call that
// finds no idle worker starts one, so a blocked handler never holds others
// up, and workers beyond transportMaxIdleWorkers exit once idle.
type transportWorkers struct {
	jobs chan transportJob // unbuffered: a send succeeds only into an idle worker
	idle atomic.Int32      // workers waiting for a job
	live atomic.Int32      // workers, busy or idle
}

// dispatch hands j to an idle worker, or starts one.
func (ws *transportWorkers) dispatch(t *Transport, j transportJob) {
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
func (ws *transportWorkers) work(t *Transport, j transportJob) {
	defer t.wg.Done()
	defer ws.live.Add(-1)
	for {
		j.c.serve(j.h, j.body)
		j = transportJob{} // let the body go while idle
		if ws.idle.Add(1) > transportMaxIdleWorkers {
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
func (c *transportServerConn) serve(h transportHeader, body []byte) {
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
		err = fmt.Errorf("%w: reply of %d bytes exceeds %d", ErrTransportFrameTooLarge, len(resp), c.maxFrame)
	}
	out := transportHeader{kind: transportKindReply, id: h.id}
	if err != nil {
		out.kind, out.code = transportKindError, c.t.errs.code(err)
		resp = transportErrorMessage(err)
	}
	out.length = uint32(len(resp))
	f := transportOut{body: resp}
	out.encode(&f.hdr)
	// A failed enqueue means the connection is gone; the caller learns it
	// from its own side.
	_ = c.enqueue(nil, f)
}

// handle calls the handler, turning a panic into an error reply so one bad
// request cannot take the node down.
func (c *transportServerConn) handle(ctx context.Context, method uint16, body []byte) (resp []byte, err error) {
	if c.t.cfg.Handler == nil {
		return nil, errTransportNoHandler
	}
	defer func() {
		if r := recover(); r != nil {
			c.t.log.Error("transport handler panicked", "method", method, "remote", c.remote, "panic", r)
			resp, err = nil, fmt.Errorf("cluster: handler for method %d panicked", method)
		}
	}()
	return c.t.cfg.Handler(ctx, method, body)
}

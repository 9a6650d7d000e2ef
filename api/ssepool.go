package api

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

// The stream pool serves the SSE streams of plain HTTP/1.1 connections
// without a goroutine, a timer or a buffer per stream at rest. Once
// net/http wrote a stream's headers, its connection is hijacked and
// registered (then the stream's first comment is written) with:
//
//   - the poller, an epoll instance of the pool (Linux), which reports a
//     peer that closed or reset the connection, and a socket that has room
//     again after a write found it full;
//   - the keepalive wheel, whose one ticker marks every stream due for its
//     comment line once per KeepAlive (a slice of the streams each tick);
//   - its subscription, which wakes it when events are queued.
//
// A woken stream goes on the ready queue; a few writer goroutines take
// streams from it, render the queued events as SSE frames in one HTTP
// chunk and write it with a non-blocking system call. What the socket does
// not take stays on the stream (a pooled buffer) until the poller says
// there is room. A stream with more than sseMaxPending bytes waiting takes
// no more events until the socket took them (the events wait in its
// subscription, which ends when its consumer falls too far behind), and a
// stream whose socket took nothing for sseWriteTimeout is closed: a peer
// that stopped reading never holds a writer, nor more than about
// sseMaxPending bytes of its memory.
//
// A peer that vanished without closing (a cable pulled) is found by TCP:
// the comment lines written every KeepAlive go unacknowledged and the
// kernel reports the connection broken after its retransmissions give up,
// or Go's TCP keepalive probes do; the poller then closes the stream.

// Pool settings.
const (
	// keepaliveSlots is how many ticks one KeepAlive period has: each tick
	// writes the comment of about 1/keepaliveSlots of the streams.
	keepaliveSlots = 25
	// sseMaxPending bounds the unsent bytes of a stream: past it, the
	// stream takes no more events until its socket took some. Closing the
	// stream there instead ended streams whose clients were reading: a
	// burst (a reconnected stream's catch-up of many channels) easily
	// exceeds it behind a slow hop, such as Docker's userland proxy.
	sseMaxPending = 64 << 10
	// writerBatch is how many ready streams a writer takes at once.
	writerBatch = 32
)

// chunkEnd terminates the chunked body of a stream that ends cleanly.
var chunkEnd = []byte("0\r\n\r\n")

// errNoPoller: the platform has no poller, streams are served per request.
var errNoPoller = errors.New("api: no stream poller on this platform")

// streamPool holds the hijacked streams of a node.
type streamPool struct {
	clock     clock.Clock
	keepAlive time.Duration
	log       *slog.Logger
	payloads  *payloadCache
	writers   int

	poller *poller // set once started

	mu       sync.Mutex
	started  bool
	startErr error
	wait     *sync.Cond    // writers wait here for ready streams
	ready    []*poolStream // FIFO from head
	head     int
	idle     int // writers waiting
	closed   bool

	wheel keepaliveWheel

	stop chan struct{}
	done sync.WaitGroup
}

// newStreamPool returns a pool that starts its goroutines with its first
// stream.
func newStreamPool(clk clock.Clock, keepAlive time.Duration, log *slog.Logger, payloads *payloadCache, writers int) *streamPool {
	p := &streamPool{clock: clk, keepAlive: keepAlive, log: log, payloads: payloads, writers: writers,
		stop: make(chan struct{})}
	p.wait = sync.NewCond(&p.mu)
	return p
}

// errPoolClosed refuses streams once the pool closed.
var errPoolClosed = errors.New("api: stream pool closed")

// start opens the poller and starts the writers and the keepalive ticker,
// the first time it is called.
func (p *streamPool) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return errPoolClosed
	case p.started:
		return p.startErr
	}
	p.started = true
	p.poller, p.startErr = newPoller(p.peerEvent)
	if p.startErr != nil {
		return p.startErr
	}
	p.wheel.init(p.clock.Now(), p.keepAlive)
	ticker := p.clock.NewTicker(p.wheel.tick)
	p.done.Add(2 + p.writers)
	go func() {
		defer p.done.Done()
		p.poller.run()
	}()
	go func() {
		defer p.done.Done()
		defer ticker.Stop()
		p.tickLoop(ticker)
	}()
	for range p.writers {
		go func() {
			defer p.done.Done()
			p.writeLoop()
		}()
	}
	return nil
}

// poolStream is a hijacked stream: its connection, its subscription and
// what it has not written yet.
type poolStream struct {
	*sseStream
	pool *streamPool
	conn net.Conn
	fd   int    // conn's descriptor (see write)
	id   uint32 // tells this stream from a later one on the same fd
	life func() // observes the stream's duration when it ends

	queued    atomic.Bool // on the ready queue, or about to be
	keepalive atomic.Bool // its comment line is due
	peerGone  atomic.Bool // the poller saw the peer close or fail

	mu         sync.Mutex // held by the writer working on the stream
	closed     bool
	endWritten bool      // the body's end is written or pending: only a flush is left
	pending    *[]byte   // unsent bytes (a pooled buffer), nil when none
	stalled    time.Time // since when pending waits for the socket

	slot, pos int // place in the keepalive wheel, under the wheel's lock
}

// adopt hijacks w's connection and serves st from the pool. It returns
// false, with nothing changed, when the connection cannot be pooled; the
// caller then serves the stream itself.
func (p *streamPool) adopt(w http.ResponseWriter, st *sseStream, life func()) bool {
	if p.start() != nil {
		return false
	}
	conn, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		return false
	}
	// rw holds nothing to write (the stream's start was flushed), and
	// what the client may send after its request is never read.
	_ = rw
	if sw, ok := w.(*statusWriter); ok {
		sw.detached = true // life observes the stream's latency
	}
	s := &poolStream{sseStream: st, pool: p, conn: conn, life: life, pos: -1}
	sc, ok := conn.(syscall.Conn)
	if ok {
		var raw syscall.RawConn
		raw, err = sc.SyscallConn()
		ok = err == nil && raw.Control(func(fd uintptr) { s.fd = int(fd) }) == nil
	}
	if ok {
		// The stream starts once the pool knows it (its keepalives count
		// from here), with its first comment, before anything else can
		// write: the poller or the wheel may wake it at once, and its
		// writer waits for s.mu.
		s.mu.Lock()
		if ok = p.add(s); ok && !s.sendLocked(connectedChunk) {
			s.peerGone.Store(true)
			s.wake()
		}
		s.mu.Unlock()
	}
	if !ok {
		// The response is under way and the connection ours: end it.
		_ = conn.Close()
		st.end()
		life()
		return true
	}
	s.sub.Notify(s.wake)
	return true
}

// connectedChunk is connectedFrame as the first chunk of a body.
var connectedChunk = appendChunk(nil, connectedFrame)

// add registers s with the poller and the wheel; false when the pool is
// closed or the poller refuses it.
func (p *streamPool) add(s *poolStream) bool {
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return false
	}
	if err := p.poller.add(s); err != nil {
		p.log.Warn("stream not pooled", "err", err)
		return false
	}
	if !p.wheel.add(s, p.clock.Now()) { // closed meanwhile
		p.poller.remove(s)
		return false
	}
	return true
}

// wake puts s on the ready queue unless it is there already.
func (s *poolStream) wake() {
	if s.queued.CompareAndSwap(false, true) {
		s.pool.enqueue(s)
	}
}

func (p *streamPool) enqueue(streams ...*poolStream) {
	p.mu.Lock()
	p.ready = append(p.ready, streams...)
	if p.idle > 0 {
		if len(streams) > 1 {
			p.wait.Broadcast()
		} else {
			p.wait.Signal()
		}
	}
	p.mu.Unlock()
}

// peerEvent is the poller's report on s: gone (closed, reset, broken) or
// writable again.
func (p *streamPool) peerEvent(s *poolStream, gone bool) {
	if gone {
		s.peerGone.Store(true)
	}
	s.wake()
}

// writeLoop serves ready streams until the pool closes.
func (p *streamPool) writeLoop() {
	w := &streamWriter{enc: eventEncoder{payloads: p.payloads}}
	var batch []*poolStream
	for {
		p.mu.Lock()
		for p.head == len(p.ready) && !p.closed {
			p.idle++
			p.wait.Wait()
			p.idle--
		}
		if p.closed {
			p.mu.Unlock()
			return
		}
		n := min(writerBatch, len(p.ready)-p.head)
		batch = append(batch[:0], p.ready[p.head:p.head+n]...)
		clear(p.ready[p.head : p.head+n])
		p.head += n
		switch {
		case p.head == len(p.ready):
			p.ready, p.head = p.ready[:0], 0
		case p.head >= 1024 && 2*p.head >= len(p.ready):
			// Never empty under steady load: move the rest to the front
			// so that the slice does not grow without bound.
			rest := copy(p.ready, p.ready[p.head:])
			clear(p.ready[rest:])
			p.ready, p.head = p.ready[:rest], 0
		}
		p.mu.Unlock()
		for i, s := range batch {
			w.serve(s)
			batch[i] = nil
		}
	}
}

// streamWriter is a writer goroutine's scratch space, reused for every
// stream it serves.
type streamWriter struct {
	enc    eventEncoder
	evs    []presence.Event
	frames []byte
	out    []byte
}

// serve writes what s has to write: unsent bytes first, then its queued
// events and its comment line if due, as one chunk.
func (w *streamWriter) serve(s *poolStream) {
	if w.serveLocked(s) {
		s.finish()
	}
}

// serveLocked is serve under s.mu; ended reports that it closed s. A panic
// (a bug) closes the one stream instead of the node: the writers serve every
// stream, so none may die.
func (w *streamWriter) serveLocked(s *poolStream) (ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	defer func() {
		if r := recover(); r != nil {
			s.pool.log.Error("panic while writing a stream; stream closed", "panic", r, "stack", string(debug.Stack()))
			s.closeLocked()
			ended = true
		}
	}()
	s.queued.Store(false) // a wake from here on queues s again
	closeNow := s.peerGone.Load()
	if !closeNow && s.pending != nil {
		closeNow = !s.flushLocked()
	}
	if !closeNow && !s.endWritten && (s.pending == nil || len(*s.pending) <= sseMaxPending) {
		s.endWritten, closeNow = w.writeNewLocked(s)
	}
	if !closeNow && s.pending != nil {
		// The peer stopped reading.
		closeNow = s.pool.clock.Now().Sub(s.stalled) >= sseWriteTimeout
	}
	// An ended subscription's last bytes (its end chunk) go out before the
	// connection closes: closed with them unsent, the client would read a
	// cut body, not the end of the stream. The socket's room wakes s again.
	if closeNow || s.endWritten && s.pending == nil {
		s.closeLocked()
		return true
	}
	return false
}

// writeNewLocked takes s's queued events and writes them with its due
// comment line; ended reports the end of the subscription (its last
// frames and the end of the body are written or pending), failed a write
// that failed.
func (w *streamWriter) writeNewLocked(s *poolStream) (ended, failed bool) {
	w.evs, ended = s.sub.Take(w.evs[:0])
	w.frames = w.enc.appendEvents(w.frames[:0], w.evs, s.user, s.cur)
	clear(w.evs)
	if s.keepalive.Swap(false) {
		w.frames = append(w.frames, keepaliveFrame...)
	}
	w.out = w.out[:0]
	if len(w.frames) > 0 {
		w.out = appendChunk(w.out, w.frames)
	}
	if ended {
		w.out = append(w.out, chunkEnd...)
	}
	if len(w.out) > 0 && !s.sendLocked(w.out) {
		return ended, true
	}
	if cap(w.frames) > sseKeepBuffer {
		w.frames, w.out = nil, nil
	}
	return ended, false
}

// appendChunk appends data as one chunk of a chunked HTTP/1.1 body.
func appendChunk(b, data []byte) []byte {
	b = strconv.AppendUint(b, uint64(len(data)), 16)
	b = append(b, '\r', '\n')
	b = append(b, data...)
	return append(b, '\r', '\n')
}

// sendLocked writes b after the bytes already pending, keeping what the
// socket does not take; false when the connection failed.
func (s *poolStream) sendLocked(b []byte) bool {
	if s.pending != nil {
		*s.pending = append(*s.pending, b...)
		return s.flushLocked()
	}
	n, err := s.write(b)
	if err != nil {
		return false
	}
	if n < len(b) {
		buf := bodyBuffers.Get().(*[]byte)
		*buf = append((*buf)[:0], b[n:]...)
		s.pending, s.stalled = buf, s.pool.clock.Now()
	}
	return true
}

// flushLocked writes pending bytes; false when the connection failed.
func (s *poolStream) flushLocked() bool {
	n, err := s.write(*s.pending)
	if err != nil {
		return false
	}
	rest := copy(*s.pending, (*s.pending)[n:])
	*s.pending = (*s.pending)[:rest]
	if rest == 0 {
		releaseBody(s.pending)
		s.pending = nil
	} else if n > 0 {
		s.stalled = s.pool.clock.Now() // the peer reads, however slowly
	}
	return true
}

// write writes b without blocking: n is what the socket took. It uses the
// descriptor directly: only s's writer (holding s.mu) writes to it and only
// closeLocked (holding s.mu) closes the connection, so it cannot be closed,
// and its number reused, during the call.
func (s *poolStream) write(b []byte) (n int, err error) {
	n, errno := sendNonblocking(uintptr(s.fd), b)
	switch errno {
	case 0, syscall.EAGAIN:
		return n, nil
	}
	return n, errno
}

// closeLocked closes the connection; finish then releases the rest.
func (s *poolStream) closeLocked() {
	s.closed = true
	s.pool.poller.remove(s)
	_ = s.conn.Close()
	if s.pending != nil {
		releaseBody(s.pending)
		s.pending = nil
	}
}

// finish releases a closed stream's subscription, slot and wheel place.
func (s *poolStream) finish() {
	s.pool.wheel.remove(s)
	s.end()
	s.life()
}

// tickLoop marks the streams of each wheel slot due for their comment line.
func (p *streamPool) tickLoop(ticker clock.Ticker) {
	var due []*poolStream
	for {
		select {
		case <-p.stop:
			return
		case <-ticker.C():
			due = p.wheel.due(p.clock.Now(), due[:0])
			for _, s := range due {
				s.keepalive.Store(true)
			}
			var wake []*poolStream
			for _, s := range due {
				if s.queued.CompareAndSwap(false, true) {
					wake = append(wake, s)
				}
			}
			if len(wake) > 0 {
				p.enqueue(wake...)
			}
			clear(due)
		}
	}
}

// close ends every pooled stream (with the end of its body when its socket
// takes it) and stops the goroutines. Streams adopted afterwards are
// closed at once.
func (p *streamPool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	running := p.started && p.startErr == nil
	p.wait.Broadcast()
	p.mu.Unlock()
	if !running {
		return
	}
	close(p.stop)
	p.poller.close()
	p.done.Wait()
	// No goroutine of the pool runs any more: every stream left is here.
	for _, s := range p.wheel.closeAll() {
		s.mu.Lock()
		if s.pending == nil {
			_, _ = s.write(chunkEnd)
		}
		s.closeLocked()
		s.mu.Unlock()
		s.end()
		s.life()
	}
}

// keepaliveWheel spreads the streams' comment lines over one KeepAlive:
// a stream sits in the slot of the tick it was added in, and every tick
// marks one slot's streams due, so each gets its comment every KeepAlive
// (the first within KeepAlive of its start) from one ticker for all.
type keepaliveWheel struct {
	tick  time.Duration
	start time.Time

	mu     sync.Mutex
	slots  [][]*poolStream
	last   int64 // the last tick whose slot was marked
	closed bool
}

func (wh *keepaliveWheel) init(now time.Time, keepAlive time.Duration) {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	n := keepaliveSlots
	if keepAlive < keepaliveSlots*time.Millisecond {
		n = 1 // a period this short (tests) is not worth slicing
	}
	wh.tick, wh.start = keepAlive/time.Duration(n), now
	wh.slots = make([][]*poolStream, n)
}

// tickOf is the number of whole ticks from the wheel's start to t.
func (wh *keepaliveWheel) tickOf(t time.Time) int64 { return int64(t.Sub(wh.start) / wh.tick) }

// add places s in the slot of now's tick; false once the wheel closed.
func (wh *keepaliveWheel) add(s *poolStream, now time.Time) bool {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	if wh.closed {
		return false
	}
	s.slot = int(wh.tickOf(now) % int64(len(wh.slots)))
	s.pos = len(wh.slots[s.slot])
	wh.slots[s.slot] = append(wh.slots[s.slot], s)
	return true
}

// remove takes s out of its slot (a stream not in the wheel is ignored).
func (wh *keepaliveWheel) remove(s *poolStream) {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	if wh.closed || s.pos < 0 {
		return
	}
	slot := wh.slots[s.slot]
	last := len(slot) - 1
	moved := slot[last]
	slot[s.pos], moved.pos = moved, s.pos
	slot[last] = nil
	wh.slots[s.slot] = slot[:last]
	s.pos = -1
}

// due appends to dst the streams of every slot whose tick passed since the
// last call (each slot at most once per call).
func (wh *keepaliveWheel) due(now time.Time, dst []*poolStream) []*poolStream {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	cur := wh.tickOf(now)
	from := max(wh.last+1, cur-int64(len(wh.slots))+1)
	for t := from; t <= cur; t++ {
		dst = append(dst, wh.slots[t%int64(len(wh.slots))]...)
	}
	if cur > wh.last {
		wh.last = cur
	}
	return dst
}

// closeAll empties and closes the wheel, returning every stream it held.
func (wh *keepaliveWheel) closeAll() []*poolStream {
	wh.mu.Lock()
	defer wh.mu.Unlock()
	wh.closed = true
	var all []*poolStream
	for i, slot := range wh.slots {
		for _, s := range slot {
			s.pos = -1
			all = append(all, s)
		}
		wh.slots[i] = nil
	}
	return all
}

package transport

import (
	"bufio"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"time"
)

// Frame layout after the handshake, big endian:
//
//	0  uint32 body length
//	4  uint8  kind (request, reply, error reply)
//	5  uint8  reserved, zero
//	6  uint16 method (request) or error code (error reply)
//	8  uint64 call id, chosen by the caller, echoed by the reply
//	16 uint32 request timeout in milliseconds (0: none); zero in replies
//	20 body
const headerLen = 20

const (
	kindRequest byte = 1
	kindReply   byte = 2
	kindError   byte = 3
)

const (
	bufferSize    = 64 << 10
	queueLen      = 1024
	pooledBufSize = 64 << 10 // larger request buffers are left to the GC
)

// header is the decoded fixed part of a frame.
type header struct {
	length  uint32
	kind    byte
	code    uint16
	id      uint64
	timeout uint32
}

func (h header) encode(b *[headerLen]byte) {
	binary.BigEndian.PutUint32(b[0:4], h.length)
	b[4] = h.kind
	b[5] = 0
	binary.BigEndian.PutUint16(b[6:8], h.code)
	binary.BigEndian.PutUint64(b[8:16], h.id)
	binary.BigEndian.PutUint32(b[16:20], h.timeout)
}

func decodeHeader(b *[headerLen]byte) header {
	return header{
		length:  binary.BigEndian.Uint32(b[0:4]),
		kind:    b[4],
		code:    binary.BigEndian.Uint16(b[6:8]),
		id:      binary.BigEndian.Uint64(b[8:16]),
		timeout: binary.BigEndian.Uint32(b[16:20]),
	}
}

// outFrame is one frame queued for the writer. When pooled is set the
// frame (header included) lives in that pooled buffer, returned after the
// write; otherwise hdr precedes body.
type outFrame struct {
	hdr    [headerLen]byte
	body   []byte
	pooled *[]byte
}

// bufPool recycles request buffers so a call copies its body
// without allocating. One pool per Transport.
type bufPool struct{ p sync.Pool }

func (bp *bufPool) get() *[]byte {
	if b, ok := bp.p.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 512)
	return &b
}

func (bp *bufPool) put(b *[]byte) {
	if cap(*b) <= pooledBufSize {
		*b = (*b)[:0]
		bp.p.Put(b)
	}
}

// frame copies header and body into one pooled buffer.
func (bp *bufPool) frame(h header, body []byte) outFrame {
	buf := bp.get()
	var hb [headerLen]byte
	h.encode(&hb)
	*buf = append(append((*buf)[:0], hb[:]...), body...)
	return outFrame{pooled: buf}
}

// wire is the connection plumbing shared by both directions: a
// writer goroutine that drains a queue into a buffered writer and flushes
// only when the queue is empty, so frames from concurrent callers are
// batched into few syscalls under load. (Writing on the sender's goroutine
// whenever the wire was idle saved nothing for a lone caller and made 16
// concurrent callers 3 times slower: each made its own write syscall.)
type wire struct {
	nc           net.Conn
	r            *bufio.Reader
	out          chan outFrame
	done         chan struct{} // closed by fail
	failOnce     sync.Once
	err          error // why the wire failed; read only after done is closed
	maxFrame     int
	writeTimeout time.Duration
	bufs         *bufPool
	bw           *bufio.Writer // used by the writer goroutine only
	// deadline is the write deadline last set on nc (writer goroutine).
	deadline time.Time
	// Header scratch space for the reader and the writer goroutines, kept
	// here because a local array passed to an io.Reader/Writer escapes.
	rhdr, whdr [headerLen]byte
}

func newWire(nc net.Conn, maxFrame int, writeTimeout time.Duration, bufs *bufPool) wire {
	return wire{
		bufs:         bufs,
		nc:           nc,
		r:            bufio.NewReaderSize(nc, bufferSize),
		bw:           bufio.NewWriterSize(nc, bufferSize),
		out:          make(chan outFrame, queueLen),
		done:         make(chan struct{}),
		maxFrame:     maxFrame,
		writeTimeout: writeTimeout,
	}
}

// fail closes the wire once, remembering the first reason.
func (w *wire) fail(err error) bool {
	first := false
	w.failOnce.Do(func() {
		w.err = err
		close(w.done)
		w.nc.Close()
		first = true
	})
	return first
}

func (w *wire) alive() bool {
	select {
	case <-w.done:
		return false
	default:
		return true
	}
}

// enqueue hands a frame to the writer, giving up when the wire fails or
// ctx ends (ctx may be nil for replies, which wait only for the wire).
func (w *wire) enqueue(ctx context.Context, f outFrame) error {
	select {
	case w.out <- f: // the common case, without a three-way select
		return nil
	default:
	}
	var ctxDone <-chan struct{}
	if ctx != nil {
		ctxDone = ctx.Done()
	}
	select {
	case w.out <- f:
		return nil
	case <-w.done:
		return w.err
	case <-ctxDone:
		return ctx.Err()
	}
}

// writeLoop writes queued frames until the wire fails.
func (w *wire) writeLoop() {
	for {
		var f outFrame
		select {
		case f = <-w.out:
		case <-w.done:
			return
		}
		if err := w.writeBatch(f); err != nil {
			w.fail(fmt.Errorf("%w: write: %w", ErrPeerUnavailable, err))
			return
		}
	}
}

// writeBatch writes f and the frames queued meanwhile, then flushes. It
// yields once before flushing: callers that are runnable but not yet
// scheduled add their frames to this batch (far fewer write syscalls under
// load for a sub-microsecond delay when idle).
func (w *wire) writeBatch(f outFrame) error {
	if err := w.extendDeadline(); err != nil {
		w.release(f)
		return fmt.Errorf("set write deadline: %w", err)
	}
	err := w.writeQueued(w.writeFrame(f))
	runtime.Gosched()
	err = w.writeQueued(err)
	if err == nil {
		err = w.bw.Flush()
	}
	return err
}

// writeQueued writes the frames waiting in the queue, unless err is set.
func (w *wire) writeQueued(err error) error {
	for err == nil {
		select {
		case f := <-w.out:
			err = w.writeFrame(f)
		default:
			return nil
		}
	}
	return err
}

// extendDeadline keeps a write deadline between writeTimeout/2 and
// writeTimeout ahead, so that a peer that stopped reading cannot wedge the
// connection forever, without a call into the poller for every batch.
func (w *wire) extendDeadline() error {
	now := time.Now()
	if w.deadline.Sub(now) > w.writeTimeout/2 {
		return nil
	}
	w.deadline = now.Add(w.writeTimeout)
	return w.nc.SetWriteDeadline(w.deadline)
}

// release returns a frame's pooled buffer, if any, without writing it.
func (w *wire) release(f outFrame) {
	if f.pooled != nil {
		w.bufs.put(f.pooled)
	}
}

// writeFrame copies f into the buffered writer.
func (w *wire) writeFrame(f outFrame) error {
	if f.pooled != nil {
		_, err := w.bw.Write(*f.pooled)
		w.bufs.put(f.pooled)
		return err
	}
	w.whdr = f.hdr
	if _, err := w.bw.Write(w.whdr[:]); err != nil {
		return err
	}
	_, err := w.bw.Write(f.body)
	return err
}

// readFrame reads the next frame. A body longer than the limit is a
// protocol violation: the stream cannot be resynchronised without reading
// it, so the connection is dropped.
func (w *wire) readFrame() (header, []byte, error) {
	if _, err := io.ReadFull(w.r, w.rhdr[:]); err != nil {
		return header{}, nil, err
	}
	h := decodeHeader(&w.rhdr)
	if int64(h.length) > int64(w.maxFrame) {
		return h, nil, fmt.Errorf("%w: peer sent %d bytes, limit %d", ErrFrameTooLarge, h.length, w.maxFrame)
	}
	if h.length == 0 {
		return h, nil, nil
	}
	body := make([]byte, h.length)
	if _, err := io.ReadFull(w.r, body); err != nil {
		return h, nil, err
	}
	return h, body, nil
}

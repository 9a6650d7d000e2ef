package testcluster

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/presencehq/presence/cluster/transport/seal"
)

// The node-to-node transport's wire (cluster/transport: handshake.go,
// secure.go, wire.go) as far as the proxy reads it: the handshake in four
// steps, then, with a cluster key, sealed records; inside, one byte naming
// the connection's kind, then call frames (a 20-byte header whose first
// four bytes are the body's length) or a Raft stream.
const (
	rpcHelloLen    = 4 + 2 + 32 // magic, version, flags, nonce
	rpcProofLen    = 32
	rpcHeaderLen   = 20
	rpcKindCalls   = 1
	rpcKindStream  = 2
	rpcReadChunk   = 32 << 10
	rpcMaxUnparsed = 64 << 20 // bounds a frame waiting for its end
)

// rpcHandshake lists the handshake's messages: who sends each, and its size.
var rpcHandshake = []struct {
	fromDialer bool
	n          int
}{{true, rpcHelloLen}, {false, rpcHelloLen + rpcProofLen}, {true, 1 + rpcProofLen}, {false, 1}}

// tap yields what a dialler sends, record by record: the bytes as read, to
// be passed on, and their plain text (nil when the proxy cannot read it).
type tap func() (raw, plain []byte, err error)

// forwardRPC relays a node-to-node connection: the handshake untouched
// (keeping both hellos, from which the session keys derive), then the
// acceptor's side as it comes and the dialler's side record by record,
// each inspected before it is passed on, so that a cut refuses a request
// before its destination reads it.
func (sp *streamProxy) forwardRPC(in net.Conn) {
	out, err := net.DialTimeout("tcp", sp.target, time.Second)
	if err != nil {
		in.Close()
		return
	}
	p := &pipe{in: in, out: out}
	sp.mu.Lock()
	closed := sp.closed
	if !closed {
		sp.conns[p] = true
	}
	sp.mu.Unlock()
	if closed {
		in.Close()
		out.Close()
		return
	}
	defer sp.remove(p)
	defer out.Close()
	defer in.Close()
	next, err := sp.rpcTap(in, out)
	if err != nil {
		return
	}
	go func() {
		_, _ = io.Copy(in, sp.nw.capture.reader(out))
		in.Close()
		out.Close()
	}()
	st := &rpcStream{}
	for {
		raw, plain, err := next()
		if err != nil {
			return
		}
		if !sp.inspect(p, st, raw, plain) {
			return
		}
	}
}

// rpcTap relays the handshake, unless TLS hides it, and returns the tap of
// the dialler's side.
func (sp *streamProxy) rpcTap(in, out net.Conn) (tap, error) {
	chunk := make([]byte, rpcReadChunk)
	read := func() ([]byte, []byte, error) {
		n, err := in.Read(chunk)
		if n > 0 {
			return chunk[:n], chunk[:n], nil
		}
		return nil, nil, err
	}
	if sp.nw.tls {
		return func() ([]byte, []byte, error) {
			raw, _, err := read()
			return raw, nil, err
		}, nil
	}
	var hellos [2][]byte // the dialler's, the acceptor's
	for i, step := range rpcHandshake {
		src, dst := io.Reader(out), io.Writer(in)
		if step.fromDialer {
			src, dst = in, out
		}
		msg := make([]byte, step.n)
		if _, err := io.ReadFull(src, msg); err != nil {
			return nil, err
		}
		sp.nw.capture.add(msg)
		if _, err := dst.Write(msg); err != nil {
			return nil, err
		}
		if i < len(hellos) {
			hellos[i] = msg[:rpcHelloLen]
		}
	}
	if len(sp.nw.key) == 0 {
		return read, nil
	}
	d2a, _, err := seal.SessionKeys(sp.nw.key, hellos[0], hellos[1])
	if err != nil {
		return nil, err
	}
	r, err := seal.NewReader(in, d2a)
	if err != nil {
		return nil, err
	}
	return r.Next, nil
}

// rpcStream is what the proxy learnt of a dialler's stream so far.
type rpcStream struct {
	kind     byte
	unparsed []byte // plain text of calls not parsed yet
	head     []byte // the start of a Raft stream, up to raftSniffMax
	held     []byte // raw bytes withheld until a Raft stream's sender is known
}

// inspect learns from the plain text of one record, passes the record on
// unless a cut refuses the connection, and reports whether to go on.
func (sp *streamProxy) inspect(p *pipe, st *rpcStream, raw, plain []byte) bool {
	sp.nw.capture.add(raw)
	if len(plain) > 0 && st.kind == 0 {
		st.kind, plain = plain[0], plain[1:]
	}
	sp.mu.Lock()
	known := p.parties != nil
	sp.mu.Unlock()
	if !known {
		switch st.kind {
		case rpcKindStream:
			if !sp.learnRaft(p, st, plain) {
				// A Raft stream is held until its first request names its
				// sender, so refused appends are seen (RefusedRaftAppends).
				st.held = append(st.held, raw...)
				return true
			}
		case rpcKindCalls:
			sp.learnCalls(p, st, plain)
		}
	}
	sp.mu.Lock()
	refused := sp.nw.refuses(sp.dst, p.parties)
	sp.mu.Unlock()
	if refused {
		sp.nw.streams.Add(1)
		if st.kind == rpcKindStream && raftCarriesEntries(st.head) {
			sp.nw.noteRefusedAppend(sp.dst)
		}
		p.in.Close()
		p.out.Close()
		return false
	}
	if len(st.held) > 0 {
		raw = append(st.held, raw...)
		st.held = nil
	}
	_, err := p.out.Write(raw)
	return err == nil
}

// learnRaft reads the start of a Raft stream for its sender's address; it
// reports whether the head is conclusive (sender found, or none in the
// first raftSniffMax bytes).
func (sp *streamProxy) learnRaft(p *pipe, st *rpcStream, plain []byte) bool {
	st.head = append(st.head, plain[:min(len(plain), raftSniffMax-len(st.head))]...)
	if i := raftSender(st.head, sp.nw.rpcAddrs()); i >= 0 {
		sp.mu.Lock()
		p.parties = []int{i}
		sp.mu.Unlock()
		return true
	}
	return len(st.head) >= raftSniffMax
}

// learnCalls parses call frames for a request that names its sender.
func (sp *streamProxy) learnCalls(p *pipe, st *rpcStream, plain []byte) {
	st.unparsed = append(st.unparsed, plain...)
	for len(st.unparsed) >= rpcHeaderLen {
		n := int(binary.BigEndian.Uint32(st.unparsed[:4]))
		body := st.unparsed[rpcHeaderLen:min(len(st.unparsed), rpcHeaderLen+n)]
		if i := sp.nw.rpcSender(body); i >= 0 {
			sp.mu.Lock()
			p.parties = []int{i}
			sp.mu.Unlock()
			st.unparsed = nil
			return
		}
		if len(st.unparsed) < rpcHeaderLen+n {
			if len(st.unparsed) > rpcMaxUnparsed {
				st.unparsed = nil // not a frame the proxy understands: stop parsing
			}
			return
		}
		st.unparsed = st.unparsed[rpcHeaderLen+n:]
	}
}

// capture records every byte the proxies pass between nodes (WithCapture).
// A nil capture records nothing.
type capture struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *capture) add(b []byte) {
	if c == nil || len(b) == 0 {
		return
	}
	c.mu.Lock()
	c.buf.Write(b)
	c.mu.Unlock()
}

func (c *capture) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.buf.Bytes())
}

// reader returns r, recording what is read from it.
func (c *capture) reader(r io.Reader) io.Reader {
	if c == nil {
		return r
	}
	return io.TeeReader(r, captureWriter{c})
}

type captureWriter struct{ c *capture }

func (w captureWriter) Write(b []byte) (int, error) {
	w.c.add(b)
	return len(b), nil
}

var errNoCapture = errors.New("testcluster: the cluster does not capture its traffic (WithCapture)")

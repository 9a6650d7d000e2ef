// Package swarm holds many idle Server-Sent Event streams open against one
// presence node with very few goroutines (issue #17, target 2): raw
// non-blocking sockets driven by epoll event loops, source addresses spread
// over 127.0.0.0/8 to get past the ephemeral ports of one address, and a
// byte-level parser per stream that counts frames and spots one enter
// without decoding JSON. The per-stream state is about 130 bytes, so
// the swarm's own memory and CPU stay far below the node's.
package swarm

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
)

// Event is what a stream's parser reports.
type Event uint8

// Events of a stream.
const (
	// EventConnected is the node's ": connected" comment: the subscription
	// is set up.
	EventConnected Event = iota + 1
	// EventKeepalive is any other comment line (the node's ": keepalive").
	EventKeepalive
	// EventEnter is a message whose data line holds both patterns of the
	// Matcher: the awaited enter.
	EventEnter
	// EventMessage is any other message event.
	EventMessage
	// EventUnavailable and EventResync are the node's events of those names.
	EventUnavailable
	EventResync
	// EventOther is an event of another name.
	EventOther
)

// Parser errors; a StatusError reports an answer other than 200.
var (
	ErrMalformed = errors.New("swarm: malformed HTTP response")
	ErrEnded     = errors.New("swarm: stream ended")
)

// StatusError is an answer other than 200, with the start of its body.
type StatusError struct {
	Code int
	Body string
}

func (e *StatusError) Error() string { return fmt.Sprintf("status %d: %s", e.Code, e.Body) }

// maxHead bounds the response head; maxErrorBody the part of an error
// answer's body that is kept.
const (
	maxHead      = 8 << 10
	maxErrorBody = 300
)

// Parser states.
const (
	stHead uint8 = iota
	stErrorBody
	stChunkSize
	stChunkExt
	stChunkData
	stChunkEnd // the CRLF after a chunk's data
	stPlain    // a body without chunked encoding: until the connection ends
	stDone
)

// lineHeadSize is how much of each SSE line is kept: enough to tell a
// comment, an event name or a data line apart.
const lineHeadSize = 24

// Kinds of SSE line, as far as the parser cares.
const (
	kindUnknown uint8 = iota
	kindData
	kindOther
)

// Parser follows one stream: the HTTP/1.1 response head, the chunked body,
// and the SSE lines in it. It keeps only the first bytes of each line and
// runs the Matcher over data lines as they pass, so its state is small and
// fixed once the head has been read. The zero value is ready.
type Parser struct {
	state      uint8
	lineLen    uint8 // bytes of lineHead in use
	lineOver   bool  // the line is longer than lineHead
	kind       uint8 // kindUnknown until the line's first five bytes are in
	event      Event // the pending event's kind, from its "event:" line
	hasData    bool  // the pending event has a data line
	enter      bool  // a data line of the pending event held both patterns
	channelHit bool  // the current data line held the channel pattern
	enterHit   bool  // ... and the enter pattern
	chanState  uint16
	enterState uint16
	status     uint16
	remaining  int64 // of the current chunk, or of an error body
	head       []byte
	lineHead   [lineHeadSize]byte
}

// Feed parses the next bytes of the stream and calls emit for each event,
// with m deciding what an enter is (nil: none). It returns a *StatusError
// once a non-200 answer's body is read (or the first maxErrorBody bytes of
// it), ErrEnded at the end of a chunked body, and ErrMalformed for what it
// cannot parse; a Parser that returned an error must not be fed again.
func (p *Parser) Feed(data []byte, m *Matcher, emit func(Event)) error {
	for len(data) > 0 {
		var err error
		switch p.state {
		case stHead:
			data, err = p.feedHead(data)
		case stErrorBody:
			n := min(int64(len(data)), p.remaining)
			if room := maxErrorBody - len(p.head); room > 0 {
				p.head = append(p.head, data[:min(int64(room), n)]...)
			}
			data, p.remaining = data[n:], p.remaining-n
			if p.remaining == 0 || len(p.head) >= maxErrorBody {
				return p.statusError()
			}
		case stChunkSize:
			data, err = p.feedChunkSize(data)
		case stChunkExt:
			i := bytes.IndexByte(data, '\n')
			if i < 0 {
				return nil
			}
			data = data[i+1:]
			if p.remaining == 0 {
				p.state = stDone
				return ErrEnded
			}
			p.state = stChunkData
		case stChunkData:
			n := min(int64(len(data)), p.remaining)
			p.feedBody(data[:n], m, emit)
			data, p.remaining = data[n:], p.remaining-n
			if p.remaining == 0 {
				p.state = stChunkEnd
			}
		case stChunkEnd:
			switch data[0] {
			case '\r':
			case '\n':
				p.state = stChunkSize
			default:
				return fmt.Errorf("%w: no CRLF after a chunk", ErrMalformed)
			}
			data = data[1:]
		case stPlain:
			p.feedBody(data, m, emit)
			data = nil
		case stDone:
			return ErrEnded
		}
		if err != nil {
			return err
		}
	}
	if p.state == stErrorBody && p.remaining == 0 {
		return p.statusError()
	}
	return nil
}

// Flush ends the stream (the connection closed): an error answer whose
// body was cut short is still reported as a *StatusError.
func (p *Parser) Flush() error {
	if p.state == stErrorBody {
		return p.statusError()
	}
	return ErrEnded
}

func (p *Parser) statusError() error {
	p.state = stDone
	return &StatusError{Code: int(p.status), Body: string(bytes.TrimSpace(p.head))}
}

// feedHead collects the head until its blank line, then reads the status
// and the headers that frame the body.
func (p *Parser) feedHead(data []byte) ([]byte, error) {
	start := max(0, len(p.head)-3)
	p.head = append(p.head, data...)
	end := bytes.Index(p.head[start:], []byte("\r\n\r\n"))
	if end < 0 {
		if len(p.head) > maxHead {
			return nil, fmt.Errorf("%w: head over %d bytes", ErrMalformed, maxHead)
		}
		return nil, nil
	}
	end += start + 4
	if end > maxHead {
		return nil, fmt.Errorf("%w: head over %d bytes", ErrMalformed, maxHead)
	}
	rest := data[len(data)-(len(p.head)-end):]
	head := p.head[:end]
	lines := bytes.Split(bytes.TrimSuffix(head, []byte("\r\n\r\n")), []byte("\r\n"))
	proto, code, ok := bytes.Cut(lines[0], []byte(" "))
	if !ok || !bytes.HasPrefix(proto, []byte("HTTP/1.")) || len(code) < 3 {
		return nil, fmt.Errorf("%w: status line %q", ErrMalformed, lines[0])
	}
	status, err := strconv.Atoi(string(code[:3]))
	if err != nil {
		return nil, fmt.Errorf("%w: status line %q", ErrMalformed, lines[0])
	}
	p.status = uint16(status)
	chunked, length := false, int64(-1)
	for _, line := range lines[1:] {
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimSpace(value)
		switch {
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			chunked = bytes.EqualFold(value, []byte("chunked"))
		case bytes.EqualFold(name, []byte("Content-Length")):
			if length, err = strconv.ParseInt(string(value), 10, 64); err != nil || length < 0 {
				return nil, fmt.Errorf("%w: Content-Length %q", ErrMalformed, value)
			}
		}
	}
	p.head = nil
	switch {
	case status != 200:
		p.state, p.remaining = stErrorBody, length
		if length < 0 {
			p.remaining = maxErrorBody
		}
	case chunked:
		p.state = stChunkSize
	default:
		p.state = stPlain
	}
	return rest, nil
}

func (p *Parser) feedChunkSize(data []byte) ([]byte, error) {
	for i, b := range data {
		switch {
		case b >= '0' && b <= '9', b >= 'a' && b <= 'f', b >= 'A' && b <= 'F':
			if p.remaining > 1<<40 {
				return nil, fmt.Errorf("%w: chunk size too large", ErrMalformed)
			}
			p.remaining = p.remaining<<4 | int64(hexValue(b))
		case b == ';' || b == '\r' || b == ' ' || b == '\t':
			p.state = stChunkExt
			return data[i:], nil
		case b == '\n':
			p.state = stChunkExt
			return data[i:], nil
		default:
			return nil, fmt.Errorf("%w: chunk size byte %q", ErrMalformed, b)
		}
	}
	return nil, nil
}

func hexValue(b byte) byte {
	switch {
	case b <= '9':
		return b - '0'
	case b <= 'F':
		return b - 'A' + 10
	}
	return b - 'a' + 10
}

// feedBody parses SSE lines.
func (p *Parser) feedBody(data []byte, m *Matcher, emit func(Event)) {
	for len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		part := data
		if i >= 0 {
			part = data[:i]
		}
		p.feedLine(part, m)
		if i < 0 {
			return
		}
		p.endLine(emit)
		data = data[i+1:]
	}
}

// feedLine adds bytes of the current line. Once the line is known to be a
// data line (its first five bytes), the patterns run over all of it: the
// bytes kept before that moment, then every later part.
func (p *Parser) feedLine(part []byte, m *Matcher) {
	before := int(p.lineLen)
	n := copy(p.lineHead[p.lineLen:], part)
	p.lineLen += uint8(n)
	if n < len(part) {
		p.lineOver = true
	}
	switch p.kind {
	case kindUnknown:
		if p.lineLen < 5 {
			return
		}
		if !bytes.HasPrefix(p.lineHead[:], []byte("data:")) || m == nil {
			p.kind = kindOther
			return
		}
		p.kind = kindData
		p.match(p.lineHead[:before], m)
		p.match(part, m)
	case kindData:
		p.match(part, m)
	}
}

func (p *Parser) match(b []byte, m *Matcher) {
	if !p.channelHit {
		p.chanState, p.channelHit = m.channel.feed(p.chanState, b)
	}
	if !p.enterHit {
		p.enterState, p.enterHit = m.enter.feed(p.enterState, b)
	}
}

// endLine handles a complete line.
func (p *Parser) endLine(emit func(Event)) {
	line := bytes.TrimSuffix(p.lineHead[:p.lineLen], []byte("\r"))
	switch {
	case len(line) == 0 && !p.lineOver:
		if p.event != 0 || p.hasData {
			ev := p.event
			switch {
			case ev == EventMessage && p.enter, ev == 0 && p.enter:
				ev = EventEnter
			case ev == 0:
				ev = EventMessage
			}
			emit(ev)
		}
		p.event, p.hasData, p.enter = 0, false, false
	case line[0] == ':':
		if bytes.Equal(line, []byte(": connected")) {
			emit(EventConnected)
		} else {
			emit(EventKeepalive)
		}
	case bytes.HasPrefix(line, []byte("event:")):
		switch string(bytes.TrimSpace(line[len("event:"):])) {
		case "message":
			p.event = EventMessage
		case "unavailable":
			p.event = EventUnavailable
		case "resync":
			p.event = EventResync
		default:
			p.event = EventOther
		}
	case bytes.HasPrefix(line, []byte("data:")):
		p.hasData = true
		p.enter = p.enter || p.channelHit && p.enterHit
	}
	p.lineLen, p.lineOver, p.kind = 0, false, kindUnknown
	p.chanState, p.enterState, p.channelHit, p.enterHit = 0, 0, false, false
}

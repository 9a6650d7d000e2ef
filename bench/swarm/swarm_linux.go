//go:build linux

package swarm

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Defaults of Config.
const (
	DefaultLoops = 2
	// DefaultWindow bounds the streams being set up at once (connected, not
	// yet past the node's ": connected"), so the node's accept queue never
	// overflows.
	DefaultWindow = 256
)

// ErrConfig marks an unusable Config.
var ErrConfig = errors.New("swarm: invalid configuration")

// Config describes a swarm. Zero values are documented per field.
type Config struct {
	// Node is the node's HTTP address (IPv4). Required.
	Node netip.AddrPort
	// Streams is how many streams to open. Required.
	Streams int
	// Request returns the bytes of stream i's request. Required.
	Request func(i int) ([]byte, error)
	// Sources are the local addresses streams bind to: stream i uses
	// Sources[i/PerSource]. Empty: the kernel picks (one address, so at most
	// about 28,000 streams to one node port).
	Sources   []netip.Addr
	PerSource int
	// Loops is the number of event loops (goroutines); 0 = DefaultLoops.
	Loops int
	// Window bounds the streams being set up at once; 0 = DefaultWindow.
	Window int
}

func (c *Config) validate() error {
	if c.Loops == 0 {
		c.Loops = DefaultLoops
	}
	if c.Window == 0 {
		c.Window = DefaultWindow
	}
	switch {
	case !c.Node.Addr().Is4():
		return fmt.Errorf("%w: the node's address must be IPv4, not %v", ErrConfig, c.Node)
	case c.Streams < 1 || c.Request == nil:
		return fmt.Errorf("%w: streams and a request are required", ErrConfig)
	case c.Loops < 1 || c.Window < 1:
		return fmt.Errorf("%w: loops and window must be positive", ErrConfig)
	case len(c.Sources) > 0 && (c.PerSource < 1 || len(c.Sources)*c.PerSource < c.Streams):
		return fmt.Errorf("%w: %d sources x %d streams each cannot hold %d streams", ErrConfig, len(c.Sources), c.PerSource, c.Streams)
	}
	for _, a := range c.Sources {
		if !a.Is4() {
			return fmt.Errorf("%w: source %v is not IPv4", ErrConfig, a)
		}
	}
	return nil
}

// Stats are a swarm's counters.
type Stats struct {
	// Started counts streams whose socket was opened; Open the streams
	// past the node's ": connected" and still open; Failed those that never
	// got there; Dropped those the node closed after it.
	Started, Open, Failed, Dropped int64
	// Events counts the events read, by kind (index: Event).
	Events [EventOther + 1]int64
	// Entered counts the streams that read the awaited enter (Expect).
	Entered int64
}

// expectation is the awaited enter and its generation.
type expectation struct {
	m   *Matcher
	gen uint32
}

// Swarm is a running set of streams.
type Swarm struct {
	cfg                                     Config
	loops                                   []*loop
	stop                                    atomic.Bool
	wg                                      sync.WaitGroup
	expect                                  atomic.Pointer[expectation]
	started, open, failed, dropped, entered atomic.Int64
	events                                  [EventOther + 1]atomic.Int64

	mu       sync.Mutex
	failures map[string]int // why streams failed or were dropped
	arrivals []time.Time    // when each stream read the awaited enter
}

// Start opens the streams in the background, at most cfg.Window at a time
// being set up.
func Start(cfg Config) (*Swarm, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	s := &Swarm{cfg: cfg, failures: map[string]int{}}
	s.expect.Store(&expectation{})
	for i := range cfg.Loops {
		l, err := newLoop(s, i)
		if err != nil {
			s.Close()
			return nil, err
		}
		s.loops = append(s.loops, l)
	}
	for _, l := range s.loops {
		s.wg.Go(l.run)
	}
	return s, nil
}

// Stats returns the counters now.
func (s *Swarm) Stats() Stats {
	st := Stats{
		Started: s.started.Load(), Open: s.open.Load(), Failed: s.failed.Load(),
		Dropped: s.dropped.Load(), Entered: s.entered.Load(),
	}
	for i := range s.events {
		st.Events[i] = s.events[i].Load()
	}
	return st
}

// Settled reports whether every stream is open or has failed.
func (st Stats) Settled(streams int) bool {
	return st.Open+st.Failed+st.Dropped >= int64(streams)
}

// Expect makes m the awaited enter: from now on a stream that reads it
// counts once in Stats.Entered, and its time is kept for Arrivals. Both
// start again from zero.
func (s *Swarm) Expect(m *Matcher) {
	s.mu.Lock()
	s.arrivals = s.arrivals[:0]
	s.entered.Store(0)
	s.expect.Store(&expectation{m: m, gen: s.expect.Load().gen + 1})
	s.mu.Unlock()
}

// Arrivals returns when each stream read the awaited enter, in the order
// they were seen (per event loop: a loop stamps the streams of one wake-up
// with one time).
func (s *Swarm) Arrivals() []time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Time(nil), s.arrivals...)
}

// Failures counts why streams failed to open or were dropped.
func (s *Swarm) Failures() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.failures))
	for k, v := range s.failures {
		out[k] = v
	}
	return out
}

// Close stops the loops and closes every stream.
func (s *Swarm) Close() {
	s.stop.Store(true)
	s.wg.Wait()
	for _, l := range s.loops {
		l.close()
	}
}

func (s *Swarm) noteFailure(reason string) {
	s.mu.Lock()
	s.failures[reason]++
	s.mu.Unlock()
}

func (s *Swarm) noteArrival(at time.Time, gen uint32) {
	s.mu.Lock()
	// An arrival read before Expect moved on belongs to the previous enter.
	if s.expect.Load().gen == gen {
		s.arrivals = append(s.arrivals, at)
		s.entered.Add(1)
	}
	s.mu.Unlock()
}

// Connection states.
const (
	stateConnecting uint8 = iota
	stateSending
	stateStreaming
)

// conn is one stream's socket and parser.
type conn struct {
	fd        int
	stream    int32
	state     uint8
	connected bool   // read ": connected"
	enterGen  uint32 // generation of the last awaited enter read
	req       []byte // request bytes not yet sent
	parser    Parser
}

// loop is one event loop: an epoll set, its streams, and one read buffer.
type loop struct {
	s        *Swarm
	index    int
	epfd     int
	conns    []*conn // by fd
	next     int     // the next stream of this loop to open: index + next*loops
	inflight int     // streams being set up
	buf      []byte
	cur      *conn
	exp      *expectation
	now      time.Time
	emitFn   func(Event)
}

func newLoop(s *Swarm, index int) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("swarm: epoll_create1: %w", err)
	}
	l := &loop{s: s, index: index, epfd: epfd, buf: make([]byte, 64<<10)}
	l.emitFn = l.emit
	return l, nil
}

func (l *loop) run() {
	events := make([]unix.EpollEvent, 1024)
	for !l.s.stop.Load() {
		l.openMore()
		n, err := unix.EpollWait(l.epfd, events, 100)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			l.s.noteFailure("epoll_wait: " + err.Error())
			return
		}
		if n == 0 {
			continue
		}
		l.exp, l.now = l.s.expect.Load(), time.Now()
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd >= len(l.conns) || l.conns[fd] == nil {
				continue
			}
			c := l.conns[fd]
			switch c.state {
			case stateConnecting:
				l.connected(c)
			case stateSending:
				l.send(c)
			default:
				l.read(c)
			}
		}
	}
}

// openMore starts streams while fewer than the window are being set up.
func (l *loop) openMore() {
	cfg := &l.s.cfg
	for l.inflight < cfg.Window {
		i := l.index + l.next*cfg.Loops
		if i >= cfg.Streams {
			return
		}
		l.next++
		l.s.started.Add(1)
		if reason := l.open(i); reason != "" {
			l.s.failed.Add(1)
			l.s.noteFailure(reason)
		}
	}
}

// open starts stream i's connection; it returns why it failed, or "".
func (l *loop) open(i int) string {
	cfg := &l.s.cfg
	req, err := cfg.Request(i)
	if err != nil {
		return "request: " + err.Error()
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return "socket: " + err.Error()
	}
	if len(cfg.Sources) > 0 {
		// Pick the port at connect time, per destination, not at bind time
		// per source address.
		_ = unix.SetsockoptInt(fd, unix.IPPROTO_IP, unix.IP_BIND_ADDRESS_NO_PORT, 1)
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: cfg.Sources[i/cfg.PerSource].As4()}); err != nil {
			unix.Close(fd)
			return "bind: " + err.Error()
		}
	}
	err = unix.Connect(fd, &unix.SockaddrInet4{Addr: cfg.Node.Addr().As4(), Port: int(cfg.Node.Port())})
	if err != nil && !errors.Is(err, unix.EINPROGRESS) {
		unix.Close(fd)
		return "connect: " + err.Error()
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLOUT, Fd: int32(fd)}); err != nil {
		unix.Close(fd)
		return "epoll_ctl: " + err.Error()
	}
	for fd >= len(l.conns) {
		l.conns = append(l.conns, make([]*conn, max(1024, len(l.conns)))...)
	}
	l.conns[fd] = &conn{fd: fd, stream: int32(i), state: stateConnecting, req: req}
	l.inflight++
	return ""
}

// connected handles the end of a connect: its error, or the request.
func (l *loop) connected(c *conn) {
	errno, err := unix.GetsockoptInt(c.fd, unix.SOL_SOCKET, unix.SO_ERROR)
	switch {
	case err != nil:
		l.drop(c, "connect: "+err.Error())
		return
	case errno != 0:
		l.drop(c, "connect: "+syscall.Errno(errno).Error())
		return
	}
	c.state = stateSending
	l.send(c)
}

// send writes what is left of the request, then waits for the answer.
func (l *loop) send(c *conn) {
	n, err := unix.Write(c.fd, c.req)
	if errors.Is(err, unix.EAGAIN) {
		return
	}
	if err != nil {
		l.drop(c, "write: "+err.Error())
		return
	}
	if c.req = c.req[n:]; len(c.req) > 0 {
		return
	}
	c.req = nil
	c.state = stateStreaming
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, c.fd, &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: int32(c.fd)}); err != nil {
		l.drop(c, "epoll_ctl: "+err.Error())
	}
}

// read takes what the socket holds (one read; epoll is level-triggered, so
// anything left wakes the loop again).
func (l *loop) read(c *conn) {
	n, err := unix.Read(c.fd, l.buf)
	switch {
	case errors.Is(err, unix.EAGAIN):
		return
	case err != nil:
		l.drop(c, "read: "+err.Error())
		return
	case n == 0:
		l.drop(c, reason(c.parser.Flush(), c.connected))
		return
	}
	l.cur = c
	var m *Matcher
	if l.exp != nil {
		m = l.exp.m
	}
	if err := c.parser.Feed(l.buf[:n], m, l.emitFn); err != nil {
		l.drop(c, reason(err, c.connected))
	}
}

// reason names why a stream ended.
func reason(err error, connected bool) string {
	var se *StatusError
	switch {
	case errors.As(err, &se):
		return se.Error()
	case errors.Is(err, ErrEnded) && connected:
		return "closed by the node"
	case errors.Is(err, ErrEnded):
		return "closed by the node before the stream started"
	}
	return err.Error()
}

func (l *loop) emit(ev Event) {
	l.s.events[ev].Add(1)
	c := l.cur
	switch ev {
	case EventConnected:
		if !c.connected {
			c.connected = true
			l.inflight--
			l.s.open.Add(1)
		}
	case EventEnter:
		if c.enterGen != l.exp.gen {
			c.enterGen = l.exp.gen
			l.s.noteArrival(l.now, l.exp.gen)
		}
	}
}

// drop closes a stream that failed or ended.
func (l *loop) drop(c *conn, why string) {
	unix.Close(c.fd) // also removes it from the epoll set
	l.conns[c.fd] = nil
	if c.connected {
		l.s.open.Add(-1)
		l.s.dropped.Add(1)
	} else {
		l.inflight--
		l.s.failed.Add(1)
	}
	l.s.noteFailure(why)
}

// close closes every stream and the epoll set (the loop has stopped).
func (l *loop) close() {
	for fd, c := range l.conns {
		if c != nil {
			unix.Close(fd)
			l.conns[fd] = nil
		}
	}
	unix.Close(l.epfd)
}

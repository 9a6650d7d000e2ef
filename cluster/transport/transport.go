package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults applied by Listen to zero-valued Config fields.
const (
	// DefaultDialTimeout bounds connecting plus the handshake.
	DefaultDialTimeout = 2 * time.Second
	// DefaultCallTimeout bounds a call whose ctx has no deadline.
	DefaultCallTimeout = 5 * time.Second
	// DefaultMaxFrameBytes leaves room for handing off a big channel.
	DefaultMaxFrameBytes = 16 << 20
	// DefaultConnsPerPeer: one connection batches best; more only
	// help when a single reader goroutine becomes the bottleneck.
	DefaultConnsPerPeer = 1
	// DefaultMaxInflight bounds concurrent calls per connection.
	DefaultMaxInflight = 4096
)

const (
	minBackoff          = 50 * time.Millisecond
	maxBackoff          = 2 * time.Second
	acceptRetryDelay    = 50 * time.Millisecond
	keepAlive           = 15 * time.Second
	maxConnsPerPeer     = 16
	maxFrameLimit       = 1 << 30
	maxRegisteredErrors = 1<<16 - firstUserCode
)

var (
	// ErrClosed is returned by calls made on, or in flight during,
	// a closed Transport.
	ErrClosed = errors.New("transport: closed")
	// ErrPeerUnavailable wraps every failure to reach a peer: dial errors,
	// failed handshakes, broken connections and back-off after a failed dial.
	ErrPeerUnavailable = errors.New("transport: peer unavailable")
	// ErrAuth marks a handshake refused because the cluster keys
	// differ or only one side has a key.
	ErrAuth = errors.New("transport: authentication failed")
	// ErrFrameTooLarge is returned when a request or reply body
	// exceeds MaxFrameBytes.
	ErrFrameTooLarge = errors.New("transport: frame too large")
)

// Handler serves one incoming call. It runs on a goroutine of its
// own for the duration of the call (a pooled one), concurrently with other
// calls; ctx carries the caller's deadline and is cancelled when the
// connection or the transport closes. The handler owns body; the transport
// never touches the returned slice after it is handed back, and the handler
// must not modify it afterwards either.
type Handler func(ctx context.Context, method uint16, body []byte) ([]byte, error)

// Config configures Listen.
type Config struct {
	// BindAddr is the host:port to listen on; port 0 picks a free port.
	BindAddr string
	// Key is the cluster key (16, 24 or 32 bytes). When set, both ends prove
	// knowledge of it before anything is served and, without TLS, every
	// byte that follows is encrypted and authenticated under keys derived
	// from it (package seal). Nil disables authentication, and then peers
	// with a key refuse this node and vice versa.
	Key []byte
	// AcceptKeys are further cluster keys accepted from peers while the key
	// is rotated (handshake.go): a peer connects when it holds this node's
	// Key, and this node connects to a peer whose primary key is Key or one
	// of these. Needs Key.
	AcceptKeys [][]byte
	// ServerTLS and ClientTLS, set together, make every connection TLS 1.3
	// with a certificate on both sides: ServerTLS for accepted connections
	// (it must require and verify client certificates), ClientTLS for
	// dialled ones. The handshake of Key then runs inside TLS. Nil: no TLS.
	ServerTLS *tls.Config
	ClientTLS *tls.Config
	// Handler serves incoming calls. Nil makes the transport client-only:
	// incoming calls are answered with an error.
	Handler Handler
	// Errors lists sentinel errors that cross the wire by position: a handler
	// error matching Errors[i] (errors.Is) reaches the caller as an error that
	// matches Errors[i] too. Every node must list the same errors in the same
	// order. context.Canceled, context.DeadlineExceeded and
	// ErrFrameTooLarge are always carried.
	Errors []error
	// Logger receives handshake failures and connection errors; nil discards.
	Logger *slog.Logger
	// DialTimeout bounds connecting and the handshake; zero means
	// DefaultDialTimeout.
	DialTimeout time.Duration
	// CallTimeout bounds a call whose ctx has no earlier deadline; zero means
	// DefaultCallTimeout.
	CallTimeout time.Duration
	// MaxFrameBytes is the largest request or reply body sent or accepted;
	// zero means DefaultMaxFrameBytes.
	MaxFrameBytes int
	// ConnsPerPeer is how many connections are kept to each peer, calls being
	// spread over them; zero means DefaultConnsPerPeer.
	ConnsPerPeer int
	// MaxInflight bounds the calls served at once on one incoming connection;
	// beyond it the connection stops reading, pushing back on the sender.
	// Zero means DefaultMaxInflight.
	MaxInflight int
}

// Validate reports a configuration Listen cannot use.
func (c Config) Validate() error {
	switch {
	case c.BindAddr == "":
		return errors.New("transport: bind address is empty")
	case !validKey(c.Key, true):
		return fmt.Errorf("transport: key is %d bytes, want 16, 24 or 32", len(c.Key))
	case len(c.AcceptKeys) > 0 && len(c.Key) == 0:
		return errors.New("transport: AcceptKeys without a Key")
	case len(c.Errors) > maxRegisteredErrors:
		return fmt.Errorf("transport: %d errors registered, at most %d", len(c.Errors), maxRegisteredErrors)
	case c.DialTimeout < 0, c.CallTimeout < 0, c.MaxFrameBytes < 0, c.MaxInflight < 0:
		return errors.New("transport: negative timeout or limit")
	case (c.ServerTLS == nil) != (c.ClientTLS == nil):
		return errors.New("transport: ServerTLS and ClientTLS go together")
	case c.ServerTLS != nil && (c.ServerTLS.MinVersion < tls.VersionTLS13 || c.ClientTLS.MinVersion < tls.VersionTLS13):
		return errors.New("transport: TLS configurations must require TLS 1.3 (MinVersion)")
	case c.ServerTLS != nil && c.ServerTLS.ClientAuth != tls.RequireAndVerifyClientCert:
		return errors.New("transport: ServerTLS must require and verify client certificates")
	case c.MaxFrameBytes > maxFrameLimit:
		return fmt.Errorf("transport: MaxFrameBytes %d above %d", c.MaxFrameBytes, maxFrameLimit)
	case c.ConnsPerPeer < 0 || c.ConnsPerPeer > maxConnsPerPeer:
		return fmt.Errorf("transport: ConnsPerPeer %d out of range 0..%d", c.ConnsPerPeer, maxConnsPerPeer)
	}
	for _, k := range c.AcceptKeys {
		if !validKey(k, false) {
			return fmt.Errorf("transport: accepted key is %d bytes, want 16, 24 or 32", len(k))
		}
	}
	for i, err := range c.Errors {
		if err == nil {
			return fmt.Errorf("transport: error %d is nil", i)
		}
	}
	return nil
}

// validKey reports whether k is an AES key size (or empty, when allowed).
func validKey(k []byte, emptyOK bool) bool {
	switch len(k) {
	case 16, 24, 32:
		return true
	case 0:
		return emptyOK
	}
	return false
}

func (c *Config) applyDefaults() {
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.CallTimeout == 0 {
		c.CallTimeout = DefaultCallTimeout
	}
	if c.MaxFrameBytes == 0 {
		c.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if c.ConnsPerPeer == 0 {
		c.ConnsPerPeer = DefaultConnsPerPeer
	}
	if c.MaxInflight == 0 {
		c.MaxInflight = DefaultMaxInflight
	}
}

// Transport is a small multiplexed RPC between nodes: long-lived TCP
// connections per peer, requests tagged by id and answered out of order,
// writes coalesced by one writer goroutine per connection.
type Transport struct {
	cfg     Config
	log     *slog.Logger
	auth    handshake
	errs    errorTable
	bufs    bufPool
	calls   callPool
	workers workerPool
	ln      net.Listener
	ctx     context.Context // cancelled by Close; parent of dials and served calls
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	closed  atomic.Bool

	peers   sync.Map // address -> *peerConns; read on every call, rarely written
	streams *Streams

	mu    sync.Mutex          // guards conns and, with closed, spawning
	conns map[closer]struct{} // every open connection, both directions
}

// closer is an open connection Close must tear down.
type closer interface{ close(err error) }

// Listen validates cfg, listens on cfg.BindAddr and starts serving.
func Listen(cfg Config) (*Transport, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("transport: listen on %s: %w", cfg.BindAddr, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t := &Transport{
		cfg:    cfg,
		log:    cfg.Logger.With("component", "transport"),
		auth:   newHandshake(cfg.Key, cfg.AcceptKeys),
		errs:   newErrorTable(cfg.Errors),
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		conns:  make(map[closer]struct{}),
	}
	t.workers.jobs = make(chan job)
	t.streams = newStreams(t)
	t.wg.Add(1)
	go t.acceptLoop()
	return t, nil
}

// Addr returns the address the transport listens on, with the real port
// when BindAddr asked for port 0.
func (t *Transport) Addr() string { return t.ln.Addr().String() }

// Call sends body to method on the peer at addr and waits for its reply.
// It honours ctx and, when ctx has no earlier deadline, CallTimeout; the
// deadline travels with the request so the peer's handler sees it too.
// body is copied before Call returns or blocks, so the caller may reuse it.
// Errors: ErrPeerUnavailable (wrapped) when the peer cannot be reached or the
// connection breaks, ErrClosed, ctx errors, the peer's registered
// sentinel errors, or a *RemoteError.
func (t *Transport) Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error) {
	if len(body) > t.cfg.MaxFrameBytes {
		return nil, fmt.Errorf("%w: request of %d bytes to %s exceeds %d", ErrFrameTooLarge, len(body), addr, t.cfg.MaxFrameBytes)
	}
	if t.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("transport: call %s method %d: %w", addr, method, err)
	}
	c, err := t.conn(ctx, addr)
	if err != nil {
		return nil, err
	}
	return c.call(ctx, method, body)
}

// Disconnect closes the connections to addr, failing their in-flight calls
// with ErrPeerUnavailable; the next call dials again. Use it when membership
// declares the peer dead, rather than waiting for TCP to notice.
func (t *Transport) Disconnect(addr string) {
	v, ok := t.peers.Load(addr)
	if !ok {
		return
	}
	p := v.(*peerConns)
	for i := range p.slots {
		if c := p.slots[i].conn.Load(); c != nil {
			c.close(fmt.Errorf("%w: %s: disconnected", ErrPeerUnavailable, addr))
		}
	}
}

// Close stops listening, closes every connection and fails in-flight calls
// with ErrClosed. It waits for served calls to return, so handlers
// must honour their ctx. Calling Close again returns nil.
func (t *Transport) Close() error {
	t.mu.Lock()
	if t.closed.Swap(true) {
		t.mu.Unlock()
		return nil
	}
	err := t.ln.Close()
	conns := make([]closer, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	// Connections go before handler contexts are cancelled, so no reply
	// born of the cancellation reaches a caller: callers see the peer leave.
	for _, c := range conns {
		c.close(ErrClosed)
	}
	t.cancel()
	t.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("transport: close listener: %w", err)
	}
	return nil
}

// spawn runs f on a goroutine Close waits for, unless Close has begun. It
// serves goroutines started from callers' goroutines, which Close could
// otherwise race with its WaitGroup.
func (t *Transport) spawn(f func()) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return false
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
	return true
}

// track registers an open connection so Close can find it; it refuses once
// the transport is closing.
func (t *Transport) track(c closer) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed.Load() {
		return false
	}
	t.conns[c] = struct{}{}
	return true
}

func (t *Transport) untrack(c closer) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// acceptLoop accepts incoming connections until the listener closes.
func (t *Transport) acceptLoop() {
	defer t.wg.Done()
	for {
		nc, err := t.ln.Accept()
		if err != nil {
			if t.closed.Load() || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: pause instead of spinning.
			t.log.Warn("transport accept failed", "err", err)
			select {
			case <-time.After(acceptRetryDelay):
			case <-t.ctx.Done():
				return
			}
			continue
		}
		t.wg.Add(1)
		go t.serveConn(nc)
	}
}

// serveConn secures an accepted connection, then serves its calls or
// hands it to Streams.
func (t *Transport) serveConn(nc net.Conn) {
	defer t.wg.Done()
	remote := nc.RemoteAddr().String()
	// Close must not wait out a slow handshake: t.ctx ends it.
	conn, kind, err := t.secureAccepted(t.ctx, nc)
	if err != nil {
		nc.Close()
		if !t.closed.Load() {
			t.logHandshakeFailure("incoming", remote, err)
		}
		return
	}
	if kind == connStream {
		t.streams.deliver(conn)
		return
	}
	c := newServerConn(t, conn)
	if !t.track(c) {
		c.close(ErrClosed)
		return
	}
	defer t.untrack(c)
	c.run()
}

func (t *Transport) logHandshakeFailure(direction, remote string, err error) {
	if errors.Is(err, ErrAuth) {
		t.log.Error("transport handshake refused; check that every node uses the same --cluster-key and TLS settings",
			"direction", direction, "remote", remote, "err", err)
		return
	}
	t.log.Warn("transport handshake failed", "direction", direction, "remote", remote, "err", err)
}

//go:build linux

package api

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

// rawStream is a stream read, or not, straight from its socket.
type rawStream struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

// dialStream sends a subscribe request on a new connection and reads the
// response head and the first comment. rcvBuf > 0 sets the client's
// receive buffer (before it connects, so that it bounds the window).
func dialStream(t *testing.T, addr, target string, rcvBuf int) *rawStream {
	t.Helper()
	d := net.Dialer{}
	if rcvBuf > 0 {
		d.Control = func(_, _ string, c syscall.RawConn) error {
			var err error
			if cerr := c.Control(func(fd uintptr) {
				err = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvBuf)
			}); cerr != nil {
				return cerr
			}
			return err
		}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: test\r\n\r\n", target); err != nil {
		t.Fatal(err)
	}
	st := &rawStream{t: t, conn: conn, r: bufio.NewReader(conn)}
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(st.r, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("subscribe: %v %v", resp, err)
	}
	if resp.TransferEncoding == nil || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer encoding %v, want chunked", resp.TransferEncoding)
	}
	if size, comment := st.line(), st.line(); size != "d" || comment != ": connected" {
		t.Fatalf("first chunk %q %q, want the connected comment", size, comment)
	}
	st.line() // the blank line ending the comment
	st.line() // the chunk's CRLF
	return st
}

func (st *rawStream) line() string {
	st.t.Helper()
	l, err := st.r.ReadString('\n')
	if err != nil {
		st.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

// rest reads everything up to the end of the connection.
func (st *rawStream) rest() string {
	st.t.Helper()
	_ = st.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := io.ReadAll(st.r)
	if err != nil {
		st.t.Fatalf("read to the end: %v", err)
	}
	return string(b)
}

// pooledStreams returns the streams the pool holds.
func pooledStreams(h *Handler) []*poolStream {
	p := h.s.pool
	p.wheel.mu.Lock()
	defer p.wheel.mu.Unlock()
	var all []*poolStream
	for _, slot := range p.wheel.slots {
		all = append(all, slot...)
	}
	return all
}

// pendingBytes returns what s has not written yet.
func pendingBytes(s *poolStream) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pending == nil {
		return 0
	}
	return len(*s.pending)
}

// bigMessage is an enter of a user whose name makes a frame of about size
// bytes.
func bigMessage(channel string, id int64, size int) presence.Event {
	u := presence.UserInfo{ID: fmt.Sprint("u", id), Name: strings.Repeat("n", size)}
	m := &presence.Message{Channel: channel, ID: id, EnteringUsers: []presence.UserInfo{u}, Audience: &presence.Config{Public: true}}
	return presence.Event{Kind: presence.EventMessage, Channel: channel, Message: m, LastID: id}
}

// smallSendBuffer is a listener whose connections have the smallest send
// buffer the kernel allows, so that a peer that does not read fills it
// after a few frames.
type smallSendBuffer struct{ net.Listener }

func (l smallSendBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		_ = c.(*net.TCPConn).SetWriteBuffer(1)
	}
	return c, err
}

func newSmallBufferServer(t *testing.T, e *env) *httptest.Server {
	srv := httptest.NewUnstartedServer(e.h)
	srv.Listener = smallSendBuffer{srv.Listener}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// Streams over plain HTTP/1.1 are pooled: open streams own no goroutine
// (neither a request's nor a subscription's), and they still deliver.
func TestPooledStreamsOwnNoGoroutine(t *testing.T) {
	engine, reg := newDemoEngine(t)
	h, err := New(Config{Service: engine, Prefixes: newFakePrefixes(), Cluster: &fakeCluster{ready: true},
		JWTSecrets: [][]byte{[]byte(testSecret)}, AdminToken: testAdminToken, Registry: reg,
		MaxStreamsPerIP: 1000})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	target := subscribeQuery(`{"/demo/pool":-1}`)
	first := dialStream(t, srv.Listener.Addr().String(), target, 0) // starts the pool
	testkit.WaitFor(t, "the first stream pooled", func() bool { return len(pooledStreams(h)) == 1 })
	before := runtime.NumGoroutine()
	const n = 200
	streams := []*rawStream{first}
	for range n {
		streams = append(streams, dialStream(t, srv.Listener.Addr().String(), target, 0))
	}
	testkit.WaitFor(t, "the streams pooled and their catch-ups done", func() bool {
		return len(pooledStreams(h)) == n+1 && runtime.NumGoroutine() < before+n/10
	})
	// An enter reaches every stream.
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "sam", "exp": time.Now().Add(time.Hour).Unix()}).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/presence/update", strings.NewReader(`{"client_id":"c","present_channels":["/demo/pool"]}`))
	r.Header.Set("Authorization", "Bearer "+tok)
	r.Header.Set("Content-Type", "application/json")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("update: %d %s", w.Code, w.Body)
	}
	for i, st := range streams {
		// Chunk sizes, the frame of the id alone (the -1 channel's
		// position), then the enter's frame, in one chunk or two.
		var ids int
		var data string
		for range 12 {
			l := st.line()
			if strings.HasPrefix(l, "id: ") {
				ids++
			}
			if strings.HasPrefix(l, "data: ") {
				data = l
				break
			}
		}
		if ids != 2 || !strings.Contains(data, `"entering_users":[{"id":"sam"`) {
			t.Fatalf("stream %d: %d id lines, data %q; want the position's id and the enter", i, ids, data)
		}
	}
}

// Each stream gets its comment line within KeepAlive of its start and
// every KeepAlive after, on the slot of the wheel it was added in.
func TestPooledStreamKeepaliveSpreadOverWheel(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	target := subscribeQuery(`{"/a/x":-1}`)
	a := dialStream(t, addr, target, 0)
	testkit.WaitFor(t, "a pooled", func() bool { return len(pooledStreams(e.api)) == 1 })
	e.clock.Advance(10 * time.Second)
	b := dialStream(t, addr, target, 0)
	testkit.WaitFor(t, "b pooled", func() bool { return len(pooledStreams(e.api)) == 2 })
	expectKeepalive := func(st *rawStream, name string) {
		t.Helper()
		_ = st.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if size, body := st.line(), st.line(); size != "d" || body != ": keepalive" {
			t.Fatalf("%s: chunk %q %q, want a keepalive", name, size, body)
		}
		st.line() // the blank line ending the comment
		st.line() // the chunk's CRLF
	}
	expectQuiet := func(st *rawStream, name string) {
		t.Helper()
		_ = st.conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if b, err := st.r.ReadByte(); err == nil {
			t.Fatalf("%s: unexpected byte %q", name, b)
		}
		_ = st.conn.SetReadDeadline(time.Time{})
	}
	e.clock.Advance(15 * time.Second) // a: 25 s, b: 15 s
	expectKeepalive(a, "a at 25 s")
	expectQuiet(b, "b at 15 s")
	e.clock.Advance(10 * time.Second) // a: 35 s, b: 25 s
	expectKeepalive(b, "b at 25 s")
	expectQuiet(a, "a at 35 s")
	e.clock.Advance(15 * time.Second) // a: 50 s
	expectKeepalive(a, "a at 50 s")
}

// A subscriber that does not read is not closed for the bytes waiting
// for it: once more than sseMaxPending wait, the stream takes no more
// events (they wait in its subscription, which ends when its consumer
// falls too far behind), and the stall timeout closes it. Closed at
// sseMaxPending, streams whose clients were reading behind a slow hop (a
// burst of catch-up behind Docker's userland proxy) ended.
func TestPooledStreamSlowReaderHeldBackThenClosedWhenStalled(t *testing.T) {
	e := newEnv(t, nil)
	srv := newSmallBufferServer(t, e)
	dialStream(t, srv.Listener.Addr().String(), subscribeQuery(`{"/a/x":0}`), 4096)
	sub, _, _ := e.svc.subscription(0)
	testkit.WaitFor(t, "pooled", func() bool { return len(pooledStreams(e.api)) == 1 })
	s := pooledStreams(e.api)[0]
	id := int64(0)
	send := func(n int) {
		for range n {
			id++
			sub.events <- bigMessage("/a/x", id, 8<<10)
		}
	}
	send(12) // 96 KiB: more than the sockets hold and sseMaxPending
	testkit.WaitFor(t, "more than sseMaxPending waiting", func() bool { return pendingBytes(s) > sseMaxPending })
	held := pendingBytes(s)
	send(4)
	testkit.WaitFor(t, "the later frames taken from the channel", func() bool { return len(sub.events) == 0 })
	s.wake() // a writer serves the stream again
	testkit.WaitFor(t, "the serve done", func() bool { return !s.queued.Load() })
	grew := pendingBytes(s) > held
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if grew || closed || isClosed(sub.closed) {
		t.Fatalf("behind its reader: pending grew %v, closed %v: want the new events held back, the stream open", grew, closed)
	}
	e.clock.Advance(sseWriteTimeout + 25*time.Second)
	testkit.WaitFor(t, "the stalled stream closed and released", func() bool {
		return len(pooledStreams(e.api)) == 0 && e.streamsOpen() == 0 && isClosed(sub.closed)
	})
}

// A peer that stops reading is closed when its socket took nothing for
// sseWriteTimeout, even without further events: the keepalive pass finds
// it.
func TestPooledStreamStalledPeerClosed(t *testing.T) {
	e := newEnv(t, nil)
	srv := newSmallBufferServer(t, e)
	dialStream(t, srv.Listener.Addr().String(), subscribeQuery(`{"/a/x":0}`), 4096)
	sub, _, _ := e.svc.subscription(0)
	testkit.WaitFor(t, "pooled", func() bool { return len(pooledStreams(e.api)) == 1 })
	s := pooledStreams(e.api)[0]
	for id := int64(1); id <= 6; id++ { // 48 KiB: more than the sockets hold, less than sseMaxPending
		sub.events <- bigMessage("/a/x", id, 8<<10)
	}
	testkit.WaitFor(t, "bytes waiting for the socket", func() bool {
		return pendingBytes(s) > 0 && len(sub.events) == 0
	})
	// Each keepalive pass serves the stream: it stays open while its socket
	// took bytes less than sseWriteTimeout ago (the kernel may take a few
	// more at first), and closes after.
	pass := func(n int64) (closed bool) {
		e.clock.Advance(25 * time.Second)
		testkit.WaitFor(t, "the keepalive pass", func() bool {
			wh := &e.api.s.pool.wheel
			wh.mu.Lock()
			done := wh.last >= 25*n
			wh.mu.Unlock()
			return done && !s.queued.Load() && !s.keepalive.Load()
		})
		s.mu.Lock() // the pass's serve is over
		defer s.mu.Unlock()
		return s.closed
	}
	if pass(1) {
		t.Fatal("closed 25 s after the socket last took bytes")
	}
	for n := int64(2); !pass(n); n++ {
		if n == 4 {
			t.Fatal("still open after 100 s without the peer reading")
		}
	}
	testkit.WaitFor(t, "the stalled stream released", func() bool {
		return len(pooledStreams(e.api)) == 0 && e.streamsOpen() == 0 && isClosed(sub.closed)
	})
}

// Close ends every pooled stream with the end of its body, releases their
// slots and subscriptions, and later streams end at once.
func TestPooledStreamsEndOnClose(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	var streams []*rawStream
	for range 5 {
		streams = append(streams, dialStream(t, addr, subscribeQuery(`{"/a/x":-1}`), 0))
	}
	testkit.WaitFor(t, "pooled", func() bool { return len(pooledStreams(e.api)) == 5 })
	e.api.Close()
	for i, st := range streams {
		if rest := st.rest(); rest != "0\r\n\r\n" {
			t.Fatalf("stream %d ended with %q, want the end of the chunked body", i, rest)
		}
		if sub, _, _ := e.svc.subscription(i); !isClosed(sub.closed) {
			t.Fatalf("stream %d: subscription still open", i)
		}
	}
	if n := e.streamsOpen(); n != 0 {
		t.Fatalf("%d stream slots still taken", n)
	}
	// A stream after Close ends at once (served on its request's
	// goroutine: net/http ends the body and keeps the connection).
	late := dialStream(t, addr, subscribeQuery(`{"/a/x":-1}`), 0)
	if size, end := late.line(), late.line(); size != "0" || end != "" {
		t.Fatalf("a stream after Close: %q %q, want the end of its body", size, end)
	}
	testkit.WaitFor(t, "the late stream's slot released", func() bool { return e.streamsOpen() == 0 })
}

// A pooled stream writes exactly the frames a stream served on its
// request's goroutine writes.
func TestPooledAndPerRequestStreamsWriteTheSameBytes(t *testing.T) {
	evs := []presence.Event{
		bigMessage("/a/x", 4, 10),
		{Kind: presence.EventResync, Channel: "/a/y", LastID: 90},
		{Kind: presence.EventUnavailable, Channel: "/a/x"},
	}
	body := func(perRequest bool) string {
		e := newEnv(t, func(c *Config) { c.StreamPerRequest = perRequest })
		srv := httptest.NewServer(e.h)
		t.Cleanup(srv.Close)
		resp, cancel := (&streamServer{t: t, srv: srv}).request(subscribeQuery(`{"/a/x":3,"/a/y":-1}`), nil)
		defer cancel()
		sub, _, _ := e.svc.subscription(0)
		testkit.WaitFor(t, "subscribed", func() bool { s, _, _ := e.svc.subscription(0); sub = s; return s != nil })
		for _, ev := range evs {
			sub.events <- ev
		}
		close(sub.events) // the subscription ends: so does the body
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("per request %v: %v", perRequest, err)
		}
		return string(b)
	}
	pooled, perRequest := body(false), body(true)
	if pooled != perRequest || !strings.HasPrefix(pooled, ": connected\n\n") || strings.Count(pooled, "\n\n") != 4 {
		t.Fatalf("pooled:\n%q\nper request:\n%q", pooled, perRequest)
	}
}

// Over HTTP/2 (HTTPS) a stream cannot be hijacked: it is served on its
// request's goroutine, with the same frames, keepalives and end.
func TestSSEOverHTTP2(t *testing.T) {
	e := newEnv(t, nil)
	httpSrv := httptest.NewUnstartedServer(e.h)
	httpSrv.EnableHTTP2 = true
	httpSrv.StartTLS()
	t.Cleanup(httpSrv.Close)
	srv := &streamServer{t: t, srv: httpSrv}
	st, sub, _ := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":-1}`), nil)
	if st.resp.ProtoMajor != 2 {
		t.Fatalf("protocol %s, want HTTP/2", st.resp.Proto)
	}
	if n := len(pooledStreams(e.api)); n != 0 {
		t.Fatalf("%d streams pooled over HTTP/2", n)
	}
	sub.events <- presence.Event{Kind: presence.EventUnavailable, Channel: "/a/x"}
	if f := st.next(); !strings.Contains(f, "event: unavailable") {
		t.Fatalf("frame %q", f)
	}
	e.clock.Advance(25 * time.Second)
	if f := st.next(); f != ": keepalive\n\n" {
		t.Fatalf("frame %q, want a keepalive", f)
	}
	st.close()
	testkit.WaitFor(t, "the subscription closed after the client left", func() bool { return isClosed(sub.closed) })
	testkit.WaitFor(t, "the slot released", func() bool { return e.streamsOpen() == 0 })
}

// Close also ends the streams served on their request's goroutine.
func TestPerRequestStreamsEndOnClose(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.StreamPerRequest = true })
	srv := newStreamServer(t, e)
	st, sub, _ := openSub(t, e, srv, 0, subscribeQuery(`{"/a/x":-1}`), nil)
	e.api.Close()
	if !st.ended() {
		t.Fatal("stream still open after Close")
	}
	testkit.WaitFor(t, "released", func() bool { return isClosed(sub.closed) && e.streamsOpen() == 0 })
}

// A pooled stream's request ends when the pool takes it over; its latency
// is observed when the stream ends, so SSE streams still count their
// whole life, as their requests' counter counts them once.
func TestPooledStreamLatencyCountsItsLife(t *testing.T) {
	e := newEnv(t, nil)
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	st := dialStream(t, srv.Listener.Addr().String(), subscribeQuery(`{"/a/x":-1}`), 0)
	testkit.WaitFor(t, "pooled", func() bool { return len(pooledStreams(e.api)) == 1 })
	latency := func() (count uint64, sum float64) {
		families, err := e.registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() != "presence_http_request_duration_seconds" {
				continue
			}
			for _, m := range f.GetMetric() {
				if m.GetLabel()[0].GetValue() == pathSubscribe {
					return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
				}
			}
		}
		return 0, 0
	}
	if n, _ := latency(); n != 0 {
		t.Fatalf("%d latency samples while the stream is open", n)
	}
	e.clock.Advance(90 * time.Second)
	st.conn.Close()
	testkit.WaitFor(t, "the stream's latency observed", func() bool { n, _ := latency(); return n == 1 })
	if _, sum := latency(); sum < 90 {
		t.Fatalf("latency %v s, want the stream's 90 s", sum)
	}
	if got := metricValue(t, e, "presence_http_requests_total", map[string]string{"route": pathSubscribe, "method": "GET", "status": "200"}); got != 1 {
		t.Fatalf("requests counted %v, want 1", got)
	}
}

// panicService hands out subscriptions whose Take panics for the channel
// "/a/panic": a bug in a stream must close that stream, not the writer
// goroutine that every stream depends on.
type panicService struct{ *fakeService }

func (p panicService) Subscribe(ctx context.Context, u *presence.User, from map[string]int64) (presence.Subscription, error) {
	if _, ok := from["/a/panic"]; ok {
		return &panickySub{closed: make(chan struct{})}, nil
	}
	return p.fakeService.Subscribe(ctx, u, from)
}

type panickySub struct {
	closed chan struct{}
	once   sync.Once
}

func (*panickySub) Events() <-chan presence.Event                  { return nil }
func (s *panickySub) Close()                                       { s.once.Do(func() { close(s.closed) }) }
func (*panickySub) Notify(wake func())                             { wake() }
func (*panickySub) Take([]presence.Event) ([]presence.Event, bool) { panic("a bug") }

func TestPooledStreamPanicClosesOnlyThatStream(t *testing.T) {
	e := newEnv(t, func(c *Config) {
		c.Service = panicService{c.Service.(*fakeService)}
		c.Logger, _ = testkit.CapturedLogger()
	})
	srv := httptest.NewServer(e.h)
	t.Cleanup(srv.Close)
	addr := srv.Listener.Addr().String()
	healthy := dialStream(t, addr, subscribeQuery(`{"/a/x":-1}`), 0)
	sub, _, _ := e.svc.subscription(0)
	broken := dialStream(t, addr, subscribeQuery(`{"/a/panic":-1}`), 0)
	if rest := broken.rest(); rest != "" {
		t.Fatalf("the broken stream wrote %q after its start", rest) // closed, no end of body
	}
	testkit.WaitFor(t, "the broken stream's slot released", func() bool { return e.streamsOpen() == 1 })
	// The writers still serve the healthy stream.
	sub.events <- presence.Event{Kind: presence.EventUnavailable, Channel: "/a/x"}
	healthy.line() // chunk size
	if id := healthy.line(); !strings.HasPrefix(id, "id: ") {
		t.Fatalf("healthy stream: %q, want an event", id)
	}
}

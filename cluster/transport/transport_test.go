package transport

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// testTimeout bounds each test's calls: a deadline for failure, never a
// duration a test depends on.
const testTimeout = 10 * time.Second

// startTransport listens on a free loopback port and closes at cleanup.
func startTransport(t testing.TB, cfg Config) *Transport {
	t.Helper()
	if cfg.BindAddr == "" {
		cfg.BindAddr = "127.0.0.1:0"
	}
	tr, err := Listen(cfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr
}

func echo(_ context.Context, _ uint16, body []byte) ([]byte, error) { return body, nil }

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// pendingCalls counts calls registered on t's outgoing connections.
func pendingCalls(t *Transport) int {
	n := 0
	t.peers.Range(func(_, v any) bool {
		p := v.(*peerConns)
		for i := range p.slots {
			if c := p.slots[i].conn.Load(); c != nil {
				c.mu.Lock()
				n += len(c.pending)
				c.mu.Unlock()
			}
		}
		return true
	})
	return n
}

func connCount(t *Transport) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.conns)
}

func TestTransportEcho(t *testing.T) {
	srv := startTransport(t, Config{Handler: func(_ context.Context, method uint16, body []byte) ([]byte, error) {
		return append([]byte(fmt.Sprintf("m%d:", method)), body...), nil
	}})
	cli := startTransport(t, Config{})
	got, err := cli.Call(testCtx(t), srv.Addr(), 7, []byte("hello"))
	if err != nil || string(got) != "m7:hello" {
		t.Fatalf("Call = %q, %v; want m7:hello", got, err)
	}
	got, err = cli.Call(testCtx(t), srv.Addr(), 8, nil)
	if err != nil || string(got) != "m8:" {
		t.Fatalf("empty Call = %q, %v; want m8:", got, err)
	}
}

// TestTransportOutOfOrderReplies holds every request in the handler, then
// answers the last one first: its caller must return while the first still
// waits, proving replies are matched by id on one shared connection.
func TestTransportOutOfOrderReplies(t *testing.T) {
	const n = 32
	var gates [n]chan struct{}
	for i := range gates {
		gates[i] = make(chan struct{})
	}
	var entered atomic.Int32
	srv := startTransport(t, Config{Handler: func(ctx context.Context, _ uint16, body []byte) ([]byte, error) {
		entered.Add(1)
		select {
		case <-gates[binary.BigEndian.Uint32(body)]:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return body, nil
	}})
	cli := startTransport(t, Config{})
	ctx := testCtx(t)
	var done [n]atomic.Bool
	errs := make(chan error, n)
	for i := range n {
		go func() {
			body := binary.BigEndian.AppendUint32(nil, uint32(i))
			got, err := cli.Call(ctx, srv.Addr(), 1, body)
			if err == nil && !bytes.Equal(got, body) {
				err = fmt.Errorf("call %d got reply %x", i, got)
			}
			done[i].Store(true)
			errs <- err
		}()
	}
	testkit.WaitFor(t, "all requests in the handler", func() bool { return entered.Load() == n })
	close(gates[n-1])
	testkit.WaitFor(t, "the last call to return", done[n-1].Load)
	if done[0].Load() {
		t.Fatal("first call returned before its reply was released")
	}
	for i := n - 2; i >= 0; i-- {
		close(gates[i])
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if c := connCount(cli); c != 1 {
		t.Fatalf("client holds %d connections, want 1", c)
	}
}

func TestTransportManyConcurrentCalls(t *testing.T) {
	srv := startTransport(t, Config{Handler: echo})
	for _, conns := range []int{1, 3} {
		t.Run(fmt.Sprintf("conns=%d", conns), func(t *testing.T) {
			cli := startTransport(t, Config{ConnsPerPeer: conns})
			ctx := testCtx(t)
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for g := range 64 {
				wg.Go(func() {
					for i := range 100 {
						body := []byte(fmt.Sprintf("g%d-i%d", g, i))
						got, err := cli.Call(ctx, srv.Addr(), 1, body)
						if err != nil || !bytes.Equal(got, body) {
							errs <- fmt.Errorf("call %s = %q, %v", body, got, err)
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if c := connCount(cli); c != conns {
				t.Fatalf("client holds %d connections, want %d", c, conns)
			}
			if p := pendingCalls(cli); p != 0 {
				t.Fatalf("%d calls still pending", p)
			}
		})
	}
}

func TestTransportSentinelErrors(t *testing.T) {
	errA := errors.New("sentinel a")
	errB := errors.New("sentinel b")
	errOther := errors.New("unregistered")
	srv := startTransport(t, Config{
		Errors: []error{errA, errB},
		Handler: func(_ context.Context, method uint16, _ []byte) ([]byte, error) {
			switch method {
			case 1:
				return nil, fmt.Errorf("channel /a: %w", errB)
			case 2:
				return nil, errOther
			case 3:
				return nil, fmt.Errorf("actor: %w", context.DeadlineExceeded)
			}
			return nil, nil
		},
	})
	cli := startTransport(t, Config{Errors: []error{errA, errB}})
	ctx := testCtx(t)

	_, err := cli.Call(ctx, srv.Addr(), 1, nil)
	var remote *RemoteError
	if !errors.Is(err, errB) || errors.Is(err, errA) || !errors.As(err, &remote) {
		t.Fatalf("method 1 error %v: want a remote error matching errB only", err)
	}
	if remote.Message != "channel /a: sentinel b" || remote.Addr != srv.Addr() {
		t.Fatalf("remote error = %+v", remote)
	}
	_, err = cli.Call(ctx, srv.Addr(), 2, nil)
	if errors.Is(err, errA) || errors.Is(err, errB) || !errors.As(err, &remote) || remote.Code != 0 || !strings.Contains(err.Error(), "unregistered") {
		t.Fatalf("method 2 error %v: want an unmatched remote error", err)
	}
	_, err = cli.Call(ctx, srv.Addr(), 3, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("method 3 error %v: want context.DeadlineExceeded across the wire", err)
	}
	if _, err := cli.Call(ctx, srv.Addr(), 4, nil); err != nil {
		t.Fatalf("method 4: %v", err)
	}
}

func TestTransportHandlerPanicAndNoHandler(t *testing.T) {
	srv := startTransport(t, Config{Handler: func(_ context.Context, method uint16, body []byte) ([]byte, error) {
		if method == 1 {
			panic("boom")
		}
		return body, nil
	}})
	bare := startTransport(t, Config{})
	cli := startTransport(t, Config{})
	ctx := testCtx(t)
	if _, err := cli.Call(ctx, srv.Addr(), 1, nil); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("panicking handler: err = %v", err)
	}
	if got, err := cli.Call(ctx, srv.Addr(), 2, []byte("x")); err != nil || string(got) != "x" {
		t.Fatalf("after panic: %q, %v", got, err)
	}
	if _, err := cli.Call(ctx, bare.Addr(), 1, nil); err == nil || !strings.Contains(err.Error(), "serves no transport calls") {
		t.Fatalf("no handler: err = %v", err)
	}
}

func TestTransportKeys(t *testing.T) {
	k1 := bytes.Repeat([]byte{1}, 32)
	k2 := bytes.Repeat([]byte{2}, 32)
	cases := []struct {
		name           string
		server, client []byte
		ok             bool
	}{
		{"same key", k1, k1, true},
		{"no keys", nil, nil, true},
		{"different keys", k1, k2, false},
		{"only server keyed", k1, nil, false},
		{"only client keyed", nil, k1, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var served atomic.Int32
			srvLogger, srvLog := testkit.CapturedLogger()
			cliLogger, cliLog := testkit.CapturedLogger()
			srv := startTransport(t, Config{Key: tc.server, Logger: srvLogger, Handler: func(_ context.Context, _ uint16, b []byte) ([]byte, error) {
				served.Add(1)
				return b, nil
			}})
			cli := startTransport(t, Config{Key: tc.client, Logger: cliLogger})
			got, err := cli.Call(testCtx(t), srv.Addr(), 1, []byte("x"))
			if tc.ok {
				if err != nil || string(got) != "x" {
					t.Fatalf("Call = %q, %v", got, err)
				}
				return
			}
			if !errors.Is(err, ErrAuth) || !errors.Is(err, ErrPeerUnavailable) {
				t.Fatalf("Call error %v: want ErrAuth and ErrPeerUnavailable", err)
			}
			const clear = "same --cluster-key"
			testkit.WaitFor(t, "the server to log the refusal", func() bool { return strings.Contains(srvLog.String(), clear) })
			if !strings.Contains(cliLog.String(), clear) {
				t.Fatal("client did not log the refusal")
			}
			if served.Load() != 0 {
				t.Fatal("handler ran for an unauthenticated peer")
			}
		})
	}
}

func TestTransportPeerRestart(t *testing.T) {
	inHandler := make(chan struct{}, 1)
	handler := func(ctx context.Context, method uint16, body []byte) ([]byte, error) {
		if method == 2 {
			inHandler <- struct{}{}
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return body, nil
	}
	srv := startTransport(t, Config{Handler: handler})
	addr := srv.Addr()
	cli := startTransport(t, Config{})
	ctx := testCtx(t)
	if _, err := cli.Call(ctx, addr, 1, []byte("a")); err != nil {
		t.Fatal(err)
	}

	inflight := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, addr, 2, nil)
		inflight <- err
	}()
	<-inHandler
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-inflight; !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("in-flight call during peer shutdown: %v, want ErrPeerUnavailable", err)
	}
	if _, err := cli.Call(ctx, addr, 1, nil); !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("call to a stopped peer: %v, want ErrPeerUnavailable", err)
	}

	startTransport(t, Config{BindAddr: addr, Handler: handler})
	testkit.WaitFor(t, "a call to the restarted peer", func() bool {
		got, err := cli.Call(ctx, addr, 1, []byte("b"))
		return err == nil && string(got) == "b"
	})
}

func TestTransportDisconnect(t *testing.T) {
	srv := startTransport(t, Config{Handler: func(ctx context.Context, method uint16, body []byte) ([]byte, error) {
		if method == 2 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return body, nil
	}})
	cli := startTransport(t, Config{})
	ctx := testCtx(t)
	if _, err := cli.Call(ctx, srv.Addr(), 1, nil); err != nil {
		t.Fatal(err)
	}
	res := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.Addr(), 2, nil)
		res <- err
	}()
	testkit.WaitFor(t, "the call to be pending", func() bool { return pendingCalls(cli) == 1 })
	cli.Disconnect(srv.Addr())
	if err := <-res; !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("call on a disconnected peer: %v", err)
	}
	if got, err := cli.Call(ctx, srv.Addr(), 1, []byte("again")); err != nil || string(got) != "again" {
		t.Fatalf("call after Disconnect: %q, %v", got, err)
	}
}

func TestTransportContextCancel(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	sawDeadline := make(chan bool, 1)
	srv := startTransport(t, Config{Handler: func(ctx context.Context, method uint16, _ []byte) ([]byte, error) {
		_, ok := ctx.Deadline()
		sawDeadline <- ok
		if method == 2 {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	}})
	cli := startTransport(t, Config{})

	ctx, cancel := context.WithCancel(testCtx(t))
	res := make(chan error, 1)
	go func() {
		_, err := cli.Call(ctx, srv.Addr(), 1, nil)
		res <- err
	}()
	if !<-sawDeadline {
		t.Fatal("handler ctx has no deadline")
	}
	cancel()
	if err := <-res; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled call: %v", err)
	}
	if p := pendingCalls(cli); p != 0 {
		t.Fatalf("%d calls still registered after cancellation", p)
	}

	// A short deadline reaches the handler, which gives up with it.
	short, cancelShort := context.WithTimeout(testCtx(t), 50*time.Millisecond)
	defer cancelShort()
	if _, err := cli.Call(short, srv.Addr(), 2, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call past its deadline: %v", err)
	}
	<-sawDeadline
	if p := pendingCalls(cli); p != 0 {
		t.Fatalf("%d calls still registered after the deadline", p)
	}
}

func TestTransportCallTimeout(t *testing.T) {
	srv := startTransport(t, Config{Handler: func(ctx context.Context, _ uint16, _ []byte) ([]byte, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	cli := startTransport(t, Config{CallTimeout: 50 * time.Millisecond})
	if _, err := cli.Call(context.Background(), srv.Addr(), 1, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("call without reply: %v, want DeadlineExceeded", err)
	}
}

func TestTransportFrameLimits(t *testing.T) {
	const limit = 1024
	big := make([]byte, 2*limit)
	srv := startTransport(t, Config{MaxFrameBytes: limit, Handler: func(_ context.Context, method uint16, body []byte) ([]byte, error) {
		switch method {
		case 2:
			return big, nil
		case 3:
			return big[:100], nil
		}
		return body, nil
	}})
	ctx := testCtx(t)

	small := startTransport(t, Config{MaxFrameBytes: limit})
	if _, err := small.Call(ctx, srv.Addr(), 1, big); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized request: %v", err)
	}
	if _, err := small.Call(ctx, srv.Addr(), 2, nil); !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("oversized reply: %v", err)
	}
	if got, err := small.Call(ctx, srv.Addr(), 1, []byte("ok")); err != nil || string(got) != "ok" {
		t.Fatalf("after oversized frames: %q, %v", got, err)
	}

	// A sender with a larger limit gets its connection dropped by the receiver.
	large := startTransport(t, Config{})
	if _, err := large.Call(ctx, srv.Addr(), 1, big); !errors.Is(err, ErrPeerUnavailable) {
		t.Fatalf("request over the receiver's limit: %v", err)
	}
	// A reply over the caller's own limit drops the caller's connection.
	tiny := startTransport(t, Config{MaxFrameBytes: 16})
	if _, err := tiny.Call(ctx, srv.Addr(), 3, nil); !errors.Is(err, ErrPeerUnavailable) || !errors.Is(err, ErrFrameTooLarge) {
		t.Fatalf("reply over the caller's limit: %v", err)
	}
}

func TestTransportCloseFailsInflight(t *testing.T) {
	entered := make(chan struct{}, 1)
	srv := startTransport(t, Config{Handler: func(ctx context.Context, _ uint16, _ []byte) ([]byte, error) {
		entered <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}})
	cli := startTransport(t, Config{})
	res := make(chan error, 1)
	go func() {
		_, err := cli.Call(testCtx(t), srv.Addr(), 1, nil)
		res <- err
	}()
	<-entered
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-res; !errors.Is(err, ErrClosed) {
		t.Fatalf("in-flight call on Close: %v, want ErrClosed", err)
	}
	if _, err := cli.Call(context.Background(), srv.Addr(), 1, nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("call after Close: %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	// The server's handler ctx is cancelled when the connection goes, so
	// closing the server does not hang.
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestTransportConfigValidate(t *testing.T) {
	bad := []Config{
		{},
		{BindAddr: "127.0.0.1:0", Key: []byte("short")},
		{BindAddr: "127.0.0.1:0", Errors: []error{nil}},
		{BindAddr: "127.0.0.1:0", CallTimeout: -1},
		{BindAddr: "127.0.0.1:0", ConnsPerPeer: 100},
	}
	for i, cfg := range bad {
		if err := cfg.Validate(); err == nil {
			t.Errorf("config %d: Validate accepted %+v", i, cfg)
		}
		if _, err := Listen(cfg); err == nil {
			t.Errorf("config %d: Listen accepted it", i)
		}
	}
	if err := (Config{BindAddr: "127.0.0.1:0", Key: make([]byte, 16)}).Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func TestTransportCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	srv, err := Listen(Config{BindAddr: "127.0.0.1:0", Handler: echo})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := Listen(Config{BindAddr: "127.0.0.1:0", ConnsPerPeer: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	for i := range 10 {
		if _, err := cli.Call(ctx, srv.Addr(), uint16(i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := cli.Call(cancelled, srv.Addr(), 1, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("call with a cancelled ctx: %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "goroutines to wind down", func() bool { return runtime.NumGoroutine() <= before })
}

// TestTransportWorkersOutliveCalls holds a burst of calls in the handler at
// once, then checks that the serving goroutines stay for later calls, at
// most maxIdleWorkers of them, and leave with the transport.
func TestTransportWorkersOutliveCalls(t *testing.T) {
	const burst = 3 * maxIdleWorkers
	gate := make(chan struct{})
	var entered atomic.Int32
	srv, err := Listen(Config{BindAddr: "127.0.0.1:0", Handler: func(ctx context.Context, m uint16, body []byte) ([]byte, error) {
		if m == 1 {
			entered.Add(1)
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return body, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cli := startTransport(t, Config{})
	ctx := testCtx(t)
	if _, err := cli.Call(ctx, srv.Addr(), 2, nil); err != nil { // connect first
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range burst {
		wg.Go(func() {
			if _, err := cli.Call(ctx, srv.Addr(), 1, nil); err != nil {
				t.Error(err)
			}
		})
	}
	testkit.WaitFor(t, "the burst to reach the handler", func() bool { return entered.Load() == burst })
	if n := srv.workers.live.Load(); n < burst {
		t.Fatalf("%d workers serve a burst of %d held calls", n, burst)
	}
	close(gate)
	wg.Wait()
	testkit.WaitFor(t, "surplus workers to exit", func() bool {
		return srv.workers.live.Load() == maxIdleWorkers && srv.workers.idle.Load() == maxIdleWorkers
	})
	// Later calls are served by the idle workers: no new goroutine stays.
	for i := range 100 {
		if got, err := cli.Call(ctx, srv.Addr(), 2, []byte{byte(i)}); err != nil || len(got) != 1 || got[0] != byte(i) {
			t.Fatalf("call %d after the burst: %q, %v", i, got, err)
		}
	}
	if n := srv.workers.live.Load(); n > maxIdleWorkers+1 {
		t.Fatalf("%d workers after sequential calls, want the %d idle ones (one more at most, racing a reply)", n, maxIdleWorkers)
	}
	if err := srv.Close(); err != nil {
		t.Fatal(err)
	}
	if n := srv.workers.live.Load(); n != 0 {
		t.Fatalf("%d workers outlived Close", n)
	}
}

package actor

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

func TestFIFOPerSender(t *testing.T) {
	type seqMsg struct{ from, seq int }
	const senders, perSender = 4, 2000
	var mu sync.Mutex
	last := make([]int, senders)
	var bad []string
	s := NewSystem(Options{MailboxSize: 16}, func(string) Behavior[seqMsg] {
		return behaviorFunc[seqMsg](func(m seqMsg) {
			mu.Lock()
			defer mu.Unlock()
			if m.seq != last[m.from]+1 {
				bad = append(bad, "out of order")
			}
			last[m.from] = m.seq
		})
	})
	defer s.Shutdown(context.Background())

	var wg sync.WaitGroup
	for from := range senders {
		wg.Go(func() {
			for seq := 1; seq <= perSender; {
				switch err := s.Tell("k", seqMsg{from, seq}); {
				case err == nil:
					seq++
				case errors.Is(err, ErrOverloaded):
					runtime.Gosched() // a small mailbox makes senders retry
				default:
					t.Errorf("Tell: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("%d messages out of order", len(bad))
	}
	for from, n := range last {
		if n != perSender {
			t.Errorf("sender %d: last seq %d, want %d", from, n, perSender)
		}
	}
}

// behaviorFunc adapts a function to Behavior.
type behaviorFunc[M any] func(M)

func (f behaviorFunc[M]) Receive(m M) { f(m) }

func TestAskReply(t *testing.T) {
	s, _ := newCounterSystem(t, Options{})
	for _, n := range []int{1, 2, 3} {
		if err := s.Tell("a", msg{op: opAdd, n: n}); err != nil {
			t.Fatal(err)
		}
	}
	if got := get(t, s, "a"); got != 6 {
		t.Fatalf("state = %d, want 6", got)
	}
	if got := get(t, s, "b"); got != 0 {
		t.Fatalf("new actor state = %d, want 0", got)
	}
}

func TestAskCancelledContext(t *testing.T) {
	s, _ := newCounterSystem(t, Options{})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := Ask(ctx, s, "a", func(r chan<- int) msg { return msg{op: opGet, reply: r} })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Ask with cancelled ctx: %v, want context.Canceled", err)
	}
	if s.Len() != 0 {
		t.Fatalf("Ask with cancelled ctx spawned an actor")
	}

	ctx, cancel = context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Ask(ctx, s, "a", func(r chan<- int) msg { return msg{op: opSilent, reply: r} })
		errc <- err
	}()
	testkit.WaitFor(t, "the silent Ask to be handled", func() bool { return s.Len() == 1 && queued(s, "a") == 0 })
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Ask cancelled while waiting: %v, want context.Canceled", err)
	}
}

func TestTellOverloaded(t *testing.T) {
	s, p := newCounterSystem(t, Options{MailboxSize: 4})
	gate := block(t, s, "a", false)
	for i := range 4 {
		if err := s.Tell("a", msg{op: opAdd, n: 1}); err != nil {
			t.Fatalf("Tell %d: %v", i, err)
		}
	}
	if err := s.Tell("a", msg{op: opAdd, n: 1}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Tell to a full mailbox: %v, want ErrOverloaded", err)
	}
	_, err := Ask(context.Background(), s, "a", func(r chan<- int) msg { return msg{op: opGet, reply: r} })
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Ask to a full mailbox: %v, want ErrOverloaded", err)
	}
	close(gate)
	testkit.WaitFor(t, "the mailbox to drain", func() bool { return queued(s, "a") == 0 })
	if got := get(t, s, "a"); got != 4 {
		t.Fatalf("state = %d, want 4", got)
	}
	if p.received.Load() != 4 {
		t.Fatalf("received %d, want 4", p.received.Load())
	}
}

func TestPanicRestartsWithFreshState(t *testing.T) {
	log, logs := testkit.CapturedLogger()
	s, p := newCounterSystem(t, Options{Logger: log})
	if err := s.Tell("chan-1", msg{op: opAdd, n: 5}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "chan-1"); got != 5 {
		t.Fatalf("state = %d, want 5", got)
	}
	if err := s.Tell("chan-1", msg{op: opPanic}); err != nil {
		t.Fatal(err)
	}
	if err := s.Tell("chan-1", msg{op: opAdd, n: 2}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "chan-1"); got != 2 {
		t.Fatalf("state after restart = %d, want 2 (fresh behaviour, queued message kept)", got)
	}
	if got := p.created.Load(); got != 2 {
		t.Fatalf("factory called %d times, want 2", got)
	}
	if got := p.stopped.Load(); got != 1 {
		t.Fatalf("Stopped called %d times on the panicked behaviour, want 1", got)
	}
	out := logs.String()
	for _, want := range []string{"actor panicked", "key=chan-1", "panic=boom", "goroutine"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestAskPanickingMessageReturnsErrStopped(t *testing.T) {
	type req struct{ reply chan<- int }
	s := NewSystem(Options{}, func(string) Behavior[req] {
		return behaviorFunc[req](func(req) { panic("no") })
	})
	defer s.Shutdown(context.Background())
	_, err := Ask(context.Background(), s, "a", func(r chan<- int) req { return req{r} })
	if !errors.Is(err, ErrStopped) {
		t.Fatalf("Ask whose message panics: %v, want ErrStopped", err)
	}
	if s.Len() != 1 {
		t.Fatalf("actor should have restarted, Len = %d", s.Len())
	}
}

func TestRestartBudgetExhaustion(t *testing.T) {
	clk := clock.NewFake(epoch)
	s, p := newCounterSystem(t, Options{MaxRestarts: 1, RestartWindow: time.Minute, Clock: clk})
	if err := s.Tell("a", msg{op: opPanic}); err != nil { // panic 1: restarted
		t.Fatal(err)
	}
	if err := s.Tell("a", msg{op: opAdd, n: 1}); err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "a"); got != 1 {
		t.Fatalf("state = %d, want 1", got)
	}

	gate := block(t, s, "a", true) // panic 2 once the gate opens: budget exhausted
	asks := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := Ask(context.Background(), s, "a", func(r chan<- int) msg { return msg{op: opGet, reply: r} })
			asks <- err
		}()
	}
	if err := s.Tell("a", msg{op: opAdd, n: 1}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "three queued messages", func() bool { return queued(s, "a") == 3 })
	close(gate)
	for range 2 {
		if err := <-asks; !errors.Is(err, ErrStopped) {
			t.Fatalf("pending Ask: %v, want ErrStopped", err)
		}
	}
	testkit.WaitFor(t, "the actor to unregister", func() bool { return s.Len() == 0 })
	if err := s.TellExisting("a", msg{op: opAdd, n: 1}); !errors.Is(err, ErrNoActor) {
		t.Fatalf("TellExisting after give-up: %v, want ErrNoActor", err)
	}
	if got := p.received.Load(); got != 1 {
		t.Fatalf("received %d adds, want 1 (the queued add must be dropped)", got)
	}
	if c, st := p.created.Load(), p.stopped.Load(); c != st {
		t.Fatalf("created %d behaviours but stopped %d", c, st)
	}
	if got := get(t, s, "a"); got != 0 {
		t.Fatalf("a later Tell must spawn a fresh actor, state = %d", got)
	}
}

func TestRestartWindowSlides(t *testing.T) {
	clk := clock.NewFake(epoch)
	s, _ := newCounterSystem(t, Options{MaxRestarts: 1, RestartWindow: time.Minute, Clock: clk})
	for range 3 { // one panic per window never exhausts a budget of one
		if err := s.Tell("a", msg{op: opPanic}); err != nil {
			t.Fatal(err)
		}
		get(t, s, "a")
		clk.Advance(2 * time.Minute)
	}
	if s.Len() != 1 {
		t.Fatalf("actor gave up although panics were spread out")
	}
	s.Tell("a", msg{op: opPanic})
	s.Tell("a", msg{op: opPanic})
	testkit.WaitFor(t, "the actor to give up", func() bool { return s.Len() == 0 })
}

func TestNegativeMaxRestartsStopsOnFirstPanic(t *testing.T) {
	s, p := newCounterSystem(t, Options{MaxRestarts: -1})
	s.Tell("a", msg{op: opPanic})
	testkit.WaitFor(t, "the actor to give up", func() bool { return s.Len() == 0 })
	if p.created.Load() != 1 {
		t.Fatalf("factory called %d times, want 1", p.created.Load())
	}
}

func TestPassivation(t *testing.T) {
	clk := clock.NewFake(epoch)
	s, p := newCounterSystem(t, Options{IdleAfter: time.Minute, Clock: clk})
	step := time.Minute / 4
	get(t, s, "a")
	for i := range 4 { // the first sweep stamps the actor, then 45s of idleness
		sweep(t, s, clk, step)
		if s.Len() != 1 {
			t.Fatalf("passivated early, after sweep %d", i+1)
		}
	}
	if p.stopped.Load() != 0 {
		t.Fatal("Stopped called before passivation")
	}
	sweep(t, s, clk, step)
	testkit.WaitFor(t, "passivation", func() bool { return s.Len() == 0 })
	if p.stopped.Load() != 1 {
		t.Fatalf("Stopped called %d times, want 1", p.stopped.Load())
	}
	if got := get(t, s, "a"); got != 0 || p.created.Load() != 2 {
		t.Fatalf("Tell after passivation must spawn afresh: state %d, created %d", got, p.created.Load())
	}
}

func TestActivityDefersPassivation(t *testing.T) {
	clk := clock.NewFake(epoch)
	s, _ := newCounterSystem(t, Options{IdleAfter: time.Minute, Clock: clk})
	for range 12 { // a message every 30s keeps it alive for 3 minutes
		get(t, s, "a")
		sweep(t, s, clk, 15*time.Second)
		sweep(t, s, clk, 15*time.Second)
		if s.Len() != 1 {
			t.Fatal("a busy actor passivated")
		}
	}
}

func TestCanPassivateFalsePreventsPassivation(t *testing.T) {
	clk := clock.NewFake(epoch)
	s, p := newCounterSystem(t, Options{IdleAfter: time.Minute, Clock: clk})
	p.allowIdle.Store(false)
	s.Tell("a", msg{op: opAdd, n: 1})
	for range 12 {
		sweep(t, s, clk, 15*time.Second)
	}
	testkit.WaitFor(t, "CanPassivate to be consulted", func() bool { return p.asked.Load() > 0 })
	if s.Len() != 1 || p.stopped.Load() != 0 {
		t.Fatal("actor passivated although CanPassivate returned false")
	}
	p.allowIdle.Store(true)
	sweep(t, s, clk, 15*time.Second)
	testkit.WaitFor(t, "passivation once allowed", func() bool { return s.Len() == 0 })
	if got := get(t, s, "a"); got != 0 {
		t.Fatalf("state after passivation = %d, want fresh 0", got)
	}
}

// TestNoLostMessagesAroundPassivation hammers Tell while the janitor
// passivates actors as fast as it can: every accepted message must be
// received, in order per sender and key, across incarnations.
func TestNoLostMessagesAroundPassivation(t *testing.T) {
	type hmsg struct{ from, key, seq int }
	const senders, keys, rounds = 4, 16, 3000
	var mu sync.Mutex
	last := make([][]int, senders)
	for i := range last {
		last[i] = make([]int, keys)
	}
	var errs []string
	startCount := 0
	clk := clock.NewFake(epoch)
	s := NewSystem(Options{IdleAfter: time.Minute, Clock: clk}, func(k int) Behavior[hmsg] {
		mu.Lock()
		startCount++
		mu.Unlock()
		return behaviorFunc[hmsg](func(m hmsg) {
			mu.Lock()
			defer mu.Unlock()
			if m.seq != last[m.from][m.key]+1 {
				errs = append(errs, "gap or reorder")
			}
			last[m.from][m.key] = m.seq
		})
	})

	stop := make(chan struct{})
	var driver sync.WaitGroup
	driver.Go(func() { // passivate everything idle between two sweeps
		for {
			select {
			case <-stop:
				return
			default:
			}
			before := s.sweeps.Load()
			clk.Advance(time.Minute)
			for s.sweeps.Load() == before {
				select {
				case <-stop:
					return
				default:
					runtime.Gosched()
				}
			}
		}
	})

	accepted := make([][]int, senders)
	var wg sync.WaitGroup
	for from := range senders {
		accepted[from] = make([]int, keys)
		wg.Go(func() {
			for r := range rounds {
				k := (r*7 + from*5) % keys
				for range 1 + r%3 {
					next := accepted[from][k] + 1
					switch err := s.Tell(k, hmsg{from, k, next}); {
					case err == nil:
						accepted[from][k] = next
					case errors.Is(err, ErrOverloaded):
					default:
						t.Errorf("Tell: %v", err)
						return
					}
				}
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	close(stop)
	driver.Wait()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	if len(errs) > 0 {
		t.Fatalf("%d messages lost or reordered", len(errs))
	}
	for from := range senders {
		if !slices.Equal(last[from], accepted[from]) {
			t.Fatalf("sender %d: received up to %v, accepted %v", from, last[from], accepted[from])
		}
	}
	if startCount <= keys {
		t.Fatalf("only %d incarnations for %d keys: passivation never raced with Tell", startCount, keys)
	}
	t.Logf("%d incarnations for %d keys", startCount, keys)
}

func TestShutdownDrainsAndCallsStopped(t *testing.T) {
	s, p := newCounterSystem(t, Options{})
	keys := []string{"a", "b", "c"}
	var gates []chan struct{}
	for _, k := range keys {
		gates = append(gates, block(t, s, k, false))
		for range 10 {
			if err := s.Tell(k, msg{op: opAdd, n: 1}); err != nil {
				t.Fatal(err)
			}
		}
	}
	done := make(chan error, 1)
	go func() { done <- s.Shutdown(context.Background()) }()
	testkit.WaitFor(t, "Shutdown to begin", s.stopping.Load)
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) while actors still had work", err)
	default:
	}
	for _, g := range gates {
		close(g)
	}
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	for _, k := range []string{"a", "d"} {
		if err := s.Tell(k, msg{op: opAdd, n: 1}); !errors.Is(err, ErrStopped) {
			t.Fatalf("Tell(%q) after Shutdown: %v, want ErrStopped", k, err)
		}
	}
	if got := p.received.Load(); got != 30 {
		t.Fatalf("received %d queued messages, want all 30", got)
	}
	if got := p.stopped.Load(); got != 3 {
		t.Fatalf("Stopped called %d times, want 3", got)
	}
	if s.Len() != 0 {
		t.Fatalf("Len after Shutdown = %d", s.Len())
	}
	if _, err := Ask(context.Background(), s, "a", func(r chan<- int) msg { return msg{op: opGet, reply: r} }); !errors.Is(err, ErrStopped) {
		t.Fatalf("Ask after Shutdown: %v, want ErrStopped", err)
	}
}

func TestShutdownHonoursContext(t *testing.T) {
	s, _ := newCounterSystem(t, Options{})
	gate := block(t, s, "a", false)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown with a stuck actor: %v, want context.Canceled", err)
	}
	close(gate) // the cleanup's Shutdown now completes
}

func TestTellExisting(t *testing.T) {
	s, p := newCounterSystem(t, Options{})
	if err := s.TellExisting("a", msg{op: opAdd, n: 1}); !errors.Is(err, ErrNoActor) {
		t.Fatalf("TellExisting before spawn: %v, want ErrNoActor", err)
	}
	if s.Len() != 0 {
		t.Fatal("TellExisting spawned an actor")
	}
	s.Tell("a", msg{op: opAdd, n: 1})
	if err := s.TellExisting("a", msg{op: opAdd, n: 2}); err != nil {
		t.Fatalf("TellExisting: %v", err)
	}
	if got := get(t, s, "a"); got != 3 || p.created.Load() != 1 {
		t.Fatalf("state %d created %d, want 3 and 1", got, p.created.Load())
	}
}

func TestStopAndWait(t *testing.T) {
	s, p := newCounterSystem(t, Options{})
	if err := s.Stop("a"); !errors.Is(err, ErrNoActor) {
		t.Fatalf("Stop of unknown key: %v", err)
	}
	gate := block(t, s, "a", false)
	for range 5 {
		s.Tell("a", msg{op: opAdd, n: 1})
	}
	if err := s.Stop("a"); err != nil {
		t.Fatal(err)
	}
	// The stopping actor refuses new messages; Tell starts a successor that
	// must wait until the old one has drained and stopped.
	if err := s.TellExisting("a", msg{op: opAdd, n: 1}); !errors.Is(err, ErrNoActor) {
		t.Fatalf("TellExisting to a stopping actor: %v, want ErrNoActor", err)
	}
	if err := s.Tell("a", msg{op: opAdd, n: 100}); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if got := get(t, s, "a"); got != 100 {
		t.Fatalf("successor state = %d, want 100", got)
	}
	want := []string{"started a#1", "stopped a#1", "started a#2"}
	if got := p.eventList(); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if p.received.Load() != 6 {
		t.Fatalf("received %d, want 6", p.received.Load())
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.StopAndWait(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 0 || p.stopped.Load() != 2 {
		t.Fatalf("after StopAndWait: Len %d, stopped %d", s.Len(), p.stopped.Load())
	}
}

func TestKeysAndLen(t *testing.T) {
	s, _ := newCounterSystem(t, Options{})
	want := []string{"x", "y", "z"}
	for _, k := range want {
		s.Tell(k, msg{op: opAdd})
	}
	got := s.Keys()
	slices.Sort(got)
	if !slices.Equal(got, want) || s.Len() != 3 {
		t.Fatalf("Keys %v Len %d, want %v", got, s.Len(), want)
	}
}

func TestOptions(t *testing.T) {
	for _, o := range []Options{{MailboxSize: -1}, {IdleAfter: -1}, {RestartWindow: -1}} {
		if o.Validate() == nil {
			t.Errorf("Validate(%+v) = nil", o)
		}
	}
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options invalid: %v", err)
	}
	d := Options{}.withDefaults()
	if d.MailboxSize != DefaultMailboxSize || d.MaxRestarts != DefaultMaxRestarts ||
		d.RestartWindow != DefaultRestartWindow || d.Clock == nil || d.Logger == nil {
		t.Fatalf("defaults not applied: %+v", d)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("NewSystem accepted invalid options")
		}
	}()
	NewSystem(Options{MailboxSize: -1}, func(string) Behavior[msg] { return nil })
}

func TestTellDoesNotAllocate(t *testing.T) {
	s, _ := newCounterSystem(t, Options{MailboxSize: 1 << 16})
	get(t, s, "a")
	m := msg{op: opAdd, n: 1}
	allocs := testing.AllocsPerRun(1000, func() {
		if err := s.Tell("a", m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Fatalf("Tell allocates %.1f times per call", allocs)
	}
}

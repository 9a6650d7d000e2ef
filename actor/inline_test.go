package actor

import (
	"context"
	"errors"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

// ReceiveInline makes the test behaviour an InlineReceiver: adds and panics
// may run on the sender's goroutine; everything else is declined.
func (c *counter) ReceiveInline(m msg) bool {
	switch m.op {
	case opAdd, opPanic:
		c.Receive(m)
		return true
	}
	return false
}

func TestIdleActorsHoldNoGoroutine(t *testing.T) {
	s, _ := newCounterSystem(t, Options{})
	before := runtime.NumGoroutine()
	const n = 1000
	for i := range n {
		if err := s.Tell(string(rune('a'+i%26))+strings.Repeat("x", i/26), msg{op: opAdd, n: 1}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Len() != n {
		t.Fatalf("Len %d, want %d", s.Len(), n)
	}
	// Every mailbox drains, and each actor's goroutine exits with it.
	testkit.WaitFor(t, "the actors' goroutines to exit", func() bool { return runtime.NumGoroutine() <= before+10 })
	if got := get(t, s, "a"); got != 1 {
		t.Fatalf("state of a = %d after its goroutine exited, want 1", got)
	}
}

func TestTellInlineRunsOnCallerWhenIdle(t *testing.T) {
	s, p := newCounterSystem(t, Options{})
	if err := s.TellInline("a", msg{op: opAdd, n: 1}); err != nil { // no actor: queued
		t.Fatal(err)
	}
	get(t, s, "a")
	testkit.WaitFor(t, "the actor to go idle", func() bool { return !running(s, "a") })
	for i := range 100 {
		if err := s.TellInline("a", msg{op: opAdd, n: 1}); err != nil {
			t.Fatal(err)
		}
		// Inline: handled before TellInline returned.
		if got := p.received.Load(); got != int64(i+2) {
			t.Fatalf("after TellInline %d: received %d, want %d", i, got, i+2)
		}
	}
	if got := get(t, s, "a"); got != 101 || p.created.Load() != 1 {
		t.Fatalf("state %d created %d, want 101 and 1", got, p.created.Load())
	}
}

func TestTellInlineQueuesDeclinedMessages(t *testing.T) {
	s, p := newCounterSystem(t, Options{})
	s.Tell("a", msg{op: opAdd, n: 1})
	get(t, s, "a")
	testkit.WaitFor(t, "the actor to go idle", func() bool { return !running(s, "a") })
	reply := make(chan int, 1)
	if err := s.TellInline("a", msg{op: opGet, reply: reply}); err != nil { // declined: queued
		t.Fatal(err)
	}
	if err := s.TellInline("a", msg{op: opAdd, n: 10}); err != nil {
		t.Fatal(err)
	}
	if got := <-reply; got != 1 {
		t.Fatalf("declined get saw %d, want 1: it must run before the later add", got)
	}
	if got := get(t, s, "a"); got != 11 || p.received.Load() != 2 {
		t.Fatalf("state %d received %d, want 11 and 2", got, p.received.Load())
	}
}

func TestTellInlineQueuesBehindABusyActor(t *testing.T) {
	s, p := newCounterSystem(t, Options{})
	gate := block(t, s, "a", false)
	if err := s.TellInline("a", msg{op: opAdd, n: 5}); err != nil {
		t.Fatal(err)
	}
	if queued(s, "a") != 1 || p.received.Load() != 0 {
		t.Fatalf("TellInline to a busy actor: queued %d received %d, want 1 and 0", queued(s, "a"), p.received.Load())
	}
	close(gate)
	if got := get(t, s, "a"); got != 5 {
		t.Fatalf("state %d, want 5", got)
	}
}

func TestTellInlinePanicRestarts(t *testing.T) {
	log, logs := testkit.CapturedLogger()
	s, p := newCounterSystem(t, Options{Logger: log, MaxRestarts: 1, RestartWindow: time.Hour, Clock: clock.NewFake(epoch)})
	s.Tell("a", msg{op: opAdd, n: 3})
	get(t, s, "a")
	testkit.WaitFor(t, "the actor to go idle", func() bool { return !running(s, "a") })
	if err := s.TellInline("a", msg{op: opPanic}); err != nil {
		t.Fatalf("TellInline of a panicking message: %v", err)
	}
	if got := get(t, s, "a"); got != 0 {
		t.Fatalf("state after the inline panic = %d, want a fresh 0", got)
	}
	if p.created.Load() != 2 || p.stopped.Load() != 1 {
		t.Fatalf("created %d stopped %d, want 2 and 1", p.created.Load(), p.stopped.Load())
	}
	if !strings.Contains(logs.String(), "actor panicked") {
		t.Fatalf("inline panic not logged:\n%s", logs.String())
	}
	testkit.WaitFor(t, "the actor to go idle", func() bool { return !running(s, "a") })
	if err := s.TellInline("a", msg{op: opPanic}); err != nil { // second panic: budget of 1 exhausted
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the actor to give up", func() bool { return s.Len() == 0 })
	if c, st := p.created.Load(), p.stopped.Load(); c != st {
		t.Fatalf("created %d behaviours but stopped %d", c, st)
	}
}

// TestTellInlineFIFOAndNoLoss mixes inline and queued sends from several
// senders over a few keys while the janitor passivates as fast as it can:
// every accepted message is received once, in order per sender and key.
func TestTellInlineFIFOAndNoLoss(t *testing.T) {
	type hmsg struct{ from, key, seq int }
	const senders, keys, rounds = 4, 8, 3000
	var mu sync.Mutex
	last := make([][]int, senders)
	for i := range last {
		last[i] = make([]int, keys)
	}
	bad := 0
	clk := clock.NewFake(epoch)
	s := NewSystem(Options{IdleAfter: time.Minute, MailboxSize: 8, Clock: clk}, func(int) Behavior[hmsg] {
		return behaviorFunc[hmsg](func(m hmsg) {
			mu.Lock()
			defer mu.Unlock()
			if m.seq != last[m.from][m.key]+1 {
				bad++
			}
			last[m.from][m.key] = m.seq
		})
	})
	stop := make(chan struct{})
	var driver sync.WaitGroup
	driver.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			clk.Advance(time.Minute)
			runtime.Gosched()
		}
	})
	accepted := make([][]int, senders)
	var wg sync.WaitGroup
	for from := range senders {
		accepted[from] = make([]int, keys)
		wg.Go(func() {
			for r := range rounds {
				k := (r*3 + from) % keys
				next := accepted[from][k] + 1
				tell := s.Tell
				if r%2 == 0 {
					tell = s.TellInline
				}
				switch err := tell(k, hmsg{from, k, next}); {
				case err == nil:
					accepted[from][k] = next
				case errors.Is(err, ErrOverloaded):
				default:
					t.Errorf("tell: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	driver.Wait()
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bad > 0 {
		t.Fatalf("%d messages lost or reordered", bad)
	}
	for from := range senders {
		for k := range keys {
			if last[from][k] != accepted[from][k] {
				t.Fatalf("sender %d key %d: received up to %d, accepted %d", from, k, last[from][k], accepted[from][k])
			}
		}
	}
}

func TestTellInlineAfterShutdown(t *testing.T) {
	s, _ := newCounterSystem(t, Options{})
	get(t, s, "a")
	if err := s.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.TellInline("a", msg{op: opAdd, n: 1}); !errors.Is(err, ErrStopped) {
		t.Fatalf("TellInline after Shutdown: %v, want ErrStopped", err)
	}
}

// running reports whether key's actor is owned by a goroutine or a caller.
func running[K comparable, M any](s *System[K, M], key K) bool {
	a := s.lookup(key)
	if a == nil {
		return false
	}
	a.mb.mu.Lock()
	defer a.mb.mu.Unlock()
	return a.mb.running
}

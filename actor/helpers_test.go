package actor

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

type op int

const (
	opAdd    op = iota // state += n
	opGet              // reply state
	opPanic            // panic
	opBlock            // close entered, wait for gate, then maybe panic
	opSilent           // never reply
)

type msg struct {
	op         op
	n          int
	reply      chan<- int
	entered    chan<- struct{}
	gate       <-chan struct{}
	panicAfter bool
}

// probe observes every behaviour a test system creates.
type probe struct {
	mu        sync.Mutex
	events    []string
	created   atomic.Int64
	stopped   atomic.Int64
	received  atomic.Int64
	asked     atomic.Int64 // CanPassivate calls
	allowIdle atomic.Bool
}

func newProbe() *probe {
	p := &probe{}
	p.allowIdle.Store(true)
	return p
}

func (p *probe) event(format string, args ...any) {
	p.mu.Lock()
	p.events = append(p.events, fmt.Sprintf(format, args...))
	p.mu.Unlock()
}

func (p *probe) eventList() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

// counter is the test behaviour: an int of state plus lifecycle hooks.
type counter struct {
	key   string
	gen   int64
	p     *probe
	state int
}

func (c *counter) Receive(m msg) {
	switch m.op {
	case opAdd:
		c.state += m.n
		c.p.received.Add(1)
	case opGet:
		m.reply <- c.state
	case opPanic:
		panic("boom")
	case opBlock:
		close(m.entered)
		<-m.gate
		if m.panicAfter {
			panic("boom after gate")
		}
	case opSilent:
	}
}

func (c *counter) Started() { c.p.event("started %s#%d", c.key, c.gen) }

func (c *counter) Stopped() {
	c.p.stopped.Add(1)
	c.p.event("stopped %s#%d", c.key, c.gen)
}

func (c *counter) CanPassivate() bool {
	c.p.asked.Add(1)
	return c.p.allowIdle.Load()
}

func newCounterSystem(t *testing.T, opts Options) (*System[string, msg], *probe) {
	t.Helper()
	p := newProbe()
	s := NewSystem(opts, func(key string) Behavior[msg] {
		return &counter{key: key, gen: p.created.Add(1), p: p}
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	})
	return s, p
}

func get(t *testing.T, s *System[string, msg], key string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := Ask(ctx, s, key, func(r chan<- int) msg { return msg{op: opGet, reply: r} })
	if err != nil {
		t.Fatalf("Ask get %q: %v", key, err)
	}
	return v
}

// block makes key's actor enter Receive and wait; it returns the gate to open.
func block(t *testing.T, s *System[string, msg], key string, panicAfter bool) chan struct{} {
	t.Helper()
	entered, gate := make(chan struct{}), make(chan struct{})
	if err := s.Tell(key, msg{op: opBlock, entered: entered, gate: gate, panicAfter: panicAfter}); err != nil {
		t.Fatalf("Tell block: %v", err)
	}
	<-entered
	return gate
}

// queued returns how many user messages wait in key's mailbox.
func queued[K comparable, M any](s *System[K, M], key K) int {
	a := s.lookup(key)
	if a == nil {
		return 0
	}
	a.mb.mu.Lock()
	defer a.mb.mu.Unlock()
	return a.mb.n
}

// sweep advances the fake clock by d and waits until the janitor has swept.
func sweep[K comparable, M any](t *testing.T, s *System[K, M], clk *clock.Fake, d time.Duration) {
	t.Helper()
	before := s.sweeps.Load()
	clk.Advance(d)
	testkit.WaitFor(t, "a janitor sweep", func() bool { return s.sweeps.Load() > before })
}

var epoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

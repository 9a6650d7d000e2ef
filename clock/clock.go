// Package clock abstracts time so that expiry, caches and rate limits can be
// driven by a fake clock in tests instead of sleeping through timeouts.
package clock

import (
	"sync"
	"time"
)

// Clock tells the time and makes tickers. Production code uses Real; tests use Fake.
type Clock interface {
	Now() time.Time
	// NewTicker returns a ticker firing every d. Stop it when done.
	NewTicker(d time.Duration) Ticker
}

// Ticker is the subset of *time.Ticker the project needs, so Fake can provide one.
type Ticker interface {
	C() <-chan time.Time
	Stop()
}

// Real is the wall clock.
type Real struct{}

// Now returns time.Now().
func (Real) Now() time.Time { return time.Now() }

// NewTicker wraps time.NewTicker.
func (Real) NewTicker(d time.Duration) Ticker { return realTicker{time.NewTicker(d)} }

type realTicker struct{ t *time.Ticker }

func (r realTicker) C() <-chan time.Time { return r.t.C }
func (r realTicker) Stop()               { r.t.Stop() }

// Fake is a manually advanced clock. Its tickers fire (without blocking) each
// time Advance crosses one of their periods.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	tickers []*fakeTicker
}

// NewFake returns a fake clock set to start.
func NewFake(start time.Time) *Fake { return &Fake{now: start} }

// Now returns the fake time.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// NewTicker returns a ticker driven by Advance.
func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive ticker period")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	t := &fakeTicker{c: make(chan time.Time, 1), period: d, next: f.now.Add(d), owner: f}
	f.tickers = append(f.tickers, t)
	return t
}

// Advance moves the clock forward by d, firing tickers whose deadlines pass.
// Like time.Ticker, a ticker whose reader is behind drops ticks.
func (f *Fake) Advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	for _, t := range f.tickers {
		for !t.next.After(f.now) {
			select {
			case t.c <- t.next:
			default:
			}
			t.next = t.next.Add(t.period)
		}
	}
}

// Set moves the clock to t (forward only).
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	d := t.Sub(f.now)
	f.mu.Unlock()
	if d > 0 {
		f.Advance(d)
	}
}

type fakeTicker struct {
	c      chan time.Time
	period time.Duration
	next   time.Time
	owner  *Fake
}

func (t *fakeTicker) C() <-chan time.Time { return t.c }

func (t *fakeTicker) Stop() {
	f := t.owner
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, x := range f.tickers {
		if x == t {
			f.tickers = append(f.tickers[:i], f.tickers[i+1:]...)
			return
		}
	}
}

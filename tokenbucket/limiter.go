package tokenbucket

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/presencehq/presence/clock"
)

// Limiter is a table of buckets by key, all at one Rate: the rate limit of
// one node. The table is bounded: a bucket that refilled completely is the
// same as a new one, so sweeps (once per refill time, during calls) drop
// them; when the table is still full, an arbitrary bucket is evicted rather
// than letting memory grow.
type Limiter struct {
	clock    clock.Clock
	rate     Rate
	maxKeys  int
	capacity float64

	mu        sync.Mutex
	buckets   map[string]*Bucket
	lastSweep time.Time
}

// NewLimiter returns a limiter of rate keeping at most maxKeys buckets.
func NewLimiter(clk clock.Clock, rate Rate, maxKeys int) (*Limiter, error) {
	if err := rate.Validate(); err != nil {
		return nil, err
	}
	if clk == nil || maxKeys < 1 {
		return nil, errors.New("tokenbucket: a limiter needs a clock and room for at least one key")
	}
	return &Limiter{
		clock:     clk,
		rate:      rate,
		maxKeys:   maxKeys,
		capacity:  float64(rate.Burst),
		buckets:   make(map[string]*Bucket),
		lastSweep: clk.Now(),
	}, nil
}

// Allow takes one token of key's bucket. When the bucket is empty nothing
// is taken and the wait until its next token is returned. It never blocks
// on anything but the table's lock; ctx and the memo are not used (a
// bucket is found under the table's one lock either way).
func (l *Limiter) Allow(_ context.Context, key string, _ *Memo) (bool, time.Duration) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybeSweep(now)
	b, ok := l.buckets[key]
	if !ok {
		l.makeRoom()
		full := Full(l.capacity, now)
		b = &full
		l.buckets[key] = b
	}
	b.Advance(now, l.rate.PerSecond, l.capacity)
	if b.Take(1) {
		return true, 0
	}
	return false, l.rate.Wait(b.Tokens)
}

// Len reports the number of buckets kept.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// maybeSweep drops full buckets once per refill time, which keeps the table
// at the keys active during roughly the last refill time.
func (l *Limiter) maybeSweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.rate.RefillTime() {
		return
	}
	l.lastSweep = now
	for key, b := range l.buckets {
		if b.Advance(now, l.rate.PerSecond, l.capacity); b.Tokens >= l.capacity {
			delete(l.buckets, key)
		}
	}
}

// makeRoom evicts an arbitrary bucket when the table is full.
func (l *Limiter) makeRoom() {
	if len(l.buckets) < l.maxKeys {
		return
	}
	for key := range l.buckets {
		delete(l.buckets, key)
		return
	}
}

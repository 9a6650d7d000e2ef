package api

import (
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/presencehq/presence/clock"
)

// rateLimiter is a per-user token bucket. Times come from the injected clock
// so tests refill buckets by advancing a fake clock. The table is bounded:
// a bucket that has refilled completely is indistinguishable from a new one,
// so it is dropped by periodic sweeps; when the table is still full, an
// arbitrary bucket is evicted rather than letting memory grow.
type rateLimiter struct {
	clock    clock.Clock
	burst    int
	refill   rate.Limit
	maxUsers int
	// sweepEvery is the time a drained bucket needs to refill completely.
	sweepEvery time.Duration

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
}

func newRateLimiter(clk clock.Clock, burst int, perSecond float64, maxUsers int) *rateLimiter {
	return &rateLimiter{
		clock:      clk,
		burst:      burst,
		refill:     rate.Limit(perSecond),
		maxUsers:   maxUsers,
		sweepEvery: time.Duration(float64(burst) / perSecond * float64(time.Second)),
		buckets:    make(map[string]*rate.Limiter),
		lastSweep:  clk.Now(),
	}
}

// allow takes one token from user's bucket. When the bucket is empty nothing
// is taken and the wait until the next token is returned.
func (l *rateLimiter) allow(user string) (bool, time.Duration) {
	now := l.clock.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maybeSweep(now)
	b, ok := l.buckets[user]
	if !ok {
		l.makeRoom()
		b = rate.NewLimiter(l.refill, l.burst)
		l.buckets[user] = b
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.TokensAt(now)
	wait := time.Duration(math.Ceil(missing / float64(l.refill) * float64(time.Second)))
	return false, wait
}

// maybeSweep drops full buckets once per refill period, which keeps the
// table at the users active during roughly the last period.
func (l *rateLimiter) maybeSweep(now time.Time) {
	if now.Sub(l.lastSweep) < l.sweepEvery {
		return
	}
	l.lastSweep = now
	for user, b := range l.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(l.buckets, user)
		}
	}
}

// makeRoom evicts an arbitrary bucket when the table is full.
func (l *rateLimiter) makeRoom() {
	if len(l.buckets) < l.maxUsers {
		return
	}
	for user := range l.buckets {
		delete(l.buckets, user)
		return
	}
}

// size reports the number of tracked users.
func (l *rateLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

package api

import (
	"hash/maphash"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/presencehq/presence/clock"
)

// rateLimiterShards splits the table so that concurrent updates of
// different users rarely wait for one another, and a sweep holds only one
// shard: one lock for every update was the node's most contended lock
// under heartbeat load (and each sweep stopped every update while it
// walked the whole table).
const rateLimiterShards = 16

// rateLimiter is a per-user token bucket. Times come from the injected clock
// so tests refill buckets by advancing a fake clock. The table is bounded:
// a bucket that has refilled completely is indistinguishable from a new one,
// so it is dropped by periodic sweeps; when the table is still full, an
// arbitrary bucket is evicted rather than letting memory grow.
type rateLimiter struct {
	clock  clock.Clock
	burst  int
	refill rate.Limit
	// sweepEvery is the time a drained bucket needs to refill completely.
	sweepEvery time.Duration

	seed   maphash.Seed
	shards []rateShard // maxUsers split evenly
}

// rateShard is the buckets of the users hashed to it.
type rateShard struct {
	maxUsers int

	mu        sync.Mutex
	buckets   map[string]*rate.Limiter
	lastSweep time.Time
	_         [16]byte // keep neighbouring shards' locks off one cache line
}

func newRateLimiter(clk clock.Clock, burst int, perSecond float64, maxUsers int) *rateLimiter {
	n := rateLimiterShards
	if maxUsers < 64*rateLimiterShards {
		n = 1 // a small table is not worth splitting, and stays exact
	}
	l := &rateLimiter{
		clock:      clk,
		burst:      burst,
		refill:     rate.Limit(perSecond),
		sweepEvery: time.Duration(float64(burst) / perSecond * float64(time.Second)),
		seed:       maphash.MakeSeed(),
		shards:     make([]rateShard, n),
	}
	now := clk.Now()
	for i := range l.shards {
		sh := &l.shards[i]
		sh.maxUsers = maxUsers / n
		sh.buckets = make(map[string]*rate.Limiter)
		sh.lastSweep = now
	}
	return l
}

// allow takes one token from user's bucket. When the bucket is empty nothing
// is taken and the wait until the next token is returned.
func (l *rateLimiter) allow(user string) (bool, time.Duration) {
	now := l.clock.Now()
	sh := &l.shards[0]
	if len(l.shards) > 1 {
		sh = &l.shards[maphash.String(l.seed, user)%uint64(len(l.shards))]
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	l.maybeSweep(sh, now)
	b, ok := sh.buckets[user]
	if !ok {
		sh.makeRoom()
		b = rate.NewLimiter(l.refill, l.burst)
		sh.buckets[user] = b
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	missing := 1 - b.TokensAt(now)
	wait := time.Duration(math.Ceil(missing / float64(l.refill) * float64(time.Second)))
	return false, wait
}

// maybeSweep drops a shard's full buckets once per refill period, which
// keeps the table at the users active during roughly the last period.
func (l *rateLimiter) maybeSweep(sh *rateShard, now time.Time) {
	if now.Sub(sh.lastSweep) < l.sweepEvery {
		return
	}
	sh.lastSweep = now
	for user, b := range sh.buckets {
		if b.TokensAt(now) >= float64(l.burst) {
			delete(sh.buckets, user)
		}
	}
}

// makeRoom evicts an arbitrary bucket when the shard is full.
func (sh *rateShard) makeRoom() {
	if len(sh.buckets) < sh.maxUsers {
		return
	}
	for user := range sh.buckets {
		delete(sh.buckets, user)
		return
	}
}

// size reports the number of tracked users.
func (l *rateLimiter) size() int {
	n := 0
	for i := range l.shards {
		sh := &l.shards[i]
		sh.mu.Lock()
		n += len(sh.buckets)
		sh.mu.Unlock()
	}
	return n
}

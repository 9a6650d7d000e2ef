// Package tokenbucket keeps token buckets on an injected clock: the
// arithmetic of one bucket (Bucket) and a bounded table of per-key buckets
// that limits on its own, one node's rate limit (Limiter).
//
// A bucket holds up to Burst tokens and refills PerSecond tokens a second,
// continuously; a call takes one whole token or is refused without taking
// anything. Times come from the caller, so tests refill buckets by
// advancing a fake clock.
package tokenbucket

import (
	"errors"
	"math"
	"time"
)

// Rate is the size and refill of a bucket.
type Rate struct {
	// Burst is the most tokens a bucket holds (and a full one starts with).
	Burst int
	// PerSecond is the refill, in tokens a second.
	PerSecond float64
}

// Validate reports a rate that cannot limit anything.
func (r Rate) Validate() error {
	if r.Burst < 1 || !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 0) {
		return errors.New("tokenbucket: a rate needs a burst of at least 1 and a positive, finite refill")
	}
	return nil
}

// RefillTime is how long an empty bucket takes to fill.
func (r Rate) RefillTime() time.Duration {
	return time.Duration(float64(r.Burst) / r.PerSecond * float64(time.Second))
}

// Wait is how long a bucket holding tokens takes to hold one whole token
// (0 when it does), rounded up to the nanosecond.
func (r Rate) Wait(tokens float64) time.Duration {
	if tokens >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - tokens) / r.PerSecond * float64(time.Second)))
}

// Bucket is the state of one bucket: Tokens at At. Its methods take the
// capacity rather than a Rate's Burst, so that an owner lending tokens out
// of a bucket can count them against it (package router/ratelimit).
type Bucket struct {
	Tokens float64
	At     time.Time
}

// Full returns a bucket holding capacity tokens at now.
func Full(capacity float64, now time.Time) Bucket { return Bucket{Tokens: capacity, At: now} }

// Advance refills the bucket up to now at perSecond, to at most capacity.
// A clock going backwards refills nothing.
func (b *Bucket) Advance(now time.Time, perSecond, capacity float64) {
	if d := now.Sub(b.At); d > 0 {
		b.Tokens += d.Seconds() * perSecond
		b.At = now
	}
	b.Tokens = min(b.Tokens, capacity)
}

// Take removes n whole tokens when the bucket holds them and reports
// whether it did; a refused take changes nothing.
func (b *Bucket) Take(n int) bool {
	if b.Tokens < float64(n) {
		return false
	}
	b.Tokens -= float64(n)
	return true
}

// Give adds n tokens back, to at most capacity.
func (b *Bucket) Give(n int, capacity float64) {
	b.Tokens = min(b.Tokens+float64(n), capacity)
}

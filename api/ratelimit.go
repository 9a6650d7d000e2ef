package api

import (
	"context"
	"time"

	"github.com/presencehq/presence/tokenbucket"
)

// RateLimiter is the per-user limit of /presence/update (contract: a token
// bucket of 20 refilled 2 per second). A cluster gives its cluster-wide
// limit (package router/ratelimit); without one, each node limits alone.
type RateLimiter interface {
	// Allow takes one token of userID's bucket, or refuses without taking
	// anything and says how long until the next token. It never fails: a
	// limiter that cannot reach shared state decides on its own. memo is
	// userID's memo (the verified token's, see tokenbucket.Memo), never
	// another user's; nil when there is none.
	Allow(ctx context.Context, userID string, memo *tokenbucket.Memo) (ok bool, retryAfter time.Duration)
}

// newNodeRateLimiter is the limiter used when Config.RateLimiter is nil:
// one bucket per user on this node.
func newNodeRateLimiter(cfg Config) (RateLimiter, error) {
	return tokenbucket.NewLimiter(cfg.Clock, tokenbucket.Rate{Burst: cfg.RateBurst, PerSecond: cfg.RateRefillPerSecond},
		cfg.RateLimitMaxUsers)
}

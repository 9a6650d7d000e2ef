// Package redispresence is the presence service a user would build on Redis
// instead of running presence nodes: a Go HTTP server whose
// POST /presence/update takes the node's JSON body and HS256 user tokens
// (verified tokens cached, as the node does) and keeps presence in Redis
// with Discourse's algorithm (package discourse). It is the third contender
// of the heartbeat benchmark, next to the node and the bare handler.
//
// It keeps no state of its own besides the token cache, so any number of
// instances can share one Redis; each runs the expiry sweep, which is
// idempotent. Left out, as in the node's API it mirrors only in part: the
// per-user rate limit, form and multipart bodies, reads and streams
// (subscribers would follow the channels' Redis topics).
package redispresence

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of Config, the node's own limits.
const (
	// DefaultMaxBody is the largest update body accepted (the node's limit).
	DefaultMaxBody = 64 << 10
	// DefaultTokenCacheSize is how many verified tokens are remembered (the
	// node's default, api.DefaultTokenCacheSize).
	DefaultTokenCacheSize = 100_000
	// MaxChannelsPerList bounds present_channels and leave_channels.
	MaxChannelsPerList = 50
	// MaxClientIDBytes bounds client_id.
	MaxClientIDBytes = 128
	// MaxUserIDBytes bounds a token's sub.
	MaxUserIDBytes = 128
	// MaxChannelNameBytes bounds a channel name; longer names do not exist.
	MaxChannelNameBytes = 256
)

// ErrConfig marks an unusable Config.
var ErrConfig = errors.New("redispresence: invalid configuration")

// Config sets up a Server. Zero values are documented per field.
type Config struct {
	// JWTSecret verifies the HS256 user tokens. Required.
	JWTSecret []byte
	// Prefixes are the channel prefixes that exist ("demo" for /demo/...);
	// every channel of them is public, as the node's demo prefix in --dev.
	// Required.
	Prefixes []string
	// MaxBody bounds an update body; 0 = DefaultMaxBody.
	MaxBody int64
	// TokenCacheSize is how many verified tokens are cached; 0 =
	// DefaultTokenCacheSize, negative = no cache (every call verifies).
	TokenCacheSize int
	// Now is the clock tokens are checked against; nil = time.Now.
	Now func() time.Time
	// Logger gets failures (Redis errors, at most one line a second); nil =
	// slog.Default().
	Logger *slog.Logger
}

// Validate fills the defaults and rejects what cannot work.
func (c *Config) Validate() error {
	if len(c.JWTSecret) == 0 {
		return fmt.Errorf("%w: a JWT secret is required", ErrConfig)
	}
	if len(c.Prefixes) == 0 {
		return fmt.Errorf("%w: at least one channel prefix is required", ErrConfig)
	}
	for _, p := range c.Prefixes {
		if !validPrefix(p) {
			return fmt.Errorf("%w: prefix %q must be one or more of [a-zA-Z0-9_-]", ErrConfig, p)
		}
	}
	if c.MaxBody < 0 {
		return fmt.Errorf("%w: MaxBody must be >= 0", ErrConfig)
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.TokenCacheSize == 0 {
		c.TokenCacheSize = DefaultTokenCacheSize
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

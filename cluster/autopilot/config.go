package autopilot

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/presencehq/presence/clock"
)

// Defaults of Config.
const (
	// DefaultMaxVoters is the most voters kept: five tolerate two failures,
	// more only slow commits down.
	DefaultMaxVoters = 5
	// DefaultReapAfter is how long a server whose node is dead or unknown
	// stays in the configuration: long enough for a restart to come back
	// without a configuration change.
	DefaultReapAfter = 30 * time.Second
	// DefaultStabilization is how long a non-voter must stay healthy before
	// it is promoted (Consul's ServerStabilizationTime), so that a server
	// that keeps restarting never gets a vote.
	DefaultStabilization = 10 * time.Second
	// DefaultMaxTrailingLogs is how many entries a non-voter may lag the
	// leader's log and still count as caught up.
	DefaultMaxTrailingLogs = 250
	// DefaultLastContactThreshold is how long ago a non-voter may last have
	// heard from the leader and still count as healthy.
	DefaultLastContactThreshold = 2 * time.Second
	// DefaultInterval is the period of a reconciliation round when nothing
	// else (a membership change, a leadership change) starts one.
	DefaultInterval = time.Second
	// DefaultOpTimeout bounds one configuration change or question to a
	// node.
	DefaultOpTimeout = 5 * time.Second
)

// ErrConfig marks an unusable Config.
var ErrConfig = errors.New("autopilot: invalid configuration")

// Config configures an Autopilot. Zero values are documented per field.
type Config struct {
	// Self is this server's Raft ID, its node name. Required.
	Self string
	// BootstrapExpect is how many servers must see each other before the
	// first of them bootstrap Raft; 0 means 1.
	BootstrapExpect int
	// MaxVoters caps the voters; it must be odd. 0 means DefaultMaxVoters.
	MaxVoters int
	// ReapAfter is how long a dead or unknown server stays in the
	// configuration; 0 means DefaultReapAfter.
	ReapAfter time.Duration
	// Stabilization is how long a non-voter must stay healthy before its
	// promotion; 0 means DefaultStabilization.
	Stabilization time.Duration
	// MaxTrailingLogs is how far behind the leader's log a healthy
	// non-voter may be; 0 means DefaultMaxTrailingLogs.
	MaxTrailingLogs uint64
	// LastContactThreshold is how long ago a healthy non-voter may last
	// have heard from the leader; 0 means DefaultLastContactThreshold.
	LastContactThreshold time.Duration
	// Interval is the period of rounds without other triggers; 0 means
	// DefaultInterval.
	Interval time.Duration
	// OpTimeout bounds one configuration change or node question; 0 means
	// DefaultOpTimeout.
	OpTimeout time.Duration
	// Clock measures the grace and stabilization periods; nil means
	// clock.Real.
	Clock clock.Clock
	// Logger receives the configuration changes; nil discards them.
	Logger *slog.Logger
}

// Validate fills the defaults and rejects what cannot work.
func (c *Config) Validate() error {
	switch {
	case c.Self == "":
		return fmt.Errorf("%w: Self is empty", ErrConfig)
	case c.BootstrapExpect < 0:
		return fmt.Errorf("%w: negative bootstrap-expect", ErrConfig)
	case c.MaxVoters < 0 || c.MaxVoters%2 == 0 && c.MaxVoters != 0:
		return fmt.Errorf("%w: max voters %d: want a positive odd number (1, 3, 5, 7...)", ErrConfig, c.MaxVoters)
	case c.ReapAfter < 0 || c.Stabilization < 0 || c.LastContactThreshold < 0 || c.Interval < 0 || c.OpTimeout < 0:
		return fmt.Errorf("%w: negative duration", ErrConfig)
	}
	c.BootstrapExpect = max(c.BootstrapExpect, 1)
	c.MaxVoters = orDefault(c.MaxVoters, DefaultMaxVoters)
	c.ReapAfter = orDefault(c.ReapAfter, DefaultReapAfter)
	c.Stabilization = orDefault(c.Stabilization, DefaultStabilization)
	c.MaxTrailingLogs = orDefault(c.MaxTrailingLogs, DefaultMaxTrailingLogs)
	c.LastContactThreshold = orDefault(c.LastContactThreshold, DefaultLastContactThreshold)
	c.Interval = orDefault(c.Interval, DefaultInterval)
	c.OpTimeout = orDefault(c.OpTimeout, DefaultOpTimeout)
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func orDefault[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

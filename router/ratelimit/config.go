package ratelimit

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/router/wire"
	"github.com/presencehq/presence/tokenbucket"
)

// Defaults applied to zero Limits fields.
const (
	// DefaultBurst and DefaultPerSecond are the contract's limit of
	// /presence/update, Discourse's: 20 calls, refilled 2 a second.
	DefaultBurst     = 20
	DefaultPerSecond = 2.0
	// DefaultMaxUsers bounds each table of a node: the buckets it keeps,
	// the tokens it borrowed, and its buckets of last resort.
	DefaultMaxUsers = 100_000
	// DefaultMaxBorrow is the most tokens one borrow asks for.
	DefaultMaxBorrow = 5
	// DefaultLease is how long a node may keep borrowed tokens. It exceeds
	// the browser client's 30 s heartbeat, so the token kept in reserve
	// for a user's next heartbeat outlives the wait for it.
	DefaultLease = time.Minute
	// DefaultIdle is how long after a user's last call here a node gives
	// back the tokens it holds beyond the one kept in reserve.
	DefaultIdle = 2 * time.Second
	// DefaultBorrowTimeout bounds a borrow; a call waits at most that long
	// for one, and only the first call after the keeper became unreachable.
	DefaultBorrowTimeout = 500 * time.Millisecond
	// DefaultOwnerRetry is how long a node decides alone for the users of
	// a keeper that failed a borrow before it tries that keeper again.
	DefaultOwnerRetry = time.Second
	// DefaultSweepInterval is the period of the sweeps that give tokens
	// back and drop idle entries; a keeper recalls a user's tokens at most
	// once per period.
	DefaultSweepInterval = time.Second
)

// Limits are the tunables of a Limiter; a zero field takes its default.
type Limits struct {
	// Burst and PerSecond size every user's bucket. Zero: DefaultBurst,
	// DefaultPerSecond.
	Burst     int
	PerSecond float64
	// MaxUsers bounds each table. Zero: DefaultMaxUsers.
	MaxUsers int
	// MaxBorrow is the most tokens a borrow asks for. Zero:
	// DefaultMaxBorrow.
	MaxBorrow int
	// Lease is how long borrowed tokens stay valid. Zero: DefaultLease;
	// at least four SweepIntervals.
	Lease time.Duration
	// Idle is how long after a user's last call extra tokens go back.
	// Zero: DefaultIdle.
	Idle time.Duration
	// BorrowTimeout bounds one borrow. Zero: DefaultBorrowTimeout.
	BorrowTimeout time.Duration
	// OwnerRetry is how long a keeper that failed a borrow is not asked.
	// Zero: DefaultOwnerRetry.
	OwnerRetry time.Duration
	// SweepInterval is the period of the sweeps (on Config.Clock). Zero:
	// DefaultSweepInterval.
	SweepInterval time.Duration
}

func (l *Limits) applyDefaults() {
	setDefault(&l.Burst, DefaultBurst)
	setDefault(&l.PerSecond, DefaultPerSecond)
	setDefault(&l.MaxUsers, DefaultMaxUsers)
	setDefault(&l.MaxBorrow, DefaultMaxBorrow)
	setDefault(&l.Lease, DefaultLease)
	setDefault(&l.Idle, DefaultIdle)
	setDefault(&l.BorrowTimeout, DefaultBorrowTimeout)
	setDefault(&l.OwnerRetry, DefaultOwnerRetry)
	setDefault(&l.SweepInterval, DefaultSweepInterval)
}

func setDefault[T int | float64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Validate reports negative limits, and a lease too short to give tokens
// back before it ends. Zero fields are valid (defaults).
func (l Limits) Validate() error {
	switch {
	case l.Burst < 0 || l.PerSecond < 0 || l.MaxUsers < 0 || l.MaxBorrow < 0:
		return errors.New("ratelimit: sizes and rates must not be negative")
	case l.Lease < 0 || l.Idle < 0 || l.BorrowTimeout < 0 || l.OwnerRetry < 0 || l.SweepInterval < 0:
		return errors.New("ratelimit: durations must not be negative")
	}
	l.applyDefaults()
	if l.Lease < 4*l.SweepInterval {
		return errors.New("ratelimit: the lease must last at least four sweep intervals")
	}
	return tokenbucket.Rate{Burst: l.Burst, PerSecond: l.PerSecond}.Validate()
}

// View is what the limit needs of the router's routing view: the ring
// owner of a key (KeyPrefix and a user id) and the members' addresses.
type View interface {
	Owner(key string) string
	Member(name string) (wire.Member, bool)
}

// Config configures a Limiter. Every field but Registry is required.
type Config struct {
	Limits
	// Self is this node.
	Self wire.Member
	// Clock tells time for buckets, leases and sweeps; Logger receives
	// keepers becoming unreachable and reachable again.
	Clock  clock.Clock
	Logger *slog.Logger
	// Ctx ends with the router: sweeps stop, calls end. Go runs a
	// goroutine the router waits for on Close (false once it closes).
	Ctx context.Context
	Go  func(func()) bool
	// Call sends borrows, returns and recalls (wire.MethodLimit).
	Call wire.Call
	// View returns the current routing view.
	View func() View
	// Registry receives the limit's metrics; nil leaves them unregistered.
	Registry prometheus.Registerer
}

func (c *Config) validate() error {
	switch {
	case c.Self.Name == "" || c.Clock == nil || c.Logger == nil || c.Ctx == nil || c.Go == nil || c.Call == nil || c.View == nil:
		return errors.New("ratelimit: config needs self, clock, logger, context, goroutines, calls and the view")
	}
	return c.Limits.Validate()
}

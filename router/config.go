package router

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/ratelimit"
	"github.com/presencehq/presence/router/wire"
)

// Defaults applied by New to zero-valued Config fields.
const (
	// DefaultMaxHops bounds how many times one call is forwarded.
	DefaultMaxHops = 3
	// DefaultRetries is how many times a pull asks the previous holder
	// again when it answers that the channel is busy (wire.ErrBusy).
	DefaultRetries = 3
	// DefaultRetryBackoff is the first pause before a retry: of a request
	// held during a view change (doubling up to MaxRetryBackoff), of a
	// busy pull, of a replication batch.
	DefaultRetryBackoff = 20 * time.Millisecond
	// MaxRetryBackoff bounds the pause between two attempts of a held
	// request; the view change itself wakes it earlier.
	MaxRetryBackoff = time.Second
	// DefaultHoldTimeout bounds how long a request entering this node waits
	// for a channel's new owner during a view change before answering 503
	// (CONTRACT.md section 6: up to 10 s).
	DefaultHoldTimeout = 10 * time.Second
	// DefaultMaxHeld bounds the requests held at once on a node.
	DefaultMaxHeld = 10000
	// DefaultHandoffConcurrency bounds the channels pushed at once.
	DefaultHandoffConcurrency = 16
	// DefaultHandoffTimeout bounds one hand-off call (install or extract).
	DefaultHandoffTimeout = 5 * time.Second
	// DefaultRebalanceRetry is how long after a failed push the router tries
	// again (on Config.Clock).
	DefaultRebalanceRetry = 2 * time.Second
	// DefaultSweepInterval is how often routing entries of channels without
	// state are forgotten (on Config.Clock).
	DefaultSweepInterval = time.Minute
	// DefaultPushQueue bounds the messages waiting for one remote node;
	// beyond it messages are dropped (its subscribers resync).
	DefaultPushQueue = 8192
	// DefaultPushBatch is the most messages sent in one push call.
	DefaultPushBatch = 512
	// DefaultForwardBatch is the most updates forwarded in one call.
	DefaultForwardBatch = 128
	// DefaultForwardTimeout bounds one call carrying forwarded updates.
	DefaultForwardTimeout = 5 * time.Second
	// DefaultForwardStall is the age at which a batch of forwarded updates
	// in flight counts as stuck, letting later updates go beside it.
	DefaultForwardStall = 10 * time.Millisecond
	// DefaultFlushTimeout bounds how long a hand-off waits for the messages
	// already queued for remote subscribers to be delivered.
	DefaultFlushTimeout = time.Second
	// DefaultReplicationInterval is how long a refresh waits at most before
	// it is sent to the replica (on Config.Clock).
	DefaultReplicationInterval = time.Second
)

// Member is a node as the router sees it: its unique name and the address of
// its node-to-node transport.
type Member = wire.Member

// Caller makes node-to-node calls; *transport.Transport implements it.
type Caller interface {
	Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error)
}

// Webhooks delivers the messages of the channels held here beyond the
// cluster (package webhook's Dispatcher implements it).
type Webhooks interface {
	// Publish takes every message of a channel held here, once it is
	// safe (with replication, on the replica), in id order per channel.
	// It must not block.
	Publish(m *presence.Message)
	// HandedOver says that channel's state went to another node, which
	// delivers from the position it was given.
	HandedOver(channel string)
}

// Config configures a Router.
type Config struct {
	// Self is this node. Required.
	Self Member
	// Engine runs the channels this node owns. Required; it must have been
	// created with Publisher as its EngineConfig.Publisher.
	Engine *presence.Engine
	// Publisher is the one given to Engine; New binds it to the router.
	// Required.
	Publisher *Publisher
	// Transport carries calls to other nodes. Required.
	Transport Caller
	// Webhooks, when set, delivers the messages of the channels held here
	// (their installs reach it through the Engine's Deliveries).
	Webhooks Webhooks
	// Clock drives rebalance retries and sweeps; nil means clock.Real.
	Clock clock.Clock
	// Logger receives hand-off and forwarding problems; nil discards.
	Logger *slog.Logger
	// Registry receives the router metrics; nil leaves them unregistered.
	Registry prometheus.Registerer
	// Metrics receives the gauge of the router's subscriptions; nil means
	// unregistered presence metrics. Pass the engine's to count them once.
	Metrics *presence.Metrics
	// SubscriberBuffer is the per-subscription event buffer; 0 means
	// presence.DefaultSubscriberBuffer.
	SubscriberBuffer int
	// MaxHops bounds the forwards of one call; 0 means DefaultMaxHops.
	MaxHops int
	// Retries bounds the extracts a pull repeats after wire.ErrBusy; 0
	// means DefaultRetries, negative means none.
	Retries int
	// RetryBackoff is the first pause between retries (wall time: it paces
	// network calls); 0 means DefaultRetryBackoff.
	RetryBackoff time.Duration
	// HoldTimeout bounds how long a request entering this node is held
	// while its channels' owner cannot answer (unreachable, moved, busy
	// handing the channel over, timed out): it is tried again whenever the
	// view changes, and after a backoff, until this passes; then it fails
	// with presence.ErrUnavailable (wall time). 0 means DefaultHoldTimeout,
	// negative means no hold: the first failure is the answer.
	HoldTimeout time.Duration
	// MaxHeld bounds the requests held at once; beyond it a request that
	// fails fails at once. 0 means DefaultMaxHeld.
	MaxHeld int
	// Serving reports whether this node can serve at all (its channel
	// configuration loaded, not shutting down). A request that fails while
	// it reports false is answered at once instead of held: waiting would
	// not help, and the client does better elsewhere. Nil means always;
	// the router also holds nothing before it joined or while it drains.
	Serving func() bool
	// HandoffConcurrency bounds parallel pushes; 0 means
	// DefaultHandoffConcurrency.
	HandoffConcurrency int
	// HandoffTimeout bounds one install or extract call; 0 means
	// DefaultHandoffTimeout.
	HandoffTimeout time.Duration
	// RebalanceRetry is the pause before retrying failed pushes; 0 means
	// DefaultRebalanceRetry.
	RebalanceRetry time.Duration
	// SweepInterval is the period of the routing table sweep; 0 means
	// DefaultSweepInterval.
	SweepInterval time.Duration
	// PushQueue bounds the messages queued per remote node; 0 means
	// DefaultPushQueue.
	PushQueue int
	// PushBatch is the most messages per push call; 0 means DefaultPushBatch.
	PushBatch int
	// FlushTimeout bounds the wait for queued messages during a hand-off; 0
	// means DefaultFlushTimeout.
	FlushTimeout time.Duration
	// ForwardBatch is the most updates combined into one forwarded call; 0
	// means DefaultForwardBatch.
	ForwardBatch int
	// ForwardTimeout bounds one call of forwarded updates; 0 means
	// DefaultForwardTimeout.
	ForwardTimeout time.Duration
	// ForwardStall is the age of a batch in flight past which later
	// updates to the same node do not wait for it (wall time); 0 means
	// DefaultForwardStall.
	ForwardStall time.Duration
	// Replication keeps a copy of every owned channel on its ring replica,
	// promoted when the owner leaves the membership, and merges copies last
	// writer wins with the client leaves recorded here. Off by default
	// (presence-node turns it on).
	Replication bool
	// ReplicationInterval is how long a refresh (a heartbeat that only
	// moves an expiry) may wait before it is sent to the replica, and the
	// grace a promoted copy waits past every expiry before expiring its
	// clients (ChannelSnapshot.ExpiryGrace); 0 means
	// DefaultReplicationInterval.
	ReplicationInterval time.Duration
	// RateLimit tunes the cluster-wide rate limit of /presence/update
	// (Router.Limiter); zero fields take package ratelimit's defaults.
	RateLimit ratelimit.Limits
}

// Validate reports the first missing or invalid field.
func (c Config) Validate() error {
	switch {
	case c.Self.Name == "" || c.Self.RPCAddr == "":
		return fmt.Errorf("%w: router needs its own name and rpc address", presence.ErrInvalid)
	case c.Engine == nil || c.Publisher == nil || c.Transport == nil:
		return fmt.Errorf("%w: router needs an engine, its publisher and a transport", presence.ErrInvalid)
	case c.SubscriberBuffer < 0 || c.MaxHops < 0 || c.HandoffConcurrency < 0 || c.PushQueue < 0 || c.PushBatch < 0 || c.ForwardBatch < 0 || c.MaxHeld < 0:
		return fmt.Errorf("%w: router sizes must not be negative", presence.ErrInvalid)
	case c.RetryBackoff < 0 || c.HandoffTimeout < 0 || c.RebalanceRetry < 0 || c.SweepInterval < 0 || c.FlushTimeout < 0 || c.ForwardTimeout < 0 || c.ForwardStall < 0 || c.ReplicationInterval < 0:
		return fmt.Errorf("%w: router durations must not be negative", presence.ErrInvalid)
	}
	if err := c.RateLimit.Validate(); err != nil {
		return fmt.Errorf("%w: %v", presence.ErrInvalid, err)
	}
	return nil
}

func (c *Config) applyDefaults() {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Metrics == nil {
		c.Metrics = presence.NewMetrics(nil)
	}
	setDefault(&c.MaxHops, DefaultMaxHops)
	setDefault(&c.Retries, DefaultRetries)
	if c.Retries < 0 {
		c.Retries = 0
	}
	setDefault(&c.RetryBackoff, DefaultRetryBackoff)
	setDefault(&c.HoldTimeout, DefaultHoldTimeout)
	setDefault(&c.MaxHeld, DefaultMaxHeld)
	if c.Serving == nil {
		c.Serving = func() bool { return true }
	}
	setDefault(&c.HandoffConcurrency, DefaultHandoffConcurrency)
	setDefault(&c.HandoffTimeout, DefaultHandoffTimeout)
	setDefault(&c.RebalanceRetry, DefaultRebalanceRetry)
	setDefault(&c.SweepInterval, DefaultSweepInterval)
	setDefault(&c.PushQueue, DefaultPushQueue)
	setDefault(&c.PushBatch, DefaultPushBatch)
	setDefault(&c.FlushTimeout, DefaultFlushTimeout)
	setDefault(&c.ForwardBatch, DefaultForwardBatch)
	setDefault(&c.ForwardTimeout, DefaultForwardTimeout)
	setDefault(&c.ForwardStall, DefaultForwardStall)
	setDefault(&c.ReplicationInterval, DefaultReplicationInterval)
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

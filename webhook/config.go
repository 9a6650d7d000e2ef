package webhook

import (
	"errors"
	"log/slog"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

// Defaults of Config's zero fields.
const (
	// DefaultMaxBatch is the most events in one request (the contract's 100).
	DefaultMaxBatch = 100
	// DefaultMaxWait is the longest a ready event waits for its batch to
	// fill (the contract's 1 s).
	DefaultMaxWait = time.Second
	// DefaultMaxInFlight bounds the requests in flight to one destination.
	DefaultMaxInFlight = 4
	// DefaultRequestTimeout bounds one request, answer included.
	DefaultRequestTimeout = 10 * time.Second
	// DefaultRetryBase is the first pause after a failed request; it
	// doubles with every failure of the same batch.
	DefaultRetryBase = time.Second
	// DefaultRetryMax caps the pause between two tries.
	DefaultRetryMax = 5 * time.Minute
	// DefaultGiveUpAfter is how long a batch is retried before its events
	// are summarised as resync events (which are retried in turn).
	DefaultGiveUpAfter = time.Hour
	// DefaultMaxChannelQueue bounds the events a channel queues beyond its
	// batch in flight.
	DefaultMaxChannelQueue = 1000
	// DefaultMaxDestinationQueue bounds the events a destination queues
	// beyond its batches, to within one event per channel.
	DefaultMaxDestinationQueue = 100_000
	// DefaultTick is how often due batches and retries are looked for.
	DefaultTick = 50 * time.Millisecond
)

// Config configures a Dispatcher. Webhooks and Acknowledge are required;
// every other zero field takes its default.
type Config struct {
	// Webhooks returns the webhook of a channel's prefix, nil when it has
	// none (presence.Resolver.Webhook). It is called for every message.
	Webhooks func(channel string) *presence.Webhook
	// Acknowledge records that channel's events up to id were acknowledged
	// (presence.Engine.Acknowledge). It must not block.
	Acknowledge func(channel string, id int64) error
	// Clock drives batching, retries and the events' times; nil means
	// clock.Real.
	Clock clock.Clock
	// Logger receives delivery problems; nil discards them.
	Logger *slog.Logger
	// Registry receives the metrics; nil leaves them unregistered.
	Registry prometheus.Registerer
	// Client sends the requests; nil means a client that follows no
	// redirect (a 3xx is a failure), with RequestTimeout, keeping a
	// connection per request in flight.
	Client *http.Client
	// MaxBatch is the most events per request; 0 means DefaultMaxBatch.
	MaxBatch int
	// MaxWait is the longest a ready event waits for its batch to fill; 0
	// means DefaultMaxWait.
	MaxWait time.Duration
	// MaxInFlight bounds the requests in flight per destination; 0 means
	// DefaultMaxInFlight.
	MaxInFlight int
	// RequestTimeout bounds one request; 0 means DefaultRequestTimeout.
	RequestTimeout time.Duration
	// RetryBase and RetryMax shape the backoff between tries of a batch; 0
	// means DefaultRetryBase and DefaultRetryMax.
	RetryBase, RetryMax time.Duration
	// GiveUpAfter is how long a batch is retried before its events are
	// summarised as resync events; 0 means DefaultGiveUpAfter. The
	// contract wants at least an hour.
	GiveUpAfter time.Duration
	// MaxChannelQueue and MaxDestinationQueue bound the queued events (see
	// the package documentation); 0 means their defaults.
	MaxChannelQueue, MaxDestinationQueue int
	// Tick is how often the dispatcher looks for due batches; 0 means
	// DefaultTick.
	Tick time.Duration
}

// Validate reports a configuration New cannot use.
func (c *Config) Validate() error {
	switch {
	case c.Webhooks == nil || c.Acknowledge == nil:
		return errors.New("webhook: config needs Webhooks and Acknowledge")
	case c.MaxBatch < 0 || c.MaxInFlight < 0 || c.MaxChannelQueue < 0 || c.MaxDestinationQueue < 0:
		return errors.New("webhook: sizes must not be negative")
	case c.MaxWait < 0 || c.RequestTimeout < 0 || c.RetryBase < 0 || c.RetryMax < 0 || c.GiveUpAfter < 0 || c.Tick < 0:
		return errors.New("webhook: durations must not be negative")
	case c.RetryBase > 0 && c.RetryMax > 0 && c.RetryMax < c.RetryBase:
		return errors.New("webhook: RetryMax must not be below RetryBase")
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
	setDefault(&c.MaxBatch, DefaultMaxBatch)
	setDefault(&c.MaxWait, DefaultMaxWait)
	setDefault(&c.MaxInFlight, DefaultMaxInFlight)
	setDefault(&c.RequestTimeout, DefaultRequestTimeout)
	setDefault(&c.RetryBase, DefaultRetryBase)
	setDefault(&c.RetryMax, max(DefaultRetryMax, c.RetryBase))
	setDefault(&c.GiveUpAfter, DefaultGiveUpAfter)
	setDefault(&c.MaxChannelQueue, DefaultMaxChannelQueue)
	setDefault(&c.MaxDestinationQueue, DefaultMaxDestinationQueue)
	setDefault(&c.Tick, DefaultTick)
	if c.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = c.MaxInFlight // a connection kept for each request in flight
		c.Client = &http.Client{
			Transport:     tr,
			Timeout:       c.RequestTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
}

func setDefault[T int | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

package presence

import (
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics holds the presence gauges and counters. Hot paths update plain
// atomics; Prometheus reads them at scrape time through GaugeFunc and
// CounterFunc, so a heartbeat never touches a label map or a lock.
type Metrics struct {
	channels    atomic.Int64
	clients     atomic.Int64
	users       atomic.Int64
	subscribers atomic.Int64
	published   atomic.Uint64
	expired     atomic.Uint64
	refusedFull atomic.Uint64
	expiryLag   prometheus.Histogram
}

// NewMetrics creates the presence metrics and registers them with reg. A nil
// reg leaves them unregistered (still usable, e.g. in tests). It panics if
// registration fails, like prometheus.MustRegister, because that is a wiring
// bug (the same metrics registered twice).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		expiryLag: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "presence_expiry_lag_seconds",
			Help:    "How late the timer wheel processes each one-second tick.",
			Buckets: []float64{.001, .005, .01, .05, .1, .25, .5, 1, 2, 5},
		}),
	}
	if reg == nil {
		return m
	}
	gauge := func(name, help string, v *atomic.Int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	counter := func(name, help string, v *atomic.Uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(v.Load()) })
	}
	reg.MustRegister(
		gauge("presence_channels", "Channel actors running on this node.", &m.channels),
		gauge("presence_clients", "Clients present in channels owned by this node.", &m.clients),
		gauge("presence_users", "Users present, counted once per channel.", &m.users),
		gauge("presence_subscribers", "Live event subscriptions on this node.", &m.subscribers),
		counter("presence_messages_published_total", "Channel messages published.", &m.published),
		counter("presence_expired_clients_total", "Clients removed because their timeout passed.", &m.expired),
		counter("presence_full_refusals_total", "Users refused because their channel held its max_users.", &m.refusedFull),
		m.expiryLag,
	)
	return m
}

// Channels returns the number of running channel actors.
func (m *Metrics) Channels() int64 { return m.channels.Load() }

// Clients returns the number of present clients.
func (m *Metrics) Clients() int64 { return m.clients.Load() }

// Users returns the number of present users, counted once per channel.
func (m *Metrics) Users() int64 { return m.users.Load() }

// Subscribers returns the number of live subscriptions.
func (m *Metrics) Subscribers() int64 { return m.subscribers.Load() }

// Published returns the number of messages published.
func (m *Metrics) Published() uint64 { return m.published.Load() }

// Expired returns the number of clients that expired.
func (m *Metrics) Expired() uint64 { return m.expired.Load() }

// RefusedFull returns the number of presents refused because their channel
// held its max_users.
func (m *Metrics) RefusedFull() uint64 { return m.refusedFull.Load() }

func (m *Metrics) observeLag(d time.Duration) { m.expiryLag.Observe(d.Seconds()) }

package webhook

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// gaugeInterval is how often the queue gauges are recomputed.
const gaugeInterval = time.Second

// metrics are the dispatcher's collectors, labelled by prefix (never by
// URL, which may hold credentials).
type metrics struct {
	deliveries, events, failures, retries *prometheus.CounterVec
	resyncs                               *prometheus.CounterVec
	queued, oldest                        *prometheus.GaugeVec
}

// destMetrics are the children of one destination, resolved once.
type destMetrics struct {
	deliveries, events, failures, retries prometheus.Counter
	queued, oldest                        prometheus.Gauge
	resyncs                               func(reason string) prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append([]string{"prefix"}, labels...))
	}
	gauge := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"prefix"})
	}
	m := &metrics{
		deliveries: counter("presence_webhook_deliveries_total", "Webhook requests the destination acknowledged (2xx)."),
		events:     counter("presence_webhook_events_delivered_total", "Events in acknowledged webhook requests."),
		failures:   counter("presence_webhook_failures_total", "Webhook requests that failed (an answer other than 2xx, or none)."),
		retries:    counter("presence_webhook_retries_total", "Webhook requests that repeated a batch after a failure."),
		resyncs: counter("presence_webhook_resyncs_total",
			"Resync events queued, by reason: merge, lost, overflow (a queue bound), expired (undelivered too long).", "reason"),
		queued: gauge("presence_webhook_queued_events", "Events queued or in flight for the webhook."),
		oldest: gauge("presence_webhook_oldest_undelivered_seconds", "Age of the oldest event not acknowledged yet (0 when none)."),
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.events, m.failures, m.retries, m.resyncs, m.queued, m.oldest)
	}
	return m
}

func (m *metrics) forDest(prefix string) destMetrics {
	// Every series of the prefix is exported from its first event on, at
	// 0, so that a rate over it has a start.
	for _, reason := range []string{ReasonMerge, ReasonLost, ReasonOverflow, ReasonExpired} {
		m.resyncs.WithLabelValues(prefix, reason)
	}
	return destMetrics{
		deliveries: m.deliveries.WithLabelValues(prefix),
		events:     m.events.WithLabelValues(prefix),
		failures:   m.failures.WithLabelValues(prefix),
		retries:    m.retries.WithLabelValues(prefix),
		queued:     m.queued.WithLabelValues(prefix),
		oldest:     m.oldest.WithLabelValues(prefix),
		resyncs:    func(reason string) prometheus.Counter { return m.resyncs.WithLabelValues(prefix, reason) },
	}
}

// dropDest removes the series of a prefix whose webhook is gone.
func (m *metrics) dropDest(prefix string) {
	for _, v := range []*prometheus.CounterVec{m.deliveries, m.events, m.failures, m.retries} {
		v.DeleteLabelValues(prefix)
	}
	m.resyncs.DeletePartialMatch(prometheus.Labels{"prefix": prefix})
	m.queued.DeleteLabelValues(prefix)
	m.oldest.DeleteLabelValues(prefix)
}

// countResync counts a resync event queued for dst; the lock is held.
func (d *Dispatcher) countResync(dst *dest, ev event) {
	reason := ev.reason
	if ev.msg != nil {
		reason = ReasonMerge
	}
	dst.m.resyncs(reason).Inc()
}

// updateGauges sets dst's queue gauges; the lock is held.
func (dst *dest) updateGauges(now int64) {
	dst.m.queued.Set(float64(dst.queued))
	oldest := now
	for _, c := range dst.chans {
		if c.batch != nil {
			for _, p := range c.batch.parts {
				if p.c == c {
					oldest = min(oldest, p.events[0].since)
				}
			}
		}
		if len(c.pending) > 0 {
			oldest = min(oldest, c.pending[0].since)
		}
	}
	dst.m.oldest.Set(time.Duration(max(now-oldest, 0)).Seconds())
}

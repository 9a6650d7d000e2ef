package router

import "github.com/prometheus/client_golang/prometheus"

// metrics are the router's Prometheus collectors.
type metrics struct {
	forwarded     *prometheus.CounterVec
	forwardErrors prometheus.Counter
	handoffs      *prometheus.CounterVec
	pushDropped   prometheus.Counter
	ringEpoch     prometheus.Gauge

	promotions     prometheus.Counter
	replicaRefused prometheus.Counter
	replicationLag prometheus.Gauge

	holding prometheus.Gauge       // presence_held_requests
	held    *prometheus.CounterVec // presence_held_requests_total{outcome}

	// Children resolved once: a forwarded heartbeat never looks up a label.
	fwdUpdate, fwdGet, fwdSince prometheus.Counter
}

// Hand-off directions of presence_handoffs_total.
const (
	handoffOut = "out" // a channel left this node (push or extract)
	handoffIn  = "in"  // a channel arrived (install or pull)
)

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_forwarded_total",
			Help: "Calls forwarded to the owning node, by method.",
		}, []string{"method"}),
		forwardErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_forward_errors_total",
			Help: "Forwarded calls that failed (moved, unreachable, timed out).",
		}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_handoffs_total",
			Help: "Channel states handed over between nodes, by direction.",
		}, []string{"direction"}),
		pushDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_push_dropped_total",
			Help: "Messages not delivered to a remote node's subscribers (full queue or failed push).",
		}),
		ringEpoch: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_ring_epoch",
			Help: "Epoch of this node's ownership ring; it grows with each membership change.",
		}),
		promotions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_replica_promotions_total",
			Help: "Replica copies installed here after their owner left the membership.",
		}),
		replicaRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_replica_refused_total",
			Help: "Replica copies refused because the sender does not own the channel here.",
		}),
		replicationLag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "presence_replication_lag_seconds",
			Help: "Time from queueing to acknowledgement of the oldest change in the last batch a replica acknowledged.",
		}),
	}
	m.holding, m.held = holdMetrics()
	m.fwdUpdate = m.forwarded.WithLabelValues("update")
	m.fwdGet = m.forwarded.WithLabelValues("get")
	m.fwdSince = m.forwarded.WithLabelValues("since")
	m.handoffs.WithLabelValues(handoffOut)
	m.handoffs.WithLabelValues(handoffIn)
	if reg != nil {
		reg.MustRegister(m.forwarded, m.forwardErrors, m.handoffs, m.pushDropped, m.ringEpoch, m.promotions, m.replicaRefused, m.replicationLag,
			m.holding, m.held)
	}
	return m
}

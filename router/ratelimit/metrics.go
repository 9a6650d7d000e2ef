package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Paths of a decision (label path of presence_ratelimit_decisions_total).
const (
	pathKeeper   = "keeper"   // the user's bucket is on this node
	pathLease    = "lease"    // tokens, or the keeper's "none yet", already here
	pathBorrow   = "borrow"   // the call waited for a borrow
	pathFallback = "fallback" // the keeper was unreachable: this node's own bucket
)

// metrics are the limit's Prometheus collectors.
type metrics struct {
	decisions *prometheus.CounterVec
	borrows   *prometheus.CounterVec
	borrowed  prometheus.Counter
	returned  prometheus.Counter
	recalls   prometheus.Counter

	// Children resolved once: a decision never looks up a label.
	allowed, refused                         map[string]prometheus.Counter
	borrowGranted, borrowEmpty, borrowFailed prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, keeper, leases, fallback func() int) *metrics {
	m := &metrics{
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_ratelimit_decisions_total",
			Help: "Rate limit decisions of /presence/update calls entering this node, by path (keeper: the bucket is here; lease: tokens or a refusal already here; borrow: the call waited for a borrow; fallback: keeper unreachable, this node's own bucket) and result.",
		}, []string{"path", "result"}),
		borrows: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "presence_ratelimit_borrows_total",
			Help: "Borrows of rate limit tokens this node sent to keepers, by result (granted, empty, failed).",
		}, []string{"result"}),
		borrowed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_ratelimit_borrowed_tokens_total",
			Help: "Rate limit tokens keepers granted to this node.",
		}),
		returned: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_ratelimit_returned_tokens_total",
			Help: "Borrowed rate limit tokens this node gave back unspent (idle, lease ending, recalled).",
		}),
		recalls: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "presence_ratelimit_recalls_total",
			Help: "Recalls this node sent, as keeper, to nodes holding tokens of an empty bucket.",
		}),
		allowed: make(map[string]prometheus.Counter),
		refused: make(map[string]prometheus.Counter),
	}
	for _, path := range []string{pathKeeper, pathLease, pathBorrow, pathFallback} {
		m.allowed[path] = m.decisions.WithLabelValues(path, "allowed")
		m.refused[path] = m.decisions.WithLabelValues(path, "refused")
	}
	m.borrowGranted = m.borrows.WithLabelValues("granted")
	m.borrowEmpty = m.borrows.WithLabelValues("empty")
	m.borrowFailed = m.borrows.WithLabelValues("failed")
	users := func(table string, n func() int) prometheus.GaugeFunc {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "presence_ratelimit_users",
			Help:        "Users in the rate limit's tables of this node (buckets kept, tokens borrowed, fallback buckets).",
			ConstLabels: prometheus.Labels{"table": table},
		}, func() float64 { return float64(n()) })
	}
	if reg != nil {
		reg.MustRegister(m.decisions, m.borrows, m.borrowed, m.returned, m.recalls,
			users("buckets", keeper), users("borrowed", leases), users("fallback", fallback))
	}
	return m
}

// decided counts a decision.
func (m *metrics) decided(path string, ok bool) {
	if ok {
		m.allowed[path].Inc()
	} else {
		m.refused[path].Inc()
	}
}

package api

import (
	"errors"
	"net/http"
	"strconv"
	"sync"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
)

// routeUnmatched labels requests that matched no route, so that raw URLs
// never become label values.
const routeUnmatched = "unmatched"

// httpMetrics are the HTTP layer's Prometheus collectors. The labelled
// children each request updates are resolved once and kept, so a request
// costs a map lookup instead of a label hash per collector.
type httpMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	streams  prometheus.Gauge
	// refusedStreams counts streams refused by a limit, by limit.
	refusedStreams *prometheus.CounterVec

	mu        sync.RWMutex
	counters  map[requestLabels]prometheus.Counter
	observers map[string]prometheus.Observer
}

// requestLabels are the labels of presence_http_requests_total.
type requestLabels struct {
	route, method string
	status        int
}

// newHTTPMetrics registers the collectors on reg, reusing those a previous
// New registered there (tests and restarts of the handler share registries).
func newHTTPMetrics(reg prometheus.Registerer) (*httpMetrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_http_requests_total",
		Help: "HTTP requests by route template, method and status.",
	}, []string{"route", "method", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "presence_http_request_duration_seconds",
		Help:    "HTTP request latency by route template (SSE streams count their whole life).",
		Buckets: prometheus.DefBuckets,
	}, []string{"route"})
	streams := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "presence_http_sse_streams",
		Help: "Open Server-Sent Events streams.",
	})
	refused := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_http_sse_streams_refused_total",
		Help: "Server-Sent Events streams refused with 429 by a limit: user, ip (anonymous per client address) or node.",
	}, []string{"limit"})
	var err error
	m := &httpMetrics{counters: map[requestLabels]prometheus.Counter{}, observers: map[string]prometheus.Observer{}}
	if m.requests, err = register(reg, requests); err != nil {
		return nil, err
	}
	if m.latency, err = register(reg, latency); err != nil {
		return nil, err
	}
	if m.streams, err = register(reg, streams); err != nil {
		return nil, err
	}
	if m.refusedStreams, err = register(reg, refused); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the identical collector already there.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var already prometheus.AlreadyRegisteredError
	if errors.As(err, &already) {
		if existing, ok := already.ExistingCollector.(C); ok {
			return existing, nil
		}
	}
	return c, err
}

// labelRoute is a router middleware that records the matched path template
// on the request's statusWriter.
func labelRoute(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if sw, ok := w.(*statusWriter); ok {
			if route := mux.CurrentRoute(r); route != nil {
				if tpl, err := route.GetPathTemplate(); err == nil {
					sw.route = tpl
				}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// instrument counts and times every request by route template. Its
// statusWriter is the one every inner layer shares.
func (m *httpMetrics) instrument(next http.Handler, clk clock.Clock) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := clk.Now()
		sw := statusWriters.Get().(*statusWriter)
		*sw = statusWriter{ResponseWriter: w, route: routeUnmatched}
		defer func() {
			m.counter(requestLabels{sw.route, methodLabel(r.Method), sw.status()}).Inc()
			if !sw.detached { // a pooled stream observes its whole life when it ends
				m.observer(sw.route).Observe(clk.Now().Sub(start).Seconds())
			}
			*sw = statusWriter{}
			statusWriters.Put(sw)
		}()
		next.ServeHTTP(sw, r)
	})
}

// statusWriters recycles the statusWriter of every request: no handler
// keeps its ResponseWriter once it returned.
var statusWriters = sync.Pool{New: func() any { return new(statusWriter) }}

// counter returns the request counter of l, resolving it on first use.
func (m *httpMetrics) counter(l requestLabels) prometheus.Counter {
	m.mu.RLock()
	c := m.counters[l]
	m.mu.RUnlock()
	if c != nil {
		return c
	}
	c = m.requests.WithLabelValues(l.route, l.method, strconv.Itoa(l.status))
	m.mu.Lock()
	m.counters[l] = c
	m.mu.Unlock()
	return c
}

// observer returns the latency histogram of route, resolving it on first use.
func (m *httpMetrics) observer(route string) prometheus.Observer {
	m.mu.RLock()
	o := m.observers[route]
	m.mu.RUnlock()
	if o != nil {
		return o
	}
	o = m.latency.WithLabelValues(route)
	m.mu.Lock()
	m.observers[route] = o
	m.mu.Unlock()
	return o
}

// methodLabel bounds the method label to the methods the API knows.
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// statusWriter remembers the status written through it and the route
// template the request matched (routeUnmatched until a route says).
type statusWriter struct {
	http.ResponseWriter
	code  int
	route string
	// detached: the stream pool took the connection over and observes
	// the request's latency when the stream ends.
	detached bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach Flush and deadlines.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Flush supports callers that type-assert http.Flusher directly.
func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) wroteHeader() bool { return w.code != 0 }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

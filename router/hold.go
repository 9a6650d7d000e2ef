package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// An ownership change is a pause, not an error (CONTRACT.md section 6). A
// request that enters this node and whose channel's owner cannot answer
// (unreachable until membership declares it dead, moved, busy handing the
// channel over, timed out) is held: it is routed again when the view
// changes, and after a backoff meanwhile for the failures no view change
// cures (a hand-off in progress, another node's view lagging behind), until
// it is served or Config.HoldTimeout passes. Consul does the same for an
// RPC that finds no leader (RPCHoldTimeout). Only the node the request
// entered holds it; a node it was forwarded to answers at once, and the
// entry node routes it again.

// hold is the holding policy of the requests entering this node.
type hold struct {
	timeout time.Duration // Config.HoldTimeout; negative: no hold
	backoff time.Duration // Config.RetryBackoff
	slots   chan struct{} // one per held request (Config.MaxHeld)
	serving func() bool   // Config.Serving
	views   *views
	closing <-chan struct{} // the router's end
	m       *metrics
}

func newHold(cfg Config, views *views, closing <-chan struct{}, m *metrics) *hold {
	return &hold{
		timeout: cfg.HoldTimeout,
		backoff: cfg.RetryBackoff,
		slots:   make(chan struct{}, cfg.MaxHeld),
		serving: cfg.Serving,
		views:   views,
		closing: closing,
		m:       m,
	}
}

// Outcomes of presence_held_requests_total.
const (
	heldServed    = "served"    // answered after waiting
	heldFailed    = "failed"    // an error waiting could not cure, after waiting
	heldExpired   = "expired"   // still failing when the hold ran out: 503
	heldFull      = "full"      // MaxHeld requests were waiting already: 503 at once
	heldNotReady  = "not_ready" // the node cannot serve (Config.Serving): 503 at once
	heldCancelled = "cancelled" // the caller left, or the router closed
)

// held runs attempt on share; at the entry node (hops 0) a failure that
// routing again may cure is held: attempt runs again on the share that
// failed whenever the view changes or a backoff passes, until it succeeds,
// fails otherwise, or the hold ends. The first attempt runs under ctx, the
// next ones under ctx bounded by the hold, so a request answers at most
// HoldTimeout after its first failure (plus the first attempt).
func held[S any](ctx context.Context, h *hold, hops int, share S, attempt func(context.Context, S) (S, error)) error {
	seen := h.views.Load()
	share, err := attempt(ctx, share)
	if err == nil {
		return nil
	}
	if hops != 0 || !retryable(ctx, err) || h.timeout < 0 {
		return finalError(ctx, err, hops)
	}
	if err := h.enter(err); err != nil {
		return err
	}
	outcome := heldExpired
	defer func() { h.leave(outcome) }()
	hctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	for n := 0; ; n++ {
		if werr := h.wait(hctx, seen, n); werr != nil {
			switch {
			case ctx.Err() != nil:
				outcome = heldCancelled
				return fmt.Errorf("router: request ended while held: %w", ctx.Err())
			case hctx.Err() == nil:
				outcome = heldCancelled
				return werr
			}
			return fmt.Errorf("%w: no answer from the channel's owner within the hold of %v: %w", presence.ErrUnavailable, h.timeout, err)
		}
		seen = h.views.Load()
		share, err = attempt(hctx, share)
		switch {
		case err == nil:
			outcome = heldServed
			return nil
		case ctx.Err() != nil:
			outcome = heldCancelled
			return fmt.Errorf("router: request ended while held: %w", ctx.Err())
		case !retryable(ctx, err):
			outcome = heldFailed
			return finalError(ctx, err, 0)
		case !h.canServe():
			outcome = heldNotReady
			return fmt.Errorf("%w: %w", presence.ErrUnavailable, err)
		}
	}
}

// enter admits a request to the hold after its first failure, err; it
// answers the error the request fails with at once when the node cannot
// serve or MaxHeld requests are held already.
func (h *hold) enter(err error) error {
	if !h.canServe() {
		h.m.held.WithLabelValues(heldNotReady).Inc()
		return fmt.Errorf("%w: this node is not serving: %w", presence.ErrUnavailable, err)
	}
	select {
	case h.slots <- struct{}{}:
		h.m.holding.Inc()
		return nil
	default:
		h.m.held.WithLabelValues(heldFull).Inc()
		return fmt.Errorf("%w: %d requests are held already: %w", presence.ErrUnavailable, cap(h.slots), err)
	}
}

// leave ends a held request with outcome.
func (h *hold) leave(outcome string) {
	<-h.slots
	h.m.holding.Dec()
	h.m.held.WithLabelValues(outcome).Inc()
}

// canServe reports whether holding can help: the node joined, is not
// leaving, and Config.Serving agrees.
func (h *hold) canServe() bool {
	v := h.views.Load()
	return v.joined && !v.draining && h.serving()
}

// wait pauses a held request until seen, the view its last attempt was
// routed by, is replaced, or the backoff of attempt n passes (wall time:
// it paces network calls); an error when ctx or the router ends first.
func (h *hold) wait(ctx context.Context, seen *view, n int) error {
	t := time.NewTimer(h.pause(n))
	defer t.Stop()
	select {
	case <-seen.next:
		return nil
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-h.closing:
		return fmt.Errorf("%w: router closed", presence.ErrUnavailable)
	}
}

// pause is the backoff before attempt n+1: RetryBackoff doubling, at most
// MaxRetryBackoff (or RetryBackoff, when that is longer).
func (h *hold) pause(n int) time.Duration {
	d := h.backoff << min(n, 20)
	if limit := max(MaxRetryBackoff, h.backoff); d > limit || d <= 0 {
		d = limit
	}
	return d
}

// retryable reports whether a failed attempt may succeed if routed again:
// the owner moved, was busy handing the channel over, could not be
// reached, or did not answer in time (a call's timeout, or a wait on the
// owner cut short, while the request itself, ctx, goes on).
func retryable(ctx context.Context, err error) bool {
	switch {
	case errors.Is(err, presence.ErrMoved), errors.Is(err, wire.ErrBusy), errors.Is(err, transport.ErrPeerUnavailable):
		return true
	case isContextErr(err):
		return ctx.Err() == nil
	}
	return false
}

// finalError turns the error a request ends with into the one its caller
// sees. A node a call was forwarded to answers presence.ErrMoved for any
// failure routing again may cure, its own time running out included: the
// entry node holds the request and routes it again (ErrMoved crosses the
// wire; an unreachable node or a timeout would not). At the entry node a
// channel that keeps moving, a busy or unreachable owner, or an error
// without meaning to the API becomes presence.ErrUnavailable (503). Other
// sentinels and the end of the request's own context stay.
func finalError(ctx context.Context, err error, hops int) error {
	if hops != 0 {
		if errors.Is(err, presence.ErrMoved) || !retryable(ctx, err) && !isContextErr(err) {
			return err
		}
		return fmt.Errorf("%w: %w", presence.ErrMoved, err)
	}
	switch {
	case ctx.Err() != nil:
		return err
	case retryable(ctx, err), !wire.IsSentinel(err) && !isContextErr(err):
		return fmt.Errorf("%w: %w", presence.ErrUnavailable, err)
	}
	return err
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// holdMetrics are the collectors of the hold.
func holdMetrics() (prometheus.Gauge, *prometheus.CounterVec) {
	holding := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "presence_held_requests",
		Help: "Requests entering this node held while their channels' owner could not answer (a view change in progress).",
	})
	held := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "presence_held_requests_total",
		Help: "Requests that met a failure routing again could cure, by how their hold ended: served, failed, expired, full, not_ready, cancelled.",
	}, []string{"outcome"})
	for _, o := range []string{heldServed, heldFailed, heldExpired, heldFull, heldNotReady, heldCancelled} {
		held.WithLabelValues(o)
	}
	return holding, held
}

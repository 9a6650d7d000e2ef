package router

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

// settlement counts the requests for a rebalance pass: wanted grows with
// every request, done records the last request a pass fully completed
// (equal: settled), attempted the last one a pass ran for, failures or not.
type settlement struct {
	kick      chan struct{} // buffered 1: the loop should run a pass
	wanted    atomic.Uint64
	done      atomic.Uint64
	attempted atomic.Uint64

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when done moves
}

func newSettlement() *settlement {
	return &settlement{kick: make(chan struct{}, 1), changed: make(chan struct{})}
}

// request asks the rebalance loop for a pass; settled is false until a
// pass started after this call completes without failures.
func (s *settlement) request() {
	s.wanted.Add(1)
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// settled reports whether every requested pass has completed.
func (s *settlement) settled() bool { return s.done.Load() == s.wanted.Load() }

// idle reports whether every requested pass has run, successful or not:
// what is left waits for the retry timer.
func (s *settlement) idle() bool { return s.attempted.Load() == s.wanted.Load() }

// next returns a channel closed at the next change of settled.
func (s *settlement) next() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.changed
}

// ran records a pass for the requests up to want; ok: it had no failures.
func (s *settlement) ran(want uint64, ok bool) {
	if ok {
		s.mu.Lock()
		if s.done.Load() < want {
			s.done.Store(want)
			close(s.changed)
			s.changed = make(chan struct{})
		}
		s.mu.Unlock()
	}
	s.attempted.Store(want)
}

// rebalanceLoop runs a pass on every request, and again every
// RebalanceRetry while pushes fail.
func (r *Router) rebalanceLoop() {
	var retry clock.Ticker
	defer func() {
		if retry != nil {
			retry.Stop()
		}
	}()
	for {
		var retryC <-chan time.Time
		if retry != nil {
			retryC = retry.C()
		}
		select {
		case <-r.settling.kick:
		case <-retryC:
		case <-r.ctx.Done():
			return
		}
		want := r.settling.wanted.Load()
		failed := r.rebalance()
		switch {
		case failed > 0 && retry == nil:
			retry = r.cfg.Clock.NewTicker(r.cfg.RebalanceRetry)
		case failed == 0 && retry != nil:
			retry.Stop()
			retry = nil
		}
		r.settling.ran(want, failed == 0)
	}
}

// rebalance pushes every channel held here that the current ring gives to
// another node, a few at a time, and returns how many pushes failed. A pass
// stops early when the view changes, since the next pass uses the new one.
func (r *Router) rebalance() int {
	v := r.view.Load()
	cands := r.engine.Channels()
	cands = append(cands, r.routes.toRebalance()...)
	slices.Sort(cands)
	cands = slices.Compact(cands)
	var failed atomic.Int64
	sem := make(chan struct{}, r.cfg.HandoffConcurrency)
	var wg sync.WaitGroup
	for _, ch := range cands {
		owner := v.Owner(ch)
		if owner == r.self.Name {
			continue
		}
		if r.view.Load() != v || r.ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			err := fmt.Errorf("%w: no node to hand %s to", presence.ErrUnavailable, ch)
			if to, ok := v.Member(owner); ok {
				err = r.pushTo(ch, to)
			}
			if err != nil {
				failed.Add(1)
				r.log.Info("hand-off failed; retrying later", "channel", ch, "err", err)
			}
		})
	}
	wg.Wait()
	return int(failed.Load())
}

// sweepLoop periodically forgets the routing entries of channels that
// passivated and the tombstones the view made useless.
func (r *Router) sweepLoop() {
	t := r.cfg.Clock.NewTicker(r.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C():
		case <-r.ctx.Done():
			return
		}
		actors := make(map[string]bool)
		for _, ch := range r.engine.Channels() {
			actors[ch] = true
		}
		r.routes.sweepIdle(actors)
		r.routes.sweepTombstones(r.view.Load(), r.cfg.Clock.Now().UnixNano())
	}
}

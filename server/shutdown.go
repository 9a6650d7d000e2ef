package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"
)

// subscribePath is the SSE endpoint; the only long-lived requests.
const subscribePath = "/presence/subscribe"

// shutdownReserve is kept from the shutdown budget for what follows the
// hand-off: leadership transfer, the leave broadcast, closing everything.
const shutdownReserve = 4 * time.Second

// guardStreams refuses new SSE streams once the node is leaving, and ties
// every stream to s.streams so that shutdown can end the streams without
// cancelling ordinary requests still in flight.
func (s *Server) guardStreams(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != subscribePath {
			next.ServeHTTP(w, r)
			return
		}
		if s.draining.Load() {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte(`{"errors":["node is shutting down"]}` + "\n"))
			return
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		stop := context.AfterFunc(s.streams, cancel)
		defer stop()
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

// Shutdown leaves the cluster gracefully: no new streams, every owned
// channel handed to its next owner, Raft leadership transferred, memberlist
// left; then streams end and HTTP, transport, engine and Raft close. It
// keeps within ctx (cmd/node gives it DefaultShutdownTimeout). Safe to call
// more than once, and after Kill.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.draining.Store(true)
		if s.membership() != nil {
			s.handOff(ctx)
		}
		s.closeErr = s.stop(ctx, false)
	})
	return s.closeErr
}

// handOff is the graceful part of Shutdown. Its failures are logged, not
// returned: the node stops anyway, and the others recover as from a crash.
func (s *Server) handOff(ctx context.Context) {
	s.pilot.SetLeaving() // no more servers added or promoted by this node
	// Announced alongside the hand-off (the broadcast takes a gossip round
	// or two), which does not depend on it: the others give this node no
	// channel from then on, and nodes that all shut down at once stop
	// waiting for each other.
	announced := make(chan struct{})
	go func() {
		defer close(announced)
		if err := s.membership().AnnounceDraining(s.timings.leave); err != nil {
			s.log.Warn("draining not announced", "err", err)
		}
	}()
	if s.othersAlive() {
		s.drain(ctx)
	} else {
		s.log.Info("no other node alive: channels not handed off")
	}
	if err := s.pilot.HandOver(ctx); err != nil {
		s.log.Warn("raft leadership not transferred", "err", err)
	}
	<-announced
	leave := s.timings.leave
	if deadline, ok := ctx.Deadline(); ok {
		leave = max(min(leave, time.Until(deadline)/2), time.Millisecond)
	}
	if s.members.othersDraining() {
		// Nobody stays to learn of the departure, and the broadcast cannot
		// finish once the others stopped gossiping: do not wait it out.
		leave = min(leave, leaveWhenAllStop)
	}
	if err := s.membership().Leave(leave); err != nil {
		s.log.Warn("membership leave not fully announced", "err", err)
	}
	s.awaitRaftRemoval(ctx)
}

// drain hands every channel over within ctx's budget, and gives up as soon
// as every other member is draining too (the whole cluster shutting down):
// they refuse hand-offs, and waiting would only delay every node's exit.
func (s *Server) drain(ctx context.Context) {
	drainCtx, cancel := budget(ctx, shutdownReserve)
	defer cancel()
	var everyoneDraining atomic.Bool
	go func() {
		tick := time.NewTicker(drainPollInterval)
		defer tick.Stop()
		for {
			select {
			case <-drainCtx.Done():
				return
			case <-tick.C:
				if s.members.othersDraining() {
					everyoneDraining.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	start := time.Now()
	err := s.router.Drain(drainCtx)
	switch {
	case err == nil:
		s.log.Info("channels handed off", "took", time.Since(start).Round(time.Millisecond))
	case everyoneDraining.Load():
		s.log.Info("every other node is shutting down too: channels not handed off",
			"after", time.Since(start).Round(time.Millisecond))
	default:
		s.log.Warn("channels not all handed off", "err", err)
	}
}

// drainPollInterval is how often a draining node checks whether every other
// member drains too.
const drainPollInterval = 50 * time.Millisecond

// leaveWhenAllStop bounds the wait for the leave broadcast when every other
// member is shutting down too.
const leaveWhenAllStop = 300 * time.Millisecond

// othersAlive reports whether another member could take channels over.
func (s *Server) othersAlive() bool {
	for _, m := range s.members.alive() {
		if m.Name != s.cfg.Name {
			return true
		}
	}
	return false
}

// budget derives a context that ends reserve before ctx's deadline, but
// leaves at least half of what remains.
func budget(ctx context.Context, reserve time.Duration) (context.Context, context.CancelFunc) {
	deadline, ok := ctx.Deadline()
	if !ok {
		return context.WithTimeout(ctx, DefaultShutdownTimeout-reserve)
	}
	left := time.Until(deadline)
	return context.WithTimeout(ctx, max(left-reserve, left/2))
}

// Kill stops the node abruptly, as a crash would, for tests: no hand-off,
// no leave, no leadership transfer. Gossip stops, listeners and
// connections close, Raft shuts down. Safe to call more than once.
func (s *Server) Kill() {
	s.closeOnce.Do(func() {
		s.draining.Store(true)
		ctx, cancel := context.WithTimeout(context.Background(), DefaultShutdownTimeout)
		defer cancel()
		s.closeErr = s.stop(ctx, true)
	})
}

// stop ends the loops, gossip and HTTP, then the backends. abrupt closes
// HTTP connections at once instead of letting requests finish.
func (s *Server) stop(ctx context.Context, abrupt bool) error {
	var errs []error
	s.cancel() // after this, gossip cannot start any more
	if ml := s.membership(); ml != nil {
		// Without a prior Leave this is a silent stop: the others declare
		// this node dead.
		if err := ml.Shutdown(); err != nil {
			errs = append(errs, fmt.Errorf("membership: %w", err))
		}
	}
	s.endStreams()
	if s.api != nil {
		// Streams of hijacked connections, which httpSrv does not know.
		s.api.Close()
	}
	if s.httpSrv != nil {
		var err error
		if abrupt {
			err = s.httpSrv.Close()
		} else if err = s.httpSrv.Shutdown(ctx); err != nil {
			err = errors.Join(err, s.httpSrv.Close())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
		<-s.serveDone
	}
	if err := s.waitLoops(ctx); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.closeBackends(ctx))
	return errors.Join(errs...)
}

// waitLoops waits for the background goroutines, which all watch s.ctx,
// but not past ctx: a join stuck dialling an unresponsive seed must not
// hold the process beyond its shutdown budget.
func (s *Server) waitLoops(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("background loops still running: %w", ctx.Err())
	}
}

// closeBackends closes what New opened, in reverse order of use: no more
// node-to-node calls, then the router and its subscriptions, the webhook
// deliveries, the engine's actors and Raft. Every component may be missing
// after a failed New.
func (s *Server) closeBackends(ctx context.Context) error {
	var errs []error
	if s.transport != nil {
		if err := s.transport.Close(); err != nil {
			errs = append(errs, fmt.Errorf("transport: %w", err))
		}
	}
	if s.router != nil {
		s.router.Close()
	}
	if s.webhooks != nil {
		s.webhooks.Close()
	}
	if s.engine != nil {
		if err := s.engine.Close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("engine: %w", err))
		}
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			errs = append(errs, fmt.Errorf("raft: %w", err))
		}
	}
	return errors.Join(errs...)
}

package actor

import (
	"time"

	"github.com/presencehq/presence/clock"
)

// janitor periodically asks idle actors to passivate. It only posts a
// request; the actor decides on its own goroutine, where it can consult the
// behaviour and check its mailbox under the lock Tell takes.
func (s *System[K, M]) janitor(t clock.Ticker) {
	defer s.wg.Done()
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C():
			s.sweep(s.opts.Clock.Now())
			s.sweeps.Add(1)
		}
	}
}

// sweep stamps actors that were active since the last sweep and asks the
// others, once idle for IdleAfter, to passivate. Stamping with the sweep's
// time (never earlier than the activity) means an actor never passivates early.
func (s *System[K, M]) sweep(now time.Time) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for _, a := range sh.actors {
			if a.active.Load() && a.active.Swap(false) {
				a.idleSince = now
				continue
			}
			a.mb.shrinkIfIdle()
			if now.Sub(a.idleSince) >= s.opts.IdleAfter && a.mb.request(sysPassivate) {
				a.start()
			}
		}
		sh.mu.RUnlock()
	}
}

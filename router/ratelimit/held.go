package ratelimit

import (
	"math"
	"sync"
	"time"

	"github.com/presencehq/presence/router/wire"
)

// rateWindow is the time constant of the estimate of a user's call rate
// at a node, which sizes borrows: about the calls of the last second.
const rateWindow = time.Second

// holding is what a node holds of a user's bucket kept by another node.
type holding struct {
	owner  string // the keeper the tokens came from
	tokens int
	// expires is the lease of the earliest of the tokens held (zero when
	// none): the keeper counts them as out until then, no longer.
	expires time.Time
	// spent counts the tokens spent since the keeper was last told, the
	// last of them at spentAt.
	spent   int
	spentAt time.Time
	// recent counts the calls here, each decaying over rateWindow; last is
	// the latest call.
	recent float64
	last   time.Time
	// emptyUntil: the keeper said its bucket holds no token before then.
	emptyUntil time.Time
	borrow     *borrowing // in flight; nil if none
}

// borrowing is a borrow in flight: done closes when it has settled.
type borrowing struct {
	sl       *holding
	user     string
	to       wire.Member
	want     int
	spent    int
	spentAgo time.Duration
	waiting  bool
	sent     time.Time
	done     chan struct{}
}

// step is what a call entering a node that does not keep the user's
// bucket does next.
type step int

const (
	stepAllow    step = iota // a token was here: allowed
	stepReject               // the keeper has none yet: refused
	stepWait                 // a borrow is in flight: wait for it, decide again
	stepBorrow               // borrow for this call, then decide again
	stepFallback             // the keeper is unreachable: this node decides alone
)

// decision is a step and what it needs: the wait of a refusal, the borrow
// to wait for or to run (for stepAllow and stepFallback, one to start in
// the background, if any).
type decision struct {
	step   step
	wait   time.Duration
	borrow *borrowing
}

// holdings are the tokens this node borrowed, by user, and the keepers it
// could not reach.
type holdings struct {
	lim Limits
	t   table[holding]

	// down: keepers whose last borrow failed, and when to try again.
	// Locked after a shard's lock, never before.
	downMu sync.Mutex
	down   map[string]time.Time
}

func (s *holdings) init(lim Limits) {
	s.lim = lim
	s.t.init(lim.MaxUsers)
	s.down = make(map[string]time.Time)
}

// decide takes the next step of a call for user, whose bucket owner
// keeps; first is true for the call's first step (it counts the call).
func (s *holdings) decide(user string, owner wire.Member, now time.Time, first bool) decision {
	sh := s.t.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sl := sh.get(user, newHolding, nil)
	if first {
		sl.note(now)
	}
	sl.expire(now)
	if sl.tokens > 0 {
		sl.spend(now)
		return decision{step: stepAllow, borrow: s.refillAhead(sl, user, owner, now)}
	}
	if probe, down := s.isDown(owner.Name, now, sl.borrow == nil); down {
		d := decision{step: stepFallback}
		if probe {
			// Probe the keeper in the background; calls keep deciding
			// here until it answers.
			d.borrow = s.start(sl, user, owner, now, false)
		}
		return d
	}
	if sl.borrow != nil {
		return decision{step: stepWait, borrow: sl.borrow}
	}
	if sl.owner == owner.Name && now.Before(sl.emptyUntil) {
		return decision{step: stepReject, wait: sl.emptyUntil.Sub(now)}
	}
	return decision{step: stepBorrow, borrow: s.start(sl, user, owner, now, true)}
}

// isDown reports whether keeper failed its last borrow, and whether it is
// time to probe it again (only when canProbe); a probe moves the next try
// OwnerRetry later.
func (s *holdings) isDown(keeper string, now time.Time, canProbe bool) (probe, down bool) {
	s.downMu.Lock()
	defer s.downMu.Unlock()
	retry, down := s.down[keeper]
	if down && canProbe && !now.Before(retry) {
		s.down[keeper] = now.Add(s.lim.OwnerRetry)
		return true, true
	}
	return false, down
}

// spendLeftover spends a token borrowed before this node became the
// user's keeper, if one is left.
func (s *holdings) spendLeftover(user string, now time.Time) bool {
	sh := s.t.shard(user)
	if sh.find(user) == nil {
		// The usual case, on every call of a user kept here: no lock
		// taken alone.
		return false
	}
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sl, ok := sh.m[user]
	if !ok {
		return false
	}
	sl.expire(now)
	if sl.tokens == 0 {
		return false
	}
	sl.spend(now)
	return true
}

// refillAhead starts a borrow when the tokens left would not last until
// the user's next calls here, so that they do not wait for it.
func (s *holdings) refillAhead(sl *holding, user string, owner wire.Member, now time.Time) *borrowing {
	if sl.borrow != nil || sl.owner != owner.Name || now.Before(sl.emptyUntil) || sl.tokens*2 >= s.want(sl) {
		return nil
	}
	if _, down := s.isDown(owner.Name, now, false); down {
		return nil
	}
	return s.start(sl, user, owner, now, false)
}

// start records a borrow from owner for sl, carrying the report of the
// tokens spent since the last one.
func (s *holdings) start(sl *holding, user string, owner wire.Member, now time.Time, waiting bool) *borrowing {
	if sl.owner != owner.Name {
		// The ring moved the bucket: what the old keeper knew is moot.
		sl.owner, sl.spent, sl.emptyUntil = owner.Name, 0, time.Time{}
	}
	b := &borrowing{
		sl: sl, user: user, to: owner, want: max(s.want(sl)-sl.tokens, 1), waiting: waiting, sent: now,
		done: make(chan struct{}),
	}
	b.spent, b.spentAgo = sl.takeReport(now)
	sl.borrow = b
	return b
}

// settled is what a borrow's end changed about its keeper.
type settled int

const (
	keeperSame        settled = iota
	keeperUnreachable         // it was reachable; this borrow failed
	keeperReachable           // it was down; this borrow reached it
)

// settle ends b with the keeper's answer (or err) and wakes the calls
// waiting for it. Tokens granted to a holding evicted meanwhile are lost,
// which only ever errs on the side of refusing.
func (s *holdings) settle(b *borrowing, ans wire.LimitAnswer, err error, now time.Time) settled {
	sh := s.t.shard(b.user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	defer close(b.done)
	sl := b.sl
	current := sh.m[b.user] == sl && sl.borrow == b
	if current {
		sl.borrow = nil
	}
	changed := s.markKeeper(b.to.Name, err == nil, now)
	if err == nil && current && sl.owner == b.to.Name {
		if ans.Tokens > 0 {
			if sl.tokens == 0 {
				sl.expires = b.sent.Add(s.lim.Lease)
			}
			sl.tokens += ans.Tokens
		}
		sl.emptyUntil = time.Time{}
		if ans.Wait > 0 {
			sl.emptyUntil = now.Add(ans.Wait)
		}
	}
	return changed
}

// markKeeper records whether a borrow reached keeper.
func (s *holdings) markKeeper(keeper string, reached bool, now time.Time) settled {
	s.downMu.Lock()
	defer s.downMu.Unlock()
	_, wasDown := s.down[keeper]
	switch {
	case !reached:
		s.down[keeper] = now.Add(s.lim.OwnerRetry)
		if !wasDown {
			return keeperUnreachable
		}
	case wasDown:
		delete(s.down, keeper)
		return keeperReachable
	}
	return keeperSame
}

// giveBack answers a recall from keeper: every token of users it lent
// leaves, with the report of those spent.
func (s *holdings) giveBack(keeper string, users []wire.LimitEntry, now time.Time) []wire.LimitAnswer {
	out := make([]wire.LimitAnswer, len(users))
	for i, u := range users {
		sh := s.t.shard(u.User)
		sh.mu.Lock()
		if sl, ok := sh.m[u.User]; ok && sl.owner == keeper {
			sl.expire(now)
			out[i].Tokens = sl.tokens
			sl.tokens, sl.expires = 0, time.Time{}
			out[i].Spent, out[i].SpentAgo = sl.takeReport(now)
		}
		sh.mu.Unlock()
	}
	return out
}

// sweep gives back, by keeper, the tokens whose lease is about to end and
// those beyond the one kept for the next call of a user idle here, with
// the reports of tokens spent; it drops idle entries with nothing left
// and the marks of keepers that left the view.
func (s *holdings) sweep(now time.Time, v View) map[string][]wire.LimitEntry {
	out := make(map[string][]wire.LimitEntry)
	s.t.each(func(user string, sl *holding) bool {
		if sl.borrow != nil {
			return true
		}
		sl.expire(now)
		idle := now.Sub(sl.last) >= s.lim.Idle
		back := 0
		switch {
		case sl.tokens > 0 && !now.Before(sl.expires.Add(-2*s.lim.SweepInterval)):
			back = sl.tokens // a later sweep might come too late
		case idle && sl.tokens > 1:
			back = sl.tokens - 1
		}
		if back > 0 || (idle && sl.spent > 0) {
			e := wire.LimitEntry{User: user, Tokens: back}
			e.Spent, e.SpentAgo = sl.takeReport(now)
			out[sl.owner] = append(out[sl.owner], e)
			if sl.tokens -= back; sl.tokens == 0 {
				sl.expires = time.Time{}
			}
		}
		return !idle || sl.tokens > 0 || now.Before(sl.emptyUntil)
	})
	s.downMu.Lock()
	for name := range s.down {
		if !isMember(v, name) {
			delete(s.down, name)
		}
	}
	s.downMu.Unlock()
	return out
}

func (s *holdings) len() int { return s.t.len() }

func newHolding() *holding { return &holding{} }

// want is how many tokens to hold for user here: about a second of calls
// at the recent rate, at least one, at most MaxBorrow.
func (s *holdings) want(sl *holding) int {
	return min(max(int(math.Ceil(sl.recent)), 1), s.lim.MaxBorrow)
}

// note counts a call.
func (sl *holding) note(now time.Time) {
	if d := now.Sub(sl.last); d > 0 && !sl.last.IsZero() {
		sl.recent *= math.Exp(-d.Seconds() / rateWindow.Seconds())
	}
	sl.recent++
	sl.last = now
}

// expire drops tokens whose lease ended: the keeper no longer counts them
// as out.
func (sl *holding) expire(now time.Time) {
	if sl.tokens > 0 && !now.Before(sl.expires) {
		sl.tokens, sl.expires = 0, time.Time{}
	}
}

// spend uses one token.
func (sl *holding) spend(now time.Time) {
	sl.tokens--
	sl.spent++
	sl.spentAt = now
	if sl.tokens == 0 {
		sl.expires = time.Time{}
	}
}

// takeReport returns the tokens spent since the last report and how long
// ago the last of them was, and starts a new count.
func (sl *holding) takeReport(now time.Time) (int, time.Duration) {
	n := sl.spent
	if n == 0 {
		return 0, 0
	}
	sl.spent = 0
	return n, max(now.Sub(sl.spentAt), 0)
}

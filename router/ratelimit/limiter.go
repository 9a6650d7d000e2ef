package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
	"github.com/presencehq/presence/tokenbucket"
)

// KeyPrefix makes the ring key of a user's bucket: KeyPrefix + user id.
// Channel names start with "/", so no channel shares a key with a user.
const KeyPrefix = "user:"

// maxSteps bounds the borrows and waits of one call: past them, other
// calls of the same user here took every token borrowed for it.
const maxSteps = 4

// errClosed settles the borrows that could not start because the router
// is closing.
var errClosed = errors.New("ratelimit: closing")

// Limiter is the cluster-wide rate limit of one node: the buckets of the
// users it keeps, the tokens it borrowed of the others, and its own
// buckets for when a keeper cannot be reached. See the package
// documentation.
type Limiter struct {
	cfg      Config
	rate     tokenbucket.Rate
	accounts accounts
	held     holdings
	fallback *tokenbucket.Limiter
	m        *metrics
}

// New returns a Limiter; Run sweeps it and Handle serves the calls of the
// other nodes (wire.MethodLimit).
func New(cfg Config) (*Limiter, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	rate := tokenbucket.Rate{Burst: cfg.Burst, PerSecond: cfg.PerSecond}
	fallback, err := tokenbucket.NewLimiter(cfg.Clock, rate, cfg.MaxUsers)
	if err != nil {
		return nil, err
	}
	l := &Limiter{cfg: cfg, rate: rate, fallback: fallback}
	l.accounts.init(cfg.Limits)
	l.held.init(cfg.Limits)
	l.m = newMetrics(cfg.Registry, l.accounts.len, l.held.len, fallback.Len)
	return l, nil
}

// Allow takes one token of user's bucket, wherever the ring keeps it, or
// refuses without taking anything and says how long until the next token.
// It never fails: when the keeper cannot be reached, this node decides
// with a bucket of its own. memo is the caller's memo of user (nil: none):
// on the keeper it remembers the user's account.
func (l *Limiter) Allow(ctx context.Context, user string, memo *tokenbucket.Memo) (bool, time.Duration) {
	v := l.cfg.View()
	name := v.Owner(KeyPrefix + user)
	now := l.cfg.Clock.Now()
	if name == l.cfg.Self.Name {
		return l.allowHere(ctx, user, now, v, memo)
	}
	keeper, ok := v.Member(name)
	if !ok { // no ring: every member is leaving
		return l.allowAlone(ctx, user)
	}
	return l.allowBorrowed(ctx, user, keeper, now)
}

// allowHere decides a call of a user whose bucket is here (after the
// tokens borrowed before this node became the keeper, if any are left).
func (l *Limiter) allowHere(ctx context.Context, user string, now time.Time, v View, memo *tokenbucket.Memo) (bool, time.Duration) {
	if l.held.spendLeftover(user, now) {
		l.m.decided(pathLease, true)
		return true, 0
	}
	ok, wait, recall := l.accounts.take(user, now, v, memo)
	if !ok && len(recall) > 0 {
		l.recall(ctx, user, recall)
		ok, wait, _ = l.accounts.take(user, l.cfg.Clock.Now(), v, memo)
	}
	l.m.decided(pathKeeper, ok)
	return ok, wait
}

// allowBorrowed decides a call of a user whose bucket keeper keeps: with
// a token borrowed before when there is one (no network), else after
// waiting for a borrow.
func (l *Limiter) allowBorrowed(ctx context.Context, user string, keeper wire.Member, now time.Time) (bool, time.Duration) {
	path := pathLease
	for n := range maxSteps {
		d := l.held.decide(user, keeper, now, n == 0)
		switch d.step {
		case stepAllow:
			l.startBorrow(d.borrow)
			l.m.decided(path, true)
			return true, 0
		case stepReject:
			l.m.decided(path, false)
			return false, d.wait
		case stepFallback:
			l.startBorrow(d.borrow)
			return l.allowAlone(ctx, user)
		case stepBorrow:
			l.startBorrow(d.borrow)
		}
		select {
		case <-d.borrow.done:
		case <-ctx.Done():
			// The caller left; the answer only needs to be cheap.
			return l.allowAlone(ctx, user)
		}
		path = pathBorrow
		now = l.cfg.Clock.Now()
	}
	l.m.decided(pathBorrow, false)
	return false, l.rate.Wait(0)
}

// allowAlone decides with this node's own bucket of user.
func (l *Limiter) allowAlone(ctx context.Context, user string) (bool, time.Duration) {
	ok, wait := l.fallback.Allow(ctx, user, nil)
	l.m.decided(pathFallback, ok)
	return ok, wait
}

// startBorrow runs b in the background (nil: nothing to do).
func (l *Limiter) startBorrow(b *borrowing) {
	if b != nil && !l.cfg.Go(func() { l.borrow(b) }) {
		l.held.settle(b, wire.LimitAnswer{}, errClosed, l.cfg.Clock.Now())
	}
}

// borrow asks b's keeper for tokens and settles b with the answer.
func (l *Limiter) borrow(b *borrowing) {
	ctx, cancel := context.WithTimeout(l.cfg.Ctx, l.cfg.BorrowTimeout)
	defer cancel()
	req := wire.LimitRequest{Op: wire.LimitBorrow, From: l.cfg.Self, Users: []wire.LimitEntry{{
		User: b.user, Tokens: b.want, Spent: b.spent, SpentAgo: b.spentAgo, Waiting: b.waiting,
	}}}
	body, err := l.cfg.Call(ctx, b.to, wire.MethodLimit, req.Encode)
	var ans wire.LimitAnswer
	if err == nil {
		var reply wire.LimitReply
		if reply, err = wire.DecodeLimitReply(body); err == nil && len(reply.Users) != 1 {
			err = fmt.Errorf("%w: %d answers to one borrow", wire.ErrMalformed, len(reply.Users))
		} else if err == nil {
			ans = reply.Users[0]
		}
	}
	switch {
	case err != nil:
		l.m.borrowFailed.Inc()
	case ans.Tokens > 0:
		l.m.borrowGranted.Inc()
		l.m.borrowed.Add(float64(ans.Tokens))
	default:
		l.m.borrowEmpty.Inc()
	}
	switch l.held.settle(b, ans, err, l.cfg.Clock.Now()) {
	case keeperUnreachable:
		l.cfg.Logger.Warn("rate limit keeper unreachable: this node limits the users it keeps on its own",
			"keeper", b.to.Name, "retry_in", l.cfg.OwnerRetry, "err", err)
	case keeperReachable:
		l.cfg.Logger.Info("rate limit keeper reachable again", "keeper", b.to.Name)
	}
}

// recall asks the nodes of to, in parallel, for the tokens of user they
// hold, takes back what they give and returns when all answered or
// BorrowTimeout/2 passed. It runs only when a call is about to be
// refused, at most once per user and SweepInterval.
func (l *Limiter) recall(ctx context.Context, user string, to []wire.Member) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.BorrowTimeout/2)
	defer cancel()
	var wg sync.WaitGroup
	for _, node := range to {
		wg.Add(1)
		if !l.cfg.Go(func() {
			defer wg.Done()
			l.recallFrom(ctx, user, node)
		}) {
			wg.Done()
		}
	}
	wg.Wait()
}

// recallFrom asks node for the tokens of user it holds.
func (l *Limiter) recallFrom(ctx context.Context, user string, node wire.Member) {
	l.m.recalls.Inc()
	req := wire.LimitRequest{Op: wire.LimitRecall, From: l.cfg.Self, Users: []wire.LimitEntry{{User: user}}}
	body, err := l.cfg.Call(ctx, node, wire.MethodLimit, req.Encode)
	if err != nil {
		l.cfg.Logger.Debug("rate limit recall failed", "node", node.Name, "err", err)
		return
	}
	reply, err := wire.DecodeLimitReply(body)
	if err == nil && len(reply.Users) != 1 {
		err = fmt.Errorf("%w: %d answers to one recall", wire.ErrMalformed, len(reply.Users))
	}
	if err != nil {
		l.cfg.Logger.Warn("rate limit recall answered with a malformed reply", "node", node.Name, "err", err)
		return
	}
	a := reply.Users[0]
	l.accounts.giveBack(node.Name, user, a.Tokens, a.Spent, a.SpentAgo, l.cfg.Clock.Now(), l.cfg.View())
}

// Handle serves a MethodLimit call of another node.
func (l *Limiter) Handle(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeLimitRequest(body)
	if err != nil {
		return nil, err
	}
	if q.From.Name == "" {
		return nil, fmt.Errorf("%w: rate limit call without its sender", presence.ErrInvalid)
	}
	now := l.cfg.Clock.Now()
	v := l.cfg.View()
	switch q.Op {
	case wire.LimitBorrow:
		reply := wire.LimitReply{Users: make([]wire.LimitAnswer, len(q.Users))}
		for i, e := range q.Users {
			ans, recall := l.accounts.lend(q.From, e, now, v)
			if len(recall) > 0 {
				// A waiting call would be refused while other nodes may
				// sit on tokens: get them back, then lend again (the
				// spent report is already counted).
				l.recall(ctx, e.User, recall)
				e.Spent, e.SpentAgo = 0, 0
				ans, _ = l.accounts.lend(q.From, e, l.cfg.Clock.Now(), v)
			}
			reply.Users[i] = ans
		}
		return wire.Marshal(reply.Encode), nil
	case wire.LimitReturn:
		for _, e := range q.Users {
			l.accounts.giveBack(q.From.Name, e.User, e.Tokens, e.Spent, e.SpentAgo, now, v)
		}
		return nil, nil
	default: // wire.LimitRecall; the decoder refuses other ops
		reply := wire.LimitReply{Users: l.held.giveBack(q.From.Name, q.Users, now)}
		for _, a := range reply.Users {
			l.m.returned.Add(float64(a.Tokens))
		}
		return wire.Marshal(reply.Encode), nil
	}
}

// Run sweeps the tables every SweepInterval until Ctx ends: tokens go
// back to their keepers, full buckets and idle entries are dropped.
func (l *Limiter) Run() {
	t := l.cfg.Clock.NewTicker(l.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-l.cfg.Ctx.Done():
			return
		case <-t.C():
			l.Sweep()
		}
	}
}

// Sweep runs one sweep now (Run calls it; tests may too).
func (l *Limiter) Sweep() {
	now := l.cfg.Clock.Now()
	v := l.cfg.View()
	for keeper, entries := range l.held.sweep(now, v) {
		to, ok := v.Member(keeper)
		if !ok {
			continue // gone: its buckets are gone with it
		}
		for _, e := range entries {
			l.m.returned.Add(float64(e.Tokens))
		}
		l.cfg.Go(func() {
			ctx, cancel := context.WithTimeout(l.cfg.Ctx, l.cfg.BorrowTimeout)
			defer cancel()
			req := wire.LimitRequest{Op: wire.LimitReturn, From: l.cfg.Self, Users: entries}
			if _, err := l.cfg.Call(ctx, to, wire.MethodLimit, req.Encode); err != nil {
				l.cfg.Logger.Debug("rate limit tokens not given back", "keeper", keeper, "users", len(entries), "err", err)
			}
		})
	}
	l.accounts.sweep(now, v)
}

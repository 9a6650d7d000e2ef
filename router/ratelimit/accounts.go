package ratelimit

import (
	"sync"
	"time"

	"github.com/presencehq/presence/router/wire"
	"github.com/presencehq/presence/tokenbucket"
)

// account is a user's bucket on its keeper. Tokens lent to other nodes
// count against the bucket's capacity until they come back, are reported
// spent or their lease ends: the tokens here and the tokens out never
// exceed Burst, so the cluster never spends a token a single bucket would
// not have held.
type account struct {
	// mu guards the account: calls of one user wait for each other, not
	// for the other users of its shard (the shard's lock is shared by
	// lookups, taken alone only to add or drop accounts). dropped: the
	// account left the table (swept or evicted), and a call that found it
	// before must look its user up again.
	mu      sync.Mutex
	dropped bool

	bucket tokenbucket.Bucket
	// The last stretch of time the bucket spent at its capacity (fullTo is
	// zero while it lasts) and how much of the refill the capacity held
	// back there was credited since: a loan counted tokens a node had
	// already spent, and the report that says so gets that refill back.
	fullFrom, fullTo time.Time
	credited         float64

	loans      []loan
	localAt    time.Time // the last call decided here
	recalledAt time.Time // the last recall of the tokens out
}

// loan is what a node borrowed of an account.
type loan struct {
	node wire.Member
	// tokens is at least what the node holds: grants add to it, tokens
	// given back or reported spent are taken off.
	tokens int
	until  time.Time // the node holds none of the tokens after this (lease)
	seen   time.Time // the node's last borrow
}

// accounts are the buckets this node keeps, by user.
type accounts struct {
	lim  Limits
	rate tokenbucket.Rate
	t    table[account]
}

func (a *accounts) init(lim Limits) {
	a.lim = lim
	a.rate = tokenbucket.Rate{Burst: lim.Burst, PerSecond: lim.PerSecond}
	a.t.init(lim.MaxUsers)
}

// isMember reports whether the node called name is in v.
func isMember(v View, name string) bool {
	_, ok := v.Member(name)
	return ok
}

// take decides a call entering the keeper: one token of the bucket, or
// the wait for the next one and the nodes whose tokens to recall. memo is
// the caller's memo of user (nil: none).
func (a *accounts) take(user string, now time.Time, v View, memo *tokenbucket.Memo) (ok bool, wait time.Duration, recall []wire.Member) {
	acc := a.acquireMemo(user, now, memo)
	defer acc.mu.Unlock()
	a.advance(acc, now, v)
	acc.localAt = now
	if acc.bucket.Take(1) {
		a.mark(acc, now)
		return true, 0, nil
	}
	return false, a.rate.Wait(acc.bucket.Tokens), a.recallTargets(acc, now, "")
}

// lend answers one user's borrow from node: a fair share of the tokens
// here (at least one for a waiting call while there is one), and when
// nothing is left, the wait for the next token and the other nodes whose
// tokens to recall.
func (a *accounts) lend(from wire.Member, e wire.LimitEntry, now time.Time, v View) (wire.LimitAnswer, []wire.Member) {
	acc := a.acquire(e.User, now, true)
	defer acc.mu.Unlock()
	a.advance(acc, now, v)
	ln := acc.loanTo(from)
	a.creditSpent(acc, ln, e.Spent, e.SpentAgo, now)
	ln.seen = now
	share := int(acc.bucket.Tokens) / acc.parties(now, a.lim.Idle)
	grant := min(e.Tokens, a.lim.MaxBorrow, share)
	if e.Waiting && grant == 0 && e.Tokens > 0 && acc.bucket.Tokens >= 1 {
		grant = 1
	}
	if grant > 0 {
		acc.bucket.Take(grant)
		ln.tokens += grant
		ln.until = now.Add(a.lim.Lease)
	}
	a.mark(acc, now)
	ans := wire.LimitAnswer{Tokens: grant}
	refused := e.Waiting && grant == 0
	// "Empty until" makes the node refuse calls without asking again:
	// said only when no other node holds tokens a recall could bring
	// back, or to a refused call, which needs a wait to answer.
	if refused || acc.outExcept(from.Name) == 0 {
		ans.Wait = a.rate.Wait(acc.bucket.Tokens)
	}
	var recall []wire.Member
	if refused {
		recall = a.recallTargets(acc, now, from.Name)
	}
	return ans, recall
}

// giveBack takes back tokens node did not spend and its report of those
// it spent (a return, or the answer to a recall).
func (a *accounts) giveBack(node, user string, tokens, spent int, spentAgo time.Duration, now time.Time, v View) {
	acc := a.acquire(user, now, false)
	if acc == nil {
		return // a bucket dropped as full: nothing to add to
	}
	defer acc.mu.Unlock()
	a.advance(acc, now, v)
	if ln := acc.loanOf(node); ln != nil {
		ln.tokens -= min(tokens, ln.tokens)
		a.creditSpent(acc, ln, spent, spentAgo, now)
	}
	acc.bucket.Give(tokens, a.capacity(acc))
	a.mark(acc, now)
}

// sweep drops the accounts that are the same as a new one: full, nothing
// lent, and no call decided here for Idle. A user calling every second
// or so (a bucket full again half a second after a call) would otherwise
// lose the account at every sweep and make a new one at its next call:
// an allocation, and the shard's lock taken alone, on every other call.
func (a *accounts) sweep(now time.Time, v View) {
	a.t.each(func(_ string, acc *account) bool {
		acc.mu.Lock()
		defer acc.mu.Unlock()
		if len(acc.loans) == 0 && now.Sub(acc.localAt) < a.lim.Idle {
			// Kept, and nothing to expire: its next call refills it.
			return true
		}
		a.advance(acc, now, v)
		keep := len(acc.loans) > 0 || acc.bucket.Tokens < float64(a.lim.Burst) || now.Sub(acc.localAt) < a.lim.Idle
		acc.dropped = !keep
		return keep
	})
}

func (a *accounts) len() int { return a.t.len() }

// acquire returns user's account, locked. When there is none, create adds
// a full one (when the shard is full an arbitrary account is evicted: its
// loans are forgotten, the bound on memory wins over the count of a few
// tokens out); without create it returns nil.
func (a *accounts) acquire(user string, now time.Time, create bool) *account {
	sh := a.t.shard(user)
	for {
		acc := sh.find(user)
		if acc == nil {
			if !create {
				return nil
			}
			// Allocated before the shard's lock is taken alone.
			fresh := &account{bucket: tokenbucket.Full(float64(a.lim.Burst), now), fullFrom: now}
			sh.mu.Lock()
			acc = sh.get(user, func() *account { return fresh }, dropAccount)
			sh.mu.Unlock()
		}
		acc.mu.Lock()
		if !acc.dropped {
			return acc
		}
		acc.mu.Unlock() // swept or evicted meanwhile: look again
	}
}

// acquireMemo is acquire (creating) with the caller's memo of user: the
// account remembered there while it is still in the table (an account
// leaves it only marked dropped, under its lock), else the one acquire
// finds, remembered for the next call.
func (a *accounts) acquireMemo(user string, now time.Time, memo *tokenbucket.Memo) *account {
	if acc, _ := memo.Load().(*account); acc != nil {
		acc.mu.Lock()
		if !acc.dropped {
			return acc
		}
		acc.mu.Unlock()
	}
	acc := a.acquire(user, now, true)
	memo.Store(acc)
	return acc
}

// dropAccount marks an account evicted from its shard (whose lock the
// caller holds: a shard's lock comes before its accounts').
func dropAccount(acc *account) {
	acc.mu.Lock()
	acc.dropped = true
	acc.mu.Unlock()
}

// capacity is what the bucket may hold: Burst less the tokens out.
func (a *accounts) capacity(acc *account) float64 {
	out := 0
	for _, ln := range acc.loans {
		out += ln.tokens
	}
	return float64(a.lim.Burst - out)
}

// advance refills the bucket up to now, then forgets what loans no longer
// hold: tokens whose lease ended, and the loans of nodes that hold none
// (or left the view) and have not borrowed for Idle.
func (a *accounts) advance(acc *account, now time.Time, v View) {
	capacity := a.capacity(acc)
	before, at := acc.bucket.Tokens, acc.bucket.At
	acc.bucket.Advance(now, a.rate.PerSecond, capacity)
	if before < capacity && acc.bucket.Tokens >= capacity {
		filled := time.Duration((capacity - before) / a.rate.PerSecond * float64(time.Second))
		acc.fullFrom, acc.fullTo, acc.credited = at.Add(filled), time.Time{}, 0
	}
	kept := acc.loans[:0]
	var ended []loan
	for _, ln := range acc.loans {
		if ln.tokens > 0 && !now.Before(ln.until) {
			ended = append(ended, ln)
			ln.tokens = 0
		}
		idle := now.Sub(ln.seen) >= a.lim.Idle
		if idle && (ln.tokens == 0 || !isMember(v, ln.node.Name)) {
			continue
		}
		kept = append(kept, ln)
	}
	clear(acc.loans[len(kept):])
	acc.loans = kept
	for _, ln := range ended {
		// The node dropped what it still held by then: as spent then.
		a.credit(acc, ln.tokens, now.Sub(ln.until), now)
	}
	a.mark(acc, now)
}

// mark ends or starts a stretch at capacity after the bucket or its loans
// changed.
func (a *accounts) mark(acc *account, now time.Time) {
	full := acc.bucket.Tokens >= a.capacity(acc)
	ongoing := !acc.fullFrom.IsZero() && acc.fullTo.IsZero()
	switch {
	case full && !ongoing:
		acc.fullFrom, acc.fullTo, acc.credited = now, time.Time{}, 0
	case !full && ongoing:
		acc.fullTo = now
	}
}

// creditSpent takes spent tokens off ln (the node spent them, the last
// spentAgo before now) and credits them.
func (a *accounts) creditSpent(acc *account, ln *loan, spent int, spentAgo time.Duration, now time.Time) {
	n := min(spent, ln.tokens)
	if n <= 0 {
		return
	}
	ln.tokens -= n
	a.credit(acc, n, spentAgo, now)
}

// credit gives back the refill of n tokens that left the loans (spent or
// dropped, the last of them ago before now): the bucket had room for them
// since then, and the refill its capacity held back in that time, counted
// once, is theirs.
func (a *accounts) credit(acc *account, n int, ago time.Duration, now time.Time) {
	if acc.fullFrom.IsZero() {
		return
	}
	from := acc.fullFrom
	if left := now.Add(-ago); left.After(from) {
		from = left
	}
	to := acc.fullTo
	if to.IsZero() {
		to = now
	}
	if held := to.Sub(from).Seconds()*a.rate.PerSecond - acc.credited; held > 0 {
		c := min(float64(n), held)
		acc.bucket.Tokens = min(acc.bucket.Tokens+c, a.capacity(acc))
		acc.credited += c
	}
}

// parties counts who shares the bucket now: the nodes that borrowed within
// Idle, and the keeper if a call was decided here within Idle.
func (acc *account) parties(now time.Time, idle time.Duration) int {
	n := 0
	for _, ln := range acc.loans {
		if now.Sub(ln.seen) < idle {
			n++
		}
	}
	if !acc.localAt.IsZero() && now.Sub(acc.localAt) < idle {
		n++
	}
	return max(n, 1)
}

// recallTargets lists the nodes holding tokens of acc, but except, once
// per SweepInterval: the bucket is empty and a call is being refused while
// they may sit on tokens their users no longer spend there.
func (a *accounts) recallTargets(acc *account, now time.Time, except string) []wire.Member {
	if !acc.recalledAt.IsZero() && now.Sub(acc.recalledAt) < a.lim.SweepInterval {
		return nil
	}
	var out []wire.Member
	for _, ln := range acc.loans {
		if ln.tokens > 0 && ln.node.Name != except {
			out = append(out, ln.node)
		}
	}
	if len(out) > 0 {
		acc.recalledAt = now
	}
	return out
}

// outExcept counts the tokens lent to nodes other than name.
func (acc *account) outExcept(name string) int {
	n := 0
	for _, ln := range acc.loans {
		if ln.node.Name != name {
			n += ln.tokens
		}
	}
	return n
}

// loanTo returns node's loan, added if there is none.
func (acc *account) loanTo(node wire.Member) *loan {
	if ln := acc.loanOf(node.Name); ln != nil {
		ln.node = node
		return ln
	}
	acc.loans = append(acc.loans, loan{node: node})
	return &acc.loans[len(acc.loans)-1]
}

// loanOf returns the loan of the node called name, or nil.
func (acc *account) loanOf(name string) *loan {
	for i := range acc.loans {
		if acc.loans[i].node.Name == name {
			return &acc.loans[i]
		}
	}
	return nil
}

package router

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"sync"
	"time"

	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// routeShards splits the routing table so heartbeats of different channels
// rarely share a lock.
const routeShards = 64

// routeTable holds what this node knows about channels beyond the ring: the
// ones whose state it holds, the ones being handed over, and tombstones of
// the ones it handed away. Channels it never touched have no entry.
type routeTable struct {
	seed   maphash.Seed
	shards [routeShards]routeShard
}

type routeShard struct {
	mu sync.Mutex
	m  map[string]*route
}

// moveKind says which way a channel is being handed over.
type moveKind uint8

const (
	moveOut moveKind = iota + 1 // exported to another node (push or extract)
	moveIn                      // a snapshot is being installed here
)

// route is one channel's entry, under its shard's lock.
type route struct {
	// held: this node holds the channel's state (pulled, installed, or
	// started fresh) and serves it locally whatever the ring says, until it
	// is handed over.
	held bool
	// idle: a sweep found no actor for the held channel; the next sweep
	// forgets it unless a request touched it in between.
	idle bool
	// active counts local engine calls in progress; a hand-off waits for
	// them (drained is closed when the count reaches zero) so that every
	// accepted call is in the exported snapshot.
	active  int
	drained chan struct{}
	// moving is closed when the current hand-off ends; requests wait on it.
	moving chan struct{}
	kind   moveKind
	// frozen: the state was exported; anything the old actor still
	// publishes is dropped, the new owner publishes it: an expiry after
	// the export, or a message the snapshot counts as unpublished.
	frozen bool
	// pull is this node fetching the channel from its previous holder.
	pull *flight
	// tomb: the channel was handed to another node, which serves it.
	tomb *tombstone
	// owesLeaves: leaves answered for the channel by a node without its
	// state reached this node, which does not hold the channel and could
	// not pass them on: it owns the channel by its ring, or its ring points
	// back at the sender. They are applied if the holder hands the channel
	// here; when the ring gives the channel to another node, a rebalance
	// pass hands them on (the views they were routed by were partial).
	owesLeaves bool
}

// tombstone remembers where a channel went.
type tombstone struct {
	to Member
	// seen: to has been in the member set since; a tombstone to a node that
	// was seen and then left is dropped (its state died with it).
	seen bool
	// until (unix ns, 0 for not yet) ends the tombstone: of a holder that
	// kept the channel (wire.ExtractHeld), when it has handed the channel
	// over or lost it, and a new pull finds out which; of a member that
	// does not own the channel, staleTombstoneAfter after a sweep found it
	// so (sweepTombstones).
	until int64
}

// flight is one pull in progress; done is closed when it ends. err, set
// before done closes, is why the pull left the channel unheld: its
// holder is a member that does not answer (holderAway), and the calls
// that waited are tried again later rather than served by a fresh start.
type flight struct {
	done chan struct{}
	err  error
}

func (e *route) empty() bool {
	return !e.held && !e.owesLeaves && e.active == 0 && e.moving == nil && e.pull == nil && e.tomb == nil
}

func (t *routeTable) init() {
	t.seed = maphash.MakeSeed()
	for i := range t.shards {
		t.shards[i].m = make(map[string]*route)
	}
}

func (t *routeTable) shard(channel string) *routeShard {
	return &t.shards[maphash.String(t.seed, channel)%routeShards]
}

// entry returns channel's entry, creating it; the shard lock must be held.
func (s *routeShard) entry(channel string) *route {
	e := s.m[channel]
	if e == nil {
		e = &route{}
		s.m[channel] = e
	}
	return e
}

// tidy forgets an entry that records nothing; the shard lock must be held.
func (s *routeShard) tidy(channel string, e *route) {
	if e.empty() {
		delete(s.m, channel)
	}
}

// wait blocks until c is closed or ctx ends.
func wait(ctx context.Context, c <-chan struct{}) error {
	select {
	case <-c:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// target is where a call for a channel goes: this node's engine (local, and
// then the caller must release the channel) or another node.
type target struct {
	local bool
	to    Member
}

// route resolves, once, where a call for channel received after hops
// forwards is served. The rules, in order: a channel being handed over
// waits for the hand-off; a tombstone forwards to the node the channel went
// to; a held channel is served here; a channel this node owns by the ring
// is first fetched from its previous holder (once; concurrent calls share
// the fetch); anything else goes to the ring owner, unless the call has
// been forwarded MaxHops times already (presence.ErrMoved). A local answer
// counts the call as active until release.
func (r *Router) route(ctx context.Context, channel string, hops int) (target, error) {
	t, err := r.resolve(ctx, channel, true)
	if err == nil && !t.local && hops+1 > r.cfg.MaxHops {
		return target{}, fmt.Errorf("%w: %s after %d hops", presence.ErrMoved, channel, hops)
	}
	return t, err
}

// locate finds where channel is by the rules of route, without fetching
// it and without counting a call: local when this node holds the channel,
// or owns it by the ring without holding it (its holder hands it here).
func (r *Router) locate(ctx context.Context, channel string) (target, error) {
	return r.resolve(ctx, channel, false)
}

// resolve applies the rules of route but the hop limit; call counts a
// local answer as an active call and fetches a channel owned but not held
// here.
func (r *Router) resolve(ctx context.Context, channel string, call bool) (target, error) {
	sh := r.routes.shard(channel)
	for {
		sh.mu.Lock()
		e := sh.m[channel]
		switch {
		case e != nil && e.moving != nil:
			c := e.moving
			sh.mu.Unlock()
			if err := wait(ctx, c); err != nil {
				return target{}, err
			}
			continue
		case e != nil && e.tomb != nil && e.tomb.until != 0 && r.cfg.Clock.Now().UnixNano() > e.tomb.until:
			e.tomb = nil
			sh.tidy(channel, e)
			sh.mu.Unlock()
			continue
		case e != nil && e.tomb != nil:
			to := e.tomb.to
			sh.mu.Unlock()
			return target{to: to}, nil
		case e != nil && e.held:
			if call {
				e.active++
				e.idle = false
			}
			sh.mu.Unlock()
			return target{local: true}, nil
		case e != nil && e.pull != nil:
			f := e.pull
			sh.mu.Unlock()
			if err := wait(ctx, f.done); err != nil {
				return target{}, err
			}
			if f.err != nil {
				return target{}, f.err
			}
			continue
		}
		v := r.view.Load()
		owner := v.ring.Owner(channel)
		if owner == r.self.Name && !call {
			sh.mu.Unlock()
			return target{local: true}, nil
		}
		if owner == r.self.Name && !v.joined {
			sh.mu.Unlock()
			return target{}, fmt.Errorf("%w: %s has not joined the cluster yet", presence.ErrMoved, r.self.Name)
		}
		if owner != r.self.Name {
			sh.mu.Unlock()
			m, ok := v.Member(owner)
			if !ok {
				return target{}, fmt.Errorf("%w: no member owns %s", presence.ErrUnavailable, channel)
			}
			return target{to: m}, nil
		}
		f := &flight{done: make(chan struct{})}
		e = sh.entry(channel)
		if !r.run.Go(func() { r.pull(channel, f) }) {
			sh.tidy(channel, e)
			sh.mu.Unlock()
			return target{}, fmt.Errorf("%w: router closed", presence.ErrUnavailable)
		}
		e.pull = f
		sh.mu.Unlock()
	}
}

// release ends a local call started by route.
func (t *routeTable) release(channel string) {
	sh := t.shard(channel)
	sh.mu.Lock()
	e := sh.m[channel]
	e.active--
	if e.active == 0 && e.drained != nil {
		close(e.drained)
		e.drained = nil
	}
	sh.mu.Unlock()
}

// beginMove marks channel as being handed over in direction kind, so new
// calls wait, and returns once the local calls in progress have finished.
// A move out waits for another move to end and then marks the channel
// itself (the caller then finds the outcome: a tombstone, no state); it
// gives ErrBusy while this node is fetching the channel, since the fetch may
// be waiting for the very node that asks. An install waits for another
// install, and gives ErrBusy while the channel is moving out (two nodes
// pushing one channel to each other must not wait for each other).
func (t *routeTable) beginMove(ctx context.Context, channel string, kind moveKind) error {
	sh := t.shard(channel)
	for {
		sh.mu.Lock()
		e := sh.entry(channel)
		busy := kind == moveOut && e.pull != nil || kind == moveIn && e.moving != nil && e.kind == moveOut
		if busy {
			sh.tidy(channel, e)
			sh.mu.Unlock()
			return fmt.Errorf("%w: %s", wire.ErrBusy, channel)
		}
		if e.moving != nil {
			c := e.moving
			sh.mu.Unlock()
			if err := wait(ctx, c); err != nil {
				return err
			}
			continue
		}
		e.moving, e.kind = make(chan struct{}), kind
		var drained chan struct{}
		if e.active > 0 {
			e.drained = make(chan struct{})
			drained = e.drained
		}
		sh.mu.Unlock()
		if drained == nil {
			return nil
		}
		if err := wait(ctx, drained); err != nil {
			t.endMove(channel, func(*route) {})
			return err
		}
		return nil
	}
}

// endMove applies the outcome of a hand-off to channel's entry and lets the
// waiting calls go on.
func (t *routeTable) endMove(channel string, outcome func(e *route)) {
	sh := t.shard(channel)
	sh.mu.Lock()
	e := sh.entry(channel)
	outcome(e)
	e.frozen = false
	if e.moving != nil {
		close(e.moving)
		e.moving, e.kind = nil, 0
	}
	sh.tidy(channel, e)
	sh.mu.Unlock()
}

// MovingOut reports whether channel is being handed to another node.
func (t *routeTable) MovingOut(channel string) bool {
	sh := t.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[channel]
	return e != nil && e.moving != nil && e.kind == moveOut
}

// freeze marks channel's exported actor as frozen.
func (t *routeTable) freeze(channel string) {
	sh := t.shard(channel)
	sh.mu.Lock()
	sh.entry(channel).frozen = true
	sh.mu.Unlock()
}

// frozen reports whether the local actor of channel was exported for a
// hand-off in progress.
func (t *routeTable) frozen(channel string) bool {
	sh := t.shard(channel)
	sh.mu.Lock()
	e := sh.m[channel]
	f := e != nil && e.frozen
	sh.mu.Unlock()
	return f
}

// tombstoneTo returns where channel was handed, if anywhere, waiting for a
// hand-off in progress.
func (t *routeTable) tombstoneTo(ctx context.Context, channel string) (Member, bool, error) {
	sh := t.shard(channel)
	for {
		sh.mu.Lock()
		e := sh.m[channel]
		if e != nil && e.moving != nil {
			c := e.moving
			sh.mu.Unlock()
			if err := wait(ctx, c); err != nil {
				return Member{}, false, err
			}
			continue
		}
		var to Member
		found := e != nil && e.tomb != nil
		if found {
			to = e.tomb.to
		}
		sh.mu.Unlock()
		return to, found, nil
	}
}

// forgetUnreachable drops the tombstones of channels that pointed to to,
// after err said to could not be reached, when v does not list it as a
// member: its state is lost, the ring decides.
func (t *routeTable) forgetUnreachable(err error, v *view, to Member, lists ...[]string) {
	if !errors.Is(err, transport.ErrPeerUnavailable) {
		return
	}
	if _, member := v.Member(to.Name); member {
		return
	}
	for _, list := range lists {
		for _, ch := range list {
			sh := t.shard(ch)
			sh.mu.Lock()
			if e := sh.m[ch]; e != nil && e.tomb != nil && e.tomb.to == to {
				e.tomb = nil
				sh.tidy(ch, e)
			}
			sh.mu.Unlock()
		}
	}
}

// staleTombstoneAfter bounds the life of a tombstone to a node that does
// not own the channel: by then that node has handed the channel to its
// owner (or lost it), and the ring routes there. Without a bound, a channel
// that moved through several joiners in a row left a chain of tombstones,
// each pointing at the next joiner, that outlived every move: requests
// entering at the chain's start ran out of hops (a 3 → 7 scale-out made a
// channel unreachable for 45 s).
const staleTombstoneAfter = 10 * time.Second

// sweepTombstones updates tombstones for a new view (and at every sweep):
// a target seen in the member set and gone since is dropped, and so is a
// tombstone pointing at the ring owner, which the ring already routes to;
// one pointing at another member lasts staleTombstoneAfter from the first
// sweep that finds it so.
func (t *routeTable) sweepTombstones(v *view, now int64) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for ch, e := range sh.m {
			if e.tomb == nil {
				continue
			}
			_, member := v.members[e.tomb.to.Name]
			switch {
			case e.tomb.until != 0 && now > e.tomb.until:
				e.tomb = nil
			case member && v.ring.Owner(ch) == e.tomb.to.Name:
				e.tomb = nil
			case member:
				e.tomb.seen = true
				if e.tomb.until == 0 {
					e.tomb.until = now + int64(staleTombstoneAfter)
				}
			case e.tomb.seen:
				e.tomb = nil
			}
			sh.tidy(ch, e)
		}
		sh.mu.Unlock()
	}
}

// sweepIdle forgets held channels that have had no actor for two sweeps in
// a row (passivated): the next call fetches them again, which finds
// nothing. actors is the set of channels with an actor, taken before.
func (t *routeTable) sweepIdle(actors map[string]bool) {
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for ch, e := range sh.m {
			if !e.held && !e.owesLeaves || e.active > 0 || e.moving != nil || e.pull != nil || actors[ch] {
				e.idle = false
				continue
			}
			if e.idle {
				e.held, e.owesLeaves, e.idle = false, false, false
				sh.tidy(ch, e)
			} else {
				e.idle = true
			}
		}
		sh.mu.Unlock()
	}
}

// toRebalance returns the channels a rebalance pass looks at besides those
// with an actor: the ones held here (with or without state) and the ones
// this node owes leaves to (route.owesLeaves).
func (t *routeTable) toRebalance() []string {
	var out []string
	for i := range t.shards {
		sh := &t.shards[i]
		sh.mu.Lock()
		for ch, e := range sh.m {
			if e.held || e.owesLeaves {
				out = append(out, ch)
			}
		}
		sh.mu.Unlock()
	}
	return out
}

// peekTombstone returns channel's tombstone target, if any.
func (t *routeTable) peekTombstone(channel string) (Member, bool) {
	sh := t.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e := sh.m[channel]; e != nil && e.tomb != nil {
		return e.tomb.to, true
	}
	return Member{}, false
}

// Holds reports whether this node holds channel's state or is installing it.
func (t *routeTable) Holds(channel string) bool {
	sh := t.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[channel]
	return e != nil && (e.held || e.moving != nil && e.kind == moveIn)
}

// owesLeaves marks channel as owing leaves unless it is held (or being
// installed) here; it reports whether it did. A rebalance pass hands owed
// leaves to the channel's ring owner when that is another node.
func (t *routeTable) owesLeaves(channel string) bool {
	sh := t.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.entry(channel)
	if e.held || e.moving != nil && e.kind == moveIn {
		return false
	}
	e.owesLeaves = true
	return true
}

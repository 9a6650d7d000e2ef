package router

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
)

// view is an immutable routing snapshot: the ring that decides owners
// (members that announced their shutdown left out), the ring of every other
// member, draining ones included (where a channel would be if this node did
// not exist: the place to fetch a channel from after taking it over) and
// the members' addresses. The router's parts read it through their own
// View interfaces.
type view struct {
	epoch uint64
	// joined: membership was given (SetMembers or Drain). Before, the node
	// knows nobody to fetch channels from, so it serves none.
	joined bool
	// draining: this node is leaving (Drain); it is in no ring.
	draining bool
	ring     *ring.Ring
	others   *ring.Ring
	members  map[string]Member
	// next is closed when a newer view replaces this one: requests held
	// during a view change wait on it (see hold.go).
	next chan struct{}
}

// Member returns the member called name; ok is false when it is unknown.
func (v *view) Member(name string) (Member, bool) {
	m, ok := v.members[name]
	return m, ok
}

// Owner returns the ring owner of channel ("" when the ring is empty).
func (v *view) Owner(channel string) string { return v.ring.Owner(channel) }

// OwnerAndReplica returns the ring owner of channel and its replica.
func (v *view) OwnerAndReplica(channel string) (owner, replica string) {
	return v.ring.OwnerAndReplica(channel)
}

// departedNodes lists the members of old missing from v, self excluded.
func departedNodes(old, v *view, self string) map[string]bool {
	gone := make(map[string]bool)
	for name := range old.members {
		if _, ok := v.members[name]; !ok && name != self {
			gone[name] = true
		}
	}
	return gone
}

// views holds the membership the router was given and publishes the view
// built from it. Changes are serialised, and so are their consequences
// (the react function each change runs under the lock).
type views struct {
	cur atomic.Pointer[view]

	mu      sync.Mutex
	self    Member
	members []Member // last alive set given to SetMembers
	// leaving: members of that set that announced their shutdown; they
	// own nothing new (see SetMembers).
	leaving  map[string]bool
	draining bool
	joined   bool
	epoch    uint64
}

// Load returns the current view.
func (vs *views) Load() *view { return vs.cur.Load() }

// start publishes the first view, in which self is alone.
func (vs *views) start(self Member, react func(old, v *view)) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.self, vs.members = self, []Member{self}
	vs.publishLocked(react)
}

// set replaces the members and the names of those draining.
func (vs *views) set(members []Member, draining []string, react func(old, v *view)) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vs.members = slices.Clone(members)
	vs.leaving = make(map[string]bool, len(draining))
	for _, name := range draining {
		vs.leaving[name] = true
	}
	vs.joined = true
	vs.publishLocked(react)
}

// drain leaves this node out of every later view; it does nothing when
// the node drains already.
func (vs *views) drain(react func(old, v *view)) {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if !vs.draining {
		vs.draining, vs.joined = true, true
		vs.publishLocked(react)
	}
}

// isDraining reports whether Drain was called.
func (vs *views) isDraining() bool {
	vs.mu.Lock()
	defer vs.mu.Unlock()
	return vs.draining
}

// publishLocked builds the view of the current membership, publishes it
// and calls react with the previous one (nil at start).
func (vs *views) publishLocked(react func(old, v *view)) {
	vs.epoch++
	members := make(map[string]Member, len(vs.members)+1)
	for _, m := range vs.members {
		if m.Name != "" && m.Name != vs.self.Name {
			members[m.Name] = m
		}
	}
	others := ring.New(vs.epoch, slices.Collect(maps.Keys(members)))
	if !vs.draining {
		members[vs.self.Name] = vs.self
	}
	owners := make([]string, 0, len(members))
	for name := range members {
		if !vs.leaving[name] || name == vs.self.Name {
			owners = append(owners, name)
		}
	}
	v := &view{epoch: vs.epoch, joined: vs.joined, draining: vs.draining, ring: ring.New(vs.epoch, owners), others: others, members: members,
		next: make(chan struct{})}
	old := vs.cur.Swap(v)
	react(old, v)
	if old != nil {
		// After react: a request woken by the new view finds the routing
		// entries and the batches already updated for it.
		close(old.next)
	}
}

// Ring returns the ring requests are currently routed by.
func (r *Router) Ring() *ring.Ring { return r.view.Load().ring }

// Owner returns the owner of channel and its replicas (empty, not nil, when
// there are none) under the current ring.
func (r *Router) Owner(channel string) (owner string, replicas []string) {
	owner, replica := r.view.Load().ring.OwnerAndReplica(channel)
	replicas = []string{}
	if replica != "" {
		replicas = append(replicas, replica)
	}
	return owner, replicas
}

// SetMembers replaces the alive members (self is added unless the node is
// draining) and builds the next ring. Channels this node holds but no longer
// owns are handed over in the background; it returns at once.
//
// draining names members that announced their shutdown: they stay members
// (calls reach them, channels are fetched from them) but are left out of
// the ring, so they are given nothing and, when every node stops at once,
// a channel nobody holds is refused at once (presence.ErrUnavailable)
// instead of bouncing between nodes that each think another owns it.
func (r *Router) SetMembers(members []Member, draining ...string) {
	r.view.set(members, draining, r.viewChanged)
}

// Drain makes the node leave gracefully: the ring stops including it, every
// channel it holds is handed to its owner in that ring, and from then on it
// forwards everything, until Close. It returns once nothing is left to hand
// over, or with ctx's error.
func (r *Router) Drain(ctx context.Context) error {
	r.view.drain(r.viewChanged)
	for !r.Settled() {
		c := r.settling.next()
		if r.Settled() {
			break
		}
		select {
		case <-c:
		case <-ctx.Done():
			return fmt.Errorf("router: drain: %d channels not handed over: %w", len(r.engine.Channels()), ctx.Err())
		case <-r.ctx.Done():
			return fmt.Errorf("%w: router closed during drain", presence.ErrUnavailable)
		}
	}
	if err := r.repl.Flush(ctx); err != nil {
		return fmt.Errorf("router: drain: replication streams not flushed: %w", err)
	}
	// What this node handed over is safe only once the new holders'
	// replicas have it: until then its copies here are the second ones.
	for r.repl.Copies().HandedCount() > 0 {
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return fmt.Errorf("router: drain: %d channels handed over not yet on the new holders' replicas: %w",
				r.repl.Copies().HandedCount(), err)
		}
	}
	return nil
}

// Settled reports whether no hand-off is pending: every channel this node
// holds is owned by it under the current ring.
func (r *Router) Settled() bool { return r.settling.settled() }

// viewChanged reacts to a new view (old is nil for the first): routing
// entries, interest of departed nodes, re-registration of local
// subscribers' interest with new owners, replication and a rebalance pass.
func (r *Router) viewChanged(old, v *view) {
	r.m.ringEpoch.Set(float64(v.epoch))
	r.log.Debug("view changed", "epoch", v.epoch, "members", slices.Sorted(maps.Keys(v.members)), "owners", v.ring.Len())
	if old != nil {
		departed := departedNodes(old, v, r.self.Name)
		r.fan.ForgetNodes(departed)
		r.batch.forgetNodes(departed)
		r.fan.OwnersChanged(func(ch string) bool { return old.Owner(ch) != v.Owner(ch) })
		if r.cfg.Replication && len(departed) > 0 {
			r.run.Go(func() { r.promoteOrphans(departed) })
		}
		if r.cfg.Replication {
			r.repl.Kick()
		}
	}
	r.routes.sweepTombstones(v, r.cfg.Clock.Now().UnixNano())
	r.settling.request()
}

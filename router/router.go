package router

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/wire"
)

// Router serves presence.Service for a whole cluster: it runs the channels
// this node owns on the local Engine, forwards the rest to their owners,
// streams remote channels to local subscribers, and hands channels over when
// membership changes. See the package documentation for the protocol.
type Router struct {
	cfg    Config
	self   Member
	boot   uint64 // identifies this process among the incarnations of self
	log    *slog.Logger
	engine *presence.Engine
	tr     Caller
	hub    *presence.Hub
	m      *metrics

	ctx     context.Context // cancelled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // every goroutine the router starts (spawn)
	spawnMu sync.Mutex
	closed  bool // under spawnMu: spawn refuses

	view     atomic.Pointer[view]
	routes   routeTable
	interest interestTable
	out      outbound
	feed     feed
	batch    updateBatcher
	replicas replicaStore  // copies kept for other owners (Config.Replication)
	streams  replStreams   // this node's changes on their way to replicas
	replKick chan struct{} // buffered 1: replicaLoop should run a round
	// supersedes: channel → the node whose state the channel's last
	// install continued, for the snapshot that install sends the replica.
	supersedes sync.Map
	leaves     leaveLog  // recent leaves of channels held here
	bufs       sync.Pool // *wire.Encoder

	// Membership, under memberMu: SetMembers and Drain are serialised.
	memberMu sync.Mutex
	members  []Member // last alive set given to SetMembers
	// leaving: members of that set that announced their shutdown; they
	// own nothing new (see SetMembers).
	leaving  map[string]bool
	draining bool
	joined   bool
	epoch    uint64

	// Rebalancing: wanted grows with every request for a pass, done records
	// the last request a pass fully completed; equal means settled.
	kick    chan struct{}
	wanted  atomic.Uint64
	done    atomic.Uint64
	settleM sync.Mutex
	settleC chan struct{} // closed and replaced when done moves
	// attempted is the last request a pass ran for, failures or not.
	attempted atomic.Uint64
}

var _ presence.Service = (*Router)(nil)

// view is an immutable routing snapshot: the ring that decides owners
// (members that announced their shutdown left out), the ring of every other
// member, draining ones included (where a channel would be if this node did
// not exist: the place to fetch a channel from after taking it over) and
// the members' addresses.
type view struct {
	epoch uint64
	// joined: membership was given (SetMembers or Drain). Before, the node
	// knows nobody to fetch channels from, so it serves none.
	joined  bool
	ring    *ring.Ring
	others  *ring.Ring
	members map[string]Member
}

// member returns the member called name; ok is false when it is unknown.
func (v *view) member(name string) (Member, bool) {
	m, ok := v.members[name]
	return m, ok
}

// Publisher is the presence.Publisher the Engine of a Router must use. It is
// created before the Engine (NewPublisher), given to both EngineConfig and
// Config, and bound to the Router by New; until then it drops messages.
type Publisher struct {
	r atomic.Pointer[Router]
}

var _ presence.Publisher = (*Publisher)(nil)

// NewPublisher returns an unbound publisher.
func NewPublisher() *Publisher { return &Publisher{} }

// Publish hands a message of a locally owned channel to the router: local
// subscribers get it at once, remote ones through their node's push queue.
// It runs on the channel's actor goroutine and never blocks.
func (p *Publisher) Publish(m *presence.Message) {
	if r := p.r.Load(); r != nil {
		r.publish(m)
	}
}

// New builds a router for cfg.Self, owning every channel until SetMembers
// tells it about other nodes, and binds cfg.Publisher to it.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	r := &Router{
		cfg:    cfg,
		self:   cfg.Self,
		log:    cfg.Logger.With("component", "router", "node", cfg.Self.Name),
		engine: cfg.Engine,
		tr:     cfg.Transport,
		m:      newMetrics(cfg.Registry),
		kick:   make(chan struct{}, 1),
		boot:   rand.Uint64() | 1,
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.routes.init()
	r.interest.init(r.self.Name, r.replicateInterest)
	r.out.init(r)
	r.feed.init(r)
	r.batch.init(r)
	r.replicas.init()
	r.streams.init()
	r.replKick = make(chan struct{}, 1)
	r.leaves.init()
	r.settleC = make(chan struct{})
	hub, err := presence.NewHub(presence.HubConfig{
		Metrics:    cfg.Metrics,
		Logger:     r.log,
		BufferSize: cfg.SubscriberBuffer,
		OnChannel:  r.feed.onChannel,
	})
	if err != nil {
		return nil, err
	}
	r.hub = hub
	if !cfg.Publisher.r.CompareAndSwap(nil, r) {
		return nil, fmt.Errorf("%w: publisher already bound to a router", presence.ErrInvalid)
	}
	r.memberMu.Lock()
	r.members = []Member{r.self}
	r.installViewLocked()
	r.memberMu.Unlock()
	r.spawn(r.rebalanceLoop)
	r.spawn(r.sweepLoop)
	r.spawn(r.feed.interestLoop)
	if cfg.Replication {
		r.spawn(r.replicaLoop)
	}
	return r, nil
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
	r.memberMu.Lock()
	defer r.memberMu.Unlock()
	r.members = slices.Clone(members)
	r.leaving = make(map[string]bool, len(draining))
	for _, name := range draining {
		r.leaving[name] = true
	}
	r.joined = true
	r.installViewLocked()
}

// installViewLocked publishes the view for r.members and reacts to the
// change: routing entries, interest of departed nodes, re-registration of
// local subscribers' interest with new owners, and a rebalance pass.
func (r *Router) installViewLocked() {
	r.epoch++
	members := make(map[string]Member, len(r.members)+1)
	for _, m := range r.members {
		if m.Name != "" && m.Name != r.self.Name {
			members[m.Name] = m
		}
	}
	others := ring.New(r.epoch, slices.Collect(maps.Keys(members)))
	if !r.draining {
		members[r.self.Name] = r.self
	}
	owners := make([]string, 0, len(members))
	for name := range members {
		if !r.leaving[name] || name == r.self.Name {
			owners = append(owners, name)
		}
	}
	v := &view{epoch: r.epoch, joined: r.joined, ring: ring.New(r.epoch, owners), others: others, members: members}
	old := r.view.Swap(v)
	r.m.ringEpoch.Set(float64(v.epoch))
	r.log.Debug("view changed", "epoch", v.epoch, "members", slices.Sorted(maps.Keys(members)), "owners", v.ring.Len())
	if old != nil {
		departed := departedNodes(old, v, r.self.Name)
		r.interest.forgetNodes(departed)
		r.out.forgetNodes(departed)
		r.batch.forgetNodes(departed)
		r.feed.ownersChanged(old, v)
		if r.cfg.Replication && len(departed) > 0 {
			r.spawn(func() { r.promoteOrphans(departed) })
		}
		if r.cfg.Replication {
			r.kickReplicas()
		}
	}
	r.routes.sweepTombstones(v)
	r.requestRebalance()
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

// Settled reports whether no hand-off is pending: every channel this node
// holds is owned by it under the current ring.
func (r *Router) Settled() bool { return r.done.Load() == r.wanted.Load() }

// settledChan returns a channel closed at the next change of Settled.
func (r *Router) settledChan() <-chan struct{} {
	r.settleM.Lock()
	defer r.settleM.Unlock()
	return r.settleC
}

// Drain makes the node leave gracefully: the ring stops including it, every
// channel it holds is handed to its owner in that ring, and from then on it
// forwards everything, until Close. It returns once nothing is left to hand
// over, or with ctx's error.
func (r *Router) Drain(ctx context.Context) error {
	r.memberMu.Lock()
	if !r.draining {
		r.draining, r.joined = true, true
		r.installViewLocked()
	}
	r.memberMu.Unlock()
	for !r.Settled() {
		c := r.settledChan()
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
	if err := r.streams.flush(ctx); err != nil {
		return fmt.Errorf("router: drain: replication streams not flushed: %w", err)
	}
	return nil
}

// Close stops the router's goroutines and ends its subscriptions. It does
// not close the Engine or the Transport, which the caller owns.
func (r *Router) Close() {
	r.spawnMu.Lock()
	r.closed = true
	r.spawnMu.Unlock()
	r.cancel()
	r.hub.Close()
	r.wg.Wait()
}

// spawn runs fn on a goroutine that Close waits for; it reports false, and
// does nothing, once the router is closing.
func (r *Router) spawn(fn func()) bool {
	r.spawnMu.Lock()
	defer r.spawnMu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		fn()
	}()
	return true
}

// getEncoder returns a pooled encoder; putEncoder gives it back once the
// transport has copied its bytes.
func (r *Router) getEncoder() *wire.Encoder {
	if e, ok := r.bufs.Get().(*wire.Encoder); ok {
		e.Reset()
		return e
	}
	return wire.NewEncoder(256)
}

func (r *Router) putEncoder(e *wire.Encoder) {
	if cap(e.Bytes()) <= 64<<10 {
		r.bufs.Put(e)
	}
}

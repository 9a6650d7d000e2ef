package router

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/fanout"
	"github.com/presencehq/presence/router/ratelimit"
	"github.com/presencehq/presence/router/replica"
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
	m      *metrics

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	run    routines  // every goroutine of the router and its parts
	calls  nodeCalls // node-to-node calls over cfg.Transport

	view     views                       // membership and the view built from it
	routes   routeTable                  // channels held, moving, handed away
	settling *settlement                 // rebalance passes requested and done
	hold     *hold                       // of the requests entering here
	batch    updateBatcher               // forwarded updates on their way, by node
	intern   *wire.Intern                // what handleUpdate decoded before, shared
	handlers [wire.MaxMethod + 1]handler // registerHandlers

	fan    *fanout.Fanout      // subscribers' hub, interest and pushes to other nodes
	repl   *replica.Replicator // streams to replicas, copies kept here
	leaves *replica.LeaveLog   // recent leaves of channels held here (repl's)
	limit  *ratelimit.Limiter  // the cluster-wide rate limit of updates
}

var _ presence.Service = (*Router)(nil)

// New builds a router for cfg.Self, owning every channel until SetMembers
// tells it about other nodes, and binds cfg.Publisher to it.
func New(cfg Config) (*Router, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	r := &Router{
		cfg:      cfg,
		self:     cfg.Self,
		log:      cfg.Logger.With("component", "router", "node", cfg.Self.Name),
		engine:   cfg.Engine,
		m:        newMetrics(cfg.Registry),
		boot:     rand.Uint64() | 1,
		settling: newSettlement(),
		intern:   wire.NewIntern(),
	}
	r.calls = nodeCalls{tr: cfg.Transport, errors: r.m.forwardErrors}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.hold = newHold(cfg, &r.view, r.ctx.Done(), r.m)
	r.routes.init()
	r.batch.init(batcherConfig{call: r.calls.Call, spawn: r.run.Go, ctx: r.ctx, max: cfg.ForwardBatch,
		timeout: cfg.ForwardTimeout, stall: cfg.ForwardStall, forwarded: r.m.fwdUpdate})
	if err := r.newParts(); err != nil {
		r.cancel()
		return nil, err
	}
	// Without replication a change is safe at once.
	replicate := func(c presence.Change) {
		if c.Message != nil {
			r.publish(c.Message)
		}
		answer(c.Done)
	}
	if cfg.Replication {
		replicate = r.repl.Replicate
	}
	if !cfg.Publisher.bind(&sinks{publish: r.publish, replicate: replicate}) {
		r.fan.Close()
		r.cancel()
		return nil, fmt.Errorf("%w: publisher already bound to a router", presence.ErrInvalid)
	}
	r.registerHandlers()
	r.view.start(r.self, r.viewChanged)
	r.run.Go(r.rebalanceLoop)
	r.run.Go(r.sweepLoop)
	r.run.Go(r.fan.Run)
	r.run.Go(r.limit.Run)
	if cfg.Replication {
		r.run.Go(r.repl.Run)
	}
	return r, nil
}

// newParts builds the fan-out to other nodes and replication, each given
// what it needs of the router (the view, the routing table, calls and
// callbacks), never the Router.
func (r *Router) newParts() error {
	cfg := r.cfg
	views, routes := &r.view, &r.routes
	var repl *replica.Replicator
	var interestChanged func(string)
	if cfg.Replication {
		interestChanged = func(ch string) { repl.InterestChanged(ch) }
	}
	fan, err := fanout.New(fanout.Config{
		Self: r.self, Clock: cfg.Clock, Logger: r.log, Ctx: r.ctx, Go: r.run.Go, Call: r.calls.Call,
		View: func() fanout.View { return views.Load() },
		Catchup: func(ctx context.Context, u *presence.User, channel string, after int64, gen uint64) (presence.Catchup, error) {
			return r.since(ctx, u, channel, after, 0, r.self, gen)
		},
		Handed: routes.tombstoneTo, Changed: interestChanged,
		CallTimeout: cfg.HandoffTimeout, FlushTimeout: cfg.FlushTimeout, PushQueue: cfg.PushQueue, PushBatch: cfg.PushBatch,
		Dropped: r.m.pushDropped,
		Hub:     presence.HubConfig{Metrics: cfg.Metrics, Logger: r.log, BufferSize: cfg.SubscriberBuffer},
	})
	if err != nil {
		return err
	}
	repl, err = replica.New(replica.Config{
		Self: r.self, Boot: r.boot, Clock: cfg.Clock, Logger: r.log, Ctx: r.ctx, Go: r.run.Go, Call: r.calls.Call,
		View: func() replica.View { return views.Load() }, Routes: routes, Engine: cfg.Engine,
		Publish: r.publish, Interest: fan.Interested, Fence: r.fence, Rebalance: r.settling.request, Released: r.released,
		Interval: cfg.ReplicationInterval, CallTimeout: cfg.ForwardTimeout, RetryBackoff: cfg.RetryBackoff,
		Lag: r.m.replicationLag, Refused: r.m.replicaRefused,
	})
	if err != nil {
		fan.Close()
		return err
	}
	limit, err := ratelimit.New(ratelimit.Config{
		Limits: cfg.RateLimit, Self: r.self, Clock: cfg.Clock, Logger: r.log, Ctx: r.ctx, Go: r.run.Go,
		Call: r.calls.Call, View: func() ratelimit.View { return views.Load() }, Registry: cfg.Registry,
	})
	if err != nil {
		fan.Close()
		return err
	}
	r.fan, r.repl, r.leaves, r.limit = fan, repl, repl.Leaves(), limit
	return nil
}

// Limiter is the cluster-wide rate limit of /presence/update: a user's
// bucket lives on the ring owner of ratelimit.KeyPrefix+id.
func (r *Router) Limiter() *ratelimit.Limiter { return r.limit }

// Close stops the router's goroutines and ends its subscriptions. It does
// not close the Engine or the Transport, which the caller owns.
func (r *Router) Close() {
	r.run.stop()
	r.cancel()
	r.fan.Close()
	r.run.wait()
}

// publish takes every message of a channel held here, from the engine or,
// with replication, once the replica has its change: it goes to the local
// hub, the nodes interested and the webhooks, unless the channel was
// exported for a hand-off in progress (the new owner publishes from the
// exported state).
func (r *Router) publish(m *presence.Message) {
	if r.routes.frozen(m.Channel) {
		return
	}
	m.MarkPublished() // catch-ups here may include it (presence.Engine.Since)
	r.fan.Publish(m)
	if r.cfg.Webhooks != nil {
		r.cfg.Webhooks.Publish(m)
	}
}

// routines runs the goroutines of the router and its parts: Close waits
// for every one, and none starts once the router is closing.
type routines struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// Go runs fn on a new goroutine; it reports false, and does nothing, once
// stop was called.
func (g *routines) Go(fn func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		fn()
	}()
	return true
}

// stop refuses new goroutines.
func (g *routines) stop() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
}

// wait waits for the goroutines started.
func (g *routines) wait() { g.wg.Wait() }

// nodeCalls makes the node-to-node calls of the router and its parts over
// the transport, encoding each request into a pooled buffer. Its Call is
// the wire.Call they are given.
type nodeCalls struct {
	tr     Caller
	bufs   sync.Pool // *wire.Encoder
	errors prometheus.Counter
}

// Call encodes a request with enc and sends it to to as method.
func (c *nodeCalls) Call(ctx context.Context, to Member, method uint16, enc func(*wire.Encoder)) ([]byte, error) {
	e, ok := c.bufs.Get().(*wire.Encoder)
	if ok {
		e.Reset()
	} else {
		e = wire.NewEncoder(256)
	}
	enc(e)
	resp, err := c.tr.Call(ctx, to.RPCAddr, method, e.Bytes())
	// The transport has copied the bytes; a huge buffer is not kept.
	if cap(e.Bytes()) <= 64<<10 {
		c.bufs.Put(e)
	}
	if err != nil {
		c.errors.Inc()
		return nil, fmt.Errorf("router: call %d to %s: %w", method, to.Name, err)
	}
	return resp, nil
}

// Publisher is the presence.Publisher and presence.Replicator the Engine
// of a Router must use. It is created before the Engine (NewPublisher),
// given to both EngineConfig and Config, and bound to the Router by New;
// until then it drops messages and answers every change at once.
type Publisher struct {
	to atomic.Pointer[sinks]
}

// sinks is where a bound Publisher sends what the engine hands it.
type sinks struct {
	publish   func(*presence.Message)
	replicate func(presence.Change)
}

var (
	_ presence.Publisher  = (*Publisher)(nil)
	_ presence.Replicator = (*Publisher)(nil)
)

// NewPublisher returns an unbound publisher.
func NewPublisher() *Publisher { return &Publisher{} }

// bind sets where the publisher sends; false when it was bound already.
func (p *Publisher) bind(s *sinks) bool { return p.to.CompareAndSwap(nil, s) }

// Publish hands a message of a locally owned channel to the router: local
// subscribers get it at once, remote ones through their node's push queue.
// It runs on the channel's actor goroutine and never blocks.
func (p *Publisher) Publish(m *presence.Message) {
	if s := p.to.Load(); s != nil {
		s.publish(m)
	}
}

// Replicate hands a change of a locally owned channel to the router, which
// replicates it (Config.Replication) and then publishes its message.
func (p *Publisher) Replicate(c presence.Change) {
	if s := p.to.Load(); s != nil {
		s.replicate(c)
		return
	}
	answer(c.Done)
}

// answer tells the caller waiting for a change that it is safe.
func answer(done chan<- error) {
	if done != nil {
		done <- nil
	}
}

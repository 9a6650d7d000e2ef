package replica

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// View is what replication needs of the router's routing view: the ring's
// owner and replica of a channel and the members' addresses.
type View interface {
	Owner(channel string) string
	OwnerAndReplica(channel string) (owner, replica string)
	Member(name string) (wire.Member, bool)
}

// Routes is what replication needs of the router's routing table.
type Routes interface {
	// Holds reports whether this node holds channel's state or is
	// installing it.
	Holds(channel string) bool
	// MovingOut reports whether channel is being handed to another node.
	MovingOut(channel string) bool
}

// Engine is what replication needs of the node's presence.Engine.
type Engine interface {
	// Channels lists the channels with an actor here.
	Channels() []string
	// Resend makes channel's actor replicate a whole snapshot.
	Resend(channel string) error
}

// Config configures a Replicator. Every field is required.
type Config struct {
	// Self is this node; Boot identifies this process among its
	// incarnations (a replica does not continue another process's copy).
	Self wire.Member
	Boot uint64
	// Clock drives the refresh interval and stamps copies; Logger receives
	// replication problems.
	Clock  clock.Clock
	Logger *slog.Logger
	// Ctx ends with the router: streams stop and their calls end. Go runs
	// a goroutine the router waits for on Close (false once it closes).
	Ctx context.Context
	Go  func(func()) bool
	// Call sends MethodReplicate batches to replicas.
	Call wire.Call
	// View returns the current routing view; Routes and Engine are the
	// router's routing table and the node's engine.
	View   func() View
	Routes Routes
	Engine Engine
	// Publish publishes a message once the replica acknowledged the change
	// that made it.
	Publish func(*presence.Message)
	// Interest lists the nodes a promoted copy of channel must push its
	// messages to: those interested in it, this one included when it has
	// local subscribers.
	Interest func(channel string) []wire.Interested
	// Fence is called when a replica refuses channel because it holds the
	// channel itself (holder): this node was replaced while paused or cut
	// off, and must hand what it has to holder.
	Fence func(channel string, holder wire.Member)
	// Rebalance asks the router for a rebalance pass: a copy arrived from
	// the ring owner of a channel this node still holds.
	Rebalance func()
	// Released is called when a replica acknowledged the snapshot of a
	// channel installed from keeper (Superseded), or the channel has no
	// replica: the channel is as safe as it gets, and keeper may drop the
	// state it kept since it handed the channel over (Store.KeepHanded).
	Released func(channel, keeper string)
	// Interval is the longest a refresh waits before it is sent (the grace
	// of a promoted copy); CallTimeout bounds one batch's call;
	// RetryBackoff is the first pause after a failed or deferred batch.
	Interval, CallTimeout, RetryBackoff time.Duration
	// Lag is presence_replication_lag_seconds; Refused counts the channels
	// whose copies this node refused (presence_replica_refused_total).
	Lag     prometheus.Gauge
	Refused prometheus.Counter
}

func (c *Config) validate() error {
	switch {
	case c.Self.Name == "" || c.Clock == nil || c.Logger == nil || c.Ctx == nil || c.Go == nil || c.Call == nil:
		return errors.New("replica: config needs self, clock, logger, context, goroutines and calls")
	case c.View == nil || c.Routes == nil || c.Engine == nil || c.Publish == nil || c.Interest == nil || c.Fence == nil || c.Rebalance == nil || c.Released == nil:
		return errors.New("replica: config needs the view, routes, engine, publish, interest, fence, rebalance and released")
	case c.Interval <= 0 || c.CallTimeout <= 0 || c.RetryBackoff <= 0:
		return errors.New("replica: config needs positive durations")
	case c.Lag == nil || c.Refused == nil:
		return errors.New("replica: config needs its metrics")
	}
	return nil
}

// Replicator is both ends of replication on one node: the streams of the
// changes of the channels it runs to their replicas, and the copies it
// keeps for other owners with the leave log. See the package
// documentation.
type Replicator struct {
	cfg     Config
	log     *slog.Logger
	streams streams
	store   Store
	leaves  LeaveLog
	kick    chan struct{} // buffered 1: Run should go round now
	// supersedes: channel → the lineage of the channel's last install
	// (handedFrom), for the snapshot that install sends the replica.
	supersedes sync.Map
}

var _ presence.Replicator = (*Replicator)(nil)

// New returns a Replicator; Run fills the replicas.
func New(cfg Config) (*Replicator, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	p := &Replicator{cfg: cfg, log: cfg.Logger, kick: make(chan struct{}, 1)}
	p.streams.init()
	p.store.init()
	p.leaves.init()
	return p, nil
}

// Copies returns the copies this node keeps for other owners.
func (p *Replicator) Copies() *Store { return &p.store }

// Leaves returns the leave log of the channels held here.
func (p *Replicator) Leaves() *LeaveLog { return &p.leaves }

// Replicate implements presence.Replicator: it routes one change of a
// channel this node runs into the stream of the channel's replica, and the
// change's message is published once the replica has it; without a
// replica it is settled at once.
func (p *Replicator) Replicate(c presence.Change) {
	switch c.Kind {
	case presence.ChangeStopped:
		// A channel handed over keeps its copy until the new holder's
		// replica has one: the hand-off may still fail with this node.
		p.streams.stopped(c.Channel, !p.cfg.Routes.MovingOut(c.Channel))
		return
	case presence.ChangeLeave:
		p.leaves.AddClient(c.Channel, c.UserID, c.ClientID, c.At)
	}
	to, ok := p.replicaOf(p.cfg.View(), c.Channel)
	if !ok {
		if c.Kind == presence.ChangeSnapshot {
			// No replica to wait for: the node that handed the channel
			// over keeps nothing in vain (a leaver waits for it).
			if from, ok := p.supersedes.LoadAndDelete(c.Channel); ok {
				p.release(c.Channel, from.(handedFrom).keeper, "")
			}
		}
		p.settle(c.Message, c.Done, nil)
		return
	}
	p.streams.get(p, to).add(p, &c)
}

// InterestChanged tells the replica of a channel held here that the nodes
// interested in it changed: a copy promoted after the owner died pushes
// the channel's messages to them (without it, only to those of the copy's
// last snapshot, until the others re-registered).
func (p *Replicator) InterestChanged(channel string) {
	if !p.cfg.Routes.Holds(channel) {
		return
	}
	if to, ok := p.replicaOf(p.cfg.View(), channel); ok {
		p.streams.get(p, to).addInterest(p, channel)
	}
}

// Stopped drops channel from every stream: the state this node had of it
// was replaced (an install, a merge), and what its actor still had on its
// way to the replica is settled without being published. With tell,
// replicas drop their copies too.
func (p *Replicator) Stopped(channel string, tell bool) { p.streams.stopped(channel, tell) }

// HandedOver tells the replicas that still keep a copy of channel, which
// this node handed to another holder, to drop it.
func (p *Replicator) HandedOver(channel string) { p.streams.retired(channel, "") }

// handedFrom is where the state of a channel installed here came from:
// origin, the node whose state it continues, and keeper, the node that
// sent it and keeps it until this node's replica has the channel.
type handedFrom struct{ origin, keeper string }

// Superseded records that the state of channel installed here continues
// origin's ("": nobody's) and was sent by keeper (the same node, except for a promoted
// copy handed on by the dead owner's replica): the snapshot this node's
// replica gets next says so, a copy origin sent here earlier is dropped
// (older than this state, merged in later it could bring back clients
// that left), and keeper is told once the replica acknowledged it
// (Config.Released).
func (p *Replicator) Superseded(channel, origin, keeper string) {
	p.supersedes.Store(channel, handedFrom{origin: origin, keeper: keeper})
	p.store.dropFrom(channel, origin)
}

// release tells keeper, unless it is this node or the replica that has
// just acknowledged the snapshot (which replaced its handed state), that
// channel is safe here.
func (p *Replicator) release(channel, keeper, replica string) {
	if keeper != "" && keeper != replica && keeper != p.cfg.Self.Name {
		p.cfg.Released(channel, keeper)
	}
}

// Flush waits until every stream has sent and had answered what it holds,
// or ctx ends: a node leaving gracefully lets its replicas learn that it
// handed its channels over before the others see it go.
func (p *Replicator) Flush(ctx context.Context) error { return p.streams.flush(ctx) }

// Kick asks Run for a round now (the membership changed).
func (p *Replicator) Kick() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// resyncEvery is how many Intervals pass between two checks that every
// owned channel has a copy.
const resyncEvery = 5

// Run fills replicas until Ctx ends: after a membership change (Kick) and
// every resyncEvery Intervals, it closes the streams of departed nodes,
// moves channels whose replica changed, prunes the copies and leaves kept
// here, and asks each channel this node runs whose replica has no copy
// for a whole snapshot.
func (p *Replicator) Run() {
	t := p.cfg.Clock.NewTicker(resyncEvery * p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-p.kick:
		case <-t.C():
		case <-p.cfg.Ctx.Done():
			return
		}
		v := p.cfg.View()
		p.streams.keepOnly(p, v)
		p.streams.retarget(p, v)
		p.store.prune(v, p.cfg.Clock.Now().UnixNano(), p.cfg.Routes.Holds)
		p.leaves.prune(p.cfg.Clock.Now().Add(-leaveMemory).UnixNano())
		p.resync(v)
	}
}

// resync asks every channel run here without a copy on its replica for a
// snapshot.
func (p *Replicator) resync(v View) {
	for _, ch := range p.cfg.Engine.Channels() {
		if p.cfg.Ctx.Err() != nil {
			return
		}
		to, ok := p.replicaOf(v, ch)
		if !ok || p.streams.synced(to.Name, ch) {
			continue
		}
		if err := p.cfg.Engine.Resend(ch); err != nil {
			p.log.Debug("sending a channel to its replica failed", "channel", ch, "err", err)
		}
	}
}

// replicaOf returns where this node replicates channel: to the ring's
// replica when it owns the channel, and to the owner when it only holds it
// until a hand-off (so that a crash then loses nothing either).
func (p *Replicator) replicaOf(v View, channel string) (wire.Member, bool) {
	owner, replica := v.OwnerAndReplica(channel)
	if owner != p.cfg.Self.Name {
		replica = owner
	}
	if replica == "" || replica == p.cfg.Self.Name {
		return wire.Member{}, false
	}
	return v.Member(replica)
}

// settle ends an item: with err nil its message is published and its
// caller answered; with an error the message is dropped (the channel has a
// newer owner, which publishes) and the caller gets the error.
func (p *Replicator) settle(m *presence.Message, done chan<- error, err error) {
	if err == nil && m != nil {
		p.cfg.Publish(m)
	}
	if done != nil {
		done <- err
	}
}

// sleep waits d of wall time (it paces network calls) or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

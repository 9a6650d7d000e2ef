package fanout

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// View is what cross-node subscriptions need of the router's routing
// view: the ring owner of a channel and the members' addresses.
type View interface {
	Owner(channel string) string
	Member(name string) (wire.Member, bool)
}

// Config configures a Fanout. Every field is required but Changed.
type Config struct {
	// Self is this node.
	Self wire.Member
	// Clock starts the registration generations (a restarted node's are
	// newer than its previous process's); Logger receives problems.
	Clock  clock.Clock
	Logger *slog.Logger
	// Ctx ends with the router: loops stop and calls end. Go runs a
	// goroutine the router waits for on Close (false once it closes).
	Ctx context.Context
	Go  func(func()) bool
	// Call sends pushes and interest changes to other nodes.
	Call wire.Call
	// View returns the current routing view.
	View func() View
	// Catchup fetches channel's catch-up after after for u from the node
	// that holds the channel, wherever it is, registering this node's
	// interest there at generation gen (MethodSince, routed).
	Catchup func(ctx context.Context, u *presence.User, channel string, after int64, gen uint64) (presence.Catchup, error)
	// Handed returns the node this node handed channel to, if it did,
	// waiting for a hand-off in progress: interest changes follow it.
	Handed func(ctx context.Context, channel string) (to wire.Member, handed bool, err error)
	// Changed, if set, is told when the nodes interested in a channel held
	// here change (the channel's replica is told in turn).
	Changed func(channel string)
	// CallTimeout bounds a push, an interest call and a catch-up;
	// FlushTimeout bounds the wait for queued pushes during a hand-off.
	CallTimeout, FlushTimeout time.Duration
	// PushQueue bounds the messages queued for one node; PushBatch is the
	// most sent in one push.
	PushQueue, PushBatch int
	// Dropped counts the messages not delivered to a node
	// (presence_push_dropped_total).
	Dropped prometheus.Counter
	// Hub configures this node's hub; its OnChannel is the feed's.
	Hub presence.HubConfig
}

func (c *Config) validate() error {
	switch {
	case c.Self.Name == "" || c.Clock == nil || c.Logger == nil || c.Ctx == nil || c.Go == nil || c.Call == nil:
		return errors.New("fanout: config needs self, clock, logger, context, goroutines and calls")
	case c.View == nil || c.Catchup == nil || c.Handed == nil || c.Dropped == nil:
		return errors.New("fanout: config needs the view, catch-ups, hand-offs and its metric")
	case c.CallTimeout <= 0 || c.FlushTimeout <= 0 || c.PushQueue <= 0 || c.PushBatch <= 0:
		return errors.New("fanout: config needs positive timeouts and sizes")
	}
	return nil
}

// Fanout carries the messages of channels to the nodes whose users
// subscribe to them: on a channel's holder, the nodes interested in it and
// their push queues; on every node, the hub of its subscriptions and the
// feed that orders what enters it. See the package documentation.
type Fanout struct {
	cfg   Config
	hub   *presence.Hub
	table table
	out   outbound
	feed  feed
}

// New returns a Fanout and its hub; Run sends interest changes.
func New(cfg Config) (*Fanout, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	f := &Fanout{cfg: cfg}
	f.table.init(cfg.Self.Name, cfg.Changed)
	f.out.init(&f.cfg, f.table.apply)
	f.feed.init(&f.cfg)
	hubCfg := cfg.Hub
	hubCfg.OnChannel = f.feed.onChannel
	hub, err := presence.NewHub(hubCfg)
	if err != nil {
		return nil, err
	}
	f.hub, f.feed.hub = hub, hub
	return f, nil
}

// Run sends the interest changes of this node's subscriptions to the
// holders and fills gaps after owner changes, until Ctx ends.
func (f *Fanout) Run() { f.feed.run() }

// Close ends every subscription of the hub.
func (f *Fanout) Close() { f.hub.Close() }

// Subscribe streams the events of the channels of from to u, each
// channel's catch-up coming from its holder (Since).
func (f *Fanout) Subscribe(ctx context.Context, u *presence.User, from map[string]int64) (presence.Subscription, error) {
	return f.hub.Subscribe(ctx, u, from, f)
}

// Since implements presence.CatchupSource: the catch-up comes from the
// channel's holder, which registers this node's interest first when the
// channel has local subscribers, so nothing published later is missed.
// Channel names are the caller's to check.
func (f *Fanout) Since(ctx context.Context, u *presence.User, channel string, after int64) (presence.Catchup, error) {
	cu, err := f.cfg.Catchup(ctx, u, channel, after, f.feed.genOf(channel))
	if err == nil {
		f.feed.observe(channel, cu)
	}
	return cu, err
}

// Publish hands a message of a channel held here to the local hub and, in
// order, to the push queue of every interested node. It never blocks.
func (f *Fanout) Publish(m *presence.Message) {
	f.feed.deliver(m)
	f.table.each(m.Channel, func(to wire.Member) { f.out.enqueue(to, m) })
}

// Register records node's interest in channel, held here, at generation
// gen (a catch-up served here for node).
func (f *Fanout) Register(node wire.Member, channel string, gen uint64) {
	f.table.apply(node, wire.InterestChange{Channel: channel, On: true, Gen: gen})
}

// Remote returns the other nodes interested in channel.
func (f *Fanout) Remote(channel string) []wire.Interested { return f.table.export(channel) }

// Interested returns the nodes interested in channel, this one included
// when it has local subscribers: what a replica's copy must push to once
// promoted.
func (f *Fanout) Interested(channel string) []wire.Interested {
	return f.withSelf(channel, f.table.export(channel))
}

// HandOver returns the nodes interested in channel, this one included,
// to hand over with the channel, once the messages already queued for them
// have been sent (or FlushTimeout passed): the new holder's messages cannot
// overtake the old holder's.
func (f *Fanout) HandOver(ctx context.Context, channel string) []wire.Interested {
	interest := f.table.export(channel)
	flushCtx, cancel := context.WithTimeout(ctx, f.cfg.FlushTimeout)
	f.out.flush(flushCtx, interest)
	cancel()
	return f.withSelf(channel, interest)
}

func (f *Fanout) withSelf(channel string, interest []wire.Interested) []wire.Interested {
	if gen := f.feed.genOf(channel); gen != 0 {
		interest = append(interest, wire.Interested{Node: f.cfg.Self, Gen: gen})
	}
	return interest
}

// Add merges the interest handed over with channel.
func (f *Fanout) Add(channel string, interest []wire.Interested) { f.table.add(channel, interest) }

// Drop forgets the interest in channel, handed away.
func (f *Fanout) Drop(channel string) { f.table.drop(channel) }

// ForgetNodes drops the interest and the push queues of nodes that left
// the membership.
func (f *Fanout) ForgetNodes(gone map[string]bool) {
	f.table.forgetNodes(gone)
	f.out.forgetNodes(gone)
}

// OwnersChanged registers this node's interest again, and fills the gap,
// for every channel with local subscribers whose owner changed.
func (f *Fanout) OwnersChanged(changed func(channel string) bool) { f.feed.ownersChanged(changed) }

// HandleInterest serves MethodInterest: it registers a node's interest
// changes. A change for a channel this node handed away follows it to its
// new holder, so that it is not lost in a hand-off that was under way.
func (f *Fanout) HandleInterest(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeInterestRequest(body)
	if err != nil {
		return nil, err
	}
	onward := make(map[wire.Member][]wire.InterestChange)
	for _, c := range q.Changes {
		to, moved, err := f.cfg.Handed(ctx, c.Channel)
		if err != nil {
			return nil, err
		}
		if moved && to.Name != q.Node.Name {
			onward[to] = append(onward[to], c)
			continue
		}
		f.table.apply(q.Node, c)
	}
	for to, changes := range onward {
		fwd := wire.InterestRequest{Node: q.Node, Changes: changes}
		if _, err := f.cfg.Call(ctx, to, wire.MethodInterest, fwd.Encode); err != nil {
			f.cfg.Logger.Debug("forwarding interest failed", "to", to.Name, "err", err)
		}
	}
	return nil, nil
}

// HandlePush serves MethodPush: it feeds pushed messages to the local
// subscribers and answers the channels nobody here follows any more, so
// the holder stops pushing them.
func (f *Fanout) HandlePush(_ context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodePushRequest(body)
	if err != nil {
		return nil, err
	}
	var reply wire.PushReply
	for _, m := range q.Messages {
		if wanted, gen := f.feed.deliver(m); !wanted && !hasChannel(reply.Unwanted, m.Channel) {
			reply.Unwanted = append(reply.Unwanted, wire.InterestChange{Channel: m.Channel, Gen: gen})
		}
	}
	if len(reply.Unwanted) == 0 {
		return nil, nil
	}
	return wire.Marshal(reply.Encode), nil
}

func hasChannel(changes []wire.InterestChange, ch string) bool {
	for _, c := range changes {
		if c.Channel == ch {
			return true
		}
	}
	return false
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

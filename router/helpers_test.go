package router

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// testConfigs is the channel configuration of the tests: /pub/* public,
// /staff/* visible to the group staff, /count/* public and count-only,
// /cap/* public with at most two users; anything else does not exist.
type testConfigs struct{}

var (
	pubConfig   = &presence.Config{Public: true}
	staffConfig = &presence.Config{AllowedGroupIDs: []string{"staff"}}
	countConfig = &presence.Config{Public: true, CountOnly: true}
	capConfig   = &presence.Config{Public: true, MaxUsers: 2}
)

func (testConfigs) Resolve(_ context.Context, ch string) (*presence.Config, error) {
	prefix, _ := presence.ChannelPrefix(ch)
	switch prefix {
	case "pub":
		return pubConfig, nil
	case "staff":
		return staffConfig, nil
	case "count":
		return countConfig, nil
	case "cap":
		return capConfig, nil
	}
	return nil, nil
}

// countingCaller counts calls per method and lets a test fail some.
type countingCaller struct {
	next   Caller
	counts [wire.MaxMethod + 1]atomic.Int64
	// fail, if set, may return an error instead of making the call.
	fail atomic.Pointer[func(addr string, method uint16) error]
}

func (c *countingCaller) Call(ctx context.Context, addr string, method uint16, body []byte) ([]byte, error) {
	c.counts[method].Add(1)
	if f := c.fail.Load(); f != nil {
		if err := (*f)(addr, method); err != nil {
			return nil, err
		}
	}
	return c.next.Call(ctx, addr, method, body)
}

func (c *countingCaller) count(method uint16) int64 { return c.counts[method].Load() }

func (c *countingCaller) setFail(f func(addr string, method uint16) error) {
	if f == nil {
		c.fail.Store(nil)
		return
	}
	c.fail.Store(&f)
}

// testNode is one node: engine, real transport on loopback, router.
type testNode struct {
	name   string
	engine *presence.Engine
	tr     *transport.Transport
	caller *countingCaller
	r      *Router
}

func (n *testNode) member() Member { return Member{Name: n.name, RPCAddr: n.tr.Addr()} }

// testCluster is several nodes in one process sharing a fake clock.
type testCluster struct {
	t     testing.TB
	clk   *clock.Fake
	mu    sync.Mutex
	nodes []*testNode
	tune  func(*Config)
}

func newTestCluster(t testing.TB, n int, tune func(*Config)) *testCluster {
	t.Helper()
	c := &testCluster{t: t, clk: clock.NewFake(time.Unix(1_700_000_000, 0)), tune: tune}
	for i := range n {
		c.addNode(fmt.Sprintf("n%d", i+1))
	}
	c.setMembers(c.nodes...)
	return c
}

// addNode starts a node that knows only itself.
func (c *testCluster) addNode(name string) *testNode {
	t := c.t
	t.Helper()
	var rt atomic.Pointer[Router]
	tr, err := transport.Listen(transport.Config{
		BindAddr: "127.0.0.1:0",
		Errors:   wire.TransportErrors(),
		Handler: func(ctx context.Context, method uint16, body []byte) ([]byte, error) {
			r := rt.Load()
			if r == nil {
				return nil, presence.ErrUnavailable
			}
			return r.Handle(ctx, method, body)
		},
	})
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	pub := NewPublisher()
	engine, err := presence.NewEngine(presence.EngineConfig{Clock: c.clk, Configs: testConfigs{}, Publisher: pub, Replicator: pub})
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	n := &testNode{name: name, engine: engine, tr: tr, caller: &countingCaller{next: tr}}
	cfg := Config{
		Self:         Member{Name: name, RPCAddr: tr.Addr()},
		Engine:       engine,
		Publisher:    pub,
		Transport:    n.caller,
		Clock:        c.clk,
		RetryBackoff: time.Millisecond,
		Logger:       testkit.Logger(t),
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	n.r, err = New(cfg)
	if err != nil {
		t.Fatalf("router: %v", err)
	}
	rt.Store(n.r)
	t.Cleanup(func() {
		n.r.Close()
		tr.Close()
		engine.Close(context.Background())
	})
	c.mu.Lock()
	c.nodes = append(c.nodes, n)
	c.mu.Unlock()
	return n
}

// setMembers tells every node in nodes that nodes are the members.
func (c *testCluster) setMembers(nodes ...*testNode) {
	members := make([]Member, len(nodes))
	for i, n := range nodes {
		members[i] = n.member()
	}
	for _, n := range nodes {
		n.r.SetMembers(members)
	}
}

func members(nodes ...*testNode) []Member {
	out := make([]Member, len(nodes))
	for i, n := range nodes {
		out[i] = n.member()
	}
	return out
}

// waitSettled waits until no node has a hand-off pending.
func (c *testCluster) waitSettled(nodes ...*testNode) {
	c.t.Helper()
	testkit.WaitFor(c.t, "ownership to settle", func() bool {
		for _, n := range nodes {
			if !n.r.Settled() {
				return false
			}
		}
		return true
	})
}

// retryFailedPushes waits until every requested rebalance pass of nodes
// has run (so a failed one has set its retry timer), then advances the
// clock past the retry and waits for every node to settle.
func (c *testCluster) retryFailedPushes(nodes ...*testNode) {
	c.t.Helper()
	testkit.WaitFor(c.t, "the rebalance passes", func() bool {
		for _, n := range nodes {
			if !n.r.settling.idle() {
				return false
			}
		}
		return true
	})
	c.clk.Advance(DefaultRebalanceRetry)
	c.waitSettled(c.nodes...)
}

// node returns the node called name.
func (c *testCluster) node(name string) *testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func user(id string, groups ...string) *presence.User {
	return &presence.User{ID: id, Username: "u" + id, Name: "User " + id, Groups: groups}
}

// userIDs lists the ids of a state's users, sorted.
func userIDs(st *presence.ChannelState) []string {
	if st == nil {
		return nil
	}
	ids := make([]string, 0, len(st.Users))
	for _, u := range st.Users {
		ids = append(ids, u.ID)
	}
	slices.Sort(ids)
	return ids
}

// collector drains a subscription, as the SSE handler would.
type collector struct {
	mu   sync.Mutex
	evs  []presence.Event
	done chan struct{}
}

func collect(t testing.TB, s presence.Subscription) *collector {
	c := &collector{done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for ev := range s.Events() {
			c.mu.Lock()
			c.evs = append(c.evs, ev)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		<-c.done
	})
	return c
}

func (c *collector) events() []presence.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

// messages returns the message events of channel.
func (c *collector) messages(channel string) []presence.Event {
	var out []presence.Event
	for _, ev := range c.events() {
		if ev.Channel == channel && ev.Kind == presence.EventMessage {
			out = append(out, ev)
		}
	}
	return out
}

// checkStream verifies the contract of one channel's events: positions
// strictly increase, and each message continues the previous event's
// position by one (a gap shows up as a resync event instead).
func checkStream(t testing.TB, evs []presence.Event, channel string) {
	t.Helper()
	var last int64 = -1
	for _, ev := range evs {
		if ev.Channel != channel {
			continue
		}
		switch ev.Kind {
		case presence.EventResync:
			if last >= 0 && ev.LastID <= last {
				t.Fatalf("%s: resync to %d after %d", channel, ev.LastID, last)
			}
		case presence.EventMessage:
			if last >= 0 && ev.Message.ID != last+1 {
				t.Fatalf("%s: message %d after %d without resync", channel, ev.Message.ID, last)
			}
		case presence.EventUnavailable:
			t.Fatalf("%s: unexpectedly unavailable", channel)
		}
		last = ev.LastID
	}
}

// testutilValue reads a counter's value.
func testutilValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

package ratelimit

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/wire"
)

// errUnreachable is what a call to or from a cut node fails with.
var errUnreachable = fmt.Errorf("%w: test network cut", presence.ErrUnavailable)

// testView is a ring over some members, as the router's view.
type testView struct {
	ring    *ring.Ring
	members map[string]wire.Member
}

func (v *testView) Owner(key string) string { return v.ring.Owner(key) }

func (v *testView) Member(name string) (wire.Member, bool) {
	m, ok := v.members[name]
	return m, ok
}

// testNet is limiters of several nodes sharing a fake clock, calling each
// other's Handle directly. It counts the calls by op, can cut nodes off
// (calls fail at once) or blackhole them (calls hang until they time out),
// and knows when no background work is left (settle).
type testNet struct {
	t     *testing.T
	clk   *clock.Fake
	ctx   context.Context
	nodes map[string]*testNode
	view  atomic.Pointer[testView]
	// own: a node's view when it differs from view (membership changes
	// reach nodes one at a time).
	own map[string]*atomic.Pointer[testView]

	mu      sync.Mutex
	cut     map[string]bool
	hang    map[string]bool
	ops     map[wire.LimitOp]int
	running sync.WaitGroup
	busy    atomic.Int64 // background goroutines running
}

type testNode struct {
	name string
	l    *Limiter
	reg  *prometheus.Registry
}

// newTestNet starts n limiters, n1 to nN, all members of the view. They
// do not sweep on their own: tests call sweep.
func newTestNet(t *testing.T, n int, tune func(*Limits)) *testNet {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	net := &testNet{
		t: t, clk: clock.NewFake(time.Unix(1_700_000_000, 0)), ctx: ctx, nodes: make(map[string]*testNode),
		cut: make(map[string]bool), hang: make(map[string]bool), ops: make(map[wire.LimitOp]int),
		own: make(map[string]*atomic.Pointer[testView]),
	}
	t.Cleanup(func() {
		cancel()
		net.running.Wait()
	})
	var names []string
	for i := range n {
		names = append(names, "n"+strconv.Itoa(i+1))
	}
	net.setView(names...)
	for _, name := range names {
		own := &atomic.Pointer[testView]{}
		net.own[name] = own
		var lim Limits
		if tune != nil {
			tune(&lim)
		}
		reg := prometheus.NewRegistry()
		l, err := New(Config{
			Limits: lim,
			Self:   wire.Member{Name: name, RPCAddr: name + ":7947"},
			Clock:  net.clk, Logger: testkit.Logger(t), Ctx: ctx, Go: net.spawn,
			Call: net.caller(name),
			View: func() View {
				if v := own.Load(); v != nil {
					return v
				}
				return net.view.Load()
			},
			Registry: reg,
		})
		if err != nil {
			t.Fatal(err)
		}
		net.nodes[name] = &testNode{name: name, l: l, reg: reg}
	}
	return net
}

// setView makes names the members of the view every node sees.
func (net *testNet) setView(names ...string) {
	net.view.Store(newTestView(names...))
	for _, own := range net.own {
		own.Store(nil)
	}
}

// setOwnView makes names the members of node's view alone.
func (net *testNet) setOwnView(node string, names ...string) {
	net.own[node].Store(newTestView(names...))
}

func newTestView(names ...string) *testView {
	members := make(map[string]wire.Member, len(names))
	for _, n := range names {
		members[n] = wire.Member{Name: n, RPCAddr: n + ":7947"}
	}
	return &testView{ring: ring.New(uint64(len(names)), names), members: members}
}

// spawn is the limiters' Config.Go.
func (net *testNet) spawn(fn func()) bool {
	if net.ctx.Err() != nil {
		return false
	}
	net.running.Add(1)
	net.busy.Add(1)
	go func() {
		defer net.running.Done()
		defer net.busy.Add(-1)
		fn()
	}()
	return true
}

// caller is node from's Config.Call.
func (net *testNet) caller(from string) wire.Call {
	return func(ctx context.Context, to wire.Member, method uint16, enc func(*wire.Encoder)) ([]byte, error) {
		if method != wire.MethodLimit {
			return nil, fmt.Errorf("method %d", method)
		}
		body := wire.Marshal(enc)
		net.mu.Lock()
		net.ops[wire.LimitOp(body[0])]++
		cut := net.cut[from] || net.cut[to.Name]
		hang := net.hang[from] || net.hang[to.Name]
		net.mu.Unlock()
		switch {
		case cut:
			return nil, errUnreachable
		case hang:
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return net.nodes[to.Name].l.Handle(ctx, body)
	}
}

// settle waits until no background borrow, return or recall is running.
func (net *testNet) settle() {
	net.t.Helper()
	testkit.WaitFor(net.t, "background rate limit calls", func() bool { return net.busy.Load() == 0 })
}

// sweep sweeps every node, then settles.
func (net *testNet) sweep() {
	net.t.Helper()
	for _, name := range slices.Sorted(maps.Keys(net.nodes)) {
		net.nodes[name].l.Sweep()
	}
	net.settle()
}

// allow makes one call of user at node and waits for its background work.
func (net *testNet) allow(node, user string) (bool, time.Duration) {
	net.t.Helper()
	ok, wait := net.nodes[node].l.Allow(context.Background(), user, nil)
	net.settle()
	return ok, wait
}

// count returns how many calls of op were made.
func (net *testNet) count(op wire.LimitOp) int {
	net.mu.Lock()
	defer net.mu.Unlock()
	return net.ops[op]
}

func (net *testNet) setCut(node string, cut bool) {
	net.mu.Lock()
	defer net.mu.Unlock()
	net.cut[node] = cut
}

func (net *testNet) setHang(node string, hang bool) {
	net.mu.Lock()
	defer net.mu.Unlock()
	net.hang[node] = hang
}

// userKeptBy returns a user id whose bucket node keeps.
func (net *testNet) userKeptBy(node string) string {
	net.t.Helper()
	v := net.view.Load()
	for i := range 10_000 {
		if u := "u" + strconv.Itoa(i); v.Owner(KeyPrefix+u) == node {
			return u
		}
	}
	net.t.Fatalf("no user kept by %s", node)
	return ""
}

// others returns the nodes but node, sorted.
func (net *testNet) others(node string) []string {
	var out []string
	for _, n := range slices.Sorted(maps.Keys(net.nodes)) {
		if n != node {
			out = append(out, n)
		}
	}
	return out
}

// decisions reads presence_ratelimit_decisions_total{path,result} of node.
func (net *testNet) decisions(node, path, result string) int {
	net.t.Helper()
	return int(counterValue(net.t, net.nodes[node].reg, "presence_ratelimit_decisions_total",
		map[string]string{"path": path, "result": result}))
}

// counterValue reads the counter or gauge name with labels from reg.
func counterValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			if matches(m, labels) {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s%v", name, labels)
	return 0
}

func matches(m *dto.Metric, labels map[string]string) bool {
	n := 0
	for _, lp := range m.GetLabel() {
		if v, ok := labels[lp.GetName()]; ok {
			if v != lp.GetValue() {
				return false
			}
			n++
		}
	}
	return n == len(labels)
}

// peek returns user's entry in t, nil if none.
func peek[V any](t *table[V], user string) *V {
	sh := t.shard(user)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m[user]
}

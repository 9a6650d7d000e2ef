package router

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/wire"
)

// heldCount reads presence_held_requests_total{outcome} of r.
func heldCount(r *Router, outcome string) float64 {
	return testutilValue(r.m.held.WithLabelValues(outcome))
}

// gaugeValue reads a gauge's value.
func gaugeValue(g prometheus.Gauge) float64 {
	var m dto.Metric
	if err := g.Write(&m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// updateResult is what an Update run in the background answered.
type updateResult struct {
	got map[string]bool
	err error
}

// updateAsync runs an update of u in ch through n in the background.
func updateAsync(ctx context.Context, n *testNode, u *presence.User, ch string) <-chan updateResult {
	out := make(chan updateResult, 1)
	go func() {
		got, err := n.r.Update(ctx, u, "tab", []string{ch}, nil)
		out <- updateResult{got, err}
	}()
	return out
}

// waitHeld waits until n holds want requests.
func waitHeld(t *testing.T, n *testNode, want float64) {
	t.Helper()
	testkit.WaitFor(t, "requests held", func() bool { return gaugeValue(n.r.m.holding) == want })
}

// requireServed fails unless res is a successful present of ch.
func requireServed(t *testing.T, res <-chan updateResult, ch string) {
	t.Helper()
	r := <-res
	if r.err != nil || !r.got[ch] {
		t.Fatalf("held update: %v %v, want it served", r.got, r.err)
	}
}

// requireWaiting fails when res has an answer already.
func requireWaiting(t *testing.T, res <-chan updateResult) {
	t.Helper()
	select {
	case r := <-res:
		t.Fatalf("the held update was answered before the view changed: %v %v", r.got, r.err)
	default:
	}
}

// TestUnreachableOwnerIsHeldUntilTheViewChanges: the owner of a channel
// dies; a request for it waits instead of failing, and the view without
// the owner (memberlist declaring it dead) wakes it: a retry would wait an
// hour (RetryBackoff), so nothing but the view change can have served it.
func TestUnreachableOwnerIsHeldUntilTheViewChanges(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.RetryBackoff = time.Hour })
	ctx := testCtx(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	b.tr.Close()
	res := updateAsync(ctx, a, user("1"), ch)
	waitHeld(t, a, 1)
	requireWaiting(t, res)
	cc.r.SetMembers(members(a, cc))
	a.r.SetMembers(members(a, cc))
	requireServed(t, res, ch)
	if n := heldCount(a.r, heldServed); n != 1 {
		t.Errorf("held and served: %v, want 1", n)
	}
	if n := gaugeValue(a.r.m.holding); n != 0 {
		t.Errorf("%v requests still held", n)
	}
}

// TestStalledOwnerDoesNotTakeTheHold: the owner is paused (its calls
// never answer). Each attempt ends at ForwardTimeout, much shorter than
// the hold, so the request is still held, and served, when the view
// without the owner arrives.
func TestStalledOwnerDoesNotTakeTheHold(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.ForwardTimeout = 300 * time.Millisecond })
	ctx := testCtx(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	a.caller.setStall(func(addr string, _ uint16) bool { return addr == b.tr.Addr() })
	res := updateAsync(ctx, a, user("1"), ch)
	testkit.WaitFor(t, "attempts timing out and being held", func() bool {
		return a.caller.count(wire.MethodUpdate) >= 2 && gaugeValue(a.r.m.holding) == 1
	})
	requireWaiting(t, res)
	cc.r.SetMembers(members(a, cc))
	a.r.SetMembers(members(a, cc))
	requireServed(t, res, ch)
}

// TestQueuedUpdatesOfADepartedNodeAreRoutedAgain: updates queued behind a
// stuck batch to a node are answered when the node leaves the view, and
// go to the new owner, instead of waiting for the stuck batch.
func TestQueuedUpdatesOfADepartedNodeAreRoutedAgain(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.ForwardStall, cfg.ForwardTimeout = time.Hour, time.Hour })
	ctx := testCtx(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	a.caller.setStall(func(addr string, _ uint16) bool { return addr == b.tr.Addr() })
	stuckCtx, cancelStuck := context.WithCancel(ctx)
	defer cancelStuck()
	stuck := updateAsync(stuckCtx, a, user("1"), ch)
	testkit.WaitFor(t, "the first batch to leave", func() bool { return a.caller.count(wire.MethodUpdate) == 1 })
	queued := updateAsync(ctx, a, user("2"), ch)
	q := a.r.batch.queue(b.member())
	testkit.WaitFor(t, "the second update to queue", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.items) == 1
	})
	cc.r.SetMembers(members(a, cc))
	a.r.SetMembers(members(a, cc))
	requireServed(t, queued, ch)
	requireWaiting(t, stuck) // its batch is still in flight to the stalled node
	cancelStuck()
	if r := <-stuck; !errors.Is(r.err, context.Canceled) {
		t.Errorf("stuck update after its caller left: %v %v, want context.Canceled", r.got, r.err)
	}
}

// TestLaggingViewOfTheNextNodeIsHeld: the entry node already routes to the
// new owner, which still routes to the dead one. The new owner answers
// ErrMoved at once (it does not hold a forwarded call); the entry node
// holds the request and routes it again until the new owner catches up.
func TestLaggingViewOfTheNextNodeIsHeld(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	full, without := ring.New(1, []string{"n1", "n2", "n3"}), ring.New(1, []string{"n1", "n3"})
	var ch string
	for i := 0; ch == ""; i++ {
		cand := fmt.Sprintf("/pub/lag%d", i)
		if full.Owner(cand) == b.name && without.Owner(cand) == cc.name {
			ch = cand
		}
	}
	b.tr.Close()
	a.r.SetMembers(members(a, cc))
	before := cc.caller.count(wire.MethodUpdate)
	res := updateAsync(ctx, a, user("1"), ch)
	testkit.WaitFor(t, "n3 forwarding to the dead owner", func() bool {
		return cc.caller.count(wire.MethodUpdate) > before && gaugeValue(a.r.m.holding) == 1
	})
	requireWaiting(t, res)
	cc.r.SetMembers(members(a, cc))
	requireServed(t, res, ch)
}

// TestHeldRequestsAreBounded: beyond MaxHeld, a request that fails is
// answered at once.
func TestHeldRequestsAreBounded(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.MaxHeld, cfg.RetryBackoff = 1, time.Hour })
	ctx := testCtx(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	b.tr.Close()
	first := updateAsync(ctx, a, user("1"), ch)
	waitHeld(t, a, 1)
	_, err := a.r.Get(ctx, user("2"), []string{ch})
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("get beyond MaxHeld: %v, want ErrUnavailable", err)
	}
	if n := heldCount(a.r, heldFull); n != 1 {
		t.Errorf("refused for a full hold: %v, want 1", n)
	}
	cc.r.SetMembers(members(a, cc))
	a.r.SetMembers(members(a, cc))
	requireServed(t, first, ch)
}

// TestNodeNotServingHoldsNothing: a node that cannot serve (Config.Serving
// false: its configuration not loaded, shutting down) answers a failed
// request at once; the client does better on another node.
func TestNodeNotServingHoldsNothing(t *testing.T) {
	var serving atomic.Bool
	c := newTestCluster(t, 2, func(cfg *Config) { cfg.Serving = serving.Load })
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	b.tr.Close()
	before := a.caller.count(wire.MethodUpdate)
	_, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil)
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("update: %v, want ErrUnavailable", err)
	}
	if n := a.caller.count(wire.MethodUpdate) - before; n != 1 {
		t.Errorf("%d calls, want 1", n)
	}
	if n := heldCount(a.r, heldNotReady); n != 1 {
		t.Errorf("refused as not ready: %v, want 1", n)
	}
}

// TestHeldRequestEndsWithItsCaller: a held request whose caller leaves
// ends at once and frees its place.
func TestHeldRequestEndsWithItsCaller(t *testing.T) {
	c := newTestCluster(t, 2, func(cfg *Config) { cfg.RetryBackoff = time.Hour })
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	b.tr.Close()
	ctx, cancel := context.WithCancel(testCtx(t))
	res := updateAsync(ctx, a, user("1"), ch)
	waitHeld(t, a, 1)
	cancel()
	if r := <-res; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("held update after its caller left: %v %v, want context.Canceled", r.got, r.err)
	}
	if n := gaugeValue(a.r.m.holding); n != 0 {
		t.Errorf("%v requests still held", n)
	}
	if n := heldCount(a.r, heldCancelled); n != 1 {
		t.Errorf("cancelled holds: %v, want 1", n)
	}
}

// TestLocalAttemptIsBoundedWhileItsReplicaDoesNotAnswer: an enter served
// by the node the request entered waits for the replica's acknowledgement
// at most localAckWait; while the replica does not answer, the request is
// held and tried again (a call in progress would hold back the hand-offs
// of its channel), the retry is answered as a refresh, and the enter
// reaches the replica once it answers again.
func TestLocalAttemptIsBoundedWhileItsReplicaDoesNotAnswer(t *testing.T) {
	c := newTestCluster(t, 2, withReplication)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, a.name, "/pub/x")
	if got, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil); err != nil || !got[ch] {
		t.Fatalf("first enter: %v %v", got, err)
	}
	testkit.WaitFor(t, "the replica's copy", func() bool { return replicaClients(b, ch) == 1 })
	a.caller.setStall(func(addr string, m uint16) bool { return addr == b.tr.Addr() && m == wire.MethodReplicate })
	if got, err := a.r.Update(ctx, user("2"), "tab", []string{ch}, nil); err != nil || !got[ch] {
		t.Fatalf("enter while the replica does not answer: %v %v", got, err)
	}
	if n := heldCount(a.r, heldServed); n != 1 {
		t.Fatalf("held and served: %v, want 1 (the first attempt ended at localAckWait)", n)
	}
	if n := replicaClients(b, ch); n != 1 {
		t.Fatalf("the replica has %d clients while its calls stall", n)
	}
	a.caller.setStall(nil)
	testkit.WaitFor(t, "the enter to reach the replica", func() bool { return replicaClients(b, ch) == 2 })
}

package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/wire"
)

func TestMovedIsRetried(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")

	// The owner says "moved" twice, then answers.
	var refusals atomic.Int64
	a.caller.setFail(func(_ string, method uint16) error {
		if method == wire.MethodUpdate && refusals.Add(1) <= 2 {
			return fmt.Errorf("test: %w", presence.ErrMoved)
		}
		return nil
	})
	before := a.caller.count(wire.MethodUpdate)
	got, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil)
	if err != nil || !got[ch] {
		t.Fatalf("update: %v %v", got, err)
	}
	if n := a.caller.count(wire.MethodUpdate) - before; n != 3 {
		t.Errorf("%d calls, want 3 (two refusals, one answer)", n)
	}

	// An owner that keeps moving gives 503 after the retries.
	a.caller.setFail(func(_ string, method uint16) error {
		return fmt.Errorf("test: %w", presence.ErrMoved)
	})
	before = a.caller.count(wire.MethodGet)
	_, err = a.r.Get(ctx, user("1"), []string{ch})
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("get: %v, want ErrUnavailable", err)
	}
	if n := a.caller.count(wire.MethodGet) - before; n != DefaultRetries+1 {
		t.Errorf("%d calls, want %d", n, DefaultRetries+1)
	}
	_, err = a.r.Since(ctx, nil, ch, -1)
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Errorf("since: %v, want ErrUnavailable", err)
	}
}

func TestUnreachableOwnerIsUnavailable(t *testing.T) {
	c := newTestCluster(t, 2, func(cfg *Config) { cfg.Retries = -1 })
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	b.tr.Close()
	_, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil)
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("update: %v, want ErrUnavailable", err)
	}
}

// TestHopLimit builds views that disagree into a loop: a sends the channel
// to b, b to c, and c (leaving) back to b. The call gives up after MaxHops
// forwards with ErrMoved, and the entry node answers 503 after its retries.
func TestHopLimit(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	a, b, cc := c.nodes[0], c.nodes[1], c.nodes[2]
	ch := ""
	full, two := ring.New(1, []string{"n1", "n2", "n3"}), ring.New(1, []string{"n1", "n2"})
	for i := range 100000 {
		cand := fmt.Sprintf("/pub/loop%d", i)
		if full.Owner(cand) == "n3" && two.Owner(cand) == "n2" {
			ch = cand
			break
		}
	}
	a.r.SetMembers(members(a, b))
	if err := cc.r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	before := [3]int64{a.caller.count(wire.MethodUpdate), b.caller.count(wire.MethodUpdate), cc.caller.count(wire.MethodUpdate)}
	_, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil)
	if !errors.Is(err, presence.ErrUnavailable) || !errors.Is(err, presence.ErrMoved) {
		t.Fatalf("update in a loop: %v, want ErrUnavailable caused by ErrMoved", err)
	}
	attempts := int64(DefaultRetries + 1)
	// Each attempt: a→b (hop 1), b→c (2), c→b (3); b refuses a fourth.
	if n := a.caller.count(wire.MethodUpdate) - before[0]; n != attempts {
		t.Errorf("a made %d calls, want %d", n, attempts)
	}
	if n := b.caller.count(wire.MethodUpdate) - before[1]; n != attempts {
		t.Errorf("b made %d calls, want %d", n, attempts)
	}
	if n := cc.caller.count(wire.MethodUpdate) - before[2]; n != attempts {
		t.Errorf("c made %d calls, want %d", n, attempts)
	}
	for _, n := range c.nodes {
		if len(n.engine.Channels()) != 0 {
			t.Errorf("%s runs %v", n.name, n.engine.Channels())
		}
	}
}

func TestHandleRejectsBadInput(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := context.Background()
	r := c.nodes[0].r
	if _, err := r.Handle(ctx, wire.MaxMethod, nil); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("unknown method: %v", err)
	}
	for _, m := range []uint16{wire.MethodUpdate, wire.MethodGet, wire.MethodSince, wire.MethodInterest, wire.MethodPush, wire.MethodExtract, wire.MethodInstall} {
		if _, err := r.Handle(ctx, m, []byte{0xff, 0xff, 0xff}); !errors.Is(err, presence.ErrInvalid) {
			t.Errorf("method %d with garbage: %v, want ErrInvalid", m, err)
		}
	}
	q := wire.UpdateRequest{Header: wire.Header{Hops: 1}, User: nil, ClientID: "tab", Present: []string{"/pub/a"}}
	var e wire.Encoder
	wire.EncodeUpdateBatch(&e, 1, func(int) *wire.UpdateRequest { return &q })
	resp, err := r.Handle(ctx, wire.MethodUpdate, e.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	results, err := wire.DecodeUpdateResults(resp, "n1")
	if err != nil || len(results) != 1 || !errors.Is(results[0].Err, presence.ErrForbidden) {
		t.Errorf("forwarded anonymous update: %+v %v, want ErrForbidden", results, err)
	}
}

func TestNotJoinedServesNothing(t *testing.T) {
	c := newTestCluster(t, 0, nil)
	n := c.addNode("lonely")
	_, err := n.r.Update(testCtx(t), user("1"), "tab", []string{"/pub/a"}, nil)
	if !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("update before joining: %v, want ErrUnavailable", err)
	}
	n.r.SetMembers([]Member{n.member()})
	got, err := n.r.Update(testCtx(t), user("1"), "tab", []string{"/pub/a"}, nil)
	if err != nil || !got["/pub/a"] {
		t.Fatalf("update after joining alone: %v %v", got, err)
	}
}

// blockCalls makes n's calls of method wait until release is closed.
func blockCalls(n *testNode, method uint16) (release func()) {
	gate := make(chan struct{})
	n.caller.setFail(func(_ string, m uint16) error {
		if m == method {
			<-gate
		}
		return nil
	})
	return sync.OnceFunc(func() { close(gate) })
}

func TestConcurrentUpdatesShareACall(t *testing.T) {
	c := newTestCluster(t, 2, func(cfg *Config) { cfg.ForwardStall = time.Hour })
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	release := blockCalls(a, wire.MethodUpdate)
	defer release()
	const n = 10
	results := make(chan error, n+1)
	update := func(i int) {
		got, err := a.r.Update(ctx, user(fmt.Sprint(i)), "tab", []string{ch}, nil)
		if err == nil && !got[ch] {
			err = fmt.Errorf("update %d: false", i)
		}
		results <- err
	}
	go update(0)
	testkit.WaitFor(t, "the first batch to leave", func() bool { return a.caller.count(wire.MethodUpdate) == 1 })
	for i := 1; i <= n; i++ {
		go update(i)
	}
	q := a.r.batch.queue(b.member())
	testkit.WaitFor(t, "the others to queue", func() bool {
		q.mu.Lock()
		defer q.mu.Unlock()
		return len(q.items) == n
	})
	release()
	for range n + 1 {
		if err := <-results; err != nil {
			t.Fatal(err)
		}
	}
	if calls := a.caller.count(wire.MethodUpdate); calls != 2 {
		t.Errorf("%d calls for %d updates, want 2 (one batch waited for the other)", calls, n+1)
	}
	st, err := b.r.Get(ctx, nil, []string{ch})
	if err != nil || st[ch].Count != n+1 {
		t.Fatalf("get: %+v %v", st[ch], err)
	}
}

func TestStuckBatchDoesNotStallOthers(t *testing.T) {
	c := newTestCluster(t, 2, func(cfg *Config) { cfg.ForwardStall = time.Nanosecond })
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, b.name, "/pub/x")
	release := blockCalls(a, wire.MethodUpdate)
	defer release()
	stuck := make(chan error, 1)
	go func() {
		_, err := a.r.Update(ctx, user("stuck"), "tab", []string{ch}, nil)
		stuck <- err
	}()
	testkit.WaitFor(t, "the first batch to leave", func() bool { return a.caller.count(wire.MethodUpdate) == 1 })
	// Later calls pass the gate: only the first one is held.
	a.caller.setFail(nil)
	if _, err := a.r.Update(ctx, user("other"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-stuck:
		t.Fatalf("the stuck update returned first: %v", err)
	default:
	}
	release()
	if err := <-stuck; err != nil {
		t.Fatal(err)
	}
}

package replica

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// noRoutes is a routing table that holds nothing.
type noRoutes struct{}

func (noRoutes) Holds(string) bool     { return false }
func (noRoutes) MovingOut(string) bool { return false }

// noEngine is an engine that runs no channel.
type noEngine struct{}

func (noEngine) Channels() []string  { return nil }
func (noEngine) Resend(string) error { return nil }

// testReplicator is a Replicator for unit tests of its parts: it starts
// no goroutine and reaches no node.
func testReplicator(t *testing.T) *Replicator {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	p, err := New(Config{
		Self: wire.Member{Name: "n1", RPCAddr: "127.0.0.1:1"}, Boot: 1,
		Clock: clock.NewFake(time.Unix(1_700_000_000, 0)), Logger: testkit.Logger(t), Ctx: ctx,
		Go: func(func()) bool { return false },
		Call: func(context.Context, wire.Member, uint16, func(*wire.Encoder)) ([]byte, error) {
			return nil, errors.New("no network in this test")
		},
		View: func() View { return nil }, Routes: noRoutes{}, Engine: noEngine{},
		Publish: func(*presence.Message) {}, Interest: func(string) []wire.Interested { return nil },
		Fence: func(string, wire.Member) {}, Rebalance: func() {}, Released: func(string, string) {},
		Interval: time.Second, CallTimeout: time.Second, RetryBackoff: time.Millisecond,
		Lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lag"}), Refused: prometheus.NewCounter(prometheus.CounterOpts{Name: "refused"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestStreamCoalescesRefreshes(t *testing.T) {
	p := testReplicator(t)
	s := newStream(p.cfg.Ctx, wire.Member{Name: "rep"})
	s.synced["/pub/x"] = true
	for i, exp := range []int64{300, 500, 400} {
		done := make(chan error, 1)
		s.add(p, &presence.Change{Kind: presence.ChangeRefresh, Channel: "/pub/x", UserID: "a", ClientID: "t", ExpiresAt: exp, Done: done})
		if err := <-done; err != nil {
			t.Fatalf("refresh %d answered %v", i, err)
		}
	}
	if len(s.items) != 0 || s.pending != 1 {
		t.Fatalf("refreshes queued %d items, %d pending; want none queued, one coalesced", len(s.items), s.pending)
	}
	batch := s.take()
	if len(batch) != 1 || batch[0].Kind != presence.ChangeRefresh || batch[0].Expires != 500 {
		t.Fatalf("batch %+v, want one refresh with the newest expiry", batch)
	}
	// A leave drops the client's pending refresh: sent after the leave, it
	// could not bring the client back anyway, but it is useless.
	s.add(p, &presence.Change{Kind: presence.ChangeRefresh, Channel: "/pub/x", UserID: "a", ClientID: "t", ExpiresAt: 600})
	s.add(p, &presence.Change{Kind: presence.ChangeLeave, Channel: "/pub/x", UserID: "a", ClientID: "t"})
	batch = s.take()
	if len(batch) != 1 || batch[0].Kind != presence.ChangeLeave || s.pending != 0 {
		t.Fatalf("batch %+v, %d pending; want the leave alone", batch, s.pending)
	}
}

func TestStreamCoalescesDeliveryPositions(t *testing.T) {
	p := testReplicator(t)
	s := newStream(p.cfg.Ctx, wire.Member{Name: "rep"})
	s.synced["/pub/x"] = true
	for _, pos := range []int64{7, 9, 8} {
		s.add(p, &presence.Change{Kind: presence.ChangeDelivered, Channel: "/pub/x", Delivered: pos})
	}
	if len(s.items) != 0 || s.pending != 1 {
		t.Fatalf("positions queued %d items, %d pending; want none queued, one coalesced", len(s.items), s.pending)
	}
	batch := s.take()
	if len(batch) != 1 || batch[0].Kind != presence.ChangeDelivered || batch[0].Delivered != 9 || s.pending != 0 {
		t.Fatalf("batch %+v, %d pending; want the newest position alone", batch, s.pending)
	}
	// Forgetting the channel forgets its position waiting to be sent.
	s.add(p, &presence.Change{Kind: presence.ChangeDelivered, Channel: "/pub/x", Delivered: 10})
	s.forget("/pub/x", true, true)
	if s.pending != 0 || len(s.delivered) != 0 {
		t.Fatalf("%d pending after forget", s.pending)
	}
}

// A stream closed while a batch is in flight publishes that batch's
// message first, then the ones queued behind it, then one added after the
// close: closing it used to publish the queued ones at once, ahead of the
// batch whose call had not failed yet, and the webhook queue, which takes
// a message below one it has as not new, never delivered the earlier one.
func TestClosedStreamPublishesInOrder(t *testing.T) {
	p := testReplicator(t)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	p.cfg.Call = func(context.Context, wire.Member, uint16, func(*wire.Encoder)) ([]byte, error) {
		entered <- struct{}{}
		<-release // the replica, paused, answers only once the test says
		return nil, errors.New("peer unavailable: disconnected")
	}
	var mu sync.Mutex
	var published []int64
	p.cfg.Publish = func(m *presence.Message) {
		mu.Lock()
		defer mu.Unlock()
		published = append(published, m.ID)
	}
	s := newStream(p.cfg.Ctx, wire.Member{Name: "rep"})
	s.synced["/pub/x"] = true
	ran := make(chan struct{})
	go func() {
		defer close(ran)
		s.run(p)
	}()
	leave := func(id int64) *presence.Change {
		return &presence.Change{Kind: presence.ChangeLeave, Channel: "/pub/x", UserID: "a", ClientID: "t",
			Message: &presence.Message{ID: id, Channel: "/pub/x"}}
	}
	s.add(p, leave(1))
	<-entered // message 1 is in flight
	s.add(p, leave(2))
	s.close(p)
	s.add(p, leave(3))
	mu.Lock()
	early := slices.Clone(published)
	mu.Unlock()
	if len(early) != 0 {
		t.Fatalf("published %v while the batch in flight was unanswered, want nothing yet", early)
	}
	close(release)
	<-ran
	s.add(p, leave(4)) // after the drain: settled by the caller
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(published, []int64{1, 2, 3, 4}) {
		t.Fatalf("published %v, want [1 2 3 4]: the batch in flight, the queued item, the one added after the close, one added after the drain", published)
	}
}

package replica

import (
	"context"
	"errors"
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

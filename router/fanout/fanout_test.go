package fanout

import (
	"context"
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

var public = &presence.Config{Public: true}

// loneView is a view in which this node owns every channel.
type loneView struct{}

func (loneView) Owner(string) string               { return "n1" }
func (loneView) Member(string) (wire.Member, bool) { return wire.Member{}, false }

// catchupCall is one call of Config.Catchup.
type catchupCall struct {
	channel string
	after   int64
	gen     uint64
}

// newTestFanout returns a Fanout of node n1 whose catch-ups answer with
// answer, reporting each call on the returned channel.
func newTestFanout(t *testing.T, answer func(catchupCall) presence.Catchup) (*Fanout, <-chan catchupCall) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	calls := make(chan catchupCall, 16)
	f, err := New(Config{
		Self: wire.Member{Name: "n1", RPCAddr: "127.0.0.1:1"}, Clock: clock.NewFake(time.Unix(1_700_000_000, 0)),
		Logger: testkit.Logger(t), Ctx: ctx,
		Go: func(fn func()) bool { wg.Go(fn); return true },
		Call: func(context.Context, wire.Member, uint16, func(*wire.Encoder)) ([]byte, error) {
			return nil, nil
		},
		View: func() View { return loneView{} },
		Catchup: func(_ context.Context, _ *presence.User, channel string, after int64, gen uint64) (presence.Catchup, error) {
			c := catchupCall{channel: channel, after: after, gen: gen}
			calls <- c
			return answer(c), nil
		},
		Handed:      func(context.Context, string) (wire.Member, bool, error) { return wire.Member{}, false, nil },
		CallTimeout: time.Second, FlushTimeout: time.Second, PushQueue: 16, PushBatch: 4,
		Dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "dropped"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		f.Close()
		wg.Wait()
	})
	return f, calls
}

func message(channel string, id int64) *presence.Message {
	return &presence.Message{Channel: channel, ID: id, Audience: public, EnteringUsers: []presence.UserInfo{{ID: "u"}}}
}

func TestInterestIsOrderedByGeneration(t *testing.T) {
	var changed []string
	var tab table
	tab.init("n1", func(ch string) { changed = append(changed, ch) })
	n2 := wire.Member{Name: "n2", RPCAddr: "127.0.0.1:2"}
	tab.apply(n2, wire.InterestChange{Channel: "/pub/a", On: true, Gen: 5})
	tab.apply(n2, wire.InterestChange{Channel: "/pub/a", Gen: 4}) // an older off
	tab.apply(n2, wire.InterestChange{Channel: "/pub/a", On: true, Gen: 3})
	if got := tab.export("/pub/a"); len(got) != 1 || got[0].Gen != 5 {
		t.Fatalf("after older changes: %+v, want n2 at generation 5", got)
	}
	tab.apply(wire.Member{Name: "n1"}, wire.InterestChange{Channel: "/pub/a", On: true, Gen: 9})
	if got := tab.export("/pub/a"); len(got) != 1 {
		t.Fatalf("this node's own interest was recorded: %+v", got)
	}
	tab.apply(n2, wire.InterestChange{Channel: "/pub/a", Gen: 5})
	if got := tab.export("/pub/a"); len(got) != 0 {
		t.Fatalf("after the off: %+v", got)
	}
	if !slices.Equal(changed, []string{"/pub/a", "/pub/a"}) {
		t.Fatalf("changes reported for %v, want the on and the off", changed)
	}
}

// TestFeedFillsAGapFromTheHolder: a message arrives after a gap (a push
// was lost); the feed fetches the missing ones from the holder before it,
// so the subscriber follows without a resync.
func TestFeedFillsAGapFromTheHolder(t *testing.T) {
	const ch = "/pub/room"
	f, calls := newTestFanout(t, func(c catchupCall) presence.Catchup {
		if c.after == 11 {
			return presence.Catchup{LastID: 13, Messages: []*presence.Message{message(ch, 12), message(ch, 13)}}
		}
		return presence.Catchup{LastID: 10}
	})
	sub, err := f.Subscribe(t.Context(), nil, map[string]int64{ch: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if c := <-calls; c.after != -1 || c.gen == 0 {
		t.Fatalf("subscription catch-up %+v, want after -1 with a registration", c)
	}
	f.Publish(message(ch, 11))
	f.Publish(message(ch, 11)) // pushed twice around a hand-off
	f.Publish(message(ch, 14))
	if c := <-calls; c.after != 11 {
		t.Fatalf("gap fill %+v, want the messages after 11", c)
	}
	var got []int64
	for len(got) < 4 {
		select {
		case ev := <-sub.Events():
			if ev.Kind != presence.EventMessage {
				t.Fatalf("event %+v, want only messages", ev)
			}
			got = append(got, ev.Message.ID)
		case <-time.After(testkit.DefaultWait):
			t.Fatalf("messages %v, want 11 to 14", got)
		}
	}
	if !slices.Equal(got, []int64{11, 12, 13, 14}) {
		t.Fatalf("messages %v, want 11 to 14", got)
	}
}

func TestPushAnswersTheChannelsNobodyFollows(t *testing.T) {
	f, calls := newTestFanout(t, func(catchupCall) presence.Catchup { return presence.Catchup{LastID: 1} })
	sub, err := f.Subscribe(t.Context(), nil, map[string]int64{"/pub/kept": -1})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	<-calls
	push := wire.PushRequest{From: "n2", Messages: []*presence.Message{message("/pub/kept", 2), message("/pub/gone", 7), message("/pub/gone", 8)}}
	resp, err := f.HandlePush(t.Context(), wire.Marshal(push.Encode))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := wire.DecodePushReply(resp)
	if err != nil || len(reply.Unwanted) != 1 || reply.Unwanted[0].Channel != "/pub/gone" {
		t.Fatalf("push reply %+v, %v; want /pub/gone once", reply, err)
	}
	select {
	case ev := <-sub.Events():
		if ev.Kind != presence.EventMessage || ev.Message.ID != 2 {
			t.Fatalf("event %+v, want the pushed message", ev)
		}
	case <-time.After(testkit.DefaultWait):
		t.Fatal("the pushed message never reached the subscriber")
	}
}

package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
)

// collector drains a subscription into a slice, as the SSE handler would.
type collector struct {
	sub  Subscription
	mu   sync.Mutex
	evs  []Event
	done chan struct{}
}

type subscriber interface {
	Subscribe(ctx context.Context, u *User, from map[string]int64) (Subscription, error)
}

// subscribe starts a subscription through a Service and collects its events.
func subscribe(t testing.TB, svc subscriber, u *User, from map[string]int64) *collector {
	t.Helper()
	s, err := svc.Subscribe(context.Background(), u, from)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return collect(t, s)
}

func collect(t testing.TB, s Subscription) *collector {
	c := &collector{sub: s, done: make(chan struct{})}
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

func (c *collector) events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.evs)
}

func (c *collector) await(t testing.TB, n int) {
	t.Helper()
	testkit.WaitFor(t, fmt.Sprintf("%d events", n), func() bool { return len(c.events()) >= n })
}

func (c *collector) ended() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// sourceChannel is a channel of fakeSource.
type sourceChannel struct {
	backlog backlog
	lastID  int64
}

// fakeSource is a CatchupSource over in-memory backlogs. Publishing through
// it appends to the backlog, then to the hub, as an owner does.
type fakeSource struct {
	hub *Hub
	mu  sync.Mutex
	chs map[string]*sourceChannel
	// during runs inside Since, before (true) and after (false) the answer
	// is computed, to publish concurrently with a catch-up.
	during      func(channel string, beforeSnapshot bool)
	unavailable map[string]bool
	err         error
	calls       int
}

func newFakeSource(t testing.TB, cfg HubConfig) *fakeSource {
	h, err := NewHub(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Close)
	return &fakeSource{hub: h, chs: map[string]*sourceChannel{}, unavailable: map[string]bool{}}
}

func (f *fakeSource) channel(name string) *sourceChannel {
	ch := f.chs[name]
	if ch == nil {
		ch = &sourceChannel{lastID: 100}
		f.chs[name] = ch
	}
	return ch
}

// publish appends n messages to channel (audience public) and publishes them.
func (f *fakeSource) publish(name string, n int) []*Message {
	return f.publishTo(name, n, publicCfg)
}

func (f *fakeSource) publishTo(name string, n int, audience *Config) []*Message {
	var out []*Message
	for range n {
		f.mu.Lock()
		ch := f.channel(name)
		ch.lastID++
		m := &Message{Channel: name, ID: ch.lastID, Audience: audience}
		ch.backlog.push(m, 0)
		f.mu.Unlock()
		f.hub.Publish(m)
		out = append(out, m)
	}
	return out
}

// publishResync appends a resync marker to channel and publishes it, as an
// owner does after merging two states.
func (f *fakeSource) publishResync(name string) {
	f.mu.Lock()
	ch := f.channel(name)
	ch.lastID++
	m := &Message{Channel: name, ID: ch.lastID, Audience: publicCfg, Resync: true}
	ch.backlog.push(m, 0)
	f.mu.Unlock()
	f.hub.Publish(m)
}

func (f *fakeSource) Since(_ context.Context, _ *User, name string, after int64) (Catchup, error) {
	if f.during != nil {
		f.during(name, true)
	}
	f.mu.Lock()
	f.calls++
	if f.err != nil {
		f.mu.Unlock()
		return Catchup{}, f.err
	}
	if f.unavailable[name] {
		f.mu.Unlock()
		return Catchup{Unavailable: true}, nil
	}
	ch := f.channel(name)
	cu := Catchup{LastID: ch.lastID}
	if after >= 0 {
		msgs, ok := ch.backlog.since(after, ch.lastID)
		cu.Messages, cu.Resync = msgs, !ok
	}
	f.mu.Unlock()
	if f.during != nil {
		f.during(name, false)
	}
	return cu, nil
}

func (f *fakeSource) subscribe(t testing.TB, u *User, from map[string]int64) *collector {
	t.Helper()
	s, err := f.hub.Subscribe(context.Background(), u, from, f)
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	return collect(t, s)
}

// summary renders events compactly: m<id>, r<last id>, u.
func summary(evs []Event) []string {
	var out []string
	for _, ev := range evs {
		switch ev.Kind {
		case EventMessage:
			if ev.Message.ID != ev.LastID {
				out = append(out, "bad-cursor")
			}
			out = append(out, fmt.Sprintf("%s:m%d", ev.Channel, ev.Message.ID))
		case EventResync:
			out = append(out, fmt.Sprintf("%s:r%d", ev.Channel, ev.LastID))
		case EventUnavailable:
			out = append(out, ev.Channel+":u")
		}
	}
	return out
}

func expectEvents(t *testing.T, c *collector, want ...string) {
	t.Helper()
	c.await(t, len(want))
	if got := summary(c.events()); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
}

func TestSubscriptionResumesFromBacklogThenLive(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 10) // ids 101..110
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 107})
	expectEvents(t, c, "/t/a:m108", "/t/a:m109", "/t/a:m110")
	f.publish("/t/a", 2)
	expectEvents(t, c, "/t/a:m108", "/t/a:m109", "/t/a:m110", "/t/a:m111", "/t/a:m112")
}

func TestSubscriptionMergesMessagesPublishedDuringCatchup(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 3) // 101..103
	f.during = func(name string, before bool) {
		f.publish(name, 1) // 104 before the snapshot, 105 after it
	}
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 101})
	expectEvents(t, c, "/t/a:m102", "/t/a:m103", "/t/a:m104", "/t/a:m105")
	f.during = nil
	f.publish("/t/a", 1)
	expectEvents(t, c, "/t/a:m102", "/t/a:m103", "/t/a:m104", "/t/a:m105", "/t/a:m106")
}

func TestSubscriptionResyncWhenBacklogTooOld(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", backlogHardCap+5) // the oldest ids are gone
	last := int64(100 + backlogHardCap + 5)
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 101, "/t/b": 0})
	expectEvents(t, c, fmt.Sprintf("/t/a:r%d", last), "/t/b:r100")
	f.publish("/t/a", 1)
	expectEvents(t, c, fmt.Sprintf("/t/a:r%d", last), "/t/b:r100", fmt.Sprintf("/t/a:m%d", last+1))
}

func TestSubscriptionResyncWhenIDFromAnotherIncarnation(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 2)
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 5000})
	expectEvents(t, c, "/t/a:r102")
}

func TestSubscriptionNewMessagesOnly(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 5)
	ready := make(chan struct{})
	f.during = func(_ string, before bool) {
		if !before {
			close(ready)
		}
	}
	c := f.subscribe(t, alice, map[string]int64{"/t/a": -1})
	<-ready
	f.publish("/t/a", 1)
	expectEvents(t, c, "/t/a:m106")
}

func TestSubscriptionNewMessagesOnlyKeepsThosePublishedDuringCatchup(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 5) // 101..105: before the subscription, never sent
	f.during = func(name string, before bool) {
		// After the subscription registered, before (106) and after (107)
		// the channel's last id is read: both are new to the subscriber.
		f.publish(name, 1)
	}
	c := f.subscribe(t, alice, map[string]int64{"/t/a": -1})
	expectEvents(t, c, "/t/a:m106", "/t/a:m107")
	f.during = nil
	f.publish("/t/a", 1)
	expectEvents(t, c, "/t/a:m106", "/t/a:m107", "/t/a:m108")
}

func TestSubscriptionUnavailableChannels(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.unavailable["/t/secret"] = true
	c := f.subscribe(t, alice, map[string]int64{"/t/secret": -1, "not a channel": 3, "/t/ok": -1})
	expectEvents(t, c, "/t/secret:u", "not a channel:u")
	if f.calls != 2 {
		t.Fatalf("%d catch-up calls; an invalid name must not reach the source", f.calls)
	}
	f.publish("/t/secret", 1)
	f.publish("/t/ok", 1)
	expectEvents(t, c, "/t/secret:u", "not a channel:u", "/t/ok:m101")
}

func TestSubscriptionLiveGapResyncs(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 1)
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 101})
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(c) })
	f.hub.Publish(&Message{Channel: "/t/a", ID: 150, Audience: publicCfg}) // state lost upstream
	f.hub.Publish(&Message{Channel: "/t/a", ID: 151, Audience: publicCfg})
	f.hub.Publish(&Message{Channel: "/t/a", ID: 151, Audience: publicCfg}) // duplicate
	expectEvents(t, c, "/t/a:r150", "/t/a:m151")
}

func TestSubscriptionResyncMarker(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 1)
	live := f.subscribe(t, alice, map[string]int64{"/t/a": 101})
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(live) })
	// The marker follows the cursor without a gap and still asks for a
	// re-read; what follows it is a message again.
	f.publishResync("/t/a")
	f.publish("/t/a", 1)
	expectEvents(t, live, "/t/a:r102", "/t/a:m103")
	// A catch-up over the marker asks for a re-read too, and the messages
	// after it follow.
	behind := f.subscribe(t, alice, map[string]int64{"/t/a": 101})
	expectEvents(t, behind, "/t/a:r103")
	after := f.subscribe(t, alice, map[string]int64{"/t/a": 102})
	expectEvents(t, after, "/t/a:m103")
}

// subscriptionLive reports whether every channel of c finished its catch-up.
func subscriptionLive(c *collector) bool {
	s := c.sub.(*subscription)
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := range s.chans {
		if s.chans[i].mode == chanCatching {
			return false
		}
	}
	return true
}

func TestSubscriptionAudienceAtPublishTime(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 100})
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(c) })
	f.publishTo("/t/a", 1, &Config{AllowedUserIDs: []string{"1"}})
	f.publishTo("/t/a", 1, &Config{AllowedUserIDs: []string{"2"}}) // alice removed
	f.publishTo("/t/a", 1, publicCfg)
	expectEvents(t, c, "/t/a:m101", "/t/a:u")
	// A catch-up over a message alice could not see asks her to re-read.
	c2 := f.subscribe(t, alice, map[string]int64{"/t/a": 100})
	expectEvents(t, c2, "/t/a:r103")
}

func TestSubscriptionSlowSubscriberClosed(t *testing.T) {
	f := newFakeSource(t, HubConfig{BufferSize: 4})
	s, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/a": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(&collector{sub: s}) })
	f.publish("/t/a", 10) // nobody reads
	n := 0
	for range s.Events() {
		n++
	}
	if n != 4 {
		t.Fatalf("read %d buffered events before the close, want 4", n)
	}
	testkit.WaitFor(t, "the closed subscription to be released", func() bool {
		return f.hub.metrics.Subscribers() == 0 && len(f.hub.Channels()) == 0
	})
}

func TestSubscriptionTooManyPendingDuringCatchupClosed(t *testing.T) {
	f := newFakeSource(t, HubConfig{MaxPending: 3})
	f.during = func(name string, before bool) {
		if before {
			f.publish(name, 5)
		}
	}
	c := f.subscribe(t, alice, map[string]int64{"/t/a": -1})
	testkit.WaitFor(t, "the subscription to close", c.ended)
}

func TestSubscriptionCatchupErrorCloses(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.err = errors.New("owner unreachable")
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 3})
	testkit.WaitFor(t, "the subscription to close", c.ended)
	if len(c.events()) != 0 {
		t.Fatalf("events %v from a failed catch-up", summary(c.events()))
	}
}

func TestSubscriptionEnds(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	s, err := f.hub.Subscribe(ctx, alice, map[string]int64{"/t/a": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	c := collect(t, s)
	cancel()
	testkit.WaitFor(t, "the cancelled subscription to close", c.ended)
	s.Close()
	s.Close() // idempotent

	c2 := f.subscribe(t, alice, map[string]int64{"/t/b": -1})
	f.hub.Close()
	testkit.WaitFor(t, "hub close to end subscriptions", c2.ended)
	if _, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/b": -1}, f); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("subscribe to a closed hub: %v, want ErrUnavailable", err)
	}
	if f.hub.metrics.Subscribers() != 0 || len(f.hub.Channels()) != 0 {
		t.Fatalf("leaked %d subscribers, channels %v", f.hub.metrics.Subscribers(), f.hub.Channels())
	}
}

func TestSubscribeValidatesChannelCount(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	many := map[string]int64{}
	for i := range MaxSubscribeChannels + 1 {
		many[fmt.Sprintf("/t/%d", i)] = -1
	}
	for _, from := range []map[string]int64{nil, many} {
		if _, err := f.hub.Subscribe(context.Background(), alice, from, f); !errors.Is(err, ErrInvalid) {
			t.Fatalf("subscribe to %d channels: %v, want ErrInvalid", len(from), err)
		}
	}
}

func TestHubOnChannel(t *testing.T) {
	var mu sync.Mutex
	var calls []string
	f := newFakeSource(t, HubConfig{OnChannel: func(ch string, on bool) {
		mu.Lock()
		calls = append(calls, fmt.Sprintf("%s=%v", ch, on))
		mu.Unlock()
	}})
	a := f.subscribe(t, alice, map[string]int64{"/t/a": -1})
	b := f.subscribe(t, bob, map[string]int64{"/t/a": -1, "/t/b": -1})
	if got := f.hub.Channels(); !slices.Equal(got, []string{"/t/a", "/t/b"}) {
		t.Fatalf("channels %v", got)
	}
	a.sub.Close()
	b.sub.Close()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/t/a=true", "/t/b=true", "/t/a=false", "/t/b=false"}
	if !slices.Equal(calls, want) {
		t.Fatalf("OnChannel calls %v, want %v", calls, want)
	}
}

func BenchmarkFanout(b *testing.B) {
	const buffer = 256
	for _, n := range []int{100, 1000, 10_000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			f := newFakeSource(b, HubConfig{BufferSize: buffer})
			subs := make([]Subscription, n)
			for i := range subs {
				s, err := f.hub.Subscribe(context.Background(), &User{ID: fmt.Sprint(i)}, map[string]int64{"/t/a": -1}, f)
				if err != nil {
					b.Fatal(err)
				}
				subs[i] = s
			}
			for _, s := range subs {
				testkit.WaitFor(b, "live", func() bool { return subscriptionLive(&collector{sub: s}) })
			}
			msgs := make([]Message, b.N) // the owner's messages, made before timing
			for i := range msgs {
				msgs[i] = Message{Channel: "/t/a", ID: int64(101 + i), Audience: publicCfg}
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range msgs {
				f.hub.Publish(&msgs[i])
				if i%(buffer/2) == buffer/2-1 { // drain, untimed, before buffers fill
					b.StopTimer()
					for _, s := range subs {
						drain(s)
					}
					b.StartTimer()
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(n), "subscribers")
			if got := f.hub.metrics.Subscribers(); got != int64(n) {
				b.Fatalf("%d of %d subscribers left: the benchmark closed slow ones", got, n)
			}
		})
	}
}

func drain(s Subscription) {
	for {
		select {
		case <-s.Events():
		default:
			return
		}
	}
}

func TestSubscriptionMessageWithoutAudienceReachesNobody(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	c := f.subscribe(t, alice, map[string]int64{"/t/a": 100})
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(c) })
	f.hub.Publish(&Message{Channel: "/t/a", ID: 101})
	expectEvents(t, c, "/t/a:u")
}

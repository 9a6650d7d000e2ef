package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/actor"
	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

// configFunc is a ConfigSource backed by a function; the tests' stand-in for
// the Resolver.
type configFunc func(channel string) *Config

func (f configFunc) Resolve(_ context.Context, channel string) (*Config, error) {
	return f(channel), nil
}

// mutableConfigs is a ConfigSource whose answers a test can change.
type mutableConfigs struct {
	mu sync.Mutex
	m  map[string]*Config
}

func (c *mutableConfigs) Resolve(_ context.Context, channel string) (*Config, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.m[channel], nil
}

func (c *mutableConfigs) set(channel string, cfg *Config) {
	c.mu.Lock()
	c.m[channel] = cfg
	c.mu.Unlock()
}

// recorder is a Publisher that records every message (the analogue of
// MessageBus.track_publish) and forwards it to the engine's hub. Hooks let a
// test block or break the channel actor that publishes.
type recorder struct {
	mu   sync.Mutex
	msgs []*Message
	next Publisher
	hook atomic.Pointer[func(*Message)]
}

func (r *recorder) Publish(m *Message) {
	if h := r.hook.Load(); h != nil {
		(*h)(m)
	}
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	next := r.next
	r.mu.Unlock()
	if next != nil {
		next.Publish(m)
	}
}

// take returns and forgets the messages of channel recorded so far ("" for
// every channel).
func (r *recorder) take(channel string) []*Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out, keep []*Message
	for _, m := range r.msgs {
		if channel == "" || m.Channel == channel {
			out = append(out, m)
		} else {
			keep = append(keep, m)
		}
	}
	r.msgs = keep
	return out
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

// engineRig is an engine on a fake clock with a recording publisher.
type engineRig struct {
	t       testing.TB
	clk     *clock.Fake
	e       *Engine
	rec     *recorder
	metrics *Metrics
}

func newEngineRig(t testing.TB, configs ConfigSource, tweak ...func(*EngineConfig)) *engineRig {
	t.Helper()
	r := &engineRig{t: t, clk: clock.NewFake(wheelStart), rec: &recorder{}, metrics: NewMetrics(nil)}
	cfg := EngineConfig{Clock: r.clk, Configs: configs, Metrics: r.metrics, Publisher: r.rec}
	for _, f := range tweak {
		f(&cfg)
	}
	e, err := NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.e = e
	r.rec.next = e.Hub()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.Close(ctx); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return r
}

func (r *engineRig) update(u *User, clientID string, present, leave []string) map[string]bool {
	r.t.Helper()
	res, err := r.e.Update(context.Background(), u, clientID, present, leave)
	if err != nil {
		r.t.Fatalf("update: %v", err)
	}
	return res
}

// present makes the client enter the channels and waits until they applied
// it (and published), so that a test advancing the clock next cannot
// overtake the channel actor.
func (r *engineRig) present(u *User, clientID string, channels ...string) {
	r.t.Helper()
	for ch, ok := range r.update(u, clientID, channels, nil) {
		if !ok {
			r.t.Fatalf("%s could not enter %s", u.ID, ch)
		}
	}
	r.barrier(channels)
}

// leave makes the client leave the channels and waits until they applied it.
func (r *engineRig) leave(u *User, clientID string, channels ...string) {
	r.t.Helper()
	r.update(u, clientID, nil, channels)
	r.barrier(channels)
}

// barrier returns once every op queued so far for the channels is applied:
// mailboxes are FIFO, so an Ask answered means everything before it ran.
func (r *engineRig) barrier(channels []string) {
	r.t.Helper()
	for _, ch := range channels {
		_, err := actorAsk(r.e, ch)
		if err != nil {
			r.t.Fatalf("barrier on %s: %v", ch, err)
		}
	}
}

// actorAsk asks the channel's actor for its catch-up, bypassing permissions.
func actorAsk(e *Engine, channel string) (Catchup, error) {
	return actor.Ask(context.Background(), e.actors, channel, func(r chan<- Catchup) op {
		return op{kind: opSince, after: -1, reply: r}
	})
}

// state returns the channel's state as u sees it; it is also a barrier: the
// ops queued earlier for the channel have been applied and published.
func (r *engineRig) state(u *User, channel string) *ChannelState {
	r.t.Helper()
	st, err := r.e.State(context.Background(), u, channel)
	if err != nil {
		r.t.Fatalf("state of %s: %v", channel, err)
	}
	return st
}

// advance moves the fake clock; the wheel goroutine notices on its own.
func (r *engineRig) advance(d time.Duration) { r.clk.Advance(d) }

func TestEngineConfigValidate(t *testing.T) {
	src := configFunc(func(string) *Config { return nil })
	bad := []EngineConfig{
		{},
		{Configs: src, MailboxSize: -1},
		{Configs: src, IdleAfter: time.Minute},
		{Configs: src, IdleAfter: -time.Second},
		{Configs: src, SubscriberBuffer: -1},
	}
	for i, c := range bad {
		if err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("config %d: %v, want ErrInvalid", i, err)
		}
		if _, err := NewEngine(c); err == nil {
			t.Errorf("config %d: NewEngine accepted it", i)
		}
	}
	if err := (EngineConfig{Configs: src, IdleAfter: time.Hour}).Validate(); err != nil {
		t.Fatal(err)
	}
}

func publicOnly(string) *Config { return publicCfg }

func TestEngineRejectsBadUpdates(t *testing.T) {
	r := newEngineRig(t, configFunc(publicOnly))
	ctx := context.Background()
	if _, err := r.e.Update(ctx, nil, "c", []string{"/t/a"}, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("anonymous update: %v, want ErrForbidden", err)
	}
	if _, err := r.e.Update(ctx, &User{}, "c", []string{"/t/a"}, nil); !errors.Is(err, ErrForbidden) {
		t.Fatalf("user without id: %v, want ErrForbidden", err)
	}
	for _, id := range []string{"", string(make([]byte, MaxClientIDBytes+1))} {
		if _, err := r.e.Update(ctx, alice, id, []string{"/t/a"}, nil); !errors.Is(err, ErrInvalid) {
			t.Fatalf("client id of %d bytes: %v, want ErrInvalid", len(id), err)
		}
	}
	if _, err := r.e.Update(ctx, alice, string(make([]byte, MaxClientIDBytes)), []string{"/t/a"}, nil); err != nil {
		t.Fatalf("client id of %d bytes: %v", MaxClientIDBytes, err)
	}
	many := make([]string, MaxChannelsPerCall+1)
	for i := range many {
		many[i] = fmt.Sprintf("/t/%d", i)
	}
	if _, err := r.e.Update(ctx, alice, "c", many, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("%d channels: %v, want ErrInvalid", len(many), err)
	}
	if _, err := r.e.Get(ctx, alice, many); !errors.Is(err, ErrInvalid) {
		t.Fatalf("get of %d channels: %v, want ErrInvalid", len(many), err)
	}
}

func TestEngineInvalidAndMissingChannels(t *testing.T) {
	r := newEngineRig(t, configFunc(func(ch string) *Config {
		if ch == "/t/exists" {
			return publicCfg
		}
		return nil
	}))
	names := []string{"/t/exists", "/t/missing", "no-slash", "/bad prefix/x", "/t/", ""}
	res := r.update(alice, "c", names, names)
	for _, n := range names {
		if want := n == "/t/exists"; res[n] != want {
			t.Errorf("update %q: %v, want %v", n, res[n], want)
		}
	}
	got, err := r.e.Get(context.Background(), alice, append(names, "/t/exists"))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(names) {
		t.Fatalf("get returned %d entries for %d distinct names", len(got), len(names))
	}
	for _, n := range names {
		if (got[n] != nil) != (n == "/t/exists") {
			t.Errorf("get %q = %+v", n, got[n])
		}
	}
	if st := got["/t/exists"]; st.Count != 0 {
		t.Fatalf("present then leave in one update left %+v (present must apply first)", st)
	}
}

func TestEngineLeaveRevealsNothingAndSpawnsNothing(t *testing.T) {
	r := newEngineRig(t, configFunc(func(string) *Config { return nil }))
	res := r.update(alice, "c", nil, []string{"/t/secret", "/t/missing"})
	if len(res) != 0 {
		t.Fatalf("leave channels appear in the response: %v", res)
	}
	if n := len(r.e.Channels()); n != 0 {
		t.Fatalf("leave started %d channel actors", n)
	}
}

func TestEngineOverloadedMailbox(t *testing.T) {
	r := newEngineRig(t, configFunc(publicOnly), func(c *EngineConfig) { c.MailboxSize = 2 })
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	block := func(*Message) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-gate
	}
	r.rec.hook.Store(&block)
	r.update(alice, "a", []string{"/t/a"}, nil) // publishes, so the actor blocks in the hook
	<-entered
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, err = r.e.Update(context.Background(), bob, fmt.Sprint(i), []string{"/t/a"}, nil)
	}
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("full mailbox: %v, want ErrOverloaded", err)
	}
	r.rec.hook.Store(nil)
	close(gate)
	testkit.WaitFor(t, "the queued updates", func() bool {
		st, err := r.e.State(context.Background(), alice, "/t/a")
		return err == nil && st.Count == 2
	})
}

func TestEnginePanicLosesStateButNeverRepeatsIDs(t *testing.T) {
	r := newEngineRig(t, configFunc(publicOnly))
	r.present(alice, "a", "/t/a")
	before := r.state(alice, "/t/a")
	var once atomic.Bool
	boom := func(*Message) {
		if once.CompareAndSwap(false, true) {
			panic("publisher failed")
		}
	}
	r.rec.hook.Store(&boom)
	r.present(bob, "b", "/t/a") // the actor panics while publishing
	testkit.WaitFor(t, "the restarted channel", func() bool { return r.metrics.Clients() == 0 })
	after := r.state(alice, "/t/a")
	if after.Count != 0 || after.LastMessageID <= before.LastMessageID+1 {
		t.Fatalf("after the panic %+v; before %+v: ids must jump past every id issued", after, before)
	}
	r.present(alice, "a", "/t/a")
	if ms := r.rec.take("/t/a"); ms[len(ms)-1].ID != after.LastMessageID+1 {
		t.Fatalf("first id after restart %d, want %d", ms[len(ms)-1].ID, after.LastMessageID+1)
	}
	if r.metrics.Channels() != 1 || r.metrics.Clients() != 1 || r.metrics.Users() != 1 {
		t.Fatalf("gauges after restart: channels %d clients %d users %d",
			r.metrics.Channels(), r.metrics.Clients(), r.metrics.Users())
	}
}

func TestEngineExportInstallRemove(t *testing.T) {
	ctx := context.Background()
	from := newEngineRig(t, configFunc(publicOnly))
	to := newEngineRig(t, configFunc(publicOnly))
	from.present(alice, "a", "/t/a")
	from.advance(30 * time.Second)
	from.present(bob, "b", "/t/a")
	want := from.state(alice, "/t/a")

	snap, err := from.e.Export(ctx, "/t/a")
	if err != nil || snap == nil {
		t.Fatalf("export: %v, %v", snap, err)
	}
	if none, err := from.e.Export(ctx, "/t/none"); none != nil || err != nil {
		t.Fatalf("export of a channel without actor: %v, %v", none, err)
	}
	if err := to.e.Install(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := from.e.Remove(ctx, "/t/a"); err != nil {
		t.Fatal(err)
	}
	if got := to.state(alice, "/t/a"); got.Count != 2 || got.LastMessageID != want.LastMessageID {
		t.Fatalf("installed %+v, want %+v", got, want)
	}
	if cu, err := to.e.Since(ctx, alice, "/t/a", want.LastMessageID-2); err != nil || cu.Resync || len(cu.Messages) != 2 {
		t.Fatalf("installed backlog: %+v, %v", cu, err)
	}
	if slices.Contains(from.e.Channels(), "/t/a") {
		t.Fatal("removed channel still has an actor")
	}
	if st := from.state(alice, "/t/a"); st.Count != 0 || st.LastMessageID <= want.LastMessageID {
		t.Fatalf("after remove the old owner shows %+v; ids must move past %d", st, want.LastMessageID)
	}
	// The new owner expires the clients on their original schedule.
	to.advance(91 * time.Second)
	testkit.WaitFor(t, "installed clients to expire", func() bool { return to.state(alice, "/t/a").Count == 0 })
	bad := &ChannelSnapshot{Channel: "/t/a", LastID: 3, Backlog: []*Message{{ID: 1}}}
	if err := to.e.Install(ctx, bad); !errors.Is(err, ErrInvalid) {
		t.Fatalf("inconsistent snapshot: %v, want ErrInvalid", err)
	}
}

func TestEnginePassivatesOnlyEmptyIdleChannels(t *testing.T) {
	r := newEngineRig(t, configFunc(publicOnly))
	r.present(alice, "a", "/t/a")
	for range 40 { // 40 minutes with heartbeats: never passivated
		r.advance(30 * time.Second)
		r.present(alice, "a", "/t/a")
		r.advance(30 * time.Second)
		r.present(alice, "a", "/t/a")
	}
	if !slices.Contains(r.e.Channels(), "/t/a") {
		t.Fatal("a channel with a client was passivated")
	}
	r.leave(alice, "a", "/t/a")
	last := r.state(alice, "/t/a").LastMessageID
	testkit.WaitFor(t, "passivation", func() bool {
		r.advance(time.Minute)
		return r.metrics.Channels() == 0
	})
	if st := r.state(alice, "/t/a"); st.LastMessageID <= last {
		t.Fatalf("new incarnation starts at %d, not past %d", st.LastMessageID, last)
	}
}

func TestEngineMetrics(t *testing.T) {
	r := newEngineRig(t, configFunc(publicOnly))
	r.present(alice, "a", "/t/a", "/t/b")
	r.present(alice, "b", "/t/a")
	r.present(bob, "a", "/t/a")
	r.state(alice, "/t/a")
	r.state(alice, "/t/b")
	if r.metrics.Channels() != 2 || r.metrics.Clients() != 4 || r.metrics.Users() != 3 || r.metrics.Published() != 3 {
		t.Fatalf("channels %d clients %d users %d published %d; want 2 4 3 3",
			r.metrics.Channels(), r.metrics.Clients(), r.metrics.Users(), r.metrics.Published())
	}
	r.advance(61 * time.Second)
	testkit.WaitFor(t, "expiry", func() bool { return r.metrics.Clients() == 0 })
	if r.metrics.Users() != 0 || r.metrics.Expired() != 4 {
		t.Fatalf("after expiry users %d expired %d", r.metrics.Users(), r.metrics.Expired())
	}
}

// benchEngine is an engine on the real clock for benchmarks.
func benchEngine(b *testing.B) *Engine {
	b.Helper()
	e, err := NewEngine(EngineConfig{Configs: configFunc(publicOnly), MailboxSize: 1 << 16})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := e.Close(context.Background()); err != nil {
			b.Error(err)
		}
	})
	return e
}

// drainEvery waits, off the clock, until the channels applied what was
// queued, so that mailboxes never fill during a benchmark.
const drainEvery = 8192

func benchBarrier(b *testing.B, e *Engine, channels ...string) {
	b.StopTimer()
	for _, ch := range channels {
		if _, err := actorAsk(e, ch); err != nil {
			b.Fatal(err)
		}
	}
	b.StartTimer()
}

// BenchmarkHeartbeatWarm measures one client's heartbeat into a channel where
// it is already present: the Service call (Update, whose result map
// allocates) and the owner operation alone (Present).
func BenchmarkHeartbeatWarm(b *testing.B) {
	u := &User{ID: "42", Username: "bench"}
	channels := []string{"/bench/warm"}
	b.Run("Update", func(b *testing.B) {
		e := benchEngine(b)
		ctx := context.Background()
		if _, err := e.Update(ctx, u, "tab", channels, nil); err != nil {
			b.Fatal(err)
		}
		benchBarrier(b, e, channels...)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := e.Update(ctx, u, "tab", channels, nil); err != nil {
				b.Fatal(err)
			}
			if i%drainEvery == drainEvery-1 {
				benchBarrier(b, e, channels...)
			}
		}
		benchBarrier(b, e, channels...)
	})
	b.Run("Present", func(b *testing.B) {
		e := benchEngine(b)
		ctx := context.Background()
		if _, err := e.Present(ctx, u, "tab", channels[0]); err != nil {
			b.Fatal(err)
		}
		benchBarrier(b, e, channels...)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if _, err := e.Present(ctx, u, "tab", channels[0]); err != nil {
				b.Fatal(err)
			}
			if i%drainEvery == drainEvery-1 {
				benchBarrier(b, e, channels...)
			}
		}
		benchBarrier(b, e, channels...)
	})
}

// BenchmarkChannelHeartbeat measures what the channel actor does for a warm
// heartbeat, without the mailbox.
func BenchmarkChannelHeartbeat(b *testing.B) {
	r := newChannelRig()
	ch := r.channel("/bench/warm")
	now := r.now()
	ch.present(alice, "tab", publicCfg, now)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		now += int64(time.Microsecond)
		ch.present(alice, "tab", publicCfg, now)
	}
}

// BenchmarkHeartbeatSpread100k spreads warm heartbeats over 100,000 channels
// with 10 present users each (1,000,000 clients).
func BenchmarkHeartbeatSpread100k(b *testing.B) {
	const nChannels, nUsers = 100_000, 10
	e := benchEngine(b)
	ctx := context.Background()
	names := make([]string, nChannels)
	for i := range names {
		names[i] = fmt.Sprintf("/bench/%d", i)
	}
	users := make([]*User, nUsers)
	for i := range users {
		users[i] = &User{ID: fmt.Sprint(i + 1)}
	}
	for _, u := range users {
		for _, ch := range names {
			if _, err := e.Present(ctx, u, "tab", ch); err != nil {
				b.Fatal(err)
			}
		}
		benchBarrier(b, e, names...)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := e.Present(ctx, users[(i/nChannels)%nUsers], "tab", names[i%nChannels]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	benchBarrier(b, e, names...)
	b.ReportMetric(float64(e.metrics.Clients()), "clients")
}

func TestEngineCloseTwice(t *testing.T) {
	e, err := NewEngine(EngineConfig{Configs: configFunc(publicOnly), Clock: clock.NewFake(wheelStart)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := e.Update(ctx, alice, "a", []string{"/t/a"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(ctx); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if _, err := e.Update(ctx, alice, "a", []string{"/t/a"}, nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("update after close: %v, want ErrUnavailable", err)
	}
}

func TestEngineMassExpiryInOneTick(t *testing.T) {
	const nChannels, nUsers = 100, 1000 // 100,000 clients due in the same second
	r := newEngineRig(t, configFunc(publicOnly))
	ctx := context.Background()
	names := make([]string, nChannels)
	for i := range names {
		names[i] = fmt.Sprintf("/mass/%d", i)
	}
	for u := range nUsers {
		user := &User{ID: fmt.Sprint(u)}
		for _, ch := range names {
			if _, err := r.e.Present(ctx, user, "tab", ch); err != nil {
				t.Fatal(err)
			}
		}
		if u%100 == 99 {
			r.barrier(names) // keep mailboxes from filling
		}
	}
	r.barrier(names)
	r.rec.take("")
	if r.metrics.Clients() != nChannels*nUsers {
		t.Fatalf("%d clients present, want %d", r.metrics.Clients(), nChannels*nUsers)
	}
	r.advance((DefaultTimeoutSeconds + 1) * time.Second)
	testkit.WaitFor(t, "mass expiry", func() bool { return r.metrics.Clients() == 0 })
	r.barrier(names)
	ms := r.rec.take("")
	if len(ms) != nChannels {
		t.Fatalf("%d leave messages, want one per channel (%d)", len(ms), nChannels)
	}
	for _, m := range ms {
		if len(m.LeavingUserIDs) != nUsers {
			t.Fatalf("%s: %d users left in its message, want %d", m.Channel, len(m.LeavingUserIDs), nUsers)
		}
	}
	if r.metrics.Expired() != nChannels*nUsers {
		t.Fatalf("expired counter %d", r.metrics.Expired())
	}
}

func TestEngineSharedHub(t *testing.T) {
	hub, err := NewHub(HubConfig{})
	if err != nil {
		t.Fatal(err)
	}
	defer hub.Close()
	r := newEngineRig(t, configFunc(publicOnly), func(c *EngineConfig) {
		c.Hub = hub
		c.Publisher = nil
	})
	if r.e.Hub() != hub {
		t.Fatal("engine did not use the given hub")
	}
	c := subscribe(t, r.e, bob, map[string]int64{"/t/a": r.state(bob, "/t/a").LastMessageID})
	if _, err := r.e.Update(context.Background(), alice, "a", []string{"/t/a"}, nil); err != nil {
		t.Fatal(err)
	}
	c.await(t, 1)
	if ev := c.events()[0]; ev.Kind != EventMessage || ev.Message.EnteringUsers[0].ID != alice.ID {
		t.Fatalf("event %+v", ev)
	}
}

// TestEnginePresentExpiresFromItsSendTime: a present that waited on its
// way expires a timeout after it was sent, not after it was applied, and a
// heartbeat sent before the one that set a client's expiry moves nothing.
func TestEnginePresentExpiresFromItsSendTime(t *testing.T) {
	ctx := context.Background()
	r := newEngineRig(t, configFunc(publicOnly))
	expiry := func() int64 {
		t.Helper()
		snap, err := r.e.Export(ctx, "/t/a")
		if err != nil || snap == nil || len(snap.Clients) != 1 {
			t.Fatalf("export: %+v, %v", snap, err)
		}
		return snap.Clients[0].ExpiresAtUnixNano
	}
	timeout := int64(publicOnly("/t/a").TimeoutSeconds()) * int64(time.Second)
	now := r.clk.Now().UnixNano()
	sent := now - int64(3*time.Second)
	if ok, err := r.e.PresentAckAt(ctx, alice, "a", "/t/a", sent); !ok || err != nil {
		t.Fatalf("present: %v, %v", ok, err)
	}
	if got := expiry(); got != sent+timeout {
		t.Fatalf("expiry %d, want the send time + the timeout %d", got, sent+timeout)
	}
	if ok, err := r.e.PresentAckAt(ctx, alice, "a", "/t/a", now); !ok || err != nil {
		t.Fatalf("heartbeat: %v, %v", ok, err)
	}
	if ok, err := r.e.PresentAckAt(ctx, alice, "a", "/t/a", now-int64(time.Second)); !ok || err != nil {
		t.Fatalf("older heartbeat: %v, %v", ok, err)
	}
	if got := expiry(); got != now+timeout {
		t.Fatalf("expiry %d after an older heartbeat applied late, want %d", got, now+timeout)
	}
	// A send time after now (a sender's clock ahead) counts as now.
	if ok, err := r.e.PresentAckAt(ctx, bob, "b", "/t/b", now+int64(time.Hour)); !ok || err != nil {
		t.Fatalf("present: %v, %v", ok, err)
	}
	snap, err := r.e.Export(ctx, "/t/b")
	if err != nil || snap == nil || snap.Clients[0].ExpiresAtUnixNano != now+timeout {
		t.Fatalf("export of /t/b: %+v, %v; want the expiry counted from now", snap, err)
	}
}

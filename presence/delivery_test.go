package presence

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// fakeDeliveries records the installs it hears of and answers Pending
// from a flag.
type fakeDeliveries struct {
	mu        sync.Mutex
	installed []*ChannelSnapshot
	pending   atomic.Bool
}

func (f *fakeDeliveries) Installed(s *ChannelSnapshot) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.installed = append(f.installed, s)
}

func (f *fakeDeliveries) Pending(string) bool { return f.pending.Load() }

func TestMessagesSayWhenTheyOccupyOrVacateTheChannel(t *testing.T) {
	counted := &Config{Public: true, CountOnly: true}
	r := newEngineRig(t, configFunc(func(ch string) *Config {
		if ch == "/t/count" {
			return counted
		}
		return publicCfg
	}))
	for _, ch := range []string{"/t/a", "/t/count"} {
		r.present(alice, "a", ch) // occupied
		r.present(bob, "b", ch)   // one more
		r.present(bob, "c", ch)   // bob's second client: no message
		r.leave(alice, "a", ch)   // one left
		r.leave(bob, "b", ch)     // bob still has c
		r.leave(bob, "c", ch)     // vacated
		r.present(alice, "a", ch) // occupied again
		type flags struct{ occupied, vacated bool }
		var got []flags
		for _, m := range r.rec.take(ch) {
			got = append(got, flags{m.Occupied, m.Vacated})
		}
		want := []flags{{true, false}, {false, false}, {false, false}, {false, true}, {true, false}}
		if !slices.Equal(got, want) {
			t.Errorf("%s: occupancy flags %v, want %v", ch, got, want)
		}
	}
	// Users expiring in one tick leave in one message, which vacates.
	r.present(alice, "a", "/t/x")
	r.present(bob, "b", "/t/x")
	r.rec.take("/t/x")
	r.advance(time.Duration(publicCfg.TimeoutSeconds()+1) * time.Second)
	var ms []*Message // alice expires in the other channels too
	testkit.WaitFor(t, "the expiry", func() bool {
		ms = append(ms, r.rec.take("/t/x")...)
		return len(ms) > 0
	})
	if len(ms) != 1 || len(ms[0].LeavingUserIDs) != 2 || !ms[0].Vacated || ms[0].Occupied {
		t.Fatalf("expiry published %+v, want one vacating message for both users", ms)
	}
}

func TestUserDelta(t *testing.T) {
	cases := []struct {
		m     Message
		delta int
		ok    bool
	}{
		{Message{EnteringUsers: []UserInfo{{ID: "a"}}}, 1, true},
		{Message{LeavingUserIDs: []string{"a", "b"}}, -2, true},
		{Message{CountOnly: true, CountDelta: -3}, -3, true},
		{Message{Resync: true}, 0, false},
	}
	for _, c := range cases {
		if d, ok := c.m.UserDelta(); d != c.delta || ok != c.ok {
			t.Errorf("%+v: UserDelta() = %d, %v; want %d, %v", c.m, d, ok, c.delta, c.ok)
		}
	}
}

func TestAcknowledgeMovesTheDeliveryPosition(t *testing.T) {
	rep := &fakeReplicator{}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	rep.pub = r.rec
	ctx := context.Background()
	r.present(alice, "a", "/t/a")
	r.present(bob, "b", "/t/a")
	msgs := r.rec.take("/t/a")
	first, last := msgs[0].ID, msgs[1].ID
	position := func() int64 {
		t.Helper()
		s, err := r.e.Export(ctx, "/t/a")
		if err != nil || s == nil {
			t.Fatalf("export: %v", err)
		}
		return s.Delivered
	}
	// A new incarnation has nothing before its first message to deliver.
	if got := position(); got != first-1 {
		t.Fatalf("position %d of a new channel, want %d (before its first message)", got, first-1)
	}
	if err := r.e.Acknowledge("/t/a", first); err != nil {
		t.Fatal(err)
	}
	if got := position(); got != first {
		t.Fatalf("position %d, want %d", got, first)
	}
	// Never back, never past the last id.
	if err := r.e.Acknowledge("/t/a", first-5); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Acknowledge("/t/a", last+100); err != nil {
		t.Fatal(err)
	}
	if got := position(); got != last {
		t.Fatalf("position %d, want %d (the last id)", got, last)
	}
	// The replicator heard each move, and only the moves.
	rep.mu.Lock()
	var moves []int64
	for _, c := range rep.changes {
		if c.Kind == ChangeDelivered {
			if c.Message != nil || c.Channel != "/t/a" {
				t.Errorf("delivery change %+v", c)
			}
			moves = append(moves, c.Delivered)
		}
	}
	rep.mu.Unlock()
	if !slices.Equal(moves, []int64{first, last}) {
		t.Fatalf("replicated positions %v, want [%d %d]", moves, first, last)
	}
	// A channel without an actor here is nothing to acknowledge.
	if err := r.e.Acknowledge("/t/none", 5); err != nil {
		t.Fatal(err)
	}
	if slices.Contains(r.e.Channels(), "/t/none") {
		t.Fatal("an acknowledgement started a channel")
	}
}

func TestInstallCarriesThePositionAndTellsDeliveries(t *testing.T) {
	d := &fakeDeliveries{}
	r := newEngineRig(t, configFunc(publicOnly), func(c *EngineConfig) { c.Deliveries = d })
	ctx := context.Background()
	backlog := []*Message{
		{Channel: "/t/i", ID: 40, Audience: publicCfg, EnteringUsers: []UserInfo{{ID: "k"}}},
		{Channel: "/t/i", ID: 41, Audience: publicCfg, EnteringUsers: []UserInfo{{ID: "j"}}},
	}
	snap := &ChannelSnapshot{Channel: "/t/i", Config: publicCfg, LastID: 41, Delivered: 40, Backlog: backlog}
	if err := r.e.Install(ctx, snap); err != nil {
		t.Fatal(err)
	}
	d.mu.Lock()
	installed := slices.Clone(d.installed)
	d.mu.Unlock()
	if len(installed) != 1 || installed[0] != snap {
		t.Fatalf("deliveries heard of %v, want the installed snapshot", installed)
	}
	got, err := r.e.Export(ctx, "/t/i")
	if err != nil {
		t.Fatal(err)
	}
	if got.Delivered != 40 {
		t.Fatalf("exported position %d, want the installed 40", got.Delivered)
	}
	for _, bad := range []int64{-1, 42} {
		s := &ChannelSnapshot{Channel: "/t/j", Config: publicCfg, LastID: 41, Delivered: bad}
		if err := s.Validate(); err == nil {
			t.Errorf("position %d of a snapshot ending at 41 validated", bad)
		}
	}
}

func TestUndeliveredEventsKeepAChannelFromPassivating(t *testing.T) {
	d := &fakeDeliveries{}
	d.pending.Store(true)
	r := newEngineRig(t, configFunc(publicOnly), func(c *EngineConfig) { c.Deliveries = d })
	r.present(alice, "a", "/t/p")
	r.leave(alice, "a", "/t/p")
	for range 30 { // 30 idle minutes
		r.advance(time.Minute)
		r.barrier([]string{"/t/p"})
	}
	if r.metrics.Channels() != 1 {
		t.Fatal("a channel with undelivered events was passivated")
	}
	d.pending.Store(false)
	testkit.WaitFor(t, "passivation once delivered", func() bool {
		r.advance(time.Minute)
		return r.metrics.Channels() == 0
	})
}

func TestCopyFollowsTheDeliveryPosition(t *testing.T) {
	c := NewCopy(&ChannelSnapshot{Channel: "/t/c", Config: publicCfg, LastID: 10, Delivered: 7})
	c.Apply(&Change{Kind: ChangeEnter, Channel: "/t/c", UserID: "a", ClientID: "t", User: &User{ID: "a"}, Config: publicCfg,
		ExpiresAt: 1e18, Message: &Message{Channel: "/t/c", ID: 11, EnteringUsers: []UserInfo{{ID: "a"}}}})
	c.Apply(&Change{Kind: ChangeDelivered, Channel: "/t/c", Delivered: 9})
	c.Apply(&Change{Kind: ChangeDelivered, Channel: "/t/c", Delivered: 8}) // late: never back
	if s := c.Snapshot(0); s.Delivered != 9 || s.LastID != 11 {
		t.Fatalf("copy at position %d, last %d; want 9, 11", s.Delivered, s.LastID)
	}
	c.Apply(&Change{Kind: ChangeDelivered, Channel: "/t/c", Delivered: 99})
	if s := c.Snapshot(0); s.Delivered != 11 || s.Validate() != nil {
		t.Fatalf("copy at position %d (%v), want 11: never past its last id", s.Delivered, s.Validate())
	}
}

func TestMergeKeepsTheDeliveryPositionOfOneHistory(t *testing.T) {
	msg := func(id int64, user string) *Message {
		return &Message{Channel: "/t/m", ID: id, PublishedAtUnixMilli: id, EnteringUsers: []UserInfo{{ID: user}}}
	}
	client := func(user string) ClientSnapshot {
		return ClientSnapshot{User: UserInfo{ID: user}, ClientID: "t", ExpiresAtUnixNano: 1e18}
	}
	local := &ChannelSnapshot{Channel: "/t/m", Config: publicCfg, LastID: 12, Delivered: 10,
		Backlog: []*Message{msg(11, "a"), msg(12, "b")}, Clients: []ClientSnapshot{client("a"), client("b")}}
	// An older copy of local's history that had heard of a later ack.
	older := &ChannelSnapshot{Channel: "/t/m", Config: publicCfg, LastID: 11, Delivered: 11,
		Backlog: []*Message{msg(11, "a")}, Clients: []ClientSnapshot{client("a")}}
	merged, diverged := MergeSnapshots(local, older)
	if diverged || merged.Delivered != 11 || merged.LastID != 12 {
		t.Fatalf("merged position %d, last %d, diverged %v; want 11, 12, false", merged.Delivered, merged.LastID, diverged)
	}
	// Diverged histories: nothing of either goes on; the resync marker
	// published next sums them up.
	other := &ChannelSnapshot{Channel: "/t/m", Config: publicCfg, LastID: 12, Delivered: 9,
		Backlog: []*Message{msg(12, "z")}, Clients: []ClientSnapshot{client("z")}}
	merged, diverged = MergeSnapshots(local, other)
	if !diverged || merged.Delivered != merged.LastID || merged.LastID != 13 || merged.Validate() != nil {
		t.Fatalf("diverged merge at position %d, last %d (%v); want both 13", merged.Delivered, merged.LastID, merged.Validate())
	}
}

// TestAnInstalledClientPastItsExpiryLeavesWithAMessage: a stale copy may
// hold clients whose expiry passed while it was handed over; installed,
// they leave and the leave is published, so subscribers and webhooks hear
// of it.
func TestAnInstalledClientPastItsExpiryLeavesWithAMessage(t *testing.T) {
	r := newEngineRig(t, configFunc(publicOnly))
	ctx := context.Background()
	past := r.clk.Now().Add(-time.Second).UnixNano()
	snap := &ChannelSnapshot{Channel: "/t/old", Config: publicCfg, LastID: 50, Delivered: 50, Clients: []ClientSnapshot{
		{User: UserInfo{ID: "k"}, ClientID: "tab", ExpiresAtUnixNano: past},
	}}
	if err := r.e.Install(ctx, snap); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the expired client's leave", func() bool {
		r.advance(time.Second)
		return r.rec.count() > 0
	})
	ms := r.rec.take("/t/old")
	if len(ms) != 1 || ms[0].ID != 51 || !slices.Equal(ms[0].LeavingUserIDs, []string{"k"}) || !ms[0].Vacated {
		t.Fatalf("published %+v, want k leaving as message 51", ms)
	}
}

// TestAnInstalledClientPastItsExpiryLeavesBeforeTheChannelServes: a copy
// promoted seconds after its owner died holds clients whose expiry (with
// the promotion's grace) passed meanwhile. They leave with the install,
// not at the wheel's next tick: the first read after the install does not
// list them, and a capped channel admits a new user in their place.
func TestAnInstalledClientPastItsExpiryLeavesBeforeTheChannelServes(t *testing.T) {
	r := newEngineRig(t, configFunc(func(string) *Config { return &Config{Public: true, MaxUsers: 2} }))
	ctx := context.Background()
	now := r.clk.Now()
	snap := &ChannelSnapshot{Channel: "/t/cap", Config: &Config{Public: true, MaxUsers: 2}, LastID: 50, Delivered: 50,
		ExpiryGrace: time.Second, Clients: []ClientSnapshot{
			{User: UserInfo{ID: "gone"}, ClientID: "tab", ExpiresAtUnixNano: now.Add(-1500 * time.Millisecond).UnixNano()},
			{User: UserInfo{ID: "grace"}, ClientID: "tab", ExpiresAtUnixNano: now.Add(-500 * time.Millisecond).UnixNano()},
		}}
	if err := r.e.Install(ctx, snap); err != nil {
		t.Fatal(err)
	}
	st, err := r.e.FullState(ctx, "/t/cap")
	if err != nil {
		t.Fatal(err)
	}
	if ids := st.UserIDs(); !slices.Equal(ids, []string{"grace"}) {
		t.Fatalf("users right after the install %v, want [grace] (gone expired 0.5 s before it, grace included)", ids)
	}
	ms := r.rec.take("/t/cap")
	if len(ms) != 1 || ms[0].ID != 51 || !slices.Equal(ms[0].LeavingUserIDs, []string{"gone"}) {
		t.Fatalf("published %+v, want gone leaving as message 51", ms)
	}
	if got := r.update(&User{ID: "new"}, "tab", []string{"/t/cap"}, nil); !got["/t/cap"] {
		t.Fatal("a new user was refused by max_users 2 with one user present")
	}
}

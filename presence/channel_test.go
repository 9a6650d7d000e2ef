package presence

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
)

// channelRig drives channels synchronously: the wheel's deliveries call
// channel.expire directly, as the channel actor would.
type channelRig struct {
	clk      *clock.Fake
	w        *wheel[*client]
	metrics  *Metrics
	channels map[string]*channel
	expired  []*Message
}

const rigBase = int64(1_000_000)

func newChannelRig() *channelRig {
	r := &channelRig{clk: clock.NewFake(wheelStart), metrics: NewMetrics(nil), channels: map[string]*channel{}}
	r.w = newWheel(r.clk, func(g *timerGroup[*client], due *timer[*client], now time.Time) bool {
		if ch := r.channels[g.name]; ch != nil {
			if m, _ := ch.expire(g, due, now.UnixNano()); m != nil {
				r.expired = append(r.expired, m)
			}
		}
		return true
	}, nil)
	return r
}

func (r *channelRig) channel(name string) *channel {
	ch := newChannel(name, rigBase, r.w, r.metrics)
	r.channels[name] = ch
	return ch
}

func (r *channelRig) now() int64 { return r.clk.Now().UnixNano() }

// advance moves time by d and processes the wheel, returning the expiry
// messages published.
func (r *channelRig) advance(d time.Duration) []*Message {
	r.clk.Advance(d)
	r.w.advance(r.clk.Now())
	m := r.expired
	r.expired = nil
	return m
}

var (
	publicCfg    = &Config{Public: true}
	countOnlyCfg = &Config{Public: true, CountOnly: true}
	alice        = &User{ID: "1", Username: "alice", Name: "Alice"}
	bob          = &User{ID: "2", Username: "bob"}
	carol        = &User{ID: "3", Username: "carol"}
)

// mark is present for channels without a cap, which admit everyone.
func (ch *channel) mark(u *User, clientID string, cfg *Config, now int64) *Message {
	m, admitted := ch.present(u, clientID, cfg, now)
	if !admitted {
		panic("channel without a cap refused a present")
	}
	return m
}

func userIDs(st *ChannelState) []string {
	var ids []string
	for _, u := range st.Users {
		ids = append(ids, u.ID)
	}
	return ids
}

func TestChannelEnterOnceLeaveOnce(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	m := ch.mark(alice, "tab1", publicCfg, r.now())
	if m == nil || m.ID != rigBase+1 || len(m.EnteringUsers) != 1 || m.EnteringUsers[0] != alice.Info() {
		t.Fatalf("first client: message %+v, want alice entering with id %d", m, rigBase+1)
	}
	if m.Audience != publicCfg || m.Channel != "/t/a" {
		t.Fatalf("message audience/channel %v %q", m.Audience, m.Channel)
	}
	if m := ch.mark(alice, "tab2", publicCfg, r.now()); m != nil {
		t.Fatalf("second client of the same user published %+v", m)
	}
	if m := ch.mark(alice, "tab1", publicCfg, r.now()); m != nil {
		t.Fatalf("heartbeat published %+v", m)
	}
	if st := ch.state(publicCfg, false); st.Count != 1 || len(st.Users) != 1 {
		t.Fatalf("state %+v, want alice once", st)
	}
	if m := ch.leave(alice.ID, "tab1", r.now()); m != nil {
		t.Fatalf("leaving one of two clients published %+v", m)
	}
	m = ch.leave(alice.ID, "tab2", r.now())
	if m == nil || m.ID != rigBase+2 || !slices.Equal(m.LeavingUserIDs, []string{"1"}) {
		t.Fatalf("last client leaving: %+v", m)
	}
	if m := ch.leave(alice.ID, "tab2", r.now()); m != nil {
		t.Fatalf("leaving twice published %+v", m)
	}
	if !ch.empty() || r.metrics.Clients() != 0 || r.metrics.Users() != 0 || r.w.len() != 0 {
		t.Fatalf("not empty after leaving: clients %d users %d timers %d",
			r.metrics.Clients(), r.metrics.Users(), r.w.len())
	}
}

func TestChannelClientIDsArePerUser(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	ch.mark(alice, "same", publicCfg, r.now())
	ch.mark(bob, "same", publicCfg, r.now())
	if m := ch.leave(bob.ID, "same", r.now()); m == nil || !slices.Equal(m.LeavingUserIDs, []string{"2"}) {
		t.Fatalf("bob leaving: %+v", m)
	}
	if st := ch.state(publicCfg, false); !slices.Equal(userIDs(st), []string{"1"}) {
		t.Fatalf("users %v, want alice still present", userIDs(st))
	}
}

func TestChannelWarmHeartbeatTouchesNeitherWheelNorHeap(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	ch.mark(alice, "tab", publicCfg, r.now())
	c := ch.clients[clientKey{alice.ID, "tab"}]
	armed := c.timer.due
	now := r.now()
	allocs := testing.AllocsPerRun(1000, func() {
		now += int64(time.Millisecond)
		ch.mark(alice, "tab", publicCfg, now)
	})
	if allocs != 0 {
		t.Fatalf("warm heartbeat allocates %v times", allocs)
	}
	if c.timer.due != armed || c.armedAt == c.expiresAt {
		t.Fatal("warm heartbeat re-armed the timer instead of moving the expiry lazily")
	}
}

func TestChannelLazyRescheduleThenExpiry(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a") // timeout 60 s
	ch.mark(alice, "tab", publicCfg, r.now())
	if ms := r.advance(30 * time.Second); len(ms) != 0 {
		t.Fatalf("expired early: %+v", ms)
	}
	ch.mark(alice, "tab", publicCfg, r.now()) // now expires at 90 s
	if ms := r.advance(30 * time.Second); len(ms) != 0 || ch.empty() {
		t.Fatalf("expired at the old deadline despite the heartbeat: %+v", ms)
	}
	if r.w.len() != 1 {
		t.Fatalf("timer not re-armed at the new deadline (wheel len %d)", r.w.len())
	}
	if ms := r.advance(29 * time.Second); len(ms) != 0 {
		t.Fatalf("expired before 90 s: %+v", ms)
	}
	ms := r.advance(time.Second)
	if len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"1"}) || !ch.empty() {
		t.Fatalf("at 90 s: %+v, empty %v", ms, ch.empty())
	}
	if r.metrics.Expired() != 1 {
		t.Fatalf("expired counter %d, want 1", r.metrics.Expired())
	}
}

func TestChannelUsersExpiringInOneTickLeaveInOneMessage(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	// Deadlines 60.1 s, 60.3 s and 60.6 s all fall in the tick of 61 s.
	r.clk.Advance(100 * time.Millisecond)
	ch.mark(carol, "x", publicCfg, r.now())
	r.clk.Advance(200 * time.Millisecond)
	ch.mark(alice, "x", publicCfg, r.now())
	ch.mark(alice, "y", publicCfg, r.now())
	r.clk.Advance(300 * time.Millisecond)
	ch.mark(bob, "x", publicCfg, r.now())
	if ms := r.advance(60 * time.Second); len(ms) != 0 { // at 60.6 s, tick 60
		t.Fatalf("expired before the tick of 61 s: %+v", ms)
	}
	ms := r.advance(400 * time.Millisecond)
	if len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"1", "2", "3"}) {
		t.Fatalf("expiry messages %+v, want one with users 1, 2, 3", ms)
	}
}

func TestChannelCountOnly(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/c")
	m := ch.mark(alice, "x", countOnlyCfg, r.now())
	if m == nil || m.CountDelta != 1 || !m.CountOnly || m.EnteringUsers != nil {
		t.Fatalf("enter: %+v", m)
	}
	ch.mark(bob, "x", countOnlyCfg, r.now())
	ch.mark(carol, "x", countOnlyCfg, r.now())
	m = ch.leave(carol.ID, "x", r.now())
	if m == nil || m.CountDelta != -1 || m.LeavingUserIDs != nil {
		t.Fatalf("leave: %+v", m)
	}
	ms := r.advance(61 * time.Second)
	if len(ms) != 1 || ms[0].CountDelta != -2 || ms[0].LeavingUserIDs != nil {
		t.Fatalf("expiry: %+v, want one count_delta -2", ms)
	}
	st := ch.state(countOnlyCfg, false)
	if !st.CountOnly || st.Users != nil || st.Count != 0 {
		t.Fatalf("count-only state %+v", st)
	}
}

func TestChannelShorterTimeoutRearmsEarlier(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	ch.mark(alice, "x", &Config{Public: true, Timeout: 3600}, r.now())
	ch.mark(alice, "x", &Config{Public: true, Timeout: 5}, r.now())
	if ms := r.advance(5 * time.Second); len(ms) != 1 {
		t.Fatalf("after the timeout shrank to 5 s: %+v", ms)
	}
}

func TestChannelStateShowsLatestUserInfo(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	ch.mark(bob, "x", publicCfg, r.now())
	ch.mark(alice, "x", publicCfg, r.now())
	renamed := &User{ID: "1", Username: "alice2", Name: "Alice Two", AvatarTemplate: "/a/{size}.png"}
	ch.mark(renamed, "y", publicCfg, r.now())
	st := ch.state(publicCfg, false)
	if st.Count != 2 || st.LastMessageID != rigBase+2 || len(st.Users) != 2 {
		t.Fatalf("state %+v", st)
	}
	if st.Users[0] != renamed.Info() || st.Users[1].ID != "2" {
		t.Fatalf("users %+v, want sorted with alice's latest info", st.Users)
	}
}

func TestChannelSince(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	ch.mark(alice, "x", publicCfg, r.now())
	ch.mark(bob, "x", publicCfg, r.now())
	ch.leave(alice.ID, "x", r.now()).MarkPublished() // and the two before
	if cu := ch.since(-1); cu.LastID != rigBase+3 || cu.Resync || cu.Messages != nil {
		t.Fatalf("since(-1) = %+v", cu)
	}
	cu := ch.since(rigBase + 1)
	if cu.Resync || len(cu.Messages) != 2 || cu.Messages[0].ID != rigBase+2 {
		t.Fatalf("since(base+1) = %+v", cu)
	}
	if cu := ch.since(rigBase); cu.Resync || len(cu.Messages) != 3 {
		t.Fatalf("since(base) = %+v, want all 3 messages", cu)
	}
	for _, after := range []int64{0, rigBase - 1, rigBase + 4} {
		if cu := ch.since(after); !cu.Resync || cu.LastID != rigBase+3 {
			t.Fatalf("since(%d) = %+v, want resync", after, cu)
		}
	}
}

// TestChannelSinceStopsAtThePublished: a catch-up never includes a message
// not yet published (on its way to the replica, or refused by it): its
// owner may die, and the next one issue its id with other content. A
// subscriber that read the state further (the state shows the change) is
// told it is up to date; an older state's message cannot move a new
// state's count.
func TestChannelSinceStopsAtThePublished(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/t/a")
	first := ch.mark(alice, "x", publicCfg, r.now())
	first.MarkPublished()
	second := ch.mark(bob, "x", publicCfg, r.now())
	if cu := ch.since(rigBase); cu.Resync || cu.LastID != rigBase+1 || len(cu.Messages) != 1 || cu.Messages[0].ID != first.ID {
		t.Fatalf("since(base) with %d unpublished = %+v, want the first message only", second.ID, cu)
	}
	if cu := ch.since(-1); cu.LastID != rigBase+1 {
		t.Fatalf("since(-1) = %+v, want the last published id %d", cu, rigBase+1)
	}
	if cu := ch.since(rigBase + 2); cu.Resync || cu.LastID != rigBase+2 || cu.Messages != nil {
		t.Fatalf("since(the unpublished id) = %+v, want up to date at it", cu)
	}
	second.MarkPublished()
	if cu := ch.since(rigBase + 1); cu.Resync || cu.LastID != rigBase+2 || len(cu.Messages) != 1 || cu.Messages[0].ID != rigBase+2 {
		t.Fatalf("since(base+1) once published = %+v", cu)
	}

	late := ch.mark(carol, "x", publicCfg, r.now()) // in flight when a state is installed
	ch.install(&ChannelSnapshot{Channel: "/t/a", Config: publicCfg, LastID: rigBase + 2, Delivered: rigBase + 2})
	late.MarkPublished()
	if cu := ch.since(-1); cu.LastID != rigBase+2 {
		t.Fatalf("after the install and a late mark, since(-1) = %+v, want %d", cu, rigBase+2)
	}
	next := ch.mark(alice, "y", publicCfg, r.now())
	if cu := ch.since(rigBase + 2); next.ID != late.ID || cu.LastID != rigBase+2 || cu.Messages != nil {
		t.Fatalf("the installed state's unpublished %d was caught up with: %+v", next.ID, cu)
	}
}

// TestAnInstallPublishesWhatItsSenderHadNot: messages still on their way
// to the sender's replica when it took the snapshot (a hand-off drops what
// is in flight there) are published by the installer once its replica has
// the state; until then catch-ups stop short of them. Found by the
// partition test: the merge's resync marker was in flight when the channel
// was handed on, and its subscribers never heard of it.
func TestAnInstallPublishesWhatItsSenderHadNot(t *testing.T) {
	r := newChannelRig()
	src := r.channel("/t/u")
	src.mark(alice, "x", publicCfg, r.now()).MarkPublished()
	src.mark(bob, "x", publicCfg, r.now())
	last := src.mark(carol, "x", publicCfg, r.now())
	snap := src.snapshot()
	if snap.Unpublished != 2 {
		t.Fatalf("snapshot with 2 messages in flight: Unpublished %d", snap.Unpublished)
	}

	dst := r.channel("/t/u")
	pending := dst.install(snap)
	if pending == nil || pending.ID != last.ID || pending == snap.Backlog[2] {
		t.Fatalf("install returned %+v to publish, want a copy of message %d", pending, last.ID)
	}
	if cu := dst.since(rigBase); cu.Resync || cu.LastID != rigBase+1 || len(cu.Messages) != 1 {
		t.Fatalf("catch-up before the install is safe = %+v, want the published message only", cu)
	}
	last.MarkPublished() // the sender's late mark moves its own counter only
	if cu := dst.since(-1); cu.LastID != rigBase+1 {
		t.Fatalf("after the sender's mark, since(-1) = %+v", cu)
	}
	pending.MarkPublished()
	if cu := dst.since(rigBase + 1); cu.Resync || cu.LastID != last.ID || len(cu.Messages) != 2 {
		t.Fatalf("catch-up once the install published = %+v, want both messages", cu)
	}
	if again := dst.snapshot(); again.Unpublished != 0 {
		t.Fatalf("snapshot after publishing: Unpublished %d", again.Unpublished)
	}

	// Without a backlog there is nothing to publish or catch up with.
	empty := r.channel("/t/v")
	if m := empty.install(&ChannelSnapshot{Channel: "/t/v", LastID: rigBase + 5, Unpublished: 3}); m != nil {
		t.Fatalf("an install without a backlog returned %+v", m)
	}
}

func TestChannelStaleTimerBatchIgnored(t *testing.T) {
	r := newChannelRig()
	old := r.channel("/t/a")
	old.present(alice, "x", publicCfg, r.now())
	// A new incarnation replaces the old one (passivation or panic): timers of
	// the old one must not touch it.
	fresh := r.channel("/t/a")
	fresh.present(alice, "x", publicCfg, r.now())
	if m, n := fresh.expire(old.timers, &old.clients[clientKey{"1", "x"}].timer, r.now()+int64(time.Hour)); m != nil || n != 0 {
		t.Fatalf("stale batch expired %d clients: %+v", n, m)
	}
}

func TestChannelSnapshotInstall(t *testing.T) {
	r := newChannelRig()
	src := r.channel("/t/src")
	src.mark(alice, "x", publicCfg, r.now())
	r.clk.Advance(20 * time.Second)
	src.mark(bob, "x", publicCfg, r.now())
	src.mark(bob, "y", publicCfg, r.now())
	src.published.Store(src.lastID) // its replica had every message
	snap := src.snapshot()
	if err := snap.Validate(); err != nil {
		t.Fatal(err)
	}
	src.clear()

	dst := r.channel("/t/src")
	dst.mark(carol, "z", publicCfg, r.now()) // state that install replaces
	if m := dst.install(snap); m != nil {
		t.Fatalf("an install of a state published whole returned %+v to publish", m)
	}
	st := dst.state(publicCfg, false)
	if !slices.Equal(userIDs(st), []string{"1", "2"}) || st.LastMessageID != snap.LastID {
		t.Fatalf("installed state %+v, want alice and bob at id %d", st, snap.LastID)
	}
	if cu := dst.since(rigBase); cu.Resync || len(cu.Messages) != 2 {
		t.Fatalf("installed backlog: %+v", cu)
	}
	if r.metrics.Clients() != 3 || r.metrics.Users() != 2 {
		t.Fatalf("gauges %d clients %d users, want 3 and 2", r.metrics.Clients(), r.metrics.Users())
	}
	// Expiries carried over: alice at 60 s, bob at 80 s after the start.
	ms := r.advance(40 * time.Second)
	if len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"1"}) || ms[0].ID != snap.LastID+1 {
		t.Fatalf("at 60 s: %+v", ms)
	}
	ms = r.advance(20 * time.Second)
	if len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"2"}) {
		t.Fatalf("at 80 s: %+v", ms)
	}
}

func TestChannelInstallWithGraceExpiresAfterIt(t *testing.T) {
	r := newChannelRig()
	src := r.channel("/t/g")
	src.mark(alice, "x", publicCfg, r.now()) // expires 60 s from now
	snap := src.snapshot()
	src.clear()
	snap.ExpiryGrace = 5 * time.Second

	dst := r.channel("/t/g")
	dst.install(snap)
	if got := dst.snapshot().Clients[0].ExpiresAtUnixNano; got != snap.Clients[0].ExpiresAtUnixNano {
		t.Fatalf("installed expiry %d, want %d: the grace must not move it", got, snap.Clients[0].ExpiresAtUnixNano)
	}
	if ms := r.advance(62 * time.Second); len(ms) != 0 {
		t.Fatalf("expired within the grace: %+v", ms)
	}
	if ms := r.advance(4 * time.Second); len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"1"}) {
		t.Fatalf("after the grace: %+v, want alice leaving", ms)
	}
}

func TestSnapshotValidate(t *testing.T) {
	bad := []*ChannelSnapshot{
		{Channel: "/t/a", LastID: 5, Unpublished: -1},
		{Channel: "/t/a", LastID: 5, Backlog: []*Message{{ID: 3}, {ID: 5}}},
		{Channel: "/t/a", LastID: 5, Backlog: []*Message{{Channel: "/t/a", ID: 4}}},
		{Channel: "/t/a", LastID: 5, Backlog: []*Message{{Channel: "/t/b", ID: 5}}},
		{Channel: "/t/a", Clients: []ClientSnapshot{{User: UserInfo{ID: "1"}, ClientID: "x"}}},
		{Channel: "/t/a", Config: publicCfg, Clients: []ClientSnapshot{{User: UserInfo{ID: "1"}}}},
	}
	for i, s := range bad {
		if s.Validate() == nil {
			t.Errorf("snapshot %d accepted", i)
		}
	}
	good := &ChannelSnapshot{Channel: "/t/a", LastID: 5, Backlog: []*Message{{Channel: "/t/a", ID: 4}, {Channel: "/t/a", ID: 5}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkExpireMass expires 100,000 clients of one channel in one tick:
// the wheel collects them and the channel publishes one message.
func BenchmarkExpireMass(b *testing.B) {
	const n = 100_000
	users := make([]*User, n)
	for i := range users {
		users[i] = &User{ID: fmt.Sprint(i)}
	}
	r := newChannelRig()
	ch := r.channel("/bench/mass")
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		for _, u := range users {
			ch.mark(u, "tab", publicCfg, r.now())
		}
		b.StartTimer()
		ms := r.advance(61 * time.Second)
		if len(ms) != 1 || len(ms[0].LeavingUserIDs) != n {
			b.Fatalf("%d messages", len(ms))
		}
	}
	b.ReportMetric(n, "clients/tick")
}

package presence

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

var wheelStart = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)

// firedBatch is one delivery of the wheel under test.
type firedBatch struct {
	group  string
	values []int
	now    time.Time
}

// wheelRig is a wheel of ints driven by hand, recording what it delivers.
type wheelRig struct {
	clk    *clock.Fake
	w      *wheel[int]
	groups map[string]*timerGroup[int]
	refuse map[string]bool // groups whose delivery reports overload

	mu      sync.Mutex
	batches []firedBatch
	lags    []time.Duration
}

func newWheelRig() *wheelRig {
	r := &wheelRig{clk: clock.NewFake(wheelStart), groups: map[string]*timerGroup[int]{}, refuse: map[string]bool{}}
	r.w = newWheel(r.clk, r.deliver, func(d time.Duration) {
		r.mu.Lock()
		r.lags = append(r.lags, d)
		r.mu.Unlock()
	})
	return r
}

func (r *wheelRig) deliver(g *timerGroup[int], due *timer[int], now time.Time) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.refuse[g.name] {
		return false
	}
	b := firedBatch{group: g.name, now: now}
	for t := due; t != nil; t = t.next {
		if t.state != timerFired || t.group != g {
			panic("delivered a timer that is not fired or of another group")
		}
		b.values = append(b.values, t.value)
	}
	r.batches = append(r.batches, b)
	return true
}

func (r *wheelRig) timer(group string, v int) *timer[int] {
	g := r.groups[group]
	if g == nil {
		g = &timerGroup[int]{name: group}
		r.groups[group] = g
	}
	return &timer[int]{group: g, value: v}
}

// at returns the unix nanoseconds of wheelStart + d.
func at(d time.Duration) int64 { return wheelStart.Add(d).UnixNano() }

// advanceTo moves the clock to wheelStart + d and processes the wheel.
func (r *wheelRig) advanceTo(d time.Duration) {
	r.clk.Set(wheelStart.Add(d))
	r.w.advance(r.clk.Now())
}

// take returns and forgets the batches delivered so far.
func (r *wheelRig) take() []firedBatch {
	r.mu.Lock()
	defer r.mu.Unlock()
	b := r.batches
	r.batches = nil
	return b
}

func firedValues(bs []firedBatch) []int {
	var vs []int
	for _, b := range bs {
		vs = append(vs, b.values...)
	}
	slices.Sort(vs)
	return vs
}

func TestWheelFiresInDeadlineOrder(t *testing.T) {
	r := newWheelRig()
	for i, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second} {
		r.w.schedule(r.timer("a", i), at(d))
	}
	var order []int
	for s := 1; s <= 3; s++ {
		r.advanceTo(time.Duration(s) * time.Second)
		order = append(order, firedValues(r.take())...)
	}
	if want := []int{1, 2, 0}; !slices.Equal(order, want) {
		t.Fatalf("fired %v, want %v", order, want)
	}
	if n := r.w.len(); n != 0 {
		t.Fatalf("wheel still holds %d timers", n)
	}
}

func TestWheelNeverEarlyAndLateByAtMostOneTick(t *testing.T) {
	for _, off := range []time.Duration{0, time.Millisecond, 500 * time.Millisecond, 999 * time.Millisecond} {
		t.Run(off.String(), func(t *testing.T) {
			r := newWheelRig()
			deadline := 10*time.Second + off
			r.w.schedule(r.timer("a", 1), at(deadline))
			// Process at every 100 ms, as a ticker running late would.
			for now := 100 * time.Millisecond; now < 12*time.Second; now += 100 * time.Millisecond {
				r.advanceTo(now)
				if bs := r.take(); len(bs) > 0 {
					if now < deadline {
						t.Fatalf("fired at %v, before its deadline %v", now, deadline)
					}
					fireTick := bs[0].now.Sub(wheelStart).Truncate(time.Second)
					if fireTick-deadline >= time.Second {
						t.Fatalf("fired at tick %v, more than one tick after %v", fireTick, deadline)
					}
					return
				}
			}
			t.Fatal("never fired")
		})
	}
}

func TestWheelCancel(t *testing.T) {
	r := newWheelRig()
	a, b, c := r.timer("g", 1), r.timer("g", 2), r.timer("g", 3)
	for _, tm := range []*timer[int]{a, b, c} {
		r.w.schedule(tm, at(5*time.Second))
	}
	r.w.cancel(b) // middle of the slot's list
	r.w.cancel(c) // head of the slot's list
	r.w.cancel(c) // twice is harmless
	r.advanceTo(5 * time.Second)
	if got := firedValues(r.take()); !slices.Equal(got, []int{1}) {
		t.Fatalf("fired %v, want [1]", got)
	}
	if b.state != timerIdle || r.w.len() != 0 {
		t.Fatalf("cancelled timer state %d, wheel len %d", b.state, r.w.len())
	}
}

func TestWheelRescheduleMovesTimer(t *testing.T) {
	r := newWheelRig()
	tm := r.timer("g", 1)
	r.w.schedule(tm, at(2*time.Second))
	r.w.schedule(tm, at(4*time.Second))
	r.advanceTo(3 * time.Second)
	if bs := r.take(); len(bs) != 0 {
		t.Fatalf("fired at the old deadline: %v", bs)
	}
	r.advanceTo(4 * time.Second)
	if got := firedValues(r.take()); !slices.Equal(got, []int{1}) {
		t.Fatalf("fired %v, want [1]", got)
	}
}

func TestWheelScheduleLeavesFiredTimerToOwner(t *testing.T) {
	r := newWheelRig()
	tm := r.timer("g", 1)
	r.w.schedule(tm, at(time.Second))
	r.advanceTo(time.Second)
	if tm.state != timerFired {
		t.Fatalf("state %d after firing, want fired", tm.state)
	}
	r.w.schedule(tm, at(5*time.Second)) // the owner has not seen the batch yet
	if tm.state != timerFired || r.w.len() != 0 {
		t.Fatalf("schedule re-linked a timer that belongs to a batch in flight")
	}
	tm.deadline, tm.next = at(5*time.Second), nil
	r.w.scheduleList(tm) // what the owner does on receipt
	r.take()
	r.advanceTo(5 * time.Second)
	if got := firedValues(r.take()); !slices.Equal(got, []int{1}) {
		t.Fatalf("fired %v after re-arm, want [1]", got)
	}
}

func TestWheelPastDeadlineFiresNextTick(t *testing.T) {
	r := newWheelRig()
	r.advanceTo(10 * time.Second)
	r.w.schedule(r.timer("g", 1), at(3*time.Second))
	r.advanceTo(10*time.Second + 900*time.Millisecond)
	if bs := r.take(); len(bs) != 0 {
		t.Fatal("fired before the next tick")
	}
	r.advanceTo(11 * time.Second)
	if got := firedValues(r.take()); !slices.Equal(got, []int{1}) {
		t.Fatalf("fired %v, want [1]", got)
	}
}

func TestWheelGroupsOneBatchPerOwnerPerTick(t *testing.T) {
	r := newWheelRig()
	for i := range 6 {
		r.w.schedule(r.timer(fmt.Sprintf("ch%d", i%3), i), at(7*time.Second+time.Duration(i)*time.Millisecond))
	}
	r.advanceTo(8 * time.Second)
	bs := r.take()
	if len(bs) != 3 {
		t.Fatalf("%d batches, want one per group (3): %v", len(bs), bs)
	}
	for _, b := range bs {
		if len(b.values) != 2 {
			t.Fatalf("group %s got %v, want 2 timers", b.group, b.values)
		}
	}
}

func TestWheelRetriesRefusedBatchNextTick(t *testing.T) {
	r := newWheelRig()
	r.w.schedule(r.timer("busy", 1), at(time.Second))
	r.refuse["busy"] = true
	r.advanceTo(time.Second)
	if bs := r.take(); len(bs) != 0 {
		t.Fatal("refused batch recorded")
	}
	if r.w.len() != 1 {
		t.Fatalf("refused timer not requeued: len %d", r.w.len())
	}
	r.mu.Lock()
	r.refuse["busy"] = false
	r.mu.Unlock()
	r.advanceTo(2 * time.Second)
	if got := firedValues(r.take()); !slices.Equal(got, []int{1}) {
		t.Fatalf("fired %v on retry, want [1]", got)
	}
}

func TestWheelDeadlineBeyondOneRound(t *testing.T) {
	r := newWheelRig()
	far := time.Duration(wheelSlots+5) * time.Second
	r.w.schedule(r.timer("g", 1), at(far))
	r.advanceTo(6 * time.Second) // visits the far timer's slot a round early
	if bs := r.take(); len(bs) != 0 {
		t.Fatalf("fired a round early: %v", bs)
	}
	r.advanceTo(far - time.Second)
	if bs := r.take(); len(bs) != 0 {
		t.Fatalf("fired early: %v", bs)
	}
	r.advanceTo(far)
	if got := firedValues(r.take()); !slices.Equal(got, []int{1}) {
		t.Fatalf("fired %v, want [1]", got)
	}
}

func TestWheelCatchesUpAfterLongStall(t *testing.T) {
	r := newWheelRig()
	for i := range 100 {
		r.w.schedule(r.timer("g", i), at(time.Duration(i*50)*time.Second))
	}
	r.advanceTo(2 * wheelSlots * time.Second)
	if got := firedValues(r.take()); len(got) != 100 {
		t.Fatalf("fired %d timers after a stall, want 100", len(got))
	}
}

func TestWheelRecordsLag(t *testing.T) {
	r := newWheelRig()
	r.advanceTo(3*time.Second + 250*time.Millisecond)
	r.mu.Lock()
	defer r.mu.Unlock()
	want := []time.Duration{2250 * time.Millisecond, 1250 * time.Millisecond, 250 * time.Millisecond}
	if !slices.Equal(r.lags, want) {
		t.Fatalf("lags %v, want %v", r.lags, want)
	}
}

func TestWheelMassExpiryInOneSlot(t *testing.T) {
	const n, groups = 100_000, 1000
	r := newWheelRig()
	for i := range n {
		r.w.schedule(r.timer(fmt.Sprintf("ch%d", i%groups), i), at(60*time.Second+time.Duration(i)))
	}
	if r.w.len() != n {
		t.Fatalf("wheel holds %d, want %d", r.w.len(), n)
	}
	r.advanceTo(61 * time.Second)
	bs := r.take()
	if len(bs) != groups {
		t.Fatalf("%d batches, want %d", len(bs), groups)
	}
	total := 0
	for _, b := range bs {
		if len(b.values) != n/groups {
			t.Fatalf("group %s got %d timers, want %d", b.group, len(b.values), n/groups)
		}
		total += len(b.values)
	}
	if total != n || r.w.len() != 0 {
		t.Fatalf("fired %d of %d, %d left", total, n, r.w.len())
	}
}

func TestWheelTicksOnItsOwnWithClock(t *testing.T) {
	r := newWheelRig()
	r.w.start()
	defer r.w.stopWheel()
	r.w.schedule(r.timer("g", 1), at(2*time.Second))
	r.clk.Advance(time.Second)
	r.clk.Advance(time.Second)
	testkit.WaitFor(t, "the wheel goroutine to fire", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.batches) == 1
	})
}

func BenchmarkWheelInsertCancel(b *testing.B) {
	r := newWheelRig()
	tm := make([]*timer[int], 1024)
	for i := range tm {
		tm[i] = r.timer("g", i)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := tm[i%len(tm)]
		r.w.schedule(t, at(time.Duration(i%3600)*time.Second))
		r.w.cancel(t)
	}
}

func BenchmarkWheelTick(b *testing.B) {
	// Each tick expires 10,000 timers spread over 1,000 channels.
	const perTick, groups = 10_000, 1000
	clk := clock.NewFake(wheelStart)
	w := newWheel(clk, func(*timerGroup[int], *timer[int], time.Time) bool { return true }, nil)
	gs := make([]*timerGroup[int], groups)
	for i := range gs {
		gs[i] = &timerGroup[int]{name: fmt.Sprint(i)}
	}
	tm := make([]timer[int], perTick)
	for i := range tm {
		tm[i].group = gs[i%groups]
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		now := wheelStart.Add(time.Duration(i+1) * time.Second)
		for j := range tm {
			tm[j].next, tm[j].state = nil, timerIdle
			w.schedule(&tm[j], now.UnixNano())
		}
		b.StartTimer()
		w.advance(now)
	}
	b.ReportMetric(perTick, "timers/tick")
}

package gcpace

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, c := range []struct {
		name           string
		live, headroom uint64
		base, want     int
	}{
		{"small live heap: the headroom decides", 45 * mib, 256 * mib, 100, 569},
		{"live heap past the headroom: the base", 512 * mib, 256 * mib, 100, 100},
		{"a base above what the headroom asks", 200 * mib, 256 * mib, 300, 300},
		{"tiny heap: the runtime's minimum goal stays within the headroom", 1 * mib, 256 * mib, 100, 6400},
		{"no live heap yet", 0, 256 * mib, 100, 6400},
	} {
		if got := Percent(c.live, c.headroom, c.base); got != c.want {
			t.Errorf("%s: Percent(%d MiB, %d MiB, %d) = %d, want %d", c.name, c.live/mib, c.headroom/mib, c.base, got, c.want)
		}
	}
}

func TestValidate(t *testing.T) {
	for _, cfg := range []Config{{MaxHeadroom: -1}, {Period: -time.Second}, {Interval: -time.Second}} {
		if _, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v): %v, want ErrConfig", cfg, err)
		}
	}
	if _, err := New(Config{}); err != nil {
		t.Fatalf("the zero Config: %v", err)
	}
}

// fakeRuntime is a collector whose live heap and allocation rate the
// test sets: every look at the bytes allocated finds rate more.
type fakeRuntime struct {
	mu        sync.Mutex
	live      uint64
	rate      uint64
	allocated uint64
	percent   int
	looks     int
	sets      []int
	returns   int
}

func (f *fakeRuntime) ReturnMemory() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.returns++
}

func (f *fakeRuntime) returned() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.returns
}

func (f *fakeRuntime) Allocated() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.allocated += f.rate
	return f.allocated
}

func (f *fakeRuntime) LiveHeap() uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.looks++
	return f.live
}

func (f *fakeRuntime) GCPercent() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent
}

func (f *fakeRuntime) SetGCPercent(p int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.percent = p
	f.sets = append(f.sets, p)
}

func (f *fakeRuntime) state() (percent, looks, sets int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.percent, f.looks, len(f.sets)
}

type rig struct {
	t    *testing.T
	rt   *fakeRuntime
	clk  *clock.Fake
	stop context.CancelFunc
	done chan struct{}
}

func newRig(t *testing.T, base int) *rig {
	r := &rig{t: t, rt: &fakeRuntime{percent: base}, clk: clock.NewFake(time.Unix(0, 0)), done: make(chan struct{})}
	p, err := New(Config{MaxHeadroom: 256 * mib, Period: 2 * time.Second, Interval: time.Second, Clock: r.clk, Runtime: r.rt})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.stop = cancel
	go func() {
		defer close(r.done)
		p.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// look sets the live heap and the bytes allocated per second, and returns
// GOGC once the pacer has looked at them: the second look after the change
// implies that the first one finished.
func (r *rig) look(live, rate uint64) int {
	r.t.Helper()
	r.rt.mu.Lock()
	r.rt.live, r.rt.rate = live, rate
	from := r.rt.looks
	r.rt.mu.Unlock()
	testkit.WaitFor(r.t, "the pacer to look at the live heap twice", func() bool {
		if _, looks, _ := r.rt.state(); looks >= from+2 {
			return true
		}
		r.clk.Advance(time.Second)
		return false
	})
	percent, _, _ := r.rt.state()
	return percent
}

func TestPacerFollowsTheAllocationRateAndTheLiveHeap(t *testing.T) {
	r := newRig(t, 100)
	// 80 MiB a second: 160 MiB of garbage between collections.
	if p := r.look(45*mib, 80*mib); p != 356 {
		t.Fatalf("GOGC %d at 45 MiB live and 80 MiB/s, want 356", p)
	}
	_, _, sets := r.rt.state()
	if p := r.look(46*mib, 80*mib); p != 356 {
		t.Fatalf("GOGC %d after a 2 %% change of the live heap, want 356 kept", p)
	}
	if _, _, again := r.rt.state(); again != sets {
		t.Fatalf("GOGC set %d times for a small change, want no new setting", again-sets)
	}
	if p := r.look(45*mib, 400*mib); p != 569 {
		t.Fatalf("GOGC %d at 400 MiB/s, want 569: at most the 256 MiB headroom", p)
	}
	if p := r.look(600*mib, 400*mib); p != 100 {
		t.Fatalf("GOGC %d at 600 MiB live, want the base 100", p)
	}
	if n := r.rt.returned(); n != 1 {
		t.Fatalf("memory returned %d times when GOGC fell back to its base, want once", n)
	}
	if p := r.look(45*mib, 0); p != 100 {
		t.Fatalf("GOGC %d while nothing is allocated, want the base 100", p)
	}
	if p := r.look(45*mib, 80*mib); p != 356 {
		t.Fatalf("GOGC %d at 80 MiB/s again, want 356", p)
	}
	r.look(45*mib, 0)
	if n := r.rt.returned(); n != 1 {
		t.Fatalf("memory returned %d times within a minute, want once", n)
	}
	r.clk.Advance(returnEvery)
	r.look(45*mib, 80*mib)
	r.look(45*mib, 0)
	if n := r.rt.returned(); n != 2 {
		t.Fatalf("memory returned %d times, want twice: the node went idle again a minute later", n)
	}
	r.stop()
	<-r.done
	if p, _, _ := r.rt.state(); p != 100 {
		t.Fatalf("GOGC %d after Run ended, want the base 100 restored", p)
	}
}

func TestPacerWaitsForTheFirstCollection(t *testing.T) {
	r := newRig(t, 100)
	if p := r.look(0, 80*mib); p != 100 {
		t.Fatalf("GOGC %d before any collection, want the base kept", p)
	}
}

func TestPacerLeavesCollectionOff(t *testing.T) {
	r := newRig(t, -1)
	<-r.done // Run returned at once
	if p, looks, sets := r.rt.state(); p != -1 || looks != 0 || sets != 0 {
		t.Fatalf("GOGC=off: percent %d after %d looks and %d settings, want -1 untouched", p, looks, sets)
	}
}

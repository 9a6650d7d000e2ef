package presence

import (
	"math"
	"sync"
	"time"

	"github.com/presencehq/presence/clock"
)

// wheelSlots is the number of one-second slots of the timer wheel. It exceeds
// MaxTimeoutSeconds, so a slot normally holds entries of a single due tick;
// entries further away are kept in their slot until their round comes.
const wheelSlots = 4096

// Timer states, changed only under wheel.mu.
const (
	timerIdle      uint8 = iota // not in the wheel
	timerScheduled              // linked in a slot
	timerFired                  // handed to its group's owner, which now owns the links
)

// timer is an intrusive wheel entry: its owner embeds it, so scheduling and
// cancelling allocate nothing.
type timer[T any] struct {
	prev, next *timer[T]
	// deadline (unix nanoseconds) is written by the owner while the timer is
	// idle or fired, then read by the wheel under its lock.
	deadline int64
	// due is the tick the timer fires at, under wheel.mu. 32 bits cover 68
	// years of one-second ticks and keep an embedded timer small: there is
	// one per present client.
	due   int32
	state uint8
	group *timerGroup[T]
	value T
}

// timerGroup collects the due timers of one owner (one incarnation of a
// channel) so that everything due in a tick reaches the owner in one batch.
// The due list fields are touched only by the ticking goroutine.
type timerGroup[T any] struct {
	name             string
	dueHead, dueTail *timer[T]
	queued           bool
}

// deliverFunc hands an owner the timers due at now, linked through next. It
// reports false when the owner cannot take them yet (overloaded); the wheel
// then retries at the next tick. A batch the owner no longer exists for is
// reported delivered and dropped.
type deliverFunc[T any] func(g *timerGroup[T], due *timer[T], now time.Time) bool

// wheel is a single-level hashed timer wheel with one-second ticks. Insert and
// cancel are O(1); a tick costs O(entries due). A timer with deadline t fires
// at the first tick whose time is >= t: never early, late by at most a tick
// plus processing time.
type wheel[T any] struct {
	clk     clock.Clock
	base    time.Time // time of tick 0
	deliver deliverFunc[T]
	lag     func(time.Duration) // observes how late each tick is processed

	mu        sync.Mutex
	slots     [wheelSlots]*timer[T]
	processed int64 // last tick processed
	size      int

	tickMu sync.Mutex       // serializes advance
	groups []*timerGroup[T] // scratch, under tickMu

	stopOnce sync.Once
	stop     chan struct{}
	done     chan struct{}
}

func newWheel[T any](clk clock.Clock, deliver deliverFunc[T], lag func(time.Duration)) *wheel[T] {
	if lag == nil {
		lag = func(time.Duration) {}
	}
	return &wheel[T]{clk: clk, base: clk.Now(), deliver: deliver, lag: lag}
}

// start runs the ticking goroutine until stopWheel.
func (w *wheel[T]) start() {
	w.stop = make(chan struct{})
	w.done = make(chan struct{})
	t := w.clk.NewTicker(time.Second)
	go func() {
		defer close(w.done)
		defer t.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-t.C():
				w.advance(w.clk.Now())
			}
		}
	}()
}

// stopWheel ends the ticking goroutine and waits for it. Idempotent.
func (w *wheel[T]) stopWheel() {
	if w.stop == nil {
		return
	}
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// tickOf returns the first tick whose time is >= deadline.
func (w *wheel[T]) tickOf(deadline int64) int64 {
	d := deadline - w.base.UnixNano()
	if d <= 0 {
		return 0
	}
	return (d + int64(time.Second) - 1) / int64(time.Second)
}

// schedule (re)arms t to fire at deadline (unix nanoseconds). A timer
// already handed to its owner is left alone: its links belong to the batch in
// flight, and the owner re-arms it from its own deadline when the batch
// arrives.
func (w *wheel[T]) schedule(t *timer[T], deadline int64) {
	w.mu.Lock()
	switch t.state {
	case timerFired:
		w.mu.Unlock()
		return
	case timerScheduled:
		w.unlinkLocked(t)
	}
	t.deadline = deadline
	w.insertLocked(t)
	w.mu.Unlock()
}

// scheduleList arms every timer of a list linked through next, each at its
// own deadline field, under one lock acquisition. It is how an owner re-arms
// the timers of a batch it received (and how the wheel retries a batch).
func (w *wheel[T]) scheduleList(head *timer[T]) {
	if head == nil {
		return
	}
	w.mu.Lock()
	for t := head; t != nil; {
		next := t.next
		if t.state == timerScheduled {
			w.unlinkLocked(t)
		}
		w.insertLocked(t)
		t = next
	}
	w.mu.Unlock()
}

// cancel disarms t. A timer already handed to its owner is left alone: the
// owner recognizes it as stale when the batch arrives.
func (w *wheel[T]) cancel(t *timer[T]) {
	w.mu.Lock()
	if t.state == timerScheduled {
		w.unlinkLocked(t)
		t.state = timerIdle
	}
	w.mu.Unlock()
}

// len returns the number of scheduled timers.
func (w *wheel[T]) len() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.size
}

func (w *wheel[T]) insertLocked(t *timer[T]) {
	due := min(w.tickOf(t.deadline), math.MaxInt32) // later is never, in practice
	if due <= w.processed {
		due = w.processed + 1
	}
	t.due = int32(due)
	t.state = timerScheduled
	slot := &w.slots[due%wheelSlots]
	t.prev = nil
	t.next = *slot
	if *slot != nil {
		(*slot).prev = t
	}
	*slot = t
	w.size++
}

func (w *wheel[T]) unlinkLocked(t *timer[T]) {
	if t.prev != nil {
		t.prev.next = t.next
	} else {
		w.slots[t.due%wheelSlots] = t.next
	}
	if t.next != nil {
		t.next.prev = t.prev
	}
	t.prev, t.next = nil, nil
	w.size--
}

// advance processes every tick up to now and delivers what is due, grouped by
// owner. The ticking goroutine calls it; tests call it directly to drive the
// wheel synchronously.
func (w *wheel[T]) advance(now time.Time) {
	w.tickMu.Lock()
	defer w.tickMu.Unlock()
	target := int64(now.Sub(w.base) / time.Second)

	w.mu.Lock()
	if target <= w.processed {
		w.mu.Unlock()
		return
	}
	first := w.processed + 1
	last := min(target, w.processed+wheelSlots) // one round visits every slot
	for k := first; k <= last; k++ {
		w.collectLocked(k%wheelSlots, target)
		w.lag(now.Sub(w.base.Add(time.Duration(k) * time.Second)))
	}
	w.processed = target
	w.mu.Unlock()

	w.deliverGroups(now)
}

// collectLocked moves the timers of a slot that are due by target onto their
// group's due list.
func (w *wheel[T]) collectLocked(slot, target int64) {
	for t := w.slots[slot]; t != nil; {
		next := t.next
		if int64(t.due) <= target {
			w.unlinkLocked(t)
			t.state = timerFired
			g := t.group
			if g.dueTail == nil {
				g.dueHead = t
			} else {
				g.dueTail.next = t
			}
			g.dueTail = t
			if !g.queued {
				g.queued = true
				w.groups = append(w.groups, g)
			}
		}
		t = next
	}
}

func (w *wheel[T]) deliverGroups(now time.Time) {
	for i, g := range w.groups {
		head := g.dueHead
		g.dueHead, g.dueTail, g.queued = nil, nil, false
		w.groups[i] = nil
		if !w.deliver(g, head, now) {
			w.scheduleList(head) // deadlines are past: they land on the next tick
		}
	}
	w.groups = w.groups[:0]
}

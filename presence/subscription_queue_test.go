package presence

import (
	"context"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
)

// queueReader reads a subscription through Notify and Take, as a server
// holding many streams does: wake only signals, a reader takes.
type queueReader struct {
	s     QueuedSubscription
	wakes atomic.Int64
	woken chan struct{}
	evs   []Event
	ended bool
}

func readQueued(t *testing.T, s Subscription) *queueReader {
	t.Helper()
	qs, ok := s.(QueuedSubscription)
	if !ok {
		t.Fatalf("%T is not a QueuedSubscription", s)
	}
	r := &queueReader{s: qs, woken: make(chan struct{}, 1)}
	qs.Notify(func() {
		r.wakes.Add(1)
		select {
		case r.woken <- struct{}{}:
		default:
		}
	})
	t.Cleanup(s.Close)
	return r
}

// take waits for a wake and takes what is queued.
func (r *queueReader) take(t *testing.T) {
	t.Helper()
	testkit.WaitFor(t, "a wake", func() bool {
		select {
		case <-r.woken:
			return true
		default:
			return false
		}
	})
	var ended bool
	r.evs, ended = r.s.Take(r.evs)
	r.ended = r.ended || ended
}

// until takes until n events arrived or the subscription ended.
func (r *queueReader) until(t *testing.T, n int) []string {
	t.Helper()
	for len(r.evs) < n && !r.ended {
		r.take(t)
	}
	return summary(r.evs)
}

func TestQueuedSubscriptionDeliversInOrder(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	f.publish("/t/a", 2) // ids 101, 102
	s, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/a": 100, "/t/b": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	r := readQueued(t, s)
	if got, want := r.until(t, 3), []string{"/t/a:m101", "/t/a:m102", "/t/b:p100"}; !slices.Equal(got, want) {
		t.Fatalf("catch-up %v, want %v", got, want)
	}
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(&collector{sub: s}) })
	f.publish("/t/b", 3)
	f.publish("/t/a", 1)
	want := []string{"/t/a:m101", "/t/a:m102", "/t/b:p100", "/t/b:m101", "/t/b:m102", "/t/b:m103", "/t/a:m103"}
	if got := r.until(t, len(want)); !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if r.ended {
		t.Fatal("a live subscription reported its end")
	}
	// Events published while nothing was taken share one wake (Publish
	// hands them over before it returns).
	r.evs, _ = r.s.Take(r.evs[:0])
	before := r.wakes.Load()
	f.publish("/t/a", 3)
	evs, _ := r.s.Take(nil)
	if len(evs) != 3 || r.wakes.Load() != before+1 {
		t.Fatalf("took %d events after %d wakes, want 3 after 1", len(evs), r.wakes.Load()-before)
	}
}

// A live subscription owns no goroutine: the catch-up's exits once the
// channels are live.
func TestQueuedSubscriptionIdleHasNoGoroutine(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	s, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/a": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	readQueued(t, s)
	sub := s.(*subscription)
	testkit.WaitFor(t, "the catch-up goroutine to exit", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		return !sub.running
	})
	if !subscriptionLive(&collector{sub: s}) {
		t.Fatal("catch-up goroutine gone before the channels were live")
	}
}

// A catch-up longer than the buffer waits for the reader instead of
// overflowing it; live messages wait in pending meanwhile.
func TestQueuedSubscriptionCatchupWaitsForReader(t *testing.T) {
	f := newFakeSource(t, HubConfig{BufferSize: 4})
	f.publish("/t/a", 10)
	s, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/a": 100}, f)
	if err != nil {
		t.Fatal(err)
	}
	r := readQueued(t, s)
	got := r.until(t, 10)
	if len(got) != 10 || r.ended {
		t.Fatalf("events %v (ended %v), want the 10 of the catch-up", got, r.ended)
	}
	for i, ev := range r.evs {
		if ev.LastID != int64(101+i) {
			t.Fatalf("event %d has id %d, want %d", i, ev.LastID, 101+i)
		}
	}
}

// A reader that does not take fills its queue (queuedSlack times the
// buffer): the subscription ends, and the reader still takes what was
// queued, then learns of the end.
func TestQueuedSubscriptionSlowReaderEnds(t *testing.T) {
	f := newFakeSource(t, HubConfig{BufferSize: 4})
	s, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/a": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	r := readQueued(t, s)
	testkit.WaitFor(t, "the subscription to be live", func() bool { return subscriptionLive(&collector{sub: s}) })
	f.publish("/t/a", 4*queuedSlack+6) // nobody takes
	testkit.WaitFor(t, "the end to be announced", func() bool {
		evs, ended := r.s.Take(nil)
		r.evs = append(r.evs, evs...)
		return ended
	})
	if len(r.evs) != 4*queuedSlack {
		t.Fatalf("took %d queued events before the end, want %d", len(r.evs), 4*queuedSlack)
	}
	testkit.WaitFor(t, "the ended subscription to be released", func() bool {
		return f.hub.metrics.Subscribers() == 0 && len(f.hub.Channels()) == 0
	})
}

// Close, the context's end and the hub's close each end a queued
// subscription and wake its reader.
func TestQueuedSubscriptionEnds(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	s1, err := f.hub.Subscribe(ctx, alice, map[string]int64{"/t/a": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/a": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	s3, err := f.hub.Subscribe(context.Background(), alice, map[string]int64{"/t/b": -1}, f)
	if err != nil {
		t.Fatal(err)
	}
	readers := []*queueReader{readQueued(t, s1), readQueued(t, s2), readQueued(t, s3)}
	for _, s := range []Subscription{s1, s2, s3} {
		testkit.WaitFor(t, "live", func() bool { return subscriptionLive(&collector{sub: s}) })
	}
	cancel()
	s2.Close()
	// Each has its channel's position, then the end.
	for i, r := range readers[:2] {
		if r.until(t, 2); !r.ended {
			t.Fatalf("subscription %d: no end after its reader was woken", i+1)
		}
	}
	f.hub.Close()
	if readers[2].until(t, 2); !readers[2].ended {
		t.Fatal("hub close: no end")
	}
	if f.hub.metrics.Subscribers() != 0 || len(f.hub.Channels()) != 0 {
		t.Fatalf("leaked %d subscribers, channels %v", f.hub.metrics.Subscribers(), f.hub.Channels())
	}
}

// Notify on a subscription that ended before it wakes at once.
func TestQueuedSubscriptionNotifyAfterEnd(t *testing.T) {
	f := newFakeSource(t, HubConfig{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the subscription ends before its catch-up
	s, err := f.hub.Subscribe(ctx, alice, map[string]int64{"/t/a": 3}, f)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "released", func() bool { return f.hub.metrics.Subscribers() == 0 })
	r := readQueued(t, s)
	if r.until(t, 1); !r.ended || len(r.evs) != 0 {
		t.Fatalf("ended %v, events %v", r.ended, summary(r.evs))
	}
}

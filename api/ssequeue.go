package api

import (
	"sync"

	"github.com/presencehq/presence/presence"
)

// asQueued returns sub as a QueuedSubscription. The Hub's subscriptions are
// one; a Subscription of another kind (another Service) is read by a
// goroutine of its own into a bounded queue.
func asQueued(sub presence.Subscription) presence.QueuedSubscription {
	if q, ok := sub.(presence.QueuedSubscription); ok {
		return q
	}
	q := &chanQueue{Subscription: sub, done: make(chan struct{})}
	q.room = sync.NewCond(&q.mu)
	return q
}

// chanQueueMax bounds a chanQueue: past it the goroutine stops reading
// Events, so the subscription's own buffer decides when its subscriber is
// too slow.
const chanQueueMax = presence.DefaultSubscriberBuffer

// chanQueue adapts a channel-based Subscription to Notify and Take.
type chanQueue struct {
	presence.Subscription
	done chan struct{} // closed by Close

	mu     sync.Mutex
	room   *sync.Cond // signalled by Take and Close
	queue  []presence.Event
	wake   func()
	ended  bool // Events was closed
	closed bool // Close was called
}

// Notify starts the goroutine that reads Events.
func (q *chanQueue) Notify(wake func()) {
	q.mu.Lock()
	q.wake = wake
	q.mu.Unlock()
	go q.pump(q.Subscription.Events())
}

func (q *chanQueue) pump(events <-chan presence.Event) {
	for {
		var ev presence.Event
		select {
		case e, open := <-events:
			if !open {
				q.finish()
				return
			}
			ev = e
		case <-q.done:
			return
		}
		q.mu.Lock()
		for len(q.queue) >= chanQueueMax && !q.closed {
			q.room.Wait()
		}
		q.queue = append(q.queue, ev)
		first := len(q.queue) == 1
		q.mu.Unlock()
		if first {
			q.wake()
		}
	}
}

// finish records that Events was closed and says so.
func (q *chanQueue) finish() {
	q.mu.Lock()
	q.ended = true
	q.mu.Unlock()
	q.wake()
}

// Take implements presence.QueuedSubscription.
func (q *chanQueue) Take(dst []presence.Event) ([]presence.Event, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	dst = append(dst, q.queue...)
	q.queue = q.queue[:0]
	q.room.Broadcast()
	return dst, q.ended
}

// Close closes the subscription, which ends the goroutine.
func (q *chanQueue) Close() {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.done)
		q.room.Broadcast()
	}
	q.mu.Unlock()
	q.Subscription.Close()
}

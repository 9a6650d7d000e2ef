package actor

import (
	"context"
	"fmt"
)

// Errors Ask wraps around ErrStopped to say how the actor died.
var (
	errPanicked = fmt.Errorf("%w: actor panicked while handling the request", ErrStopped)
	errNoReply  = fmt.Errorf("%w: actor stopped without replying", ErrStopped)
)

// Ask sends the message build makes around a reply channel (buffered, so the
// actor never blocks replying) to the actor of key, spawning it if needed,
// and waits for the reply. It returns ctx's error if ctx ends first,
// ErrOverloaded if the mailbox is full, and an error wrapping ErrStopped if
// the system is shut down or the actor panics or stops before replying.
// Calling Ask for an actor's own key from its Receive deadlocks until ctx ends.
func Ask[K comparable, M any, R any](ctx context.Context, s *System[K, M], key K, build func(reply chan<- R) M) (R, error) {
	var zero R
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	reply := make(chan R, 1)
	failed := make(chan struct{})
	a, err := s.send(key, envelope[M]{msg: build(reply), failed: failed}, true)
	if err != nil {
		return zero, err
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return zero, ctx.Err()
	case <-failed:
		err = errPanicked
	case <-a.doneChan():
		err = errNoReply
	}
	// A reply sent just before the failure still counts.
	select {
	case r := <-reply:
		return r, nil
	default:
		return zero, err
	}
}

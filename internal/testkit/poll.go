package testkit

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// DefaultWait is how long WaitFor waits: generous, since it waits for other
// goroutines (on a loaded 2-core CI machine under -race), never for time
// the code under test measures.
const DefaultWait = 20 * time.Second

// maxPause is the longest pause between two calls of a condition.
const maxPause = 20 * time.Millisecond

// ErrLate is wrapped by PollUntil's error when the condition held only in
// a call that began after the deadline.
var ErrLate = errors.New("met only after the deadline")

// Poll calls cond until it returns nil (then Poll returns nil) or timeout
// passes (then cond's last error, annotated). It polls often at first and
// then every 20 ms, so a condition that holds almost at once costs
// microseconds and a slow one costs little CPU. It is PollUntil with a
// deadline timeout from now.
func Poll(timeout time.Duration, cond func() error) error {
	return poll(time.Now().Add(timeout), fmt.Sprintf("after %v", timeout), cond)
}

// PollUntil calls cond until it returns nil in a call that began no later
// than deadline (then PollUntil returns nil). A call that begins after the
// deadline does not count: a test that asserts a bound (a leave seen within
// 2 s) must not pass because the poller was late. The pauses between calls
// never reach past the deadline, so the last call begins at it (or as
// soon after as the scheduler allows). Otherwise it
// returns cond's last error, annotated, or ErrLate.
func PollUntil(deadline time.Time, cond func() error) error {
	return poll(deadline, "at the deadline", cond)
}

// poll is PollUntil; when says when the deadline was, for the error.
func poll(deadline time.Time, when string, cond func() error) error {
	pause := 100 * time.Microsecond
	for {
		began := time.Now()
		err := cond()
		if err == nil {
			if began.After(deadline) {
				return fmt.Errorf("%w (%v late)", ErrLate, began.Sub(deadline).Round(time.Millisecond))
			}
			return nil
		}
		left := time.Until(deadline)
		if left <= 0 {
			return fmt.Errorf("still failing %s: %w", when, err)
		}
		time.Sleep(min(pause, left))
		pause = min(2*pause, maxPause)
	}
}

// WaitFor polls cond until it holds, failing the test after DefaultWait
// with a message naming what was awaited. Call it from the test goroutine.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	WaitForWithin(t, DefaultWait, what, cond)
}

// WaitForWithin is WaitFor with its own deadline.
func WaitForWithin(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	err := Poll(timeout, func() error {
		if cond() {
			return nil
		}
		return errNotYet
	})
	if err != nil {
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// WaitForErr polls cond until it returns nil, failing the test with cond's
// last error after timeout.
func WaitForErr(t testing.TB, timeout time.Duration, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatal(err)
	}
}

var errNotYet = errors.New("condition not met")

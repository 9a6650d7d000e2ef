package testkit

import (
	"fmt"
	"testing"
	"time"
)

// DefaultWait is how long WaitFor waits: generous, since it waits for other
// goroutines (on a loaded 2-core CI machine under -race), never for time
// the code under test measures.
const DefaultWait = 20 * time.Second

// Poll calls cond until it returns nil (then Poll returns nil) or timeout
// passes (then cond's last error, annotated). It polls often at first and
// then every 20 ms, so a condition that holds almost at once costs
// microseconds and a slow one costs little CPU.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	pause := 100 * time.Microsecond
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("still failing after %v: %w", timeout, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
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

var errNotYet = fmt.Errorf("condition not met")

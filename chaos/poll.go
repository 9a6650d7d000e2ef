package chaos

import (
	"fmt"
	"time"
)

// Poll calls cond until it returns nil or timeout passes, then returns its
// last error. The chaos scenarios wait for conditions with it, never with
// fixed sleeps.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

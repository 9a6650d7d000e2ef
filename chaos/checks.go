package chaos

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// checkTimeout bounds one strict comparison of every channel.
const checkTimeout = 30 * time.Second

// Checks runs a scenario's comparisons of the cluster with the model: each
// one is logged with its examples and added to Summary, and an error fails
// T (Errorf: the scenario goes on, so that its summary is complete).
type Checks struct {
	T       testing.TB
	Checker *Checker
	Summary Summary
	// Began, when set, prefixes every line Logf writes with the seconds
	// since, to line the test log up with the faults and the node logs.
	Began time.Time
}

// Converge waits until every channel agrees with the model, at most
// within, and records the last comparison.
func (c *Checks) Converge(what string, within time.Duration) CheckResult {
	c.T.Helper()
	res, err := c.Checker.Converge(context.Background(), within)
	if err != nil {
		c.T.Errorf("%s: %v", what, err)
	}
	c.Record(what, res)
	return res
}

// CheckNow runs one strict comparison (no retry) and records it.
func (c *Checks) CheckNow(what string) CheckResult {
	c.T.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
	defer cancel()
	res, err := c.Checker.Check(ctx)
	if err != nil {
		c.T.Errorf("%s: %v", what, err)
	}
	c.Record(what, res)
	return res
}

// Record adds res to the summary and logs it under what.
func (c *Checks) Record(what string, res CheckResult) {
	c.T.Helper()
	c.Summary.AddCheck(res)
	c.Logf("%s: %v", what, res)
	for _, ex := range res.Examples {
		c.T.Logf("  %s", ex)
	}
}

// Logf logs to T, after the seconds since Began when that is set.
func (c *Checks) Logf(format string, args ...any) {
	c.T.Helper()
	if c.Began.IsZero() {
		c.T.Logf(format, args...)
		return
	}
	c.T.Logf("[%6.1fs] %s", time.Since(c.Began).Seconds(), fmt.Sprintf(format, args...))
}

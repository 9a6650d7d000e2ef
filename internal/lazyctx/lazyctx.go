// Package lazyctx bounds a context by a timeout whose timer is armed only
// when something waits for it.
//
// context.WithTimeout arms a runtime timer and, under a cancellable parent
// (an HTTP request's context), registers a child with it and makes its Done
// channel: about seven allocations and a timer insert and delete, paid by
// every call even when the work it bounds finishes without waiting (a
// heartbeat whose replication answer is there when it returns). A Ctx does
// that only when Done is first called, or Err once the deadline passed, so
// a call that never waits pays one allocation.
package lazyctx

import (
	"context"
	"sync"
	"time"
)

// Ctx is a context that ends when its parent does, at its deadline, or
// when cancelled, whichever is first, like one of context.WithDeadline.
// The deadline is fixed when it is made; the timer that enforces it
// starts when Done is first called (or Err finds the deadline passed).
type Ctx struct {
	parent   context.Context
	deadline time.Time

	mu       sync.Mutex
	armed    context.Context // nil until armed
	cancel   context.CancelFunc
	canceled bool // Cancel came before anything armed it
}

// WithTimeout returns a Ctx ending at the latest d from now. Call Cancel
// when the work it bounds is done.
func WithTimeout(parent context.Context, d time.Duration) *Ctx {
	return &Ctx{parent: parent, deadline: time.Now().Add(d)}
}

// arm returns the context that enforces the deadline, made on first use.
func (c *Ctx) arm() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.armed == nil {
		c.armed, c.cancel = context.WithDeadline(c.parent, c.deadline)
		if c.canceled {
			c.cancel()
		}
	}
	return c.armed
}

// loaded returns the armed context, or nil.
func (c *Ctx) loaded() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.armed
}

// Cancel ends the context and releases its timer, if armed. It may be
// called more than once, and on a nil Ctx (no bound).
func (c *Ctx) Cancel() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.canceled = true
	cancel := c.cancel
	c.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// Deadline is the earlier of the parent's deadline and this one.
func (c *Ctx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

// Done arms the timer and returns the channel closed when the context
// ends.
func (c *Ctx) Done() <-chan struct{} { return c.arm().Done() }

// Err is nil while the context lasts, then why it ended (the parent's
// error, context.DeadlineExceeded or context.Canceled).
func (c *Ctx) Err() error {
	if a := c.loaded(); a != nil {
		return a.Err()
	}
	c.mu.Lock()
	canceled := c.canceled
	c.mu.Unlock()
	if err := c.parent.Err(); err != nil {
		return err
	}
	if canceled || !time.Now().Before(c.deadline) {
		return c.arm().Err()
	}
	return nil
}

// Value is the parent's value of key; once armed, the armed context's, so
// that contexts derived from this one register with it (context's own
// cancellation tree) rather than starting a goroutine each.
func (c *Ctx) Value(key any) any {
	if a := c.loaded(); a != nil {
		return a.Value(key)
	}
	return c.parent.Value(key)
}

// String names the context, as the context package's do.
func (c *Ctx) String() string { return "lazyctx.WithDeadline(" + c.deadline.String() + ")" }

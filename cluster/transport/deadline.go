package transport

import (
	"context"
	"sync"
	"time"
)

// deadlineStep is the granularity of served calls' deadlines.
const deadlineStep = 10 * time.Millisecond

// stepDeadlines hands served calls a context carrying the caller's
// deadline, rounded up to the next deadlineStep and shared by every
// call of the connection falling in the same step. A timer per call
// (context.WithTimeout) cost a sixth of the server's CPU under load; one per
// step costs nothing measurable. A handler may thus run up to one step past
// the caller's deadline, never less than it.
type stepDeadlines struct {
	parent context.Context
	mu     sync.Mutex
	steps  map[int64]context.Context // keyed by deadline in steps since the epoch
}

func newStepDeadlines(parent context.Context) *stepDeadlines {
	return &stepDeadlines{parent: parent, steps: make(map[int64]context.Context)}
}

// context returns the shared context for a call allowed to run for d.
func (ds *stepDeadlines) context(d time.Duration) context.Context {
	step := (time.Now().Add(d).UnixNano() + int64(deadlineStep) - 1) / int64(deadlineStep)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ctx, ok := ds.steps[step]; ok {
		return ctx
	}
	ctx, cancel := context.WithDeadline(ds.parent, time.Unix(0, step*int64(deadlineStep)))
	ds.steps[step] = ctx
	context.AfterFunc(ctx, func() {
		cancel()
		ds.mu.Lock()
		delete(ds.steps, step)
		ds.mu.Unlock()
	})
	return ctx
}

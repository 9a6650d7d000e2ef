package cluster

import (
	"context"
	"sync"
	"time"
)

// transportDeadlineStep is the granularity of served calls' deadlines.
const transportDeadlineStep = 10 * time.Millisecond

// transportDeadlines hands served calls a context carrying the caller's
// deadline, rounded up to the next transportDeadlineStep and shared by every
// call of the connection falling in the same step. A timer per call
// (context.WithTimeout) cost a sixth of the server's CPU under load; one per
// step costs nothing measurable. A handler may thus run up to one step past
// the caller's deadline, never less than it.
type transportDeadlines struct {
	parent context.Context
	mu     sync.Mutex
	steps  map[int64]context.Context // keyed by deadline in steps since the epoch
}

func newTransportDeadlines(parent context.Context) *transportDeadlines {
	return &transportDeadlines{parent: parent, steps: make(map[int64]context.Context)}
}

// context returns the shared context for a call allowed to run for d.
func (ds *transportDeadlines) context(d time.Duration) context.Context {
	step := (time.Now().Add(d).UnixNano() + int64(transportDeadlineStep) - 1) / int64(transportDeadlineStep)
	ds.mu.Lock()
	defer ds.mu.Unlock()
	if ctx, ok := ds.steps[step]; ok {
		return ctx
	}
	ctx, cancel := context.WithDeadline(ds.parent, time.Unix(0, step*int64(transportDeadlineStep)))
	ds.steps[step] = ctx
	context.AfterFunc(ctx, func() {
		cancel()
		ds.mu.Lock()
		delete(ds.steps, step)
		ds.mu.Unlock()
	})
	return ctx
}

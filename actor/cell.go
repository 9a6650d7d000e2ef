package actor

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// exitReason says why one incarnation of a behaviour ended.
type exitReason uint8

const (
	exitDrained    exitReason = iota // stopped and mailbox drained
	exitPassivated                   // idle, empty and willing
	exitPanicked                     // factory, Started or Receive panicked
)

// actor is one running key: its mailbox and the goroutine serving it.
type actor[K comparable, M any] struct {
	sys  *System[K, M]
	key  K
	mb   mailbox[M]
	done chan struct{} // closed once the goroutine has unregistered and exits

	// prev is an earlier incarnation of the same key that is still finishing;
	// this one starts only after it, so at most one behaviour per key is live
	// and messages from one sender stay in order across incarnations.
	prev *actor[K, M]

	// active is set when a message is taken and cleared by the janitor's sweep.
	active atomic.Bool
	// idleSince is owned by the janitor: the sweep that last saw active.
	idleSince time.Time

	// Owned by the actor goroutine.
	inflight chan struct{} // failed channel of the Ask being handled, if any
	panics   []time.Time   // panic times inside the restart window
}

func newActor[K comparable, M any](s *System[K, M], key K, prev *actor[K, M]) *actor[K, M] {
	a := &actor[K, M]{
		sys:  s,
		key:  key,
		done: make(chan struct{}),
		prev: prev,
	}
	a.mb.init(s.opts.MailboxSize)
	a.active.Store(true) // the first sweep stamps idleSince
	return a
}

// run is the actor's goroutine: incarnations until it stops, then unregister.
func (a *actor[K, M]) run() {
	defer a.sys.wg.Done()
	defer close(a.done)
	if p := a.prev; p != nil {
		a.prev = nil
		<-p.done
	}
	for a.live() == exitPanicked {
		if !a.mayRestart() {
			n := a.mb.closeAndDrop()
			a.sys.log.Error("actor stopped after too many panics",
				"key", a.key, "dropped", n,
				"max_restarts", a.sys.opts.MaxRestarts, "window", a.sys.opts.RestartWindow)
			break
		}
	}
	a.sys.unregister(a)
}

// live runs one behaviour from factory to Stopped. A panic anywhere in it is
// recovered here, once per incarnation, so Receive itself pays nothing.
func (a *actor[K, M]) live() (reason exitReason) {
	var b Behavior[M]
	a.inflight = nil
	defer func() {
		if r := recover(); r != nil {
			a.sys.log.Error("actor panicked", "key", a.key, "panic", r, "stack", string(debug.Stack()))
			if a.inflight != nil {
				close(a.inflight)
				a.inflight = nil
			}
			reason = exitPanicked
		}
		if b != nil {
			a.stopped(b)
		}
	}()
	b = a.sys.factory(a.key)
	if st, ok := b.(Starter); ok {
		st.Started()
	}
	return a.serve(b)
}

// serve processes the mailbox until it is drained after a stop or the actor
// passivates.
func (a *actor[K, M]) serve(b Behavior[M]) exitReason {
	for {
		env, sys, kind := a.mb.next()
		switch kind {
		case gotMessage:
			if !a.active.Load() { // load first: avoid dirtying the line per message
				a.active.Store(true)
			}
			a.inflight = env.failed
			b.Receive(env.msg)
			a.inflight = nil
		case gotSystem:
			if sys&sysPassivate != 0 && a.passivate(b) {
				return exitPassivated
			}
		case gotDrained:
			return exitDrained
		}
	}
}

// passivate closes the mailbox if the actor is still idle, empty and willing.
// CanPassivate runs outside the mailbox lock so a slow hook never blocks Tell;
// the emptiness check that matters happens under the lock in closeIfEmpty.
func (a *actor[K, M]) passivate(b Behavior[M]) bool {
	if a.active.Load() {
		return false // a message arrived after the sweep that asked
	}
	if p, ok := b.(Passivator); ok && !p.CanPassivate() {
		return false
	}
	return a.mb.closeIfEmpty()
}

// stopped calls the Stopped hook; a panic there is logged and ignored because
// the behaviour is being discarded anyway.
func (a *actor[K, M]) stopped(b Behavior[M]) {
	st, ok := b.(Stopper)
	if !ok {
		return
	}
	defer func() {
		if r := recover(); r != nil {
			a.sys.log.Error("actor panicked in Stopped", "key", a.key, "panic", r, "stack", string(debug.Stack()))
		}
	}()
	st.Stopped()
}

// mayRestart records a panic and reports whether the budget allows a restart.
func (a *actor[K, M]) mayRestart() bool {
	now := a.sys.opts.Clock.Now()
	cutoff := now.Add(-a.sys.opts.RestartWindow)
	kept := a.panics[:0]
	for _, t := range a.panics {
		if t.After(cutoff) {
			kept = append(kept, t)
		}
	}
	a.panics = append(kept, now)
	return len(a.panics) <= a.sys.opts.MaxRestarts
}

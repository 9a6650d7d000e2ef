package actor

import (
	"runtime/debug"
	"sync/atomic"
	"time"
)

// exitReason says why a run of an actor ended.
type exitReason uint8

const (
	exitIdle       exitReason = iota // mailbox empty: released until the next message
	exitDrained                      // stopped and mailbox drained
	exitPassivated                   // idle, empty and willing
	exitPanicked                     // factory, Started or Receive panicked
)

// actor is one registered key: its mailbox and behaviour. It has no
// goroutine of its own while idle: the producer that finds it idle starts
// one, which serves the mailbox until it is empty and then exits, so 100,000
// idle actors cost no stacks.
type actor[K comparable, M any] struct {
	sys *System[K, M]
	key K
	mb  mailbox[M]
	// done is closed once the actor has unregistered for good. It is made on
	// first use (under mb.mu), since few actors are ever waited for.
	done     chan struct{}
	finished bool // under mb.mu

	// prev is an earlier incarnation of the same key that is still finishing;
	// this one starts only after it, so at most one behaviour per key is live
	// and messages from one sender stay in order across incarnations.
	prev *actor[K, M]

	// active is set when a message is taken and cleared by the janitor's sweep.
	active atomic.Bool
	// idleSince is owned by the janitor: the sweep that last saw active.
	idleSince time.Time

	// Owned by whoever holds mb.running: the started goroutine, or a caller
	// running one message inline. The mailbox lock orders their accesses.
	b        Behavior[M]   // nil until the first run and after a discard
	inflight chan struct{} // failed channel of the Ask being handled, if any
	panics   []time.Time   // panic times inside the restart window
}

func newActor[K comparable, M any](s *System[K, M], sh *shard[K, M], key K, prev *actor[K, M]) *actor[K, M] {
	a := &actor[K, M]{
		sys:  s,
		key:  key,
		prev: prev,
	}
	a.mb.init(s.opts.MailboxSize)
	a.mb.usePool(&sh.bufs)
	a.active.Store(true) // the first sweep stamps idleSince
	return a
}

// start runs the actor on a new goroutine; the caller claimed it.
func (a *actor[K, M]) start() { go a.run() }

// close stops the mailbox accepting messages and makes sure someone drains
// it and stops the actor.
func (a *actor[K, M]) close() {
	if a.mb.close() {
		a.start()
	}
}

// run serves the mailbox until it is empty (the goroutine then exits and
// the next message starts another), or until the actor stops for good.
func (a *actor[K, M]) run() {
	if p := a.prev; p != nil {
		a.prev = nil
		<-p.doneChan()
	}
	for {
		switch a.serve() {
		case exitIdle:
			return
		case exitPanicked:
			if a.mayRestart() {
				continue // a fresh behaviour, at once, as a supervisor would
			}
			a.giveUp()
			return
		default:
			a.finish()
			return
		}
	}
}

// serve makes sure a behaviour exists and processes messages until the
// mailbox is empty or the actor stops. A panic anywhere in it is recovered
// here, once per run, so Receive itself pays nothing.
func (a *actor[K, M]) serve() (reason exitReason) {
	defer func() {
		if r := recover(); r != nil {
			a.recovered(r)
			reason = exitPanicked
		}
	}()
	if a.b == nil {
		a.b = a.sys.factory(a.key)
		if st, ok := a.b.(Starter); ok {
			st.Started()
		}
	}
	for {
		env, sys, kind := a.mb.next()
		switch kind {
		case gotMessage:
			a.receive(env)
		case gotSystem:
			if sys&sysPassivate != 0 && a.passivate() {
				a.discard()
				return exitPassivated
			}
		case gotDrained:
			a.discard()
			return exitDrained
		case gotIdle:
			return exitIdle // released: the actor may already run elsewhere
		}
	}
}

// receive hands one message to the behaviour.
func (a *actor[K, M]) receive(env envelope[M]) {
	if !a.active.Load() { // load first: avoid dirtying the line per message
		a.active.Store(true)
	}
	a.inflight = env.failed
	a.b.Receive(env.msg)
	a.inflight = nil
}

// recovered handles a panic of the current behaviour: log it, fail the Ask
// being handled and discard the behaviour.
func (a *actor[K, M]) recovered(r any) {
	a.sys.log.Error("actor panicked", "key", a.key, "panic", r, "stack", string(debug.Stack()))
	if a.inflight != nil {
		close(a.inflight)
		a.inflight = nil
	}
	a.discard()
}

// discard calls Stopped on the current behaviour, if any, and forgets it.
func (a *actor[K, M]) discard() {
	if b := a.b; b != nil {
		a.b = nil
		a.stopped(b)
	}
}

// tryInline offers msg to the behaviour's ReceiveInline; the caller
// claimed the idle actor. ok is false when it panicked (the behaviour is
// then discarded and the claim must go to afterPanic).
func (a *actor[K, M]) tryInline(msg M) (handled, ok bool) {
	ir, can := a.b.(InlineReceiver[M]) // false too before the first run (nil)
	if !can {
		return false, true
	}
	defer func() {
		if r := recover(); r != nil {
			a.recovered(r)
			handled, ok = false, false
		}
	}()
	if !ir.ReceiveInline(msg) {
		return false, true
	}
	if !a.active.Load() {
		a.active.Store(true)
	}
	return true, true
}

// afterPanic continues, for the claim's holder, after a panic outside run:
// restart on a goroutine, or give up when the budget is exhausted.
func (a *actor[K, M]) afterPanic() {
	if a.mayRestart() {
		a.start() // makes the fresh behaviour, then serves what is queued
		return
	}
	a.giveUp()
}

// giveUp stops an actor whose restart budget is exhausted, dropping what is
// queued.
func (a *actor[K, M]) giveUp() {
	n := a.mb.closeAndDrop()
	a.sys.log.Error("actor stopped after too many panics",
		"key", a.key, "dropped", n,
		"max_restarts", a.sys.opts.MaxRestarts, "window", a.sys.opts.RestartWindow)
	a.finish()
}

// finish unregisters a stopped actor and releases its waiters.
func (a *actor[K, M]) finish() {
	a.sys.unregister(a)
	a.mb.mu.Lock()
	a.finished = true
	if a.done != nil {
		close(a.done)
	}
	a.mb.mu.Unlock()
	a.sys.wg.Done()
}

// doneChan returns a channel closed once the actor has finished.
func (a *actor[K, M]) doneChan() <-chan struct{} {
	a.mb.mu.Lock()
	defer a.mb.mu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{})
		if a.finished {
			close(a.done)
		}
	}
	return a.done
}

// passivate closes the mailbox if the actor is still idle, empty and willing.
// CanPassivate runs outside the mailbox lock so a slow hook never blocks Tell;
// the emptiness check that matters happens under the lock in closeIfEmpty.
func (a *actor[K, M]) passivate() bool {
	if a.active.Load() {
		return false // a message arrived after the sweep that asked
	}
	if p, ok := a.b.(Passivator); ok && !p.CanPassivate() {
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

// Package actor is a small runtime of virtual actors: one behaviour per key,
// created by the first message, with a bounded mailbox, Tell and Ask, panic
// recovery with a restart budget, and passivation when idle. It knows nothing
// about presence or HTTP.
//
// An actor has a goroutine only while it has work: the message that finds
// its mailbox idle starts one, which exits once the mailbox is empty. Idle
// actors therefore cost a few hundred bytes, not a stack.
//
// Guarantees: messages from one sender to one key are processed in order,
// one at a time, even across restarts and passivation (a new incarnation of
// a key starts only after the previous one returned from Stopped). A message
// Tell accepted is processed unless the actor exhausts its restart budget
// (then queued messages are dropped) or the message itself panics. Tell
// never blocks and, for an existing actor, does not allocate.
package actor

import (
	"context"
	"fmt"
	"hash/maphash"
	"log/slog"
	"sync"
	"sync/atomic"
)

// Behavior handles an actor's messages. Receive runs one message at a time,
// each run ordered after the previous one, so the behaviour needs no locking
// (successive messages may run on different goroutines).
//
// A Behavior may also implement Starter, Stopper and Passivator.
type Behavior[M any] interface {
	Receive(msg M)
}

// Starter is implemented by behaviours that want a hook before their first
// message. A panic in Started counts as a failure like one in Receive.
type Starter interface {
	Started()
}

// Stopper is implemented by behaviours that want a hook when discarded. It is
// called exactly once for every behaviour the factory returned: after a stop
// has drained the mailbox, on passivation, and after a panic (before the
// fresh behaviour replaces it). A panic in Stopped is logged and ignored.
type Stopper interface {
	Stopped()
}

// InlineReceiver is implemented by behaviours that can handle some messages
// on the sender's goroutine (System.TellInline), typically the frequent ones
// that are short and never block. ReceiveInline runs under the same
// one-at-a-time guarantee as Receive. It either handles msg completely and
// returns true, or changes nothing and returns false; msg is then queued
// and later passed to Receive.
type InlineReceiver[M any] interface {
	ReceiveInline(msg M) bool
}

// Passivator is implemented by behaviours that may refuse passivation, for
// example while they still hold state that must not be lost.
type Passivator interface {
	CanPassivate() bool
}

// shardCount spreads the registry over independent locks; a power of two.
const shardCount = 64

type shard[K comparable, M any] struct {
	mu     sync.RWMutex
	actors map[K]*actor[K, M]
	bufs   bufPool[M] // rings of this shard's idle mailboxes
	_      [64]byte   // keep neighbouring shards' locks off one cache line
}

// System hosts the actors of one kind, addressed by key K and fed messages of
// type M. Create it with NewSystem; stop it with Shutdown.
type System[K comparable, M any] struct {
	opts     Options
	log      *slog.Logger
	factory  func(key K) Behavior[M]
	seed     maphash.Seed
	shards   [shardCount]shard[K, M]
	stopping atomic.Bool // set by Shutdown; read under a shard lock when spawning
	wg       sync.WaitGroup
	quit     chan struct{}
	stopOnce sync.Once
	sweeps   atomic.Uint64 // completed janitor sweeps, for tests
}

// NewSystem returns a running system that creates the behaviour for a key
// with factory, on the key's first message and again after every restart or
// passivation. It panics if opts.Validate fails, like other constructors
// given a programming error.
func NewSystem[K comparable, M any](opts Options, factory func(key K) Behavior[M]) *System[K, M] {
	if err := opts.Validate(); err != nil {
		panic(err)
	}
	opts = opts.withDefaults()
	s := &System[K, M]{
		opts:    opts,
		log:     opts.Logger,
		factory: factory,
		seed:    maphash.MakeSeed(),
		quit:    make(chan struct{}),
	}
	for i := range s.shards {
		s.shards[i].actors = make(map[K]*actor[K, M])
	}
	if opts.IdleAfter > 0 {
		s.wg.Add(1)
		go s.janitor(opts.Clock.NewTicker(opts.sweepInterval()))
	}
	return s
}

func (s *System[K, M]) shard(key K) *shard[K, M] {
	return &s.shards[maphash.Comparable(s.seed, key)&(shardCount-1)]
}

func (s *System[K, M]) lookup(key K) *actor[K, M] {
	sh := s.shard(key)
	sh.mu.RLock()
	a := sh.actors[key]
	sh.mu.RUnlock()
	return a
}

// Tell queues msg for the actor of key, spawning it if needed. It never
// blocks: a full mailbox returns ErrOverloaded, a shut down system ErrStopped.
func (s *System[K, M]) Tell(key K, msg M) error {
	_, err := s.send(key, envelope[M]{msg: msg}, true)
	return err
}

// TellExisting is Tell without spawning: it returns ErrNoActor when no actor
// is running for key (including one that is stopping).
func (s *System[K, M]) TellExisting(key K, msg M) error {
	_, err := s.send(key, envelope[M]{msg: msg}, false)
	return err
}

// send delivers env and returns the actor that accepted it.
func (s *System[K, M]) send(key K, env envelope[M], spawn bool) (*actor[K, M], error) {
	sh := s.shard(key)
	var stale *actor[K, M]
	for {
		sh.mu.RLock()
		a := sh.actors[key]
		sh.mu.RUnlock()
		if a == nil || a == stale {
			var err error
			if a, err = s.spawn(sh, key, stale, spawn); err != nil {
				return nil, err
			}
		}
		r, start := a.mb.enqueue(env)
		switch r {
		case pushed:
			if start {
				a.start()
			}
			return a, nil
		case pushFull:
			return nil, ErrOverloaded
		}
		stale = a // closed: stopping or passivating; replace it
	}
}

// TellInline is Tell that first offers msg to the behaviour on the caller's
// goroutine, which saves starting a goroutine for it: when the actor of key
// is idle, with an empty mailbox and a behaviour implementing
// InlineReceiver, ReceiveInline may handle msg before TellInline returns.
// Otherwise, or when ReceiveInline declines, msg is queued as by Tell.
// Ordering, panic recovery and the other guarantees are those of Tell; a
// panic in ReceiveInline is recovered and does not reach the caller.
func (s *System[K, M]) TellInline(key K, msg M) error {
	a := s.lookup(key)
	if a == nil || !a.mb.tryClaim() {
		return s.Tell(key, msg)
	}
	handled, ok := a.tryInline(msg)
	if !ok {
		a.afterPanic()
		return nil // as for a queued message that panicked
	}
	if handled {
		if !a.mb.release() {
			a.start() // messages arrived meanwhile
		}
		return nil
	}
	// Declined: queue it. The claim is ours, so the actor must be started
	// whatever enqueue says (to drain, or to stop if it was closed).
	r, _ := a.mb.enqueue(envelope[M]{msg: msg})
	a.start()
	switch r {
	case pushFull:
		return ErrOverloaded
	case pushClosed:
		return s.Tell(key, msg) // stopping: a successor takes it
	}
	return nil
}

// spawn returns the live actor for key, creating one if the registry has
// none or still holds stale, a closed actor (which the new one then waits for).
func (s *System[K, M]) spawn(sh *shard[K, M], key K, stale *actor[K, M], create bool) (*actor[K, M], error) {
	sh.mu.Lock()
	defer sh.mu.Unlock()
	cur := sh.actors[key]
	if cur != nil && cur != stale {
		return cur, nil // someone else replaced it meanwhile
	}
	if s.stopping.Load() {
		return nil, ErrStopped
	}
	if !create {
		return nil, ErrNoActor
	}
	a := newActor(s, sh, key, cur)
	sh.actors[key] = a
	s.wg.Add(1) // under the shard lock, so Shutdown's Wait sees it
	return a, nil
}

// unregister removes a from the registry unless a successor replaced it.
func (s *System[K, M]) unregister(a *actor[K, M]) {
	sh := s.shard(a.key)
	sh.mu.Lock()
	if sh.actors[a.key] == a {
		delete(sh.actors, a.key)
	}
	sh.mu.Unlock()
}

// Len returns the number of registered actors, including ones still stopping.
func (s *System[K, M]) Len() int {
	n := 0
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		n += len(sh.actors)
		sh.mu.RUnlock()
	}
	return n
}

// Keys returns a snapshot of the registered keys, in no particular order.
func (s *System[K, M]) Keys() []K {
	keys := make([]K, 0, s.Len())
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.RLock()
		for k := range sh.actors {
			keys = append(keys, k)
		}
		sh.mu.RUnlock()
	}
	return keys
}

// Stop asks the actor of key to stop: it accepts no further messages (a later
// Tell spawns a new incarnation, which starts after this one has finished),
// processes what is queued, calls Stopped and unregisters. It does not wait.
func (s *System[K, M]) Stop(key K) error {
	a := s.lookup(key)
	if a == nil {
		return ErrNoActor
	}
	a.close()
	return nil
}

// StopAndWait is Stop followed by waiting until the actor has drained its
// mailbox, returned from Stopped and unregistered. It must not be called from
// the actor's own Receive, which would wait for itself.
func (s *System[K, M]) StopAndWait(ctx context.Context, key K) error {
	a := s.lookup(key)
	if a == nil {
		return ErrNoActor
	}
	a.close()
	select {
	case <-a.doneChan():
		return nil
	case <-ctx.Done():
		return fmt.Errorf("actor: stop %v: %w", key, ctx.Err())
	}
}

// Shutdown refuses new actors, stops every actor (each drains its mailbox and
// calls Stopped) and waits for all of the system's goroutines. If ctx ends
// first it returns ctx's error; the actors keep stopping in the background.
// Tell after Shutdown returns ErrStopped. Shutdown may be called more than once.
func (s *System[K, M]) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.stopping.Store(true)
		close(s.quit)
		for i := range s.shards {
			sh := &s.shards[i]
			sh.mu.Lock() // orders every earlier spawn's wg.Add before Wait
			for _, a := range sh.actors {
				a.close()
			}
			sh.mu.Unlock()
		}
	})
	done := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("actor: shutdown: %w", ctx.Err())
	}
}

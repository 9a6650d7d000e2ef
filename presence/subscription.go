package presence

import (
	"context"
	"maps"
	"slices"
	"sync"
	"time"
)

// Modes of one channel within a subscription, under subscription.mu.
const (
	chanCatching uint8 = iota // catch-up running: live messages are held in pending
	chanLive                  // live messages go straight to the subscriber
	chanOff                   // unavailable: nothing more is streamed
	chanRetrying              // catch-up failed, to be fetched again: live messages are held in pending
)

// How a subscription hands its events over, under subscription.mu. It
// queues them until its consumer chooses: Notify keeps the queue (read with
// Take), Events moves it into a channel.
const (
	deliverQueue uint8 = iota // queued for Take (also before a consumer chose)
	deliverChan               // sent on events
)

// queuedSlack multiplies BufferSize for a subscription whose consumer
// takes its queue (Take, after Notify) rather than reading a channel: the stream pool's
// writers drain such queues in turns, so a queue grows while the writers
// are busy (a burst of promotions on a loaded node), not only while its
// client does not read, and a client that does not read is bounded by the
// stream's unsent bytes instead. Closed at BufferSize, streams of a node
// that took over a dead node's channels ended under a burst, on a live
// node, with their clients reading.
const queuedSlack = 16

// queueKeep is the capacity of a subscription's queue kept between bursts:
// enough for the usual message at a time without an allocation, little for
// an idle subscriber to hold.
const queueKeep = 2

// subscription merges, per channel, a catch-up fetched from a CatchupSource
// with the live messages of the Hub. A goroutine (run) sends the catch-up,
// waiting for room in the subscriber's buffer; once every channel is live it
// exits, and the Hub's publishers hand messages over without blocking: a
// subscriber whose buffer is full is closed. At rest a subscription owns no
// goroutine, and with Notify no channel either: its buffer is a queue that
// holds what it holds. A channel whose catch-up failed gets EventResync (its
// cursor unchanged) and its catch-up is fetched again, with a backoff, by
// the same goroutine once the others are live (which then exits only when
// every channel is); what it sends then goes under the lock, without
// waiting, as live messages do.
type subscription struct {
	hub    *Hub
	user   *User
	src    CatchupSource
	ctx    context.Context    // the catch-up's, cancelled when the subscription ends; nil once live
	cancel context.CancelFunc // under mu; nil once live
	stop   func() bool        // stops the context.AfterFunc that ends the subscription with its parent context
	chans  []subChannel       // sorted by name; fixed after creation
	exited chan struct{}      // closed once released

	mu       sync.Mutex
	closed   bool          // ended: nothing more is accepted
	running  bool          // the catch-up goroutine has not exited
	released bool          // unregistered from the hub; events closed
	mode     uint8         // deliverQueue or deliverChan
	queue    []Event       // deliverQueue: waiting for Take
	wake     func()        // deliverQueue after Notify: told when queue gains events or the subscription ends
	space    chan struct{} // closed when the queue drains, for a catch-up waiting for room
	events   chan Event    // deliverChan
}

// subChannel is one channel of a subscription and its Hub registration.
// Every stream keeps one per channel for its whole life, so it is small.
type subChannel struct {
	sub  *subscription
	name string
	hc   *hubChannel // under hub.mu

	// Under sub.mu once the channel is live; the run goroutine alone uses
	// them while catching up.
	cursor  int64       // last id the subscriber has accounted for; the id to resume after until the catch-up
	pending *[]*Message // live messages held during the catch-up

	idx  int32 // position in hc.members, under hc.mu
	mode uint8
}

// held returns the live messages held during the catch-up.
func (sc *subChannel) held() []*Message {
	if sc.pending == nil {
		return nil
	}
	return *sc.pending
}

func newSubscription(ctx context.Context, h *Hub, u *User, from map[string]int64, src CatchupSource) *subscription {
	s := &subscription{
		hub:     h,
		user:    u,
		src:     src,
		exited:  make(chan struct{}),
		running: true,
		chans:   make([]subChannel, 0, len(from)),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	for _, name := range slices.Sorted(maps.Keys(from)) {
		sc := subChannel{sub: s, name: name, cursor: from[name]}
		if !ValidChannelName(name) {
			sc.mode = chanOff
		}
		s.chans = append(s.chans, sc)
	}
	return s
}

// start begins the catch-up and ties the subscription to ctx.
func (s *subscription) start(ctx context.Context) {
	if ctx.Done() != nil { // a context that never ends needs no watch
		s.stop = context.AfterFunc(ctx, s.finish)
	}
	go s.run()
}

// Events delivers the subscription's events; it is closed when the
// subscription ends. Events queued before the first call are in it.
func (s *subscription) Events() <-chan Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.mode != deliverChan {
		s.mode = deliverChan
		s.events = make(chan Event, s.hub.cfg.BufferSize)
		for _, ev := range s.queue { // at most BufferSize of them
			s.events <- ev
		}
		s.queue, s.wake = nil, nil
		s.signalSpaceLocked() // a catch-up waiting for room sends on events now
		if s.released {
			close(s.events)
		}
	}
	return s.events
}

// Notify makes wake the subscription's signal: it is called, without
// locks held, whenever events become available to Take after there were
// none, and once when the subscription ends. It is called at once when
// events are queued already or the subscription ended.
func (s *subscription) Notify(wake func()) {
	s.mu.Lock()
	if s.mode != deliverQueue || s.wake != nil {
		s.mu.Unlock()
		panic("presence: Notify after Events or Notify")
	}
	s.wake = wake
	now := len(s.queue) > 0 || s.closed && !s.running
	s.mu.Unlock()
	if now {
		wake()
	}
}

// Take appends the queued events to dst and empties the queue. ended
// reports that the subscription ended and no event will follow those.
func (s *subscription) Take(dst []Event) (evs []Event, ended bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	dst = append(dst, s.queue...)
	clear(s.queue)
	if cap(s.queue) > queueKeep {
		s.queue = nil
	} else {
		s.queue = s.queue[:0]
	}
	s.signalSpaceLocked()
	return dst, s.closed && !s.running
}

func (s *subscription) signalSpaceLocked() {
	if s.space != nil {
		close(s.space)
		s.space = nil
	}
}

// Close ends the subscription and waits until it released its resources.
func (s *subscription) Close() {
	s.finish()
	<-s.exited
}

func (s *subscription) finish() {
	s.mu.Lock()
	wake := s.finishLocked()
	s.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// finishLocked ends the subscription: its catch-up stops, and once that
// goroutine is gone (or at once when it is) the subscription is released
// on a goroutine of its own, since the caller may hold hub locks. It
// returns the consumer's wake function when the consumer must be told.
func (s *subscription) finishLocked() (wake func()) {
	if s.closed {
		return nil
	}
	s.closed = true
	if s.cancel != nil {
		s.cancel()
	}
	if s.running {
		return nil // run releases it on its way out
	}
	go s.release()
	return s.wake
}

// release unregisters the subscription from the hub and lets its consumer
// see the end.
func (s *subscription) release() {
	s.hub.unregister(s)
	s.hub.metrics.subscribers.Add(-1)
	if s.stop != nil {
		s.stop()
	}
	s.mu.Lock()
	s.released = true
	if s.mode == deliverChan {
		close(s.events)
	}
	s.mu.Unlock()
	close(s.exited)
}

// run sends each channel's catch-up and turns the channels live, then
// exits; an ended subscription is released on its way out.
func (s *subscription) run() {
	live := s.catchUp() && s.goLive() && s.retryCatchups()
	s.mu.Lock()
	s.running = false
	if !live {
		s.closed = true
	}
	// The catch-up's context is done with; a live subscription keeps none.
	s.cancel()
	s.ctx, s.cancel = nil, nil
	ended, wake := s.closed, s.wake
	s.mu.Unlock()
	if ended {
		s.release()
		if wake != nil {
			wake()
		}
	}
}

// catchUp sends the catch-up of every channel in turn. A channel whose
// catch-up fails gets a resync and waits for retryCatchups.
func (s *subscription) catchUp() bool {
	for i := range s.chans {
		sc := &s.chans[i]
		if sc.mode == chanOff {
			if !s.send(Event{Kind: EventUnavailable, Channel: sc.name}) {
				return false
			}
			continue
		}
		from := sc.cursor
		cu, err := s.src.Since(s.ctx, s.user, sc.name, from)
		if s.ctx.Err() != nil {
			return false // ended meanwhile: nothing more is sent
		}
		if err != nil {
			s.hub.log.Info("presence: a channel's catch-up failed; it resyncs and is fetched again",
				"channel", sc.name, "err", err)
			s.mu.Lock()
			sc.mode = chanRetrying
			s.mu.Unlock()
			if !s.send(Event{Kind: EventResync, Channel: sc.name, LastID: from}) {
				return false
			}
			continue
		}
		s.mu.Lock()
		evs := s.catchupEvents(sc, from, cu)
		s.mu.Unlock()
		for _, ev := range evs {
			if !s.send(ev) {
				return false
			}
		}
	}
	return true
}

// catchupEvents turns the catch-up of a channel resumed after from into
// events and sets the channel's cursor; s.mu must be held.
func (s *subscription) catchupEvents(sc *subChannel, from int64, cu Catchup) []Event {
	sc.cursor = cu.LastID
	switch {
	case cu.Unavailable:
		sc.mode, sc.pending = chanOff, nil
		return []Event{{Kind: EventUnavailable, Channel: sc.name}}
	case from < 0:
		// New messages only: every message published since the channel
		// was registered is new, also those the last id read since then
		// already counts (they wait in pending). Starting after the last
		// id alone would drop them, and a client that saw the stream
		// connect would miss a change made just after. The position goes
		// to the stream's cursor at once.
		if held := sc.held(); len(held) > 0 && held[0].ID <= cu.LastID {
			sc.cursor = held[0].ID - 1
		}
		return []Event{{Kind: EventPosition, Channel: sc.name, LastID: sc.cursor}}
	case cu.Resync:
		return []Event{{Kind: EventResync, Channel: sc.name, LastID: cu.LastID}}
	}
	evs := make([]Event, 0, len(cu.Messages))
	for _, m := range cu.Messages {
		if !s.allowed(m) || m.Resync {
			// Hidden from this subscriber at publish time, or a break in
			// the history: it cannot follow the channel's changes, so it
			// must re-read the channel.
			return []Event{{Kind: EventResync, Channel: sc.name, LastID: cu.LastID}}
		}
		evs = append(evs, Event{Kind: EventMessage, Channel: sc.name, Message: m, LastID: m.ID})
	}
	return evs
}

// retryCatchups fetches again, after a pause that doubles with every round
// up to MaxCatchupRetry, the catch-up of each channel whose catch-up
// failed, until every one is resumed or the subscription ends; false when
// it ended.
func (s *subscription) retryCatchups() bool {
	pause := s.hub.cfg.CatchupRetry
	for {
		failed := s.retrying()
		if len(failed) == 0 {
			return true
		}
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return false
		}
		pause = min(2*pause, max(MaxCatchupRetry, s.hub.cfg.CatchupRetry))
		for _, sc := range failed {
			// Only this goroutine moves a retrying channel's cursor.
			from := sc.cursor
			cu, err := s.src.Since(s.ctx, s.user, sc.name, from)
			if s.ctx.Err() != nil {
				return false
			}
			if err != nil {
				s.hub.log.Debug("presence: a channel's catch-up failed again", "channel", sc.name, "err", err)
				continue
			}
			if !s.resume(sc, from, cu) {
				return false
			}
		}
	}
}

// retrying lists the channels waiting for a catch-up.
func (s *subscription) retrying() []*subChannel {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*subChannel
	for i := range s.chans {
		if sc := &s.chans[i]; sc.mode == chanRetrying {
			out = append(out, sc)
		}
	}
	return out
}

// resume turns a channel whose catch-up was fetched again live: its
// catch-up and the live messages held meanwhile are handed over without
// waiting, under the lock that live deliveries take. When they do not fit
// the subscriber's free buffer, one resync stands for them (the subscriber
// re-reads the channel, as it did when the catch-up failed). False when
// the subscription ended.
func (s *subscription) resume(sc *subChannel, from int64, cu Catchup) bool {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	evs := s.catchupEvents(sc, from, cu)
	if sc.mode != chanOff {
		sc.mode = chanCatching // classify the held messages as a catch-up's
		for _, m := range sc.held() {
			if ev, ok := s.classify(sc, m); ok {
				evs = append(evs, ev)
			}
		}
		if sc.mode == chanCatching {
			sc.mode = chanLive
		}
	}
	sc.pending = nil
	free := s.queueLimitLocked() - len(s.queue)
	if s.mode == deliverChan {
		free = cap(s.events) - len(s.events)
	}
	if len(evs) > free {
		if free <= 0 {
			wake := s.finishLocked() // too far behind: the client resumes from the backlog
			s.mu.Unlock()
			if wake != nil {
				wake()
			}
			return false
		}
		evs = []Event{{Kind: EventResync, Channel: sc.name, LastID: sc.cursor}}
	}
	var wake func()
	for _, ev := range evs {
		if s.mode == deliverChan {
			s.events <- ev // fits: every other send holds s.mu, or is this goroutine's
			continue
		}
		s.queue = append(s.queue, ev)
		if len(s.queue) == 1 {
			wake = s.wake
		}
	}
	s.mu.Unlock()
	if wake != nil {
		wake()
	}
	return true
}

// goLive sends the live messages held during the catch-up and switches every
// channel to live once nothing is pending, under one lock so that no live
// send competes with the blocking sends of the catch-up.
func (s *subscription) goLive() bool {
	for {
		var evs []Event
		s.mu.Lock()
		for i := range s.chans {
			sc := &s.chans[i]
			if sc.mode == chanRetrying {
				continue // its messages wait for its catch-up
			}
			for _, m := range sc.held() {
				if ev, ok := s.classify(sc, m); ok {
					evs = append(evs, ev)
				}
			}
			sc.pending = nil
		}
		if len(evs) == 0 {
			for i := range s.chans {
				sc := &s.chans[i]
				if sc.mode == chanCatching {
					sc.mode = chanLive
				}
			}
			s.mu.Unlock()
			return true
		}
		s.mu.Unlock()
		for _, ev := range evs {
			if !s.send(ev) {
				return false
			}
		}
	}
}

// classify turns a live message into the event the subscriber needs, moving
// the channel's cursor: nothing for a duplicate, EventUnavailable (and the
// channel off) when m's audience excludes the subscriber, EventResync on a
// gap in ids or a resync marker.
func (s *subscription) classify(sc *subChannel, m *Message) (Event, bool) {
	switch {
	case sc.mode == chanOff || m.ID <= sc.cursor:
		return Event{}, false
	case !s.allowed(m):
		sc.mode = chanOff
		return Event{Kind: EventUnavailable, Channel: sc.name}, true
	case m.ID != sc.cursor+1 || m.Resync:
		sc.cursor = m.ID
		return Event{Kind: EventResync, Channel: sc.name, LastID: m.ID}, true
	}
	sc.cursor = m.ID
	return Event{Kind: EventMessage, Channel: sc.name, Message: m, LastID: m.ID}, true
}

// allowed reports whether m's audience includes the subscriber. A message
// without an audience reaches nobody.
func (s *subscription) allowed(m *Message) bool {
	return m.Audience != nil && m.Audience.CanView(s.user)
}

// deliver is called by Hub.Publish for a message of sc's channel.
func (s *subscription) deliver(sc *subChannel, m *Message) {
	s.mu.Lock()
	wake := s.deliverLocked(sc, m)
	s.mu.Unlock()
	if wake != nil {
		wake()
	}
}

// deliverLocked hands a live message over and returns the consumer's wake
// function when it must be told.
func (s *subscription) deliverLocked(sc *subChannel, m *Message) (wake func()) {
	if s.closed {
		return nil
	}
	switch sc.mode {
	case chanCatching:
		if len(sc.held()) >= s.hub.cfg.MaxPending {
			return s.finishLocked() // too far behind: the client resumes from the backlog
		}
		if sc.pending == nil {
			sc.pending = new([]*Message)
		}
		*sc.pending = append(*sc.pending, m)
	case chanRetrying:
		if sc.pending == nil {
			sc.pending = new([]*Message)
		}
		if len(*sc.pending) >= s.hub.cfg.MaxPending {
			// The client was told to re-read the channel; the gap left
			// makes the resumed channel resync again.
			*sc.pending = (*sc.pending)[1:]
		}
		*sc.pending = append(*sc.pending, m)
	case chanLive:
		ev, ok := s.classify(sc, m)
		if !ok {
			return nil
		}
		if s.mode == deliverChan {
			select {
			case s.events <- ev:
				return nil
			default:
				return s.finishLocked() // slow subscriber: it reconnects with Last-Event-ID
			}
		}
		if len(s.queue) >= s.queueLimitLocked() {
			s.hub.log.Info("subscription ended: its consumer fell too far behind", "queued", len(s.queue))
			return s.finishLocked()
		}
		s.queue = append(s.queue, ev)
		if len(s.queue) == 1 {
			return s.wake
		}
	}
	return nil
}

// queueLimitLocked is how many events the queue holds before the
// subscription ends: queuedSlack times the buffer once a consumer that
// takes the queue chose it (Notify), the buffer before (Events would move
// the queue into a channel of that size).
func (s *subscription) queueLimitLocked() int {
	if s.wake != nil {
		return s.hub.cfg.BufferSize * queuedSlack
	}
	return s.hub.cfg.BufferSize
}

// send delivers ev, waiting for room in the subscriber's buffer, unless
// the subscription ends.
func (s *subscription) send(ev Event) bool {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return false
		}
		if s.mode == deliverChan {
			events := s.events
			s.mu.Unlock()
			select {
			case events <- ev:
				return true
			case <-s.ctx.Done():
				return false
			}
		}
		if len(s.queue) < s.hub.cfg.BufferSize {
			s.queue = append(s.queue, ev)
			var wake func()
			if len(s.queue) == 1 {
				wake = s.wake
			}
			s.mu.Unlock()
			if wake != nil {
				wake()
			}
			return true
		}
		if s.space == nil {
			s.space = make(chan struct{})
		}
		space := s.space
		s.mu.Unlock()
		select {
		case <-space:
		case <-s.ctx.Done():
			return false
		}
	}
}

package presence

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
)

// Modes of one channel within a subscription, under subscription.mu.
const (
	chanCatching uint8 = iota // catch-up running: live messages are held in pending
	chanLive                  // live messages go straight to the subscriber
	chanOff                   // unavailable: nothing more is streamed
)

// subscription merges, per channel, a catch-up fetched from a CatchupSource
// with the live messages of the Hub. Its goroutine (run) sends the catch-up
// with blocking sends; once every channel is live, the Hub's publishers send
// without blocking, and a subscriber whose buffer is full is closed.
type subscription struct {
	hub    *Hub
	user   *User
	src    CatchupSource
	ctx    context.Context
	cancel context.CancelFunc
	events chan Event
	chans  []*subChannel // sorted by name; fixed after creation
	exited chan struct{}

	mu     sync.Mutex
	closed bool // no more sends; events is closed by run
}

// subChannel is one channel of a subscription and its Hub registration.
type subChannel struct {
	sub  *subscription
	name string
	from int64

	hc  *hubChannel // under hub.mu
	idx int         // position in hc.members, under hc.mu

	// Under sub.mu once the channel is live; the run goroutine alone uses
	// them while catching up.
	mode    uint8
	cursor  int64 // last id the subscriber has accounted for
	pending []*Message
}

func newSubscription(ctx context.Context, h *Hub, u *User, from map[string]int64, src CatchupSource) *subscription {
	s := &subscription{
		hub:    h,
		user:   u,
		src:    src,
		events: make(chan Event, h.cfg.BufferSize),
		exited: make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancel(ctx)
	for _, name := range slices.Sorted(maps.Keys(from)) {
		sc := &subChannel{sub: s, name: name, from: from[name]}
		if !ValidChannelName(name) {
			sc.mode = chanOff
		}
		s.chans = append(s.chans, sc)
	}
	return s
}

// Events delivers the subscription's events; it is closed when the
// subscription ends.
func (s *subscription) Events() <-chan Event { return s.events }

// Close ends the subscription and waits until it released its resources.
func (s *subscription) Close() {
	s.mu.Lock()
	s.finishLocked()
	s.mu.Unlock()
	<-s.exited
}

func (s *subscription) finishLocked() {
	if !s.closed {
		s.closed = true
		s.cancel()
	}
}

// run sends each channel's catch-up, turns the channels live, then waits for
// the end of the subscription and releases it.
func (s *subscription) run() {
	defer close(s.exited)
	defer s.hub.metrics.subscribers.Add(-1)
	defer s.hub.unregister(s)
	defer func() {
		s.mu.Lock()
		s.finishLocked()
		close(s.events)
		s.mu.Unlock()
	}()
	if s.catchUp() && s.goLive() {
		<-s.ctx.Done()
	}
}

// catchUp sends the catch-up of every channel in turn.
func (s *subscription) catchUp() bool {
	for _, sc := range s.chans {
		if sc.mode == chanOff {
			if !s.send(Event{Kind: EventUnavailable, Channel: sc.name}) {
				return false
			}
			continue
		}
		cu, err := s.src.Since(s.ctx, s.user, sc.name, sc.from)
		if err != nil {
			if s.ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				s.hub.log.Warn("presence: subscription catch-up failed; closing it",
					"channel", sc.name, "err", err)
			}
			return false
		}
		for _, ev := range s.catchupEvents(sc, cu) {
			if !s.send(ev) {
				return false
			}
		}
	}
	return true
}

// catchupEvents turns a catch-up into events and sets the channel's cursor.
func (s *subscription) catchupEvents(sc *subChannel, cu Catchup) []Event {
	sc.cursor = cu.LastID
	switch {
	case cu.Unavailable:
		s.mu.Lock()
		sc.mode, sc.pending = chanOff, nil
		s.mu.Unlock()
		return []Event{{Kind: EventUnavailable, Channel: sc.name}}
	case sc.from < 0:
		// New messages only: every message published since the channel
		// was registered is new, also those the last id read since then
		// already counts (they wait in pending). Starting after the last
		// id alone would drop them, and a client that saw the stream
		// connect would miss a change made just after.
		s.mu.Lock()
		if len(sc.pending) > 0 && sc.pending[0].ID <= cu.LastID {
			sc.cursor = sc.pending[0].ID - 1
		}
		s.mu.Unlock()
		return nil
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

// goLive sends the live messages held during the catch-up and switches every
// channel to live once nothing is pending, under one lock so that no live
// send competes with the blocking sends of the catch-up.
func (s *subscription) goLive() bool {
	for {
		var evs []Event
		s.mu.Lock()
		for _, sc := range s.chans {
			for _, m := range sc.pending {
				if ev, ok := s.classify(sc, m); ok {
					evs = append(evs, ev)
				}
			}
			sc.pending = nil
		}
		if len(evs) == 0 {
			for _, sc := range s.chans {
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
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	switch sc.mode {
	case chanCatching:
		if len(sc.pending) >= s.hub.cfg.MaxPending {
			s.finishLocked() // too far behind: the client resumes from the backlog
			return
		}
		sc.pending = append(sc.pending, m)
	case chanLive:
		ev, ok := s.classify(sc, m)
		if !ok {
			return
		}
		select {
		case s.events <- ev:
		default:
			s.finishLocked() // slow subscriber: it reconnects with Last-Event-ID
		}
	}
}

// send delivers ev, waiting for the subscriber, unless the subscription ends.
func (s *subscription) send(ev Event) bool {
	select {
	case s.events <- ev:
		return true
	case <-s.ctx.Done():
		return false
	}
}

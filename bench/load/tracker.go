package load

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/bench/hist"
)

// Tracker matches entering_users messages seen by subscribers with the
// enter calls that caused them and measures enter-to-subscriber delivery.
//
// Enters are kept in a map keyed by channel and user. Each enter call also
// carries a stamp in the token's avatar_template, which the server copies
// into the message, so a late message is never matched to a newer enter of
// the same user; a message without a stamp matches the oldest outstanding
// enter of its channel and user.
type Tracker struct {
	subsPerChannel []int32
	stamp          atomic.Uint64

	mu        sync.Mutex
	phase     int
	pending   map[pendingKey][]pendingEnter
	delivery  map[int]*hist.Histogram
	unmatched map[int]uint64
	messages  map[int]*MessageCounts
}

type pendingKey struct{ channel, user int32 }

type pendingEnter struct {
	stamp     uint64
	sent      time.Time
	phase     int
	remaining int32 // subscribers still to see it
}

// MessageCounts counts the stream events of one phase.
type MessageCounts struct {
	Entering    uint64 `json:"entering_users"`
	Leaving     uint64 `json:"leaving_user_ids"`
	CountDelta  uint64 `json:"count_delta"`
	Resync      uint64 `json:"resync"`
	Unavailable uint64 `json:"unavailable"`
}

// NewTracker returns a tracker; subsPerChannel[c] is how many subscribers
// follow channel c (enters into unwatched channels are not tracked).
func NewTracker(subsPerChannel []int32) *Tracker {
	return &Tracker{
		subsPerChannel: subsPerChannel,
		pending:        make(map[pendingKey][]pendingEnter),
		delivery:       make(map[int]*hist.Histogram),
		unmatched:      make(map[int]uint64),
		messages:       make(map[int]*MessageCounts),
	}
}

// NextStamp returns a new non-zero enter stamp.
func (t *Tracker) NextStamp() uint64 { return t.stamp.Add(1) }

// SetPhase attributes enters sent from now on, and unmatched messages, to
// phase p.
func (t *Tracker) SetPhase(p int) {
	t.mu.Lock()
	t.phase = p
	t.mu.Unlock()
}

// Watched reports whether any subscriber follows channel c.
func (t *Tracker) Watched(c int) bool {
	return c >= 0 && c < len(t.subsPerChannel) && t.subsPerChannel[c] > 0
}

// Expect records that an enter of user into channel, stamped stamp, is
// being sent at sent.
func (t *Tracker) Expect(channel, user int, stamp uint64, sent time.Time) {
	if !t.Watched(channel) {
		return
	}
	k := pendingKey{int32(channel), int32(user)}
	t.mu.Lock()
	t.pending[k] = append(t.pending[k], pendingEnter{stamp: stamp, sent: sent, phase: t.phase, remaining: t.subsPerChannel[channel]})
	t.mu.Unlock()
}

// Cancel forgets an expected enter the server did not apply.
func (t *Tracker) Cancel(channel, user int, stamp uint64) {
	k := pendingKey{int32(channel), int32(user)}
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.pending[k]
	for i := range list {
		if list[i].stamp == stamp {
			t.remove(k, list, i)
			return
		}
	}
}

func (t *Tracker) remove(k pendingKey, list []pendingEnter, i int) {
	list = append(list[:i], list[i+1:]...)
	if len(list) == 0 {
		delete(t.pending, k)
	} else {
		t.pending[k] = list
	}
}

// Deliver records that a subscriber received, at at, an entering_users
// message for user in channel; stamp is 0 when the message carried none.
func (t *Tracker) Deliver(channel, user int, stamp uint64, at time.Time) {
	k := pendingKey{int32(channel), int32(user)}
	t.mu.Lock()
	defer t.mu.Unlock()
	list := t.pending[k]
	i := -1
	for j := range list {
		if stamp == 0 || list[j].stamp == stamp {
			i = j
			break
		}
	}
	if i < 0 {
		t.unmatched[t.phase]++
		return
	}
	e := &list[i]
	h := t.delivery[e.phase]
	if h == nil {
		h = &hist.Histogram{}
		t.delivery[e.phase] = h
	}
	h.Record(at.Sub(e.sent))
	if e.remaining--; e.remaining <= 0 {
		t.remove(k, list, i)
	}
}

// Count adds one stream event of the given kind to the current phase.
func (t *Tracker) Count(kind EventKind) {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.messages[t.phase]
	if c == nil {
		c = &MessageCounts{}
		t.messages[t.phase] = c
	}
	switch kind {
	case EventEntering:
		c.Entering++
	case EventLeaving:
		c.Leaving++
	case EventCountDelta:
		c.CountDelta++
	case EventResync:
		c.Resync++
	case EventUnavailable:
		c.Unavailable++
	}
}

// Outstanding is how many deliveries of enters sent in phase are still
// awaited (one per subscriber of the channel).
func (t *Tracker) Outstanding(phase int) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, list := range t.pending {
		for _, e := range list {
			if e.phase == phase {
				n += int(e.remaining)
			}
		}
	}
	return n
}

// PhaseStats are the delivery measurements of one phase.
type PhaseStats struct {
	// Delivery holds one sample per (enter, subscriber) pair received.
	Delivery hist.Histogram
	// Missing deliveries were expected but had not arrived when asked.
	Missing int
	// Unmatched entering messages matched no enter the tool sent (e.g. a
	// client that expired and came back with a heartbeat).
	Unmatched uint64
	Messages  MessageCounts
}

// Stats returns a copy of phase's measurements.
func (t *Tracker) Stats(phase int) PhaseStats {
	missing := t.Outstanding(phase)
	t.mu.Lock()
	defer t.mu.Unlock()
	s := PhaseStats{Missing: missing, Unmatched: t.unmatched[phase]}
	if h := t.delivery[phase]; h != nil {
		s.Delivery.Merge(h)
	}
	if c := t.messages[phase]; c != nil {
		s.Messages = *c
	}
	return s
}

// Handler returns the event handler subscribers feed: it counts events and
// matches entering users of pop to their enters.
func (t *Tracker) Handler(pop *Population) func(Event) {
	return func(ev Event) {
		t.Count(ev.Kind)
		if ev.Kind != EventEntering {
			return
		}
		c, ok := pop.ParseChannel(ev.Channel)
		for _, u := range ev.Entering {
			user, uok := pop.ParseUser(u.ID)
			if !ok || !uok {
				t.mu.Lock()
				t.unmatched[t.phase]++
				t.mu.Unlock()
				continue
			}
			t.Deliver(c, user, StampOf(u.AvatarTemplate), ev.At)
		}
	}
}

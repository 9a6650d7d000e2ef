package chaos

import (
	"errors"
	"fmt"
)

// Violations of the stream invariants, wrapped by Sequence.Message.
var (
	// ErrBackwards: a message id at or below one the stream already saw in
	// that channel (a repeat, or two owners publishing).
	ErrBackwards = errors.New("message id did not increase")
	// ErrGap: a message id skipped ids without a resync before it.
	ErrGap = errors.New("message ids skipped without a resync")
)

// Sequence checks the message ids of one stream, channel by channel: each
// id is above every id seen before in its channel, and exactly one above
// the previous one unless a resync came in between. The first message of a
// channel sets the baseline. A Sequence outlives reconnections, since a
// stream resumed with Last-Event-ID promises the same continuity. It is not
// safe for concurrent use.
type Sequence struct {
	last   map[string]int64
	resync map[string]bool
}

// NewSequence returns a Sequence that has seen nothing.
func NewSequence() *Sequence {
	return &Sequence{last: map[string]int64{}, resync: map[string]bool{}}
}

// Message records message id of channel and reports a violation, wrapping
// ErrBackwards or ErrGap.
func (s *Sequence) Message(channel string, id int64) error {
	last, seen := s.last[channel]
	resynced := s.resync[channel]
	if !seen || id > last {
		s.last[channel] = id
		delete(s.resync, channel)
	}
	switch {
	case !seen:
		return nil
	case id <= last:
		return fmt.Errorf("%s: id %d after %d: %w", channel, id, last, ErrBackwards)
	case id != last+1 && !resynced:
		return fmt.Errorf("%s: id %d after %d: %w", channel, id, last, ErrGap)
	}
	return nil
}

// Resync records a resync event of channel: the next id may jump.
func (s *Sequence) Resync(channel string) { s.resync[channel] = true }

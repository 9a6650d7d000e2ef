package raftstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"
)

// leadershipBacklog bounds the transitions kept for a slow reader of
// LeadershipChanges.
const leadershipBacklog = 64

// IsLeader reports whether this server is the Raft leader right now.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// State returns this server's Raft state: "Follower", "Candidate", "Leader"
// or "Shutdown".
func (s *Store) State() string { return s.raft.State().String() }

// Term returns the current Raft term; it grows by one or more with every
// election.
func (s *Store) Term() uint64 { return s.raft.CurrentTerm() }

// Leader returns the ID and Raft address of the leader this server knows
// of, or empty strings when none is known.
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// LeadershipChanges delivers true when this server becomes leader and false
// when it stops being leader, in order, without ever blocking Raft: the
// transitions queue up for a slow reader (beyond a bound, the oldest
// gain/loss pairs are dropped, so the sequence still alternates and ends on
// the current state). Close closes the channel; a reader should then treat
// the server as not leader. There is one channel: use a single reader.
func (s *Store) LeadershipChanges() <-chan bool { return s.leaderCh }

// forwardLeadership moves Raft's NotifyCh values into leaderCh until Close.
func (s *Store) forwardLeadership() {
	defer close(s.done)
	defer close(s.leaderCh)
	var pending []bool
	for {
		var out chan<- bool
		var next bool
		if len(pending) > 0 {
			out, next = s.leaderCh, pending[0]
		}
		select {
		case v := <-s.notifyCh:
			pending = append(pending, v)
			if len(pending) > leadershipBacklog {
				pending = pending[2:]
			}
		case out <- next:
			pending = pending[1:]
		case <-s.stop:
			return
		}
	}
}

// WaitForLeader returns once this server knows a leader (itself or
// another), ErrNoLeader wrapping ctx's error if ctx ends first, or
// ErrClosed after Close.
func (s *Store) WaitForLeader(ctx context.Context) error {
	// Registered before the first check, so an election in between is seen.
	ch := make(chan raft.Observation, 1)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	for {
		if id, _ := s.Leader(); id != "" {
			return nil
		}
		select {
		case <-ch:
		case <-s.stop:
			return ErrClosed
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrNoLeader, ctx.Err())
		}
	}
}

// TransferLeadership hands leadership to another voter and returns once
// that happened or Raft gave up (after about an election timeout). Call it
// before Close on a graceful shutdown, so the cluster does not wait for an
// election timeout. Nothing to do, and nil, when this server is not the
// leader or no other voter exists.
func (s *Store) TransferLeadership() error {
	if !s.IsLeader() {
		return nil
	}
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	others := 0
	for _, srv := range servers {
		if srv.Voter && srv.ID != s.cfg.NodeID {
			others++
		}
	}
	if others == 0 {
		return nil
	}
	if err := s.raft.LeadershipTransfer().Error(); err != nil {
		return fmt.Errorf("raftstore: transfer raft leadership: %w", s.mapRaftErr(err))
	}
	return nil
}

// Barrier waits until every entry committed before it has been applied to
// this node's FSM. Only the leader can issue one: a newly elected leader
// has the committed entries in its log but may not have applied them yet,
// so a node that serves reads after an election calls Barrier first.
func (s *Store) Barrier(timeout time.Duration) error {
	if err := s.raft.Barrier(timeout).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return fmt.Errorf("raftstore: raft barrier: %w", err)
	}
	return nil
}

// Progress is how far a server's Raft log goes and how recently it heard
// from a leader: what a leader compares with its own to judge whether a
// non-voter caught up.
type Progress struct {
	// Term is the server's current term.
	Term uint64
	// LastIndex is the index of the last entry in its log or snapshot.
	LastIndex uint64
	// LastContact is how long ago it last heard from a leader: zero on the
	// leader itself, negative when it never did.
	LastContact time.Duration
}

// Progress reports this server's Raft progress.
func (s *Store) Progress() Progress {
	p := Progress{Term: s.raft.CurrentTerm(), LastIndex: s.raft.LastIndex(), LastContact: -1}
	switch last := s.raft.LastContact(); {
	case s.IsLeader():
		p.LastContact = 0
	case !last.IsZero():
		p.LastContact = time.Since(last)
	}
	return p
}

package raftstore

import (
	"time"

	"github.com/hashicorp/raft"
)

// catchUpOutage is how long heartbeats to a follower must have failed
// before its return warrants a leadership transfer. hashicorp/raft's leader
// doubles its pause between retries of appends to an unreachable follower
// up to 10.24 s (replication.go: failureWait, maxFailureScale), and the
// pause cannot be cut short. After about 2 s of failures the pause in
// progress when the network returns is already over a second and keeps
// growing, so a follower that missed writes could wait up to 10 s for them.
// A new leader starts its replication without that history and sends them
// at once.
const catchUpOutage = 2 * time.Second

// catchUpObservations buffers heartbeat observations; Raft drops them
// when the buffer is full rather than block, which at worst costs one
// transfer (the follower then catches up at the leader's next retry).
const catchUpObservations = 64

// followerOutage is what the leader noted when heartbeats to a follower
// started failing.
type followerOutage struct {
	since  time.Time // the follower's last contact
	writes uint64    // FSM writes applied by then
}

// catchUpWatcher decides, from the leader's heartbeat observations, when a
// returning follower missed writes and the leader's backed-off replication
// would keep them from it for seconds. It is the pure part of
// Store.watchLaggingFollowers, driven by explicit times.
type catchUpWatcher struct {
	outages map[raft.ServerID]followerOutage
}

func newCatchUpWatcher() *catchUpWatcher {
	return &catchUpWatcher{outages: make(map[raft.ServerID]followerOutage)}
}

// failed notes a failed heartbeat to id. Only the first failure of an
// outage counts: lastContact (zero when the leader never reached id) marks
// its start, and writes the FSM writes applied by then.
func (w *catchUpWatcher) failed(id raft.ServerID, lastContact, now time.Time, writes uint64) {
	if _, ok := w.outages[id]; ok {
		return
	}
	if lastContact.IsZero() {
		lastContact = now
	}
	w.outages[id] = followerOutage{since: lastContact, writes: writes}
}

// resumed ends id's outage and reports whether leadership should move: this
// server is the leader, the outage lasted catchUpOutage or more, and
// writes were applied during it (so id lacks entries only the backed-off
// replication would send).
func (w *catchUpWatcher) resumed(id raft.ServerID, now time.Time, writes uint64, leader bool) bool {
	o, ok := w.outages[id]
	delete(w.outages, id)
	return ok && leader && writes > o.writes && now.Sub(o.since) >= catchUpOutage
}

// reset forgets every outage (leadership was lost: a later leader observes
// its own).
func (w *catchUpWatcher) reset() { clear(w.outages) }

// removed forgets id's outage: it left the configuration, and a server
// added back gets a replication without backed-off history.
func (w *catchUpWatcher) removed(id raft.ServerID) { delete(w.outages, id) }

// watchLaggingFollowers transfers leadership when a follower returns from
// an outage during which writes were applied (see catchUpOutage), so
// that it gets them within moments instead of after the leader's next
// backed-off retry. It runs until Close.
func (s *Store) watchLaggingFollowers() {
	defer close(s.watcherDone)
	ch := make(chan raft.Observation, catchUpObservations)
	obs := raft.NewObserver(ch, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.FailedHeartbeatObservation, raft.ResumedHeartbeatObservation, raft.LeaderObservation, raft.PeerObservation:
			return true
		}
		return false
	})
	s.raft.RegisterObserver(obs)
	defer s.raft.DeregisterObserver(obs)
	w := newCatchUpWatcher()
	for {
		select {
		case o := <-ch:
			s.observeFollower(w, o)
		case <-s.stop:
			return
		}
	}
}

func (s *Store) observeFollower(w *catchUpWatcher, o raft.Observation) {
	now := time.Now()
	switch d := o.Data.(type) {
	case raft.LeaderObservation:
		if d.LeaderID != raft.ServerID(s.cfg.NodeID) {
			w.reset()
		}
	case raft.PeerObservation:
		if d.Removed {
			w.removed(d.Peer.ID)
		}
	case raft.FailedHeartbeatObservation:
		w.failed(d.PeerID, d.LastContact, now, s.fsm.Writes())
	case raft.ResumedHeartbeatObservation:
		if !w.resumed(d.PeerID, now, s.fsm.Writes(), s.IsLeader()) {
			return
		}
		s.logger.Info("raft: a follower returned after missing writes; handing leadership over so that it catches up now",
			"follower", string(d.PeerID))
		// Not on this goroutine: the transfer waits up to an election
		// timeout, and observations must keep being drained meanwhile.
		go func() {
			if err := s.raft.LeadershipTransfer().Error(); err != nil {
				s.logger.Warn("raft: leadership transfer for a lagging follower failed", "err", err)
			}
		}()
	}
}

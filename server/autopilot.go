package server

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/cluster/autopilot"
	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/cluster/raftstore"
)

// raftRemovalWait bounds how long a node leaving gracefully waits for the
// leader to remove it from the Raft configuration (it takes a gossip round
// and a commit, well under a second in a healthy cluster).
const raftRemovalWait = 3 * time.Second

// raftAddress is where Raft reaches the server named id now: its current
// rpc address in gossip (Raft runs over the node-to-node transport), also
// for a member gone for a while, whose last address is the best guess.
// False for a name gossip never heard of; Raft then dials the address its
// configuration recorded. Autopilot keeps the recorded addresses current
// too (they show in logs and serve as that fallback; a data directory of
// the release that ran Raft on a port of its own has them rewritten once).
func (s *Server) raftAddress(id string) (string, bool) {
	if id == s.cfg.Name {
		return s.rpcAddr, true
	}
	rec, ok := s.members.lookup(id)
	if !ok || rec.Meta.RPC == "" {
		return "", false
	}
	return rec.Meta.RPC, true
}

// newAutopilot builds the autopilot that manages the Raft configuration
// from the member table; Start runs it once gossip runs (without gossip,
// every server would look gone).
func (s *Server) newAutopilot() error {
	cfg := autopilot.Config{
		Self:            s.cfg.Name,
		BootstrapExpect: s.cfg.BootstrapExpect,
		MaxVoters:       s.cfg.MaxVoters,
		ReapAfter:       s.cfg.ReapAfter,
		Interval:        s.timings.tick,
		// The wall clock, as the member table's down times (Config.Clock
		// drives presence timers).
		Clock:  clock.Real{},
		Logger: s.log,
	}
	if s.cfg.FastTimings {
		cfg.Stabilization = fastStabilization
	}
	p, err := autopilot.New(cfg, s.store, autopilotView{s})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrConfig, err)
	}
	s.pilot = p
	return nil
}

// fastStabilization is how long a non-voter stays healthy before its
// promotion under FastTimings.
const fastStabilization = 500 * time.Millisecond

// autopilotView is the member table and the transport as autopilot needs
// them.
type autopilotView struct{ s *Server }

// Members converts the member table: a draining member counts as leaving,
// and a member's Raft address is its rpc address (Raft runs over the
// node-to-node transport); a member whose metadata gives none cannot be a
// server. This node's own record may lag in gossip: its address is the
// one it listens at.
func (v autopilotView) Members() []autopilot.Member {
	recs := v.s.members.all()
	out := make([]autopilot.Member, 0, len(recs))
	for _, rec := range recs {
		m := autopilot.Member{Name: rec.Name, Since: rec.down, RaftAddr: rec.Meta.RPC}
		if rec.Name == v.s.cfg.Name {
			m.RaftAddr = v.s.rpcAddr
		}
		switch {
		case rec.State == membership.StateAlive && !rec.Draining:
			m.Status = autopilot.StatusAlive
		case rec.State == membership.StateAlive, rec.State == membership.StateLeaving:
			m.Status = autopilot.StatusLeaving
		case rec.State == membership.StateLeft:
			m.Status = autopilot.StatusLeft
		default:
			m.Status = autopilot.StatusFailed
		}
		out = append(out, m)
	}
	return out
}

// Joined: met another member, or told to join nobody.
func (v autopilotView) Joined() bool { return len(v.s.cfg.Join) == 0 || v.s.joined.Load() }

// HasRaftState asks name over the transport.
func (v autopilotView) HasRaftState(ctx context.Context, name string) (bool, error) {
	reply, err := v.call(ctx, name, methodRaftState)
	if err != nil {
		return false, err
	}
	return len(reply) == 1 && reply[0] == 1, nil
}

// Progress asks name over the transport.
func (v autopilotView) Progress(ctx context.Context, name string) (raftstore.Progress, error) {
	reply, err := v.call(ctx, name, methodRaftProgress)
	if err != nil {
		return raftstore.Progress{}, err
	}
	return decodeProgress(reply)
}

func (v autopilotView) call(ctx context.Context, name string, method uint16) ([]byte, error) {
	rec, ok := v.s.members.lookup(name)
	if !ok || rec.gone() || rec.Meta.RPC == "" {
		return nil, fmt.Errorf("member %s unreachable", name)
	}
	return v.s.transport.Call(ctx, rec.Meta.RPC, method, nil)
}

// progressJSON is the wire form of raftstore.Progress (methodRaftProgress).
type progressJSON struct {
	Term        uint64 `json:"term"`
	LastIndex   uint64 `json:"last_index"`
	LastContact int64  `json:"last_contact_ns"` // negative: never
}

func encodeProgress(p raftstore.Progress) ([]byte, error) {
	return json.Marshal(progressJSON{Term: p.Term, LastIndex: p.LastIndex, LastContact: int64(p.LastContact)})
}

func decodeProgress(b []byte) (raftstore.Progress, error) {
	var p progressJSON
	if err := json.Unmarshal(b, &p); err != nil {
		return raftstore.Progress{}, fmt.Errorf("raft progress reply: %w", err)
	}
	return raftstore.Progress{Term: p.Term, LastIndex: p.LastIndex, LastContact: time.Duration(p.LastContact)}, nil
}

// awaitRaftRemoval keeps Raft running after the leave until the leader
// removed this server from the configuration (autopilot.WaitRemoved), at
// most raftRemovalWait and half of what remains of ctx. Nodes leaving
// together thus never leave the others without a quorum. Skipped when
// every other member is shutting down too: nobody removes anyone then.
func (s *Server) awaitRaftRemoval(ctx context.Context) {
	if s.members.othersDraining() || !s.othersAlive() {
		return
	}
	wait := raftRemovalWait
	if deadline, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(deadline)/2)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	start := time.Now()
	if err := s.pilot.WaitRemoved(wctx); err != nil {
		s.log.Warn("leaving without being removed from raft; the leader removes this server once it sees it gone", "err", err)
		return
	}
	s.log.Info("removed from raft", "took", time.Since(start).Round(time.Millisecond))
}

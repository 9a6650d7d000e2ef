package server

import (
	"context"
	"errors"
	"time"

	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/cluster/raftstore"
)

// raftOpTimeout bounds one configuration change or bootstrap step.
const raftOpTimeout = 5 * time.Second

// raftAddress is where Raft reaches the server named id now: its current
// rpc address in gossip (Raft runs over the node-to-node transport), also
// for a member gone for a while, whose last address is the best guess.
// False for a name gossip never heard of; Raft then dials the address its
// configuration recorded.
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

// kickRaft wakes the Raft worker without blocking; kicks coalesce.
func (s *Server) kickRaft() {
	select {
	case s.raftKick <- struct{}{}:
	default:
	}
}

// raftLoop runs bootstrap-expect until Raft has state and, while this node
// leads, keeps the voters in line with the alive members. It wakes on
// membership changes, on leadership changes and on a tick (reaping is a
// matter of time passing). It is the single reader of LeadershipChanges.
func (s *Server) raftLoop() {
	defer s.wg.Done()
	tick := time.NewTicker(s.timings.tick)
	defer tick.Stop()
	leadership := s.store.LeadershipChanges()
	pending := true
	missing := make(map[string]time.Time) // Raft servers not alive in gossip, since when
	for {
		select {
		case <-s.ctx.Done():
			return
		case gained, ok := <-leadership:
			if !ok {
				leadership = nil // store closed; a nil channel never fires
				continue
			}
			s.log.Info("raft leadership changed", "leader", gained)
		case <-s.raftKick:
		case <-tick.C:
		}
		if pending {
			pending = s.maybeBootstrap()
		}
		if s.store.IsLeader() && s.started.Load() {
			s.reconcile(missing) // needs gossip: without it every server looks gone
		} else {
			clear(missing) // a new term restarts the grace period
		}
	}
}

// maybeBootstrap bootstraps Raft once the expected number of servers is
// alive and none of them has Raft state, with the same sorted list of the
// first BootstrapExpect servers on every node. It reports whether bootstrap
// is still pending.
func (s *Server) maybeBootstrap() bool {
	has, err := s.store.HasExistingState()
	if err != nil {
		s.log.Warn("cannot read raft state", "err", err)
		return true
	}
	if has {
		return false
	}
	if len(s.cfg.Join) > 0 && !s.joined.Load() {
		return true // do not bootstrap alone before meeting the seeds
	}
	var candidates []membership.Member
	for _, m := range s.members.alive() {
		if m.Meta.RPC != "" {
			candidates = append(candidates, m)
		}
	}
	if len(candidates) < s.cfg.BootstrapExpect {
		return true
	}
	chosen := candidates[:s.cfg.BootstrapExpect]
	servers := make([]raftstore.Server, 0, len(chosen))
	self := false
	for _, m := range chosen {
		self = self || m.Name == s.cfg.Name
		servers = append(servers, raftstore.Server{ID: m.Name, Addr: m.Meta.RPC, Voter: true})
	}
	if !self {
		return true // the first servers bootstrap; their leader will add this one
	}
	if found, err := s.existingStateAmong(chosen); err != nil || found {
		return err != nil // retry after an unanswered query; with state found, wait to be added
	}
	err = s.store.BootstrapCluster(servers)
	switch {
	case errors.Is(err, raftstore.ErrAlreadyBootstrapped):
		return false
	case err != nil:
		s.log.Warn("raft bootstrap failed", "err", err)
		return true
	}
	s.log.Info("raft bootstrapped", "expect", s.cfg.BootstrapExpect, "servers", len(servers))
	return false
}

// existingStateAmong asks the other chosen servers whether they hold Raft
// state: if one does, a cluster exists and this node waits to be added.
func (s *Server) existingStateAmong(chosen []membership.Member) (bool, error) {
	for _, m := range chosen {
		if m.Name == s.cfg.Name {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, s.timings.statusCall)
		reply, err := s.transport.Call(ctx, m.Meta.RPC, methodRaftState, nil)
		cancel()
		if err != nil {
			s.log.Debug("raft state query failed", "member", m.Name, "err", err)
			return false, err
		}
		if len(reply) == 1 && reply[0] == 1 {
			s.log.Info("existing raft state found; waiting to be added by the leader", "member", m.Name)
			return true, nil
		}
	}
	return false, nil
}

// reconcile, on the leader, adds every alive member that is not a voter at
// its current address and removes servers whose member has been dead, gone
// or unknown for ReapAfter. It never removes this node. missing remembers,
// across calls of one leadership term, since when a server has been absent.
//
// Raft dials servers by name (raftAddress), so an address recorded in the
// configuration only shows in logs and serves as a fallback; keeping it
// current still rewrites, once, the addresses of a data directory written
// by a release that ran Raft on a port of its own.
func (s *Server) reconcile(missing map[string]time.Time) {
	ctx, cancel := context.WithTimeout(s.ctx, raftOpTimeout)
	defer cancel()
	servers, err := s.store.Servers()
	if err != nil {
		s.log.Warn("raft configuration unreadable", "err", err)
		return
	}
	voters := make(map[string]string, len(servers))
	for _, srv := range servers {
		if srv.Voter {
			voters[srv.ID] = srv.Addr
		}
	}
	for _, m := range s.members.alive() {
		addr := m.Meta.RPC
		if m.Name == s.cfg.Name {
			addr = s.rpcAddr // this node's own record may lag in gossip
		}
		if addr == "" || voters[m.Name] == addr {
			continue
		}
		if err := s.store.AddVoter(ctx, m.Name, addr); err != nil {
			s.log.Warn("raft voter not added", "member", m.Name, "err", err)
			continue
		}
		s.log.Info("raft voter added", "member", m.Name, "addr", addr)
	}
	now := time.Now()
	for _, srv := range servers {
		if srv.ID == s.cfg.Name {
			continue
		}
		rec, known := s.members.lookup(srv.ID)
		if known && !rec.gone() {
			delete(missing, srv.ID)
			continue
		}
		since, tracked := missing[srv.ID]
		if !tracked {
			since = now
			if known && rec.down.Before(now) {
				since = rec.down
			}
			missing[srv.ID] = since
		}
		if now.Sub(since) < s.cfg.ReapAfter {
			continue
		}
		if err := s.store.RemoveServer(ctx, srv.ID); err != nil {
			s.log.Warn("raft server not removed", "server", srv.ID, "err", err)
			continue
		}
		delete(missing, srv.ID)
		s.log.Info("raft server removed", "server", srv.ID, "down_for", now.Sub(since).Round(time.Second))
	}
}

package autopilot

import (
	"context"
	"errors"

	"github.com/presencehq/presence/cluster/raftstore"
)

// bootstrap forms the Raft cluster once BootstrapExpect servers are alive
// and none of the alive members holds Raft state, with the same
// configuration on every one of them: the first BootstrapExpect alive
// members by name, the first Voters(BootstrapExpect) of them voting. Every
// alive member is asked, not only the chosen: a node joining an existing
// cluster may sort before its servers. It reports whether bootstrap is
// still pending; it is not once this server holds Raft state or knows that
// another member does (the leader will add it).
func (a *Autopilot) bootstrap(ctx context.Context) (pending bool) {
	has, err := a.raft.HasExistingState()
	if err != nil {
		a.log.Warn("cannot read raft state", "err", err)
		return true
	}
	if has {
		return false
	}
	if !a.cluster.Joined() {
		return true // do not bootstrap alone before meeting the seeds
	}
	var candidates []Member
	for _, m := range a.cluster.Members() {
		if m.Status == StatusAlive && m.RaftAddr != "" {
			candidates = append(candidates, m)
		}
	}
	sortByName(candidates)
	expect := a.cfg.BootstrapExpect
	if len(candidates) < expect {
		return true
	}
	chosen := candidates[:expect]
	self := false
	for _, m := range chosen {
		self = self || m.Name == a.cfg.Self
	}
	if !self {
		return true // the first servers bootstrap; their leader will add this one
	}
	if found, err := a.stateAmong(ctx, candidates); err != nil || found {
		return err != nil // retry after an unanswered question; with state found, wait to be added
	}
	voters := Voters(expect, a.cfg.MaxVoters)
	servers := make([]raftstore.Server, len(chosen))
	for i, m := range chosen {
		servers[i] = raftstore.Server{ID: m.Name, Addr: m.RaftAddr, Voter: i < voters}
	}
	err = a.raft.BootstrapCluster(servers)
	switch {
	case errors.Is(err, raftstore.ErrAlreadyBootstrapped):
		return false
	case err != nil:
		a.log.Warn("raft bootstrap failed", "err", err)
		return true
	}
	a.log.Info("raft bootstrapped", "expect", expect, "servers", len(servers), "voters", voters)
	return false
}

// stateAmong asks the other members whether they hold Raft state: if one
// does, a cluster exists and this server waits to be added.
func (a *Autopilot) stateAmong(ctx context.Context, members []Member) (bool, error) {
	for _, m := range members {
		if m.Name == a.cfg.Self {
			continue
		}
		qctx, cancel := a.opContext(ctx)
		has, err := a.cluster.HasRaftState(qctx, m.Name)
		cancel()
		if err != nil {
			a.log.Debug("raft state query failed", "member", m.Name, "err", err)
			return false, err
		}
		if has {
			a.log.Info("existing raft state found; waiting to be added by the leader", "member", m.Name)
			return true, nil
		}
	}
	return false, nil
}

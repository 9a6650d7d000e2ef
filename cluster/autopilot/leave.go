package autopilot

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/presencehq/presence/cluster/raftstore"
)

// removalPoll paces WaitRemoved.
const removalPoll = 50 * time.Millisecond

// HandOver prepares this server's graceful departure. On the leader, when
// no other voter exists, it first promotes the alive non-voter whose log
// goes furthest (otherwise nobody could be elected once it is gone), then
// transfers leadership. Elsewhere it does nothing. Call SetLeaving first.
func (a *Autopilot) HandOver(ctx context.Context) error {
	if !a.raft.IsLeader() {
		return nil
	}
	servers, err := a.raft.Servers()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(servers, func(s raftstore.Server) bool { return s.Voter && s.ID != a.cfg.Self }) {
		if err := a.promoteSuccessor(ctx, servers); err != nil {
			return err
		}
	}
	return a.raft.TransferLeadership()
}

// promoteSuccessor promotes the alive non-voter with the furthest log; with
// none, there is nobody to hand over to, which is not an error.
func (a *Autopilot) promoteSuccessor(ctx context.Context, servers []raftstore.Server) error {
	alive := make(map[string]bool)
	for _, m := range a.cluster.Members() {
		alive[m.Name] = m.Status == StatusAlive
	}
	var best *raftstore.Server
	var bestIndex uint64
	for i, srv := range servers {
		if srv.Voter || !alive[srv.ID] {
			continue
		}
		qctx, cancel := a.opContext(ctx)
		p, err := a.cluster.Progress(qctx, srv.ID)
		cancel()
		if err != nil {
			continue
		}
		if best == nil || p.LastIndex > bestIndex {
			best, bestIndex = &servers[i], p.LastIndex
		}
	}
	if best == nil {
		return nil
	}
	opCtx, cancel := a.opContext(ctx)
	defer cancel()
	if err := a.raft.AddVoter(opCtx, best.ID, best.Addr); err != nil {
		return fmt.Errorf("autopilot: promote a successor: %w", err)
	}
	a.log.Info("raft non-voter promoted to succeed the leaving leader", "server", best.ID)
	return nil
}

// WaitRemoved waits until this server is no longer in the Raft
// configuration it knows, or ctx ends. A server that leaves gracefully
// keeps Raft running until the leader removed it, so that servers leaving
// together never leave the remaining ones without a quorum: each removal
// is committed while the departing voters can still acknowledge it.
func (a *Autopilot) WaitRemoved(ctx context.Context) error {
	tick := a.cfg.Clock.NewTicker(removalPoll)
	defer tick.Stop()
	for {
		servers, err := a.raft.Servers()
		if err != nil {
			return err
		}
		if !slices.ContainsFunc(servers, func(s raftstore.Server) bool { return s.ID == a.cfg.Self }) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("autopilot: still a raft server: %w", ctx.Err())
		case <-tick.C():
		}
	}
}

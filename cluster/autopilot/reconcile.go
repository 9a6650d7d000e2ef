package autopilot

import (
	"context"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/presencehq/presence/cluster/raftstore"
)

// reconcile is the leader's round: remove the departed servers, add the
// new ones and update moved addresses, then, if the configuration did not
// change meanwhile, promote or demote. One kind of change at a time keeps
// each step's effect on the quorum easy to reason about.
func (a *Autopilot) reconcile(ctx context.Context) {
	servers, err := a.raft.Servers()
	if err != nil {
		a.log.Warn("raft configuration unreadable", "err", err)
		return
	}
	members := make(map[string]Member)
	for _, m := range a.cluster.Members() {
		members[m.Name] = m
	}
	if a.removeDeparted(ctx, servers, members) {
		return
	}
	if a.leaving.Load() {
		return
	}
	if a.addMembers(ctx, servers, members) {
		return
	}
	a.adjustSuffrage(ctx, servers, members)
}

// removeDeparted removes the servers whose member left, and those whose
// member has been failed or unknown for ReapAfter; never this server. It
// reports whether it removed any.
func (a *Autopilot) removeDeparted(ctx context.Context, servers []raftstore.Server, members map[string]Member) bool {
	now := a.cfg.Clock.Now()
	stopping := a.leaving.Load() && !othersAlive(members, a.cfg.Self)
	var planned []removal
	voters := 0
	for _, srv := range servers {
		if srv.Voter {
			voters++
		}
		if srv.ID == a.cfg.Self {
			continue
		}
		m, known := members[srv.ID]
		switch {
		case known && (m.Status == StatusAlive || m.Status == StatusLeaving):
			delete(a.missing, srv.ID)
		case known && m.Status == StatusLeft:
			if !stopping {
				planned = append(planned, removal{id: srv.ID, voter: srv.Voter, left: true, reason: "left"})
			}
		default:
			since, tracked := a.missing[srv.ID]
			if !tracked {
				since = now
				if known && !m.Since.IsZero() && m.Since.Before(now) {
					since = m.Since
				}
				a.missing[srv.ID] = since
			}
			if down := now.Sub(since); down >= a.cfg.ReapAfter {
				reason := "failed"
				if !known {
					reason = "unknown to membership"
				}
				planned = append(planned, removal{id: srv.ID, voter: srv.Voter, reason: reason + " for " + down.Round(time.Second).String()})
			}
		}
	}
	for id := range a.missing {
		if !slices.ContainsFunc(servers, func(srv raftstore.Server) bool { return srv.ID == id }) {
			delete(a.missing, id)
		}
	}
	slices.SortFunc(planned, func(x, y removal) int { return strings.Compare(x.id, y.id) })
	removed := false
	for _, r := range capRemovals(planned, voters) {
		opCtx, cancel := a.opContext(ctx)
		err := a.raft.RemoveServer(opCtx, r.id)
		cancel()
		if err != nil {
			a.log.Warn("raft server not removed", "server", r.id, "err", err)
			continue
		}
		delete(a.missing, r.id)
		delete(a.healthySince, r.id)
		removed = true
		a.log.Info("raft server removed", "server", r.id, "voter", r.voter, "reason", r.reason)
	}
	return removed
}

// othersAlive reports whether a member other than self is alive (not
// leaving): one that stays to keep the cluster going.
func othersAlive(members map[string]Member, self string) bool {
	for _, m := range members {
		if m.Name != self && m.Status == StatusAlive {
			return true
		}
	}
	return false
}

// addMembers adds every alive member that is not a server as a non-voter.
// It reports whether it changed anything.
//
// A server whose member now advertises another address keeps the address
// it was recorded with: Raft dials servers by name at the address gossip
// gives (raftstore.Config.ServerAddress), so the recorded one is only a
// fallback for a name gossip does not know. Rewriting it would also race
// inside hashicorp/raft v1.8.0: the leader swaps a follower's peer record
// under a lock (startStopReplication) that the replication goroutine does
// not take when it reads the record (updateLastAppended), which the race
// detector reports.
func (a *Autopilot) addMembers(ctx context.Context, servers []raftstore.Server, members map[string]Member) bool {
	known := make(map[string]bool, len(servers))
	for _, srv := range servers {
		known[srv.ID] = true
	}
	changed := false
	for _, m := range sortedMembers(members) {
		if m.Status != StatusAlive || m.RaftAddr == "" || known[m.Name] {
			continue
		}
		addr := recordableAddr(servers, m)
		opCtx, cancel := a.opContext(ctx)
		err := a.raft.AddNonvoter(opCtx, m.Name, addr)
		cancel()
		if err != nil {
			a.log.Warn("raft server not added", "member", m.Name, "addr", addr, "err", err)
			continue
		}
		changed = true
		a.log.Info("raft non-voter added", "server", m.Name, "addr", addr)
	}
	return changed
}

// recordableAddr is the address m is recorded with when it is added: its
// Raft address, unless a server that moved away (a restarted container
// whose old IP m was given) is still recorded there. Raft refuses two
// servers at one address, and the moved server keeps its record (see
// addMembers), so m is recorded by its name at the same port instead:
// Raft dials it by name anyway, and where names resolve (compose service
// and container names, most pod DNS) the record is a working fallback too.
func recordableAddr(servers []raftstore.Server, m Member) string {
	if !slices.ContainsFunc(servers, func(s raftstore.Server) bool { return s.Addr == m.RaftAddr && s.ID != m.Name }) {
		return m.RaftAddr
	}
	_, port, err := net.SplitHostPort(m.RaftAddr)
	if err != nil {
		port = "0"
	}
	return net.JoinHostPort(m.Name, port)
}

// adjustSuffrage measures the non-voters' health and applies
// planSuffrage's promotions or demotions.
func (a *Autopilot) adjustSuffrage(ctx context.Context, servers []raftstore.Server, members map[string]Member) {
	a.measureHealth(ctx, servers, members)
	now := a.cfg.Clock.Now()
	cands := make([]candidate, 0, len(servers))
	for _, srv := range servers {
		m, known := members[srv.ID]
		c := candidate{id: srv.ID, voter: srv.Voter, alive: srv.ID == a.cfg.Self || known && m.Status == StatusAlive}
		if since, ok := a.healthySince[srv.ID]; ok && now.Sub(since) >= a.cfg.Stabilization {
			c.stable, c.healthySince = true, since
		}
		cands = append(cands, c)
	}
	promote, demote := planSuffrage(cands, a.cfg.Self, a.cfg.MaxVoters)
	for _, id := range promote {
		opCtx, cancel := a.opContext(ctx)
		err := a.raft.AddVoter(opCtx, id, addrOf(servers, id))
		cancel()
		if err != nil {
			a.log.Warn("raft non-voter not promoted", "server", id, "err", err)
			continue
		}
		a.log.Info("raft non-voter promoted", "server", id, "healthy_for", now.Sub(a.healthySince[id]).Round(time.Millisecond))
	}
	for _, id := range demote {
		opCtx, cancel := a.opContext(ctx)
		err := a.raft.DemoteVoter(opCtx, id)
		cancel()
		if err != nil {
			a.log.Warn("raft voter not demoted", "server", id, "err", err)
			continue
		}
		a.log.Info("raft voter demoted", "server", id, "max_voters", a.cfg.MaxVoters)
	}
}

// measureHealth asks every alive non-voter for its progress and keeps since
// when each has been healthy: in contact with this leader, in its term, and
// at most MaxTrailingLogs behind its log.
func (a *Autopilot) measureHealth(ctx context.Context, servers []raftstore.Server, members map[string]Member) {
	leader := a.raft.Progress()
	now := a.cfg.Clock.Now()
	for _, srv := range servers {
		m, known := members[srv.ID]
		if srv.Voter || !known || m.Status != StatusAlive {
			delete(a.healthySince, srv.ID)
			continue
		}
		qctx, cancel := a.opContext(ctx)
		p, err := a.cluster.Progress(qctx, srv.ID)
		cancel()
		reason := a.unhealthy(p, leader, err)
		if reason != "" {
			if _, was := a.healthySince[srv.ID]; was {
				a.log.Info("raft non-voter unhealthy", "server", srv.ID, "reason", reason)
			}
			delete(a.healthySince, srv.ID)
			continue
		}
		if _, ok := a.healthySince[srv.ID]; !ok {
			a.healthySince[srv.ID] = now
		}
	}
	for id := range a.healthySince {
		if !slices.ContainsFunc(servers, func(srv raftstore.Server) bool { return srv.ID == id }) {
			delete(a.healthySince, id)
		}
	}
}

// unhealthy says why a non-voter with progress p is not caught up with the
// leader's progress, or "" when it is.
func (a *Autopilot) unhealthy(p, leader raftstore.Progress, err error) string {
	switch {
	case err != nil:
		return "progress unknown: " + err.Error()
	case p.Term != leader.Term:
		return "in another term"
	case p.LastContact < 0 || p.LastContact > a.cfg.LastContactThreshold:
		return "no recent contact with the leader"
	case p.LastIndex+a.cfg.MaxTrailingLogs < leader.LastIndex:
		return "log too far behind"
	}
	return ""
}

func addrOf(servers []raftstore.Server, id string) string {
	for _, srv := range servers {
		if srv.ID == id {
			return srv.Addr
		}
	}
	return ""
}

func sortedMembers(members map[string]Member) []Member {
	out := make([]Member, 0, len(members))
	for _, m := range members {
		out = append(out, m)
	}
	sortByName(out)
	return out
}

package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
)

// prefixStore adapts the Raft store to the API's PrefixStore: reads are
// local, writes go through the leader (forwarded when this node follows).
type prefixStore struct{ s *Server }

// Put stores doc through the leader.
func (p prefixStore) Put(ctx context.Context, prefix string, doc []byte) error {
	return p.s.leaderWrite(ctx, prefixWrite{Prefix: prefix, Doc: doc})
}

// Delete removes prefix through the leader.
func (p prefixStore) Delete(ctx context.Context, prefix string) error {
	return p.s.leaderWrite(ctx, prefixWrite{Prefix: prefix})
}

// Get reads the local copy.
func (p prefixStore) Get(prefix string) ([]byte, bool) { return p.s.store.Get(prefix) }

// List reads the local copy.
func (p prefixStore) List() map[string][]byte { return p.s.store.List() }

// storeError translates store errors, local or from the leader, into the
// presence sentinels the API maps to statuses.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raftstore.ErrKeyNotFound):
		return fmt.Errorf("%w: %v", presence.ErrNotFound, err)
	case errors.Is(err, raftstore.ErrNotLeader), errors.Is(err, raftstore.ErrNoLeader),
		errors.Is(err, raftstore.ErrClosed), errors.Is(err, transport.ErrPeerUnavailable),
		errors.Is(err, transport.ErrClosed):
		return fmt.Errorf("%w: %v", presence.ErrUnavailable, err)
	}
	return err
}

// clusterInfo answers /admin/cluster, /admin/owner and /readyz from the
// member table, the Raft store and the router.
type clusterInfo struct{ s *Server }

// memberStateDraining is what /admin/cluster shows for an alive member that
// announced it is shutting down (membership.Member.Draining).
const memberStateDraining = "draining"

// Members lists every remembered member, dead and departed ones included.
func (c clusterInfo) Members() []api.Member {
	recs := c.s.members.all()
	out := make([]api.Member, 0, len(recs))
	for _, rec := range recs {
		state := rec.State
		if state == membership.StateAlive && rec.Draining {
			state = memberStateDraining
		}
		out = append(out, api.Member{Name: rec.Name, HTTP: rec.Meta.HTTP, State: state})
	}
	return out
}

// Raft names the leader this node knows, the configured servers and,
// among them, the voters.
func (c clusterInfo) Raft() api.RaftInfo {
	leader, _ := c.s.store.Leader()
	info := api.RaftInfo{Leader: leader}
	if servers, err := c.s.store.Servers(); err == nil {
		for _, srv := range servers {
			info.Servers = append(info.Servers, srv.ID)
			if srv.Voter {
				info.Voters = append(info.Voters, srv.ID)
			}
		}
	}
	return info
}

// Owner answers from the router's current ring.
func (c clusterInfo) Owner(channel string) (string, []string) { return c.s.router.Owner(channel) }

// Ready: gossip running and joined (with --join), a Raft leader known, the
// prefix documents loaded and no hand-off pending.
func (c clusterInfo) Ready() (bool, string) {
	s := c.s
	switch {
	case s.draining.Load():
		return false, "shutting down"
	case !s.started.Load():
		return false, "membership not started"
	case len(s.cfg.Join) > 0 && !s.joined.Load():
		return false, "not joined to any of " + fmt.Sprint(s.cfg.Join)
	}
	if leader, _ := s.store.Leader(); leader == "" {
		return false, "no raft leader"
	}
	if !s.configLoaded.Load() {
		return false, "prefix documents not loaded yet"
	}
	if resuming, frozen := s.freeze.resumingNow(); resuming {
		return false, fmt.Sprintf("resuming after the process was frozen for %v", frozen.Round(time.Second))
	}
	if !s.router.Settled() {
		return false, "channel ownership not settled"
	}
	return true, ""
}

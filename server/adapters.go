package server

import (
	"context"
	"errors"
	"fmt"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/cluster"
	"github.com/presencehq/presence/presence"
)

// prefixStore adapts the Raft store to the API's PrefixStore, translating
// its errors into the presence sentinels the API maps to statuses.
type prefixStore struct{ store *cluster.Store }

func (p prefixStore) Put(ctx context.Context, prefix string, doc []byte) error {
	return storeError(p.store.Put(ctx, prefix, doc))
}

func (p prefixStore) Delete(ctx context.Context, prefix string) error {
	return storeError(p.store.Delete(ctx, prefix))
}

func (p prefixStore) Get(prefix string) ([]byte, bool) { return p.store.Get(prefix) }

func (p prefixStore) List() map[string][]byte { return p.store.List() }

func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cluster.ErrKeyNotFound):
		return fmt.Errorf("%w: %v", presence.ErrNotFound, err)
	case errors.Is(err, cluster.ErrNotLeader), errors.Is(err, cluster.ErrNoLeader):
		return fmt.Errorf("%w: %v", presence.ErrUnavailable, err)
	}
	return err
}

// localCluster answers the cluster questions for a node that is its own
// cluster: it owns every channel and is ready once Raft has a leader.
type localCluster struct{ s *Server }

func (l localCluster) Members() []api.Member {
	return []api.Member{{Name: l.s.cfg.Name, HTTP: l.s.cfg.advertised(l.s.HTTPAddr()), State: "alive"}}
}

func (l localCluster) Raft() api.RaftInfo {
	leader, _ := l.s.store.Leader()
	info := api.RaftInfo{Leader: leader}
	servers, err := l.s.store.Servers()
	if err == nil {
		for _, srv := range servers {
			info.Servers = append(info.Servers, srv.ID)
		}
	}
	return info
}

func (l localCluster) Owner(string) (string, []string) { return l.s.cfg.Name, []string{} }

func (l localCluster) Ready() (bool, string) {
	if leader, _ := l.s.store.Leader(); leader == "" {
		return false, "no raft leader"
	}
	return true, ""
}

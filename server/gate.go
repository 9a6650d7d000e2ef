package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/presence"
)

// configGate is the engine's ConfigSource: the resolver, once this node's
// prefix documents have caught up with the leader's. Before that a
// channel's config is unknown rather than absent; answering "does not
// exist" would refuse users and end subscriptions over documents the node
// has not loaded yet (a node just started or restarted).
type configGate struct {
	resolver *presence.Resolver
	loaded   *atomic.Bool
}

// Resolve answers presence.ErrUnavailable until the configuration is loaded.
func (g configGate) Resolve(ctx context.Context, channel string) (*presence.Config, error) {
	if !g.loaded.Load() {
		return nil, fmt.Errorf("%w: channel configuration not loaded yet", presence.ErrUnavailable)
	}
	return g.resolver.Resolve(ctx, channel)
}

// awaitConfig opens the gate, and announces that the node serves, once the
// prefix documents caught up: a Raft leader is known and this node holds
// the same documents as the leader. Knowing the leader is not enough: a
// restarted follower learns it before its log is repaired and applied.
func (s *Server) awaitConfig() {
	defer s.wg.Done()
	for !s.caughtUp() {
		select {
		case <-time.After(s.timings.tick / 4):
		case <-s.ctx.Done():
			return
		}
	}
	s.configLoaded.Store(true)
	s.log.Info("prefix documents loaded", "prefixes", len(s.store.List()))
	s.announceServing()
}

// caughtUp reports whether this node's documents match the leader's. The
// leader is caught up once a barrier has passed: it was elected with every
// committed entry in its log, but applies them only when its term's first
// entry commits, and until then it would serve without its documents.
func (s *Server) caughtUp() bool {
	leader, _ := s.store.Leader()
	switch {
	case leader == "":
		return false
	case leader == s.cfg.Name:
		return s.store.Barrier(s.timings.statusCall) == nil
	}
	rec, ok := s.members.lookup(leader)
	if !ok || rec.gone() || rec.Meta.RPC == "" {
		return false // gossip has not shown the leader yet
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timings.statusCall)
	defer cancel()
	theirs, err := s.transport.Call(ctx, rec.Meta.RPC, methodPrefixDigest, nil)
	if err != nil {
		s.log.Debug("leader's prefix digest unavailable", "leader", leader, "err", err)
		return false
	}
	return bytes.Equal(theirs, documentsDigest(s.store.List()))
}

// documentsDigest hashes the prefix documents in key order.
func documentsDigest(docs map[string][]byte) []byte {
	h := sha256.New()
	for _, k := range slices.Sorted(maps.Keys(docs)) {
		fmt.Fprintf(h, "%d:%s%d:", len(k), k, len(docs[k]))
		h.Write(docs[k])
	}
	return h.Sum(nil)
}

package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// Transport methods of the server, above the router's range.
const (
	firstServerMethod = wire.MaxMethod + 1
	// methodRaftState asks whether a node holds Raft state (bootstrap-expect).
	// Empty request; the reply is one byte, 1 when it does.
	methodRaftState = firstServerMethod
	// methodPrefixWrite applies an admin write on the Raft leader. The
	// request is a JSON prefixWrite; the reply is empty.
	methodPrefixWrite = firstServerMethod + 1
	// methodPrefixDigest asks the leader for the digest of its prefix
	// documents (a starting node compares it with its own). Empty request;
	// ErrNotLeader from a follower.
	methodPrefixDigest = firstServerMethod + 2
	// methodRaftProgress asks a node how far its Raft log goes (autopilot
	// judges whether a non-voter caught up). Empty request; the reply is a
	// JSON progressJSON.
	methodRaftProgress = firstServerMethod + 3
)

// maxWriteBackoff caps the pause between attempts of a held admin write.
const maxWriteBackoff = 500 * time.Millisecond

// errLeaderUnreachable: Raft names a leader that gossip does not know yet.
var errLeaderUnreachable = errors.New("raft leader not known to membership yet")

// transportErrors is the sentinel list every node registers, the router's
// first, so errors keep their meaning across the wire.
func transportErrors() []error {
	return append(wire.TransportErrors(), raftstore.ErrNotLeader, raftstore.ErrKeyNotFound, raftstore.ErrClosed)
}

// prefixWrite is an admin write forwarded to the leader: Doc nil deletes.
type prefixWrite struct {
	Prefix string          `json:"prefix"`
	Doc    json.RawMessage `json:"doc,omitempty"`
}

// handleRPC serves every transport call: the router's methods and the
// server's own.
func (s *Server) handleRPC(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	// The transport listens before the Raft store and the router exist.
	if !s.opened.Load() {
		return nil, fmt.Errorf("%w: node starting", presence.ErrUnavailable)
	}
	if method < firstServerMethod {
		r := s.routerRef.Load()
		if r == nil {
			return nil, fmt.Errorf("%w: node starting", presence.ErrUnavailable)
		}
		if err := s.refuseWhileResuming(method); err != nil {
			return nil, err
		}
		return r.Handle(ctx, method, body)
	}
	switch method {
	case methodRaftState:
		has, err := s.store.HasExistingState()
		if err != nil {
			return nil, err
		}
		if has {
			return []byte{1}, nil
		}
		return []byte{0}, nil
	case methodPrefixWrite:
		var w prefixWrite
		if err := json.Unmarshal(body, &w); err != nil || w.Prefix == "" {
			return nil, fmt.Errorf("%w: malformed prefix write", presence.ErrInvalid)
		}
		// Only the leader applies: a follower answers ErrNotLeader and the
		// sender retries with the leader it learns next (one hop at most).
		return nil, s.applyWrite(ctx, w)
	case methodPrefixDigest:
		// The barrier makes the digest cover every committed document, even
		// right after this node was elected.
		if err := s.store.Barrier(s.timings.statusCall); err != nil {
			return nil, err
		}
		return documentsDigest(s.store.List()), nil
	case methodRaftProgress:
		return encodeProgress(s.store.Progress())
	}
	return nil, fmt.Errorf("%w: unknown transport method %d", presence.ErrInvalid, method)
}

// applyWrite writes to the local store, which refuses unless it leads.
func (s *Server) applyWrite(ctx context.Context, w prefixWrite) error {
	if w.Doc == nil {
		return s.store.Delete(ctx, w.Prefix)
	}
	return s.store.Put(ctx, w.Prefix, w.Doc)
}

// leaderWrite applies w through the Raft leader, here or over the
// transport. While no leader is known or reachable it holds and retries
// for up to LeaderHold, then answers presence.ErrUnavailable.
func (s *Server) leaderWrite(ctx context.Context, w prefixWrite) error {
	hold := time.NewTimer(s.cfg.LeaderHold)
	defer hold.Stop()
	backoff := s.timings.retryMin
	for {
		err := s.tryWrite(ctx, w)
		if !retryableWrite(err) {
			return storeError(err)
		}
		s.log.Debug("admin write held", "prefix", w.Prefix, "err", err)
		select {
		case <-hold.C:
			return fmt.Errorf("%w: no raft leader within %v: %v", presence.ErrUnavailable, s.cfg.LeaderHold, err)
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", presence.ErrUnavailable, ctx.Err())
		case <-s.ctx.Done():
			return fmt.Errorf("%w: node shutting down", presence.ErrUnavailable)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, maxWriteBackoff)
	}
}

// tryWrite makes one attempt, bounded by LeaderHold so a dead leader's
// address cannot keep the write past the hold.
func (s *Server) tryWrite(ctx context.Context, w prefixWrite) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LeaderHold)
	defer cancel()
	if s.store.IsLeader() {
		return s.applyWrite(ctx, w)
	}
	id, _ := s.store.Leader()
	if id == "" {
		return fmt.Errorf("%w: %w", raftstore.ErrNotLeader, raftstore.ErrNoLeader)
	}
	rec, ok := s.members.lookup(id)
	if !ok || rec.gone() || rec.Meta.RPC == "" {
		return fmt.Errorf("%w: %s", errLeaderUnreachable, id)
	}
	body, err := json.Marshal(w)
	if err != nil {
		return fmt.Errorf("encode prefix write: %w", err)
	}
	_, err = s.transport.Call(ctx, rec.Meta.RPC, methodPrefixWrite, body)
	return err
}

// retryableWrite reports errors that a new leader or a moment may cure.
func retryableWrite(err error) bool {
	return errors.Is(err, raftstore.ErrNotLeader) || errors.Is(err, raftstore.ErrClosed) ||
		errors.Is(err, transport.ErrPeerUnavailable) || errors.Is(err, errLeaderUnreachable)
}

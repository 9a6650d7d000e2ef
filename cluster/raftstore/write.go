package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/presencehq/presence/cluster/fsm"
)

// Put stores value under key. Only the leader accepts writes: elsewhere it
// fails at once with ErrNotLeader, and forwarding is the caller's business.
// It returns once the entry is committed and applied to the local map (and
// OnChange has run). If ctx ends first Put returns ctx's error, but the
// write may still be applied; so may a write that fails because leadership
// was lost while it was in flight. Writing the same value again is harmless.
func (s *Store) Put(ctx context.Context, key string, value []byte) error {
	if key == "" {
		return errors.New("raftstore: put: empty key")
	}
	if len(value) == 0 {
		return errors.New("raftstore: put: empty value")
	}
	return s.apply(ctx, fsm.Command{Op: fsm.OpPut, Key: key, Value: value})
}

// Delete removes key, with ErrKeyNotFound if the replicated map does not
// hold it at that point of the log. Leader only, like Put, and with the same
// caveats about cancellation and lost leadership.
func (s *Store) Delete(ctx context.Context, key string) error {
	if key == "" {
		return errors.New("raftstore: delete: empty key")
	}
	return s.apply(ctx, fsm.Command{Op: fsm.OpDelete, Key: key})
}

// apply submits cmd to the Raft log and returns the FSM's answer.
func (s *Store) apply(ctx context.Context, cmd fsm.Command) error {
	data, err := cmd.Encode()
	if err != nil {
		return err
	}
	f, err := await(ctx, s, func(timeout time.Duration) raft.ApplyFuture {
		return s.raft.Apply(data, timeout)
	})
	if err != nil {
		return err
	}
	if resp, ok := f.Response().(error); ok {
		return resp
	}
	return nil
}

// AddVoter adds a voting server, promotes a non-voter, or updates a
// voter's address, and returns once the new configuration is committed. A
// server already voting at addr is left alone, so callers may repeat the
// call. Leader only.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	return s.addServer(ctx, Server{ID: id, Addr: addr, Voter: true})
}

// AddNonvoter adds a server without a vote: it receives the log but takes
// no part in elections or commitment, so adding it never changes the
// quorum. A server already in the configuration at addr is left alone; at
// another address, its address is updated and a voter stays a voter (Raft's
// own rule). Leader only.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.addServer(ctx, Server{ID: id, Addr: addr})
}

// addServer adds srv with its suffrage unless the configuration already
// holds it (for a non-voter: holds it at that address, with any suffrage).
func (s *Store) addServer(ctx context.Context, srv Server) error {
	kind := "non-voter"
	if srv.Voter {
		kind = "voter"
	}
	if srv.ID == "" || srv.Addr == "" {
		return fmt.Errorf("raftstore: add %s: empty id or address", kind)
	}
	if err := s.checkLeader(); err != nil {
		return err
	}
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	if slices.ContainsFunc(servers, func(cur Server) bool {
		return cur.ID == srv.ID && cur.Addr == srv.Addr && (cur.Voter || !srv.Voter)
	}) {
		return nil
	}
	_, err = await(ctx, s, func(timeout time.Duration) raft.IndexFuture {
		if srv.Voter {
			return s.raft.AddVoter(raft.ServerID(srv.ID), raft.ServerAddress(srv.Addr), 0, timeout)
		}
		return s.raft.AddNonvoter(raft.ServerID(srv.ID), raft.ServerAddress(srv.Addr), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("raftstore: add %s %s: %w", kind, srv.ID, err)
	}
	return nil
}

// DemoteVoter takes a voter's vote away; it stays in the configuration as a
// non-voter and keeps receiving the log. A server that is not a voter, or
// not in the configuration, is left alone. Leader only.
func (s *Store) DemoteVoter(ctx context.Context, id string) error {
	if err := s.checkLeader(); err != nil {
		return err
	}
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(servers, func(srv Server) bool { return srv.ID == id && srv.Voter }) {
		return nil
	}
	_, err = await(ctx, s, func(timeout time.Duration) raft.IndexFuture {
		return s.raft.DemoteVoter(raft.ServerID(id), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("raftstore: demote voter %s: %w", id, err)
	}
	return nil
}

// RemoveServer removes a server from the configuration and returns once
// that is committed; an unknown id is not an error. Removing the leader
// itself is allowed: it steps down afterwards. Leader only.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	if err := s.checkLeader(); err != nil {
		return err
	}
	servers, err := s.Servers()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(servers, func(srv Server) bool { return srv.ID == id }) {
		return nil
	}
	_, err = await(ctx, s, func(timeout time.Duration) raft.IndexFuture {
		return s.raft.RemoveServer(raft.ServerID(id), 0, timeout)
	})
	if err != nil {
		return fmt.Errorf("raftstore: remove server %s: %w", id, err)
	}
	return nil
}

// await checks leadership, starts a Raft operation and waits for it or
// for ctx. The operation runs in its own goroutine because Raft's futures
// cannot be selected on; Raft answers every future, at the latest on
// shutdown, so the goroutine always ends.
func await[F raft.Future](ctx context.Context, s *Store, start func(timeout time.Duration) F) (F, error) {
	var zero F
	if err := ctx.Err(); err != nil {
		return zero, err
	}
	if err := s.checkLeader(); err != nil {
		return zero, err
	}
	// Raft's timeout bounds only the wait to enqueue; zero means none.
	var timeout time.Duration
	if deadline, ok := ctx.Deadline(); ok {
		if timeout = time.Until(deadline); timeout <= 0 {
			return zero, context.DeadlineExceeded
		}
	}
	type result struct {
		f   F
		err error
	}
	done := make(chan result, 1)
	go func() {
		f := start(timeout)
		done <- result{f: f, err: f.Error()}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return zero, s.mapRaftErr(r.err)
		}
		return r.f, nil
	case <-ctx.Done():
		return zero, fmt.Errorf("raftstore: stopped waiting for raft, the change may still apply: %w", ctx.Err())
	}
}

// checkLeader answers nil on the leader and the reason for refusing a write
// elsewhere.
func (s *Store) checkLeader() error {
	switch s.raft.State() {
	case raft.Leader:
		return nil
	case raft.Shutdown:
		return ErrClosed
	}
	return s.notLeaderErr()
}

// notLeaderErr wraps ErrNotLeader with the leader, if known, or ErrNoLeader.
func (s *Store) notLeaderErr() error {
	addr, id := s.raft.LeaderWithID()
	if id == "" {
		return fmt.Errorf("%w: %w", ErrNotLeader, ErrNoLeader)
	}
	return fmt.Errorf("%w: leader is %s at %s", ErrNotLeader, id, addr)
}

// mapRaftErr translates Raft's errors into this package's sentinels, keeping
// the original in the chain.
func (s *Store) mapRaftErr(err error) error {
	switch {
	case errors.Is(err, raft.ErrRaftShutdown):
		return fmt.Errorf("%w: %w", ErrClosed, err)
	case errors.Is(err, raft.ErrNotLeader),
		errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%w (%w)", s.notLeaderErr(), err)
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return fmt.Errorf("%w: %w", context.DeadlineExceeded, err)
	}
	return err
}

package raftstore

import (
	"errors"
	"slices"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
)

// suffrageOf returns id's entry in s's configuration.
func suffrageOf(t *testing.T, s *Store, id string) (Server, bool) {
	t.Helper()
	servers, err := s.Servers()
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(servers, func(srv Server) bool { return srv.ID == id })
	if i < 0 {
		return Server{}, false
	}
	return servers[i], true
}

// TestStoreNonvoterPromotedAndDemoted: a non-voter receives the log
// without a vote, reports its progress, is promoted by AddVoter and
// demoted again; repeated calls change nothing; an address update keeps
// the suffrage.
func TestStoreNonvoterPromotedAndDemoted(t *testing.T) {
	ctx := testContext(t)
	s1 := openForTest(t, Config{NodeID: "n1", Bootstrap: true})
	s2 := openForTest(t, Config{NodeID: "n2"})
	testkit.WaitFor(t, "n1 to lead", s1.IsLeader)
	if err := s1.Put(ctx, "a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second call finds n2 already there
		if err := s1.AddNonvoter(ctx, "n2", s2.Addr()); err != nil {
			t.Fatal(err)
		}
	}
	if srv, ok := suffrageOf(t, s1, "n2"); !ok || srv.Voter || srv.Addr != s2.Addr() {
		t.Fatalf("n2 after AddNonvoter: %+v, %v; want a non-voter at %s", srv, ok, s2.Addr())
	}
	testkit.WaitFor(t, "the non-voter to receive the log", func() bool { return holds(s2, "a", "1") })
	// Raft notes the leader's contact once it has handled the append.
	testkit.WaitFor(t, "the non-voter to report the leader's contact", func() bool { return s2.Progress().LastContact >= 0 })
	leader, follower := s1.Progress(), s2.Progress()
	if leader.LastContact != 0 || follower.Term != leader.Term || follower.LastIndex == 0 || follower.LastIndex > leader.LastIndex {
		t.Fatalf("progress: leader %+v, non-voter %+v", leader, follower)
	}

	if err := s1.AddVoter(ctx, "n2", s2.Addr()); err != nil {
		t.Fatal(err)
	}
	if srv, _ := suffrageOf(t, s1, "n2"); !srv.Voter {
		t.Fatalf("n2 after AddVoter: %+v, want a voter", srv)
	}
	// AddNonvoter on a voter only updates its address; Raft keeps the vote.
	if err := s1.AddNonvoter(ctx, "n2", "127.0.0.1:1"); err != nil {
		t.Fatal(err)
	}
	if srv, _ := suffrageOf(t, s1, "n2"); !srv.Voter || srv.Addr != "127.0.0.1:1" {
		t.Fatalf("n2 after an address update: %+v, want a voter at 127.0.0.1:1", srv)
	}
	if err := s1.AddVoter(ctx, "n2", s2.Addr()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s1.DemoteVoter(ctx, "n2"); err != nil {
			t.Fatal(err)
		}
	}
	if srv, ok := suffrageOf(t, s1, "n2"); !ok || srv.Voter {
		t.Fatalf("n2 after DemoteVoter: %+v, %v; want a non-voter", srv, ok)
	}
	if err := s1.DemoteVoter(ctx, "unknown"); err != nil {
		t.Fatalf("DemoteVoter of an unknown server: %v", err)
	}
	if err := s2.AddNonvoter(ctx, "n3", "127.0.0.1:2"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddNonvoter on a non-voter = %v, want ErrNotLeader", err)
	}
	if err := s2.DemoteVoter(ctx, "n1"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("DemoteVoter on a non-voter = %v, want ErrNotLeader", err)
	}
	if err := s1.AddNonvoter(ctx, "", "127.0.0.1:2"); err == nil {
		t.Fatal("AddNonvoter without an id accepted")
	}
}

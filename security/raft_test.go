package security

import (
	"errors"
	"fmt"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/presencehq/presence/cluster/fsm"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/internal/testcluster"
)

// attackTerm is far beyond any term a test cluster reaches: a follower
// that accepted it would follow the attacker and refuse its real leader.
const attackTerm = 1 << 40

// raftHeader is the RPC header of the attacker's requests.
func raftHeader(trans *raft.NetworkTransport) raft.RPCHeader {
	return raft.RPCHeader{
		ProtocolVersion: raft.ProtocolVersionMax,
		ID:              []byte("attacker"),
		Addr:            trans.EncodePeer("attacker", trans.LocalAddr()),
	}
}

// requestVote asks the server at target to vote for the attacker in a term
// far ahead, with a log that looks longer than anyone's.
func requestVote(trans *raft.NetworkTransport, id, target string) error {
	req := &raft.RequestVoteRequest{
		RPCHeader:    raftHeader(trans),
		Term:         attackTerm,
		LastLogIndex: attackTerm,
		LastLogTerm:  attackTerm,
	}
	return trans.RequestVote(raft.ServerID(id), raft.ServerAddress(target), req, &raft.RequestVoteResponse{})
}

// plantDocument plays a leader of a term far ahead to the follower at
// target and appends, then commits, a log entry storing prefix's document:
// a first append learns the follower's last index, then the entry goes
// right after it, trying the small terms a test cluster has for the entry
// before it. It returns the first error, nil once the follower took it.
func plantDocument(trans *raft.NetworkTransport, id, target, prefix string) error {
	probe := &raft.AppendEntriesRequest{RPCHeader: raftHeader(trans), Term: attackTerm, PrevLogEntry: attackTerm}
	var resp raft.AppendEntriesResponse
	if err := trans.AppendEntries(raft.ServerID(id), raft.ServerAddress(target), probe, &resp); err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	doc := `{"rules": [{"match": "/.+", "config": {"public": true}}]}`
	data, err := fsm.Command{Op: fsm.OpPut, Key: prefix, Value: []byte(doc)}.Encode()
	if err != nil {
		return err
	}
	last := resp.LastLog
	for prevTerm := uint64(1); prevTerm <= 100; prevTerm++ {
		req := &raft.AppendEntriesRequest{
			RPCHeader:         raftHeader(trans),
			Term:              attackTerm,
			PrevLogEntry:      last,
			PrevLogTerm:       prevTerm,
			Entries:           []*raft.Log{{Index: last + 1, Term: attackTerm, Type: raft.LogCommand, Data: data}},
			LeaderCommitIndex: last + 1,
		}
		if err := trans.AppendEntries(raft.ServerID(id), raft.ServerAddress(target), req, &resp); err != nil {
			return fmt.Errorf("append: %w", err)
		}
		if resp.Success {
			return nil
		}
	}
	return errors.New("no term of the follower's last entry matched")
}

// raftAttack runs both attacks against every node of c and fails the test
// if any node answered; then it checks that the cluster kept its leader,
// its documents and no planted one.
func raftAttack(t *testing.T, c *testcluster.Cluster, trans *raft.NetworkTransport) {
	t.Helper()
	leader := c.Leader()
	for _, n := range c.Running() {
		target := n.Server().RPCAddr()
		if err := requestVote(trans, n.Name, target); err == nil {
			t.Errorf("%s answered a vote request of an attacker", n.Name)
		}
		if err := plantDocument(trans, n.Name, target, "pwned"); err == nil {
			t.Errorf("%s accepted an attacker's log entry", n.Name)
		}
	}
	putDocument(t, c, 0, "after") // the cluster still commits
	c.WaitFor(settle, func() error {
		for _, n := range c.Running() {
			if !hasDocument(t, c, n.Index, "after") {
				return fmt.Errorf("%s lacks the document written after the attack", n.Name)
			}
		}
		return nil
	})
	for _, n := range c.Running() {
		if hasDocument(t, c, n.Index, "pwned") {
			t.Errorf("%s serves the attacker's document", n.Name)
		}
	}
	if got := c.Leader(); got != leader {
		t.Errorf("the Raft leader changed during the attack: node%d, then node%d", leader, got)
	}
}

// TestRaftRefusesAnAttackerWithoutTheKey: hashicorp/raft's own transport,
// speaking Raft over plain TCP to the port where a node serves Raft, can
// neither get a vote nor append a log entry, at any node.
func TestRaftRefusesAnAttackerWithoutTheKey(t *testing.T) {
	c := startCluster(t, 3)
	raftAttack(t, c, newRaftAttacker(t, tcpLayer{listenTCP(t)}))
}

// TestRaftRefusesAnAttackerWithAnotherKey: the same attacks inside the
// node-to-node protocol, by a transport with a key of its own, fail at the
// handshake.
func TestRaftRefusesAnAttackerWithAnotherKey(t *testing.T) {
	c := startCluster(t, 3)
	tr, err := transport.Listen(transport.Config{BindAddr: "127.0.0.1:0", Key: randomKey()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	raftAttack(t, c, newRaftAttacker(t, streamsLayer{tr.Streams()}))
}

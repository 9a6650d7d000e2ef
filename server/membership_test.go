package server

import (
	"context"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// rejoinTestTimeout bounds every wait of these tests.
const rejoinTestTimeout = 20 * time.Second

// partitionHold is how long a node stays down in these tests: past
// memberlist's GossipToTheDeadTime in its fast timings (2 s), after which
// nobody gossips to the dead or probes them. It is the fault's duration,
// not a wait for a result.
const partitionHold = 4 * time.Second

// The partition healer's own tests are in cluster/membership.

// TestServerRejoinsARestartedSeed: a seed node without --join crashes and
// comes back at the same address; nothing but the other node's rejoin
// loop can bring the two together again.
func TestServerRejoinsARestartedSeed(t *testing.T) {
	log := testkit.FailureLogger(t)
	cfg := func(name string, gossip string, join ...string) Config {
		return Config{Name: name, HTTPAddr: "127.0.0.1:0", GossipAddr: gossip,
			RPCAddr: "127.0.0.1:0", Join: join, DataDir: filepath.Join(t.TempDir(), name),
			JWTSecrets: []string{"rejoin-test-secret"}, AdminToken: "rejoin-test-token",
			FastTimings: true, FastGossip: true,
			Logger: log}
	}
	gossip0 := "127.0.0.1:" + strconv.Itoa(gossipPorts.MustTake(t, true))
	cfg0 := cfg("node0", gossip0)
	s0 := startServer(t, cfg0)
	s1 := startServer(t, cfg("node1", "127.0.0.1:"+strconv.Itoa(gossipPorts.MustTake(t, true)), gossip0))
	testkit.WaitForWithin(t, rejoinTestTimeout, "node1 to join node0", func() bool { return len(s1.membership().Members()) == 2 })
	s0.Kill()
	testkit.WaitForWithin(t, rejoinTestTimeout, "node1 to see node0 dead", func() bool { return len(s1.membership().Failed()) == 1 })
	time.Sleep(partitionHold) // down long enough that node1 no longer gossips to it
	s0 = startServer(t, cfg0)
	for _, s := range []*Server{s0, s1} {
		testkit.WaitForWithin(t, rejoinTestTimeout, s.Name()+" to see both nodes", func() bool { return len(s.membership().Members()) == 2 })
	}
}

func startServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background()); err != nil {
		s.Kill()
		t.Fatal(err)
	}
	t.Cleanup(s.Kill)
	return s
}

// gossipPorts hands out the gossip ports of these tests' nodes.
var gossipPorts testkit.Ports

package server

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strconv"
	"sync"
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

// TestServerRejoinsARestartedSeed: a seed node without --join crashes and
// comes back at the same address; nothing but the other node's rejoin
// loop can bring the two together again.
func TestServerRejoinsARestartedSeed(t *testing.T) {
	logs := &syncBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	})
	cfg := func(name string, gossip string, join ...string) Config {
		return Config{Name: name, HTTPAddr: "127.0.0.1:0", GossipAddr: gossip, RaftAddr: "127.0.0.1:0",
			RPCAddr: "127.0.0.1:0", Join: join, DataDir: filepath.Join(t.TempDir(), name),
			JWTSecrets: []string{"rejoin-test-secret"}, AdminToken: "rejoin-test-token",
			FastTimings: true, FastGossip: true,
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	}
	gossip0 := "127.0.0.1:" + strconv.Itoa(rejoinFreePort(t))
	cfg0 := cfg("node0", gossip0)
	s0 := startServer(t, cfg0)
	s1 := startServer(t, cfg("node1", "127.0.0.1:"+strconv.Itoa(rejoinFreePort(t)), gossip0))
	rejoinWaitFor(t, "node1 to join node0", func() bool { return len(s1.membership().Members()) == 2 })
	s0.Kill()
	rejoinWaitFor(t, "node1 to see node0 dead", func() bool { return len(s1.membership().Failed()) == 1 })
	time.Sleep(partitionHold) // down long enough that node1 no longer gossips to it
	s0 = startServer(t, cfg0)
	for _, s := range []*Server{s0, s1} {
		rejoinWaitFor(t, s.Name()+" to see both nodes", func() bool { return len(s.membership().Members()) == 2 })
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

// syncBuffer collects log lines from many goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// gossipPorts hands out the gossip ports of these tests' nodes.
var gossipPorts testkit.Ports

// rejoinFreePort returns a port free for TCP and UDP on 127.0.0.1.
func rejoinFreePort(t *testing.T) int {
	t.Helper()
	port, err := gossipPorts.Take(true)
	if err != nil {
		t.Fatal(err)
	}
	return port
}

func rejoinWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testkit.WaitForWithin(t, rejoinTestTimeout, what, cond)
}

package server_test

import (
	"context"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// TestWholeClusterBackAtOtherAddresses: every node restarts at another rpc
// address (pods rescheduled with new IPs), so the Raft configuration on
// every disk names addresses nobody listens on and there is no leader to
// correct it. Raft servers are known by name and dialled at the address
// gossip gives, so the cluster elects a leader, keeps its documents and
// replicates new ones (#18).
func TestWholeClusterBackAtOtherAddresses(t *testing.T) {
	var moved atomic.Bool
	c := testcluster.Start(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		if moved.Load() {
			cfg.RPCAddr = "127.0.0.1:0" // a port the kernel picks: another address
		}
	}))
	c.WaitReady()
	putPrefix(t, c, 0, "before", publicDoc("before"))
	waitPrefixEverywhere(t, c, "before", true, settleTimeout)
	old := map[int]string{}
	for i := range 3 {
		old[i] = c.Node(i).Server().RPCAddr()
		c.Kill(i)
	}
	moved.Store(true)
	for i := range 3 {
		c.StartNode(i)
	}
	for i := range 3 {
		if addr := c.Node(i).Server().RPCAddr(); addr == old[i] {
			t.Fatalf("node%d came back at its old address %s", i, addr)
		}
	}
	c.WaitReady()
	waitPrefixEverywhere(t, c, "before", true, settleTimeout)
	putPrefix(t, c, waitLeader(t, c), "after", publicDoc("after"))
	waitPrefixEverywhere(t, c, "after", true, settleTimeout)
}

// tcpStreams runs a raftstore over plain TCP, as the previous release ran
// Raft on a port of its own.
type tcpStreams struct{ net.Listener }

func (tcpStreams) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// legacyDataDirs writes the data directories of a three-server Raft
// cluster that ran on ports of its own (as --raft did), holding the
// document of prefix, and returns them by node name.
func legacyDataDirs(t *testing.T, prefix string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), settleTimeout)
	defer cancel()
	names := []string{"node0", "node1", "node2"}
	dirs := map[string]string{}
	var stores []*raftstore.Store
	var servers []raftstore.Server
	for _, name := range names {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		dirs[name] = filepath.Join(t.TempDir(), name)
		s, err := raftstore.Open(raftstore.Config{NodeID: name, Streams: tcpStreams{ln}, Addr: ln.Addr().String(),
			DataDir: dirs[name], Fast: true, Logger: testkit.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		stores = append(stores, s)
		servers = append(servers, raftstore.Server{ID: name, Addr: ln.Addr().String(), Voter: true})
	}
	for _, s := range stores {
		if err := s.BootstrapCluster(servers); err != nil {
			t.Fatal(err)
		}
	}
	doc := []byte(publicDoc(prefix))
	testkit.WaitFor(t, "the legacy cluster to store the document", func() bool {
		for _, s := range stores {
			if s.IsLeader() && s.Put(ctx, prefix, doc) == nil {
				return true
			}
		}
		return false
	})
	testkit.WaitFor(t, "the document on every legacy server", func() bool {
		for _, s := range stores {
			if _, ok := s.Get(prefix); !ok {
				return false
			}
		}
		return true
	})
	for _, s := range stores {
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return dirs
}

// TestDataDirsOfTheSeparateRaftPortRelease: nodes started on data
// directories written when Raft had a port of its own, whose
// configuration names the servers at those ports (closed now), form the
// cluster again over the rpc port, keep the document stored then and
// store new ones.
func TestDataDirsOfTheSeparateRaftPortRelease(t *testing.T) {
	dirs := legacyDataDirs(t, "legacy")
	c := testcluster.Start(t, 3, testcluster.WithConfig(func(i int, cfg *server.Config) {
		cfg.DataDir = dirs[cfg.Name]
	}))
	c.WaitReady()
	waitPrefixEverywhere(t, c, "legacy", true, settleTimeout)
	putPrefix(t, c, waitLeader(t, c), "after", publicDoc("after"))
	waitPrefixEverywhere(t, c, "after", true, settleTimeout)
}

package security

import (
	"bytes"
	"context"
	"crypto/rand"
	"net"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/internal/testcluster"
)

// settle bounds waits for a cluster to converge; a deadline for failure,
// never a duration a test relies on.
const settle = 30 * time.Second

// attackTimeout bounds one attacking call.
const attackTimeout = 3 * time.Second

// methodPrefixWrite is the server's transport method that applies an
// admin write on the Raft leader (server/rpc.go): the most damaging call
// an intruder could make, as it rewrites a prefix's permissions.
const methodPrefixWrite = 101

// startCluster starts n nodes and waits until they are ready.
func startCluster(t *testing.T, n int, opts ...testcluster.Option) *testcluster.Cluster {
	t.Helper()
	c := testcluster.Start(t, n, opts...)
	c.WaitReady()
	return c
}

// putDocument stores a public prefix document through node i.
func putDocument(t *testing.T, c *testcluster.Cluster, i int, prefix string) {
	t.Helper()
	doc := `{"rules": [{"match": "/` + prefix + `/.+", "config": {"public": true}}]}`
	status, body, err := c.Node(i).Admin().Do("PUT", "/admin/prefixes/"+prefix, doc)
	if err != nil || status != 200 {
		t.Fatalf("PUT /admin/prefixes/%s on node%d: %d %s %v", prefix, i, status, body, err)
	}
}

// hasDocument reports whether node i serves prefix's document.
func hasDocument(t *testing.T, c *testcluster.Cluster, i int, prefix string) bool {
	t.Helper()
	status, body, err := c.Node(i).Admin().Do("GET", "/admin/prefixes/"+prefix, nil)
	if err != nil {
		t.Fatalf("GET /admin/prefixes/%s on node%d: %v", prefix, i, err)
	}
	if status != 200 && status != 404 {
		t.Fatalf("GET /admin/prefixes/%s on node%d: %d %s", prefix, i, status, body)
	}
	return status == 200
}

// randomKey returns a cluster key nobody in the cluster has.
func randomKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// quietLogger discards hashicorp/raft's own log lines.
func quietLogger() hclog.Logger { return hclog.NewNullLogger() }

// tcpLayer is a raft.StreamLayer over plain TCP: an attacker who speaks
// hashicorp/raft's protocol and nothing else.
type tcpLayer struct{ net.Listener }

func (l tcpLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	return net.DialTimeout("tcp", string(addr), timeout)
}

// streamsLayer is a raft.StreamLayer over a presence transport's streams:
// an attacker who speaks the node-to-node protocol with its own key (or
// certificate) and Raft inside it.
type streamsLayer struct{ s *transport.Streams }

func (l streamsLayer) Accept() (net.Conn, error) { return l.s.Accept() }
func (l streamsLayer) Close() error              { return l.s.Close() }
func (l streamsLayer) Addr() net.Addr            { return l.s.Addr() }
func (l streamsLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return l.s.DialContext(ctx, string(addr))
}

// newRaftAttacker returns hashicorp/raft's network transport over layer,
// closed at cleanup.
func newRaftAttacker(t *testing.T, layer raft.StreamLayer) *raft.NetworkTransport {
	t.Helper()
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: layer, MaxPool: 1, Timeout: attackTimeout, Logger: quietLogger(),
	})
	t.Cleanup(func() { trans.Close() })
	return trans
}

// listenTCP returns a loopback listener closed at cleanup.
func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// contains reports whether any of needles occurs in haystack.
func contains(haystack []byte, needles ...string) []string {
	var found []string
	for _, n := range needles {
		if bytes.Contains(haystack, []byte(n)) {
			found = append(found, n)
		}
	}
	return found
}

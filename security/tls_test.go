package security

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/presencehq/presence/cluster/peertls"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// foreignFiles writes a node certificate of another CA for name, with a CA
// file trusting both that CA and the cluster's (so that the refusal tested
// is the cluster's, not the intruder's), and returns the files.
func foreignFiles(t *testing.T, clusterCA *testkit.CA, name string) peertls.Files {
	t.Helper()
	other := testkit.NewCA(t, "another CA")
	cert, key, caFile := other.WriteFiles(t, t.TempDir(), name, other.Issue(t, name, testkit.LeafOptions{}))
	if err := os.WriteFile(caFile, append(append([]byte{}, other.PEM...), clusterCA.PEM...), 0o600); err != nil {
		t.Fatal(err)
	}
	return peertls.Files{Cert: cert, Key: key, CA: caFile}
}

// TestTLSRefusesANodeOfAnotherCA: in a cluster with mutual TLS, a node
// that has the cluster key but a certificate of another CA is refused on
// every node-to-node connection: calls and Raft, dialled by it or to it.
// It gets into gossip (the key suffices there) but never into Raft: it
// knows no leader and never receives a prefix document.
func TestTLSRefusesANodeOfAnotherCA(t *testing.T) {
	logger, logs := testkit.CapturedLogger()
	var c *testcluster.Cluster
	var intruder peertls.Files
	c = testcluster.New(t, 4, testcluster.WithTLS(), testcluster.WithBootstrapExpect(3),
		testcluster.WithConfig(func(i int, cfg *server.Config) {
			if i == 3 {
				cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = intruder.Cert, intruder.Key, intruder.CA
				return
			}
			cfg.Logger = logger // the cluster's nodes, to see them refuse node3
		}))
	intruder = foreignFiles(t, c.CA(), "node3")
	for i := range 3 {
		c.StartNode(i)
	}
	c.WaitReady()

	// Calls and Raft from a transport with the key and the foreign
	// certificate.
	m, err := peertls.Load(intruder)
	if err != nil {
		t.Fatal(err)
	}
	tr, err := transport.Listen(transport.Config{BindAddr: "127.0.0.1:0", Key: c.Key(),
		ServerTLS: m.ServerConfig(), ClientTLS: m.ClientConfig(), CallTimeout: attackTimeout})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	for _, n := range c.Running() {
		if _, err := tr.Call(ctx, n.Server().RPCAddr(), methodPrefixWrite, prefixWrite(t, "pwned")); !refusedBeforeServing(err) {
			t.Errorf("%s: a call with a foreign certificate: %v", n.Name, err)
		}
	}
	raftAttack(t, c, newRaftAttacker(t, streamsLayer{tr.Streams()}))

	// A whole node with the foreign certificate.
	c.StartNode(3)
	c.WaitFor(settle, func() error {
		view, err := c.Node(0).Admin().Cluster()
		if err != nil {
			return err
		}
		if !slices.Contains(view.Alive(), "node3") {
			return fmt.Errorf("node0 does not see node3 in gossip yet: %v", view.Alive())
		}
		return nil
	})
	putDocument(t, c, 0, "after")
	c.WaitFor(settle, func() error {
		for i := range 3 {
			if !hasDocument(t, c, i, "after") {
				return fmt.Errorf("node%d lacks the document", i)
			}
		}
		if !strings.Contains(logs.String(), "transport handshake refused") {
			return fmt.Errorf("no node has refused node3's certificate yet")
		}
		return nil
	})
	if hasDocument(t, c, 3, "after") {
		t.Fatal("the node of another CA received a prefix document")
	}
	view, err := c.Node(3).Admin().Cluster()
	if err != nil {
		t.Fatal(err)
	}
	if view.Raft.Leader != "" {
		t.Fatalf("the node of another CA follows the leader %s", view.Raft.Leader)
	}
	if status, _, _ := c.Node(3).Client("").Do("GET", "/readyz", nil); status == 200 {
		t.Fatal("the node of another CA is ready")
	}
}

package security

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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

// TestCARotationWithoutRestart rotates the cluster's CA on running nodes
// with ReloadTLS (what SIGHUP calls), as documented: trust the old and the
// new CA, then give every node a certificate of the new CA, then trust
// only the new one. Users heartbeat all along, never refused; at the end
// a certificate of the old CA is refused, one of the new accepted, and a
// node holding only the new CA's files joins the cluster.
func TestCARotationWithoutRestart(t *testing.T) {
	newCA := testkit.NewCA(t, "new CA")
	newFiles := map[string]peertls.Files{}
	var c *testcluster.Cluster
	c = testcluster.New(t, 4, testcluster.WithTLS(), testcluster.WithBootstrapExpect(3),
		testcluster.WithConfig(func(i int, cfg *server.Config) {
			if f, ok := newFiles[cfg.Name]; ok && i == 3 {
				cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = f.Cert, f.Key, f.CA
			}
		}))
	for i := range 3 {
		c.StartNode(i)
	}
	c.WaitReady()
	putDocument(t, c, 0, "rot")
	var tokens []string
	for i := range probeUsers {
		tokens = append(tokens, testcluster.Token(fmt.Sprint(100+i)))
	}
	p := startProber(c, "/rot/room", tokens)
	caFile := filepath.Join(c.Dir(), "ca.pem") // every node's --tls-ca
	reloadAll := func(step string) {
		for _, n := range c.Running() {
			if err := n.Server().ReloadTLS(); err != nil {
				t.Fatalf("%s: %s: %v", step, n.Name, err)
			}
		}
	}
	// probe dials every node afresh with a certificate of each CA, trusting
	// both (the nodes decide), and checks which the nodes accept.
	probeFiles := map[string]peertls.Files{}
	for name, ca := range map[string]*testkit.CA{"old": c.CA(), "new": newCA} {
		cert, key, file := ca.WriteFiles(t, t.TempDir(), "probe", ca.Issue(t, "probe", testkit.LeafOptions{}))
		writeFile(t, file, c.CA().PEM, newCA.PEM)
		probeFiles[name] = peertls.Files{Cert: cert, Key: key, CA: file}
	}
	ctx, cancel := context.WithTimeout(context.Background(), settle)
	defer cancel()
	accepts := func(step string, want map[string]bool) {
		t.Helper()
		for name, files := range probeFiles {
			m, err := peertls.Load(files)
			if err != nil {
				t.Fatal(err)
			}
			tr, err := transport.Listen(transport.Config{BindAddr: "127.0.0.1:0", Key: c.Key(),
				ServerTLS: m.ServerConfig(), ClientTLS: m.ClientConfig(), CallTimeout: attackTimeout})
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range c.Running() {
				_, err := tr.Call(ctx, n.Server().RPCAddr(), 999, nil)
				if refused := refusedBeforeServing(err); refused == want[name] {
					t.Errorf("%s: %s: a certificate of the %s CA: %v", step, n.Name, name, err)
				}
			}
			tr.Close()
		}
		p.waitRounds(t, probeUsers) // users keep being served after the step
	}
	accepts("before", map[string]bool{"old": true})
	writeFile(t, caFile, c.CA().PEM, newCA.PEM)
	reloadAll("trust both CAs")
	accepts("trusting both", map[string]bool{"old": true, "new": true})
	for _, n := range c.Running() {
		leaf := newCA.Issue(t, n.Name, testkit.LeafOptions{})
		writeFile(t, filepath.Join(c.Dir(), n.Name+"-key.pem"), leaf.KeyPEM)
		writeFile(t, filepath.Join(c.Dir(), n.Name+".pem"), leaf.CertPEM)
		if err := n.Server().ReloadTLS(); err != nil {
			t.Fatalf("new certificate of %s: %v", n.Name, err)
		}
		accepts("new certificate of "+n.Name, map[string]bool{"old": true, "new": true})
	}
	writeFile(t, caFile, newCA.PEM)
	reloadAll("trust the new CA only")
	accepts("after", map[string]bool{"new": true})
	p.finish(t)

	cert, key, file := newCA.WriteFiles(t, t.TempDir(), "node3", newCA.Issue(t, "node3", testkit.LeafOptions{}))
	newFiles["node3"] = peertls.Files{Cert: cert, Key: key, CA: file}
	c.StartNode(3) // a node of the new CA alone: the others dial it and it them
	c.WaitReady()
}

// writeFile writes the concatenation of parts to path.
func writeFile(t *testing.T, path string, parts ...[]byte) {
	t.Helper()
	var data []byte
	for _, p := range parts {
		data = append(data, p...)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

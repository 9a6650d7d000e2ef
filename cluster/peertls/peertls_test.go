package peertls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// write puts leaf and ca's certificate into a fresh directory.
func write(t *testing.T, ca *testkit.CA, leaf testkit.Leaf) Files {
	t.Helper()
	cert, key, caFile := ca.WriteFiles(t, t.TempDir(), "node", leaf)
	return Files{Cert: cert, Key: key, CA: caFile}
}

// handshake runs a TLS handshake over loopback between a server and a
// client built from the two materials and reports each side's error.
func handshake(t *testing.T, server, client *Material) (serverErr, clientErr error) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	deadline := time.Now().Add(10 * time.Second)
	done := make(chan error, 1)
	go func() {
		nc, err := ln.Accept()
		if err != nil {
			done <- err
			return
		}
		defer nc.Close()
		_ = nc.SetDeadline(deadline)
		s := tls.Server(nc, server.ServerConfig())
		err = s.Handshake()
		if err == nil {
			// In TLS 1.3 the client's certificate is checked after the
			// client's handshake returned: its read sees the outcome.
			_, err = s.Write([]byte{1})
		}
		done <- err
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(deadline)
	c := tls.Client(nc, client.ClientConfig())
	clientErr = c.Handshake()
	if clientErr == nil {
		_, clientErr = io.ReadFull(c, make([]byte, 1))
	}
	nc.Close()
	return <-done, clientErr
}

// trusting writes the certificates of cas into files' CA file.
func trusting(t *testing.T, files Files, cas ...*testkit.CA) Files {
	t.Helper()
	var bundle []byte
	for _, ca := range cas {
		bundle = append(bundle, ca.PEM...)
	}
	if err := os.WriteFile(files.CA, bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	return files
}

func mustLoad(t *testing.T, files Files) *Material {
	t.Helper()
	m, err := Load(files)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestNodesOfOneCAConnect(t *testing.T) {
	ca := testkit.NewCA(t, "cluster CA")
	for name, opts := range map[string]testkit.LeafOptions{"ECDSA": {}, "Ed25519": {Ed25519: true}} {
		t.Run(name, func(t *testing.T) {
			a := mustLoad(t, write(t, ca, ca.Issue(t, "node1", opts)))
			b := mustLoad(t, write(t, ca, ca.Issue(t, "node2", opts)))
			if serr, cerr := handshake(t, a, b); serr != nil || cerr != nil {
				t.Fatalf("server %v, client %v", serr, cerr)
			}
		})
	}
}

func TestANodeOfAnotherCAIsRefusedBothWays(t *testing.T) {
	ca, other := testkit.NewCA(t, "cluster CA"), testkit.NewCA(t, "another CA")
	node := mustLoad(t, write(t, ca, ca.Issue(t, "node1", testkit.LeafOptions{})))
	// The stranger trusts the cluster's CA too, so that the refusal
	// tested is the node's, not the stranger's.
	stranger := mustLoad(t, trusting(t, write(t, other, other.Issue(t, "node1", testkit.LeafOptions{})), ca, other))
	var verr *tls.CertificateVerificationError
	if serr, _ := handshake(t, node, stranger); !errors.As(serr, &verr) {
		t.Fatalf("a dialler of another CA: server error %v, want a verification error", serr)
	}
	if _, cerr := handshake(t, stranger, node); !errors.As(cerr, &verr) {
		t.Fatalf("a server of another CA: client error %v, want a verification error", cerr)
	}
}

func TestLoadRefusesWhatIsNotANodeCertificate(t *testing.T) {
	ca, other := testkit.NewCA(t, "cluster CA"), testkit.NewCA(t, "another CA")
	cases := map[string]Files{
		"another CA's certificate": func() Files {
			f := write(t, other, other.Issue(t, "n", testkit.LeafOptions{}))
			f.CA = write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{})).CA
			return f
		}(),
		"server authentication only": write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})),
		"client authentication only": write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{Usages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})),
		"expired":                    write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{NotAfter: time.Now().Add(-time.Minute)})),
		"a key of another certificate": func() Files {
			f := write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{}))
			f.Key = write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{})).Key
			return f
		}(),
		"no CA file": func() Files {
			f := write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{}))
			f.CA = filepath.Join(t.TempDir(), "missing.pem")
			return f
		}(),
		"a CA file without certificates": func() Files {
			f := write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{}))
			if err := os.WriteFile(f.CA, []byte("not pem"), 0o600); err != nil {
				t.Fatal(err)
			}
			return f
		}(),
	}
	for name, files := range cases {
		if _, err := Load(files); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: Load = %v, want ErrInvalid", name, err)
		}
	}
}

// TestReloadRotatesTheCA follows the documented CA rotation: both CAs
// trusted, then a certificate of the new CA, then the old CA dropped. A
// failed reload keeps what was loaded.
func TestReloadRotatesTheCA(t *testing.T) {
	oldCA, newCA := testkit.NewCA(t, "old CA"), testkit.NewCA(t, "new CA")
	files := write(t, oldCA, oldCA.Issue(t, "node1", testkit.LeafOptions{}))
	node := mustLoad(t, files)
	// A node already moved to the new CA, still trusting both.
	peer := mustLoad(t, trusting(t, write(t, newCA, newCA.Issue(t, "node2", testkit.LeafOptions{})), oldCA, newCA))
	if serr, _ := handshake(t, node, peer); serr == nil {
		t.Fatal("a peer of a CA not trusted yet was accepted")
	}
	trusting(t, files, oldCA, newCA)
	if err := node.Reload(); err != nil {
		t.Fatal(err)
	}
	if serr, cerr := handshake(t, node, peer); serr != nil || cerr != nil {
		t.Fatalf("after trusting both CAs: server %v, client %v", serr, cerr)
	}
	// A renewal half written: the key does not match yet. The old
	// certificate stays in use.
	renewed := newCA.Issue(t, "node1", testkit.LeafOptions{})
	if err := os.WriteFile(files.Cert, renewed.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := node.Reload(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("reload of a mismatched pair: %v", err)
	}
	if got := node.Certificate().Issuer.CommonName; got != "old CA" {
		t.Fatalf("after a failed reload the certificate is from %q", got)
	}
	if err := os.WriteFile(files.Key, renewed.KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(files.CA, newCA.PEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := node.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := node.Certificate().Issuer.CommonName; got != "new CA" {
		t.Fatalf("after the reload the certificate is from %q", got)
	}
	if serr, cerr := handshake(t, node, peer); serr != nil || cerr != nil {
		t.Fatalf("after the rotation: server %v, client %v", serr, cerr)
	}
	old := mustLoad(t, trusting(t, write(t, oldCA, oldCA.Issue(t, "node3", testkit.LeafOptions{})), oldCA, newCA))
	if serr, _ := handshake(t, node, old); serr == nil {
		t.Fatal("a node of the dropped CA is still accepted")
	}
}

func TestConfigsRequireTLS13(t *testing.T) {
	ca := testkit.NewCA(t, "ca")
	m := mustLoad(t, write(t, ca, ca.Issue(t, "n", testkit.LeafOptions{})))
	if m.ServerConfig().MinVersion != tls.VersionTLS13 || m.ClientConfig().MinVersion != tls.VersionTLS13 {
		t.Fatal("TLS below 1.3 allowed")
	}
	if m.ServerConfig().ClientAuth != tls.RequireAndVerifyClientCert {
		t.Fatal("client certificates not required")
	}
}

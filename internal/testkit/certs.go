package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a certificate authority for tests of TLS between nodes: it issues
// certificates as the cluster's CA would, or with the flaws a test needs
// (another authority, a missing usage, expired).
type CA struct {
	Cert *x509.Certificate
	PEM  []byte // the CA certificate, PEM
	key  crypto.Signer
}

// Leaf is a certificate issued by a CA, with its key.
type Leaf struct {
	CertPEM, KeyPEM []byte
	TLS             tls.Certificate
}

// LeafOptions vary Issue's certificate. The zero value is a node's: ECDSA
// P-256, server and client authentication, valid for a day.
type LeafOptions struct {
	Ed25519  bool               // an Ed25519 key instead of ECDSA P-256
	Usages   []x509.ExtKeyUsage // nil: server and client authentication
	NotAfter time.Time          // zero: a day from now
	Hosts    []string           // DNS names or IPs besides the name
}

// NewCA creates a self-signed CA named name.
func NewCA(t testing.TB, name string) *CA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, tpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &CA{Cert: cert, PEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), key: key}
}

// Pool returns a pool holding the CA.
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Issue signs a certificate for name (its common name and a DNS name).
func (ca *CA) Issue(t testing.TB, name string, opts LeafOptions) Leaf {
	t.Helper()
	var key crypto.Signer
	var err error
	if opts.Ed25519 {
		_, key, err = ed25519.GenerateKey(rand.Reader)
	} else {
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		t.Fatal(err)
	}
	if opts.Usages == nil {
		opts.Usages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	if opts.NotAfter.IsZero() {
		opts.NotAfter = time.Now().Add(24 * time.Hour)
	}
	tpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: name},
		DNSNames:     []string{name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     opts.NotAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  opts.Usages,
	}
	for _, h := range opts.Hosts {
		if ip := net.ParseIP(h); ip != nil {
			tpl.IPAddresses = append(tpl.IPAddresses, ip)
		} else {
			tpl.DNSNames = append(tpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, ca.Cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf := Leaf{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8}),
	}
	if leaf.TLS, err = tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM); err != nil {
		t.Fatal(err)
	}
	return leaf
}

// WriteFiles writes the leaf's certificate, its key and the CA into dir as
// <name>.pem, <name>-key.pem and ca.pem, and returns the three paths.
func (ca *CA) WriteFiles(t testing.TB, dir, name string, leaf Leaf) (cert, key, caFile string) {
	t.Helper()
	cert = filepath.Join(dir, name+".pem")
	key = filepath.Join(dir, name+"-key.pem")
	caFile = filepath.Join(dir, "ca.pem")
	for path, data := range map[string][]byte{cert: leaf.CertPEM, key: leaf.KeyPEM, caFile: ca.PEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return cert, key, caFile
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

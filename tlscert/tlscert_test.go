package tlscert

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var testNow = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

func parseCert(t *testing.T, certPEM []byte) *x509.Certificate {
	t.Helper()
	block, rest := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		t.Fatalf("not one PEM certificate: %q", certPEM)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func newCA(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	c, k, err := NewCA(CAOptions{Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	return c, k
}

func TestNewCA(t *testing.T) {
	certPEM, keyPEM := newCA(t)
	ca := parseCert(t, certPEM)
	if !ca.IsCA || !ca.BasicConstraintsValid || ca.MaxPathLen != 0 || !ca.MaxPathLenZero {
		t.Fatalf("not a leaf-only CA: IsCA %v MaxPathLen %d", ca.IsCA, ca.MaxPathLen)
	}
	if ca.KeyUsage&x509.KeyUsageCertSign == 0 || ca.Subject.CommonName != DefaultCACommonName {
		t.Fatalf("key usage %v, subject %v", ca.KeyUsage, ca.Subject)
	}
	if pub, ok := ca.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("public key %T, want ECDSA P-256", ca.PublicKey)
	}
	if !ca.NotAfter.Equal(testNow.Add(DefaultCAValidity)) || !ca.NotBefore.Before(testNow) {
		t.Fatalf("validity %s .. %s", ca.NotBefore, ca.NotAfter)
	}
	if len(ca.SubjectKeyId) == 0 {
		t.Fatal("no subject key id")
	}
	if _, _, err := ParseCA(certPEM, keyPEM); err != nil {
		t.Fatalf("ParseCA of a new CA: %v", err)
	}
	block, _ := pem.Decode(keyPEM)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key block %v", block)
	}
}

func TestNewCertFitsMutualTLS(t *testing.T) {
	caPEM, caKeyPEM := newCA(t)
	certPEM, keyPEM, err := NewCert(CertOptions{
		Name: "n1", Hosts: []string{"n1.presence.internal", "10.0.0.1", "::1", "N1"},
		CACert: caPEM, CAKey: caKeyPEM, Now: testNow,
	})
	if err != nil {
		t.Fatal(err)
	}
	c := parseCert(t, certPEM)
	if c.IsCA || c.Subject.CommonName != "n1" || c.KeyUsage != x509.KeyUsageDigitalSignature {
		t.Fatalf("IsCA %v, subject %v, key usage %v", c.IsCA, c.Subject, c.KeyUsage)
	}
	if strings.Join(c.DNSNames, ",") != "n1,n1.presence.internal" || len(c.IPAddresses) != 2 {
		t.Fatalf("SANs: DNS %v IP %v", c.DNSNames, c.IPAddresses)
	}
	if !c.NotAfter.Equal(testNow.Add(DefaultCertValidity)) {
		t.Fatalf("not after %s", c.NotAfter)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth} {
		for _, host := range []string{"n1", "n1.presence.internal", "10.0.0.1", "::1"} {
			_, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: host, CurrentTime: testNow, KeyUsages: []x509.ExtKeyUsage{usage}})
			if err != nil {
				t.Fatalf("usage %v host %s: %v", usage, host, err)
			}
		}
	}
	if _, err := c.Verify(x509.VerifyOptions{Roots: roots, DNSName: "n2", CurrentTime: testNow}); err == nil {
		t.Fatal("the certificate verifies for another name")
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		t.Fatalf("the pair does not load: %v", err)
	}
}

// TestMutualTLS13BetweenNodes: two node certificates of one CA complete a
// TLS 1.3 handshake in which both sides verify the other; a certificate
// of another CA is refused.
func TestMutualTLS13BetweenNodes(t *testing.T) {
	realCA := func() (c, k []byte) {
		c, k, err := NewCA(CAOptions{}) // valid now: the handshake checks the wall clock
		if err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	caPEM, caKeyPEM := realCA()
	pair := func(name string, ca, caKey []byte) tls.Certificate {
		c, k, err := NewCert(CertOptions{Name: name, Hosts: []string{"127.0.0.1"}, CACert: ca, CAKey: caKey})
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tls.X509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	serverCfg := &tls.Config{
		MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair("n1", caPEM, caKeyPEM)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool,
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				if tc := conn.(*tls.Conn); tc.Handshake() == nil {
					_, _ = io.WriteString(tc, tc.ConnectionState().PeerCertificates[0].Subject.CommonName)
				}
			}()
		}
	}()
	dial := func(client tls.Certificate) (string, error) {
		conn, err := tls.Dial("tcp", ln.Addr().String(), &tls.Config{
			MinVersion: tls.VersionTLS13, RootCAs: pool, ServerName: "n1", Certificates: []tls.Certificate{client},
		})
		if err != nil {
			return "", err
		}
		defer conn.Close()
		if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Fatalf("version %x", v)
		}
		b, err := io.ReadAll(conn)
		return string(b), err
	}
	if peer, err := dial(pair("n2", caPEM, caKeyPEM)); err != nil || peer != "n2" {
		t.Fatalf("handshake between nodes: %q, %v", peer, err)
	}
	otherCA, otherKey := realCA()
	if peer, err := dial(pair("n3", otherCA, otherKey)); err == nil && peer != "" {
		t.Fatalf("a certificate of another CA was accepted as %q", peer)
	}
}

func TestNewCertRejects(t *testing.T) {
	caPEM, caKeyPEM := newCA(t)
	otherCA, otherKey := newCA(t)
	leaf, leafKey, err := NewCert(CertOptions{Name: "n1", CACert: caPEM, CAKey: caKeyPEM})
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]CertOptions{
		"empty name":        {Name: "", CACert: caPEM, CAKey: caKeyPEM},
		"path in name":      {Name: "../n1", CACert: caPEM, CAKey: caKeyPEM},
		"slash in name":     {Name: "a/b", CACert: caPEM, CAKey: caKeyPEM},
		"space in name":     {Name: "n 1", CACert: caPEM, CAKey: caKeyPEM},
		"wildcard name":     {Name: "*.example", CACert: caPEM, CAKey: caKeyPEM},
		"bad host":          {Name: "n1", Hosts: []string{"bad host"}, CACert: caPEM, CAKey: caKeyPEM},
		"long name":         {Name: strings.Repeat("a.", 127) + "a", CACert: caPEM, CAKey: caKeyPEM},
		"negative validity": {Name: "n1", Validity: -time.Hour, CACert: caPEM, CAKey: caKeyPEM},
		"outlives its CA":   {Name: "n1", Validity: DefaultCAValidity + time.Hour, CACert: caPEM, CAKey: caKeyPEM, Now: testNow},
		"another CA's key":  {Name: "n1", CACert: caPEM, CAKey: otherKey},
		"leaf as CA":        {Name: "n2", CACert: leaf, CAKey: leafKey},
		"key as cert":       {Name: "n1", CACert: caKeyPEM, CAKey: caKeyPEM},
		"no key":            {Name: "n1", CACert: otherCA, CAKey: []byte("nope")},
	}
	for name, opts := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := NewCert(opts); !errors.Is(err, ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
}

func TestWritePair(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	certPath, keyPath, err := WritePair(dir, "n1", []byte("cert"), []byte("key"))
	if err != nil {
		t.Fatal(err)
	}
	for path, mode := range map[string]fs.FileMode{certPath: 0o644, keyPath: 0o600, dir: 0o700 | fs.ModeDir} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Fatalf("%s: mode %v, want %v", path, st.Mode(), mode)
		}
	}
	if filepath.Base(certPath) != "n1.pem" || filepath.Base(keyPath) != "n1-key.pem" {
		t.Fatalf("paths %s %s", certPath, keyPath)
	}
	// Neither file is replaced, and nothing is written when one exists.
	if _, _, err := WritePair(dir, "n1", []byte("new"), []byte("new")); !errors.Is(err, ErrExists) {
		t.Fatalf("second write: %v", err)
	}
	if err := os.Remove(certPath); err != nil {
		t.Fatal(err)
	}
	if _, _, err := WritePair(dir, "n1", []byte("new"), []byte("new")); !errors.Is(err, ErrExists) {
		t.Fatalf("write over an existing key: %v", err)
	}
	if b, _ := os.ReadFile(keyPath); string(b) != "key" {
		t.Fatalf("key replaced: %q", b)
	}
	if _, err := os.Stat(certPath); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("certificate written although the key exists: %v", err)
	}
}

func TestKeyPairReload(t *testing.T) {
	caPEM, caKeyPEM, err := NewCA(CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name string) (certPath, keyPath string) {
		c, k, err := NewCert(CertOptions{Name: name, CACert: caPEM, CAKey: caKeyPEM})
		if err != nil {
			t.Fatal(err)
		}
		certPath, keyPath = filepath.Join(dir, "http.pem"), filepath.Join(dir, "http-key.pem")
		if err := os.WriteFile(certPath, c, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(keyPath, k, 0o600); err != nil {
			t.Fatal(err)
		}
		return certPath, keyPath
	}
	certPath, keyPath := write("first")
	kp, err := LoadKeyPair(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		c, err := kp.GetCertificate(&tls.ClientHelloInfo{})
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf.Subject.CommonName
	}
	if served() != "first" {
		t.Fatalf("serving %s", served())
	}
	write("second")
	if err := kp.Reload(); err != nil {
		t.Fatal(err)
	}
	if served() != "second" {
		t.Fatalf("after reload serving %s", served())
	}
	// A half-written renewal keeps the previous certificate.
	if err := os.WriteFile(keyPath, []byte("-----BEGIN PRIVATE KEY-----\ntrunc"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := kp.Reload(); err == nil {
		t.Fatal("reload of a broken key succeeded")
	}
	if served() != "second" {
		t.Fatalf("after a failed reload serving %s", served())
	}
	if _, err := LoadKeyPair(filepath.Join(dir, "missing.pem"), keyPath); err == nil {
		t.Fatal("missing file loaded")
	}
}

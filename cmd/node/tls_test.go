package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// runTLS runs "presence-node tls args..." and returns its exit code and output.
func runTLS(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var out bytes.Buffer
	code := run(append([]string{"tls"}, args...), env(nil), &out, &out)
	return code, out.String()
}

func TestTLSCommandWritesACAAndNodeCertificates(t *testing.T) {
	dir := t.TempDir()
	if code, out := runTLS(t, "ca", "--dir", dir, "--days", "30"); code != 0 {
		t.Fatalf("tls ca: exit %d: %s", code, out)
	}
	ca, caKey := filepath.Join(dir, "presence-ca.pem"), filepath.Join(dir, "presence-ca-key.pem")
	st, err := os.Stat(caKey)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v, mode %v", err, st.Mode())
	}
	code, out := runTLS(t, "cert", "--name", "n1", "--host", "10.0.0.1,n1.internal", "--host", "localhost",
		"--dir", dir, "--ca", ca, "--ca-key", caKey, "--days", "7")
	if code != 0 {
		t.Fatalf("tls cert: exit %d: %s", code, out)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "n1.pem"), filepath.Join(dir, "n1-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	leaf := pair.Leaf
	if strings.Join(leaf.DNSNames, ",") != "n1,n1.internal,localhost" || len(leaf.IPAddresses) != 1 {
		t.Fatalf("SANs %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "10.0.0.1",
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Fatalf("the node certificate does not verify with the CA: %v", err)
	}
	if d := leaf.NotAfter.Sub(leaf.NotBefore); d < 7*day || d > 7*day+day {
		t.Fatalf("validity %s, want about 7 days", d)
	}
	// Nothing is overwritten.
	if code, out := runTLS(t, "ca", "--dir", dir); code != 1 || !strings.Contains(out, "exists") {
		t.Fatalf("second tls ca: exit %d: %s", code, out)
	}
	if code, out := runTLS(t, "cert", "--name", "n1", "--dir", dir, "--ca", ca, "--ca-key", caKey, "--days", "7"); code != 1 || !strings.Contains(out, "exists") {
		t.Fatalf("second tls cert: exit %d: %s", code, out)
	}
}

func TestTLSCommandUsage(t *testing.T) {
	dir := t.TempDir()
	if code, out := runTLS(t, "ca", "--dir", dir); code != 0 {
		t.Fatalf("tls ca: %s", out)
	}
	ca, caKey := filepath.Join(dir, "presence-ca.pem"), filepath.Join(dir, "presence-ca-key.pem")
	cases := map[string]struct {
		args []string
		code int
	}{
		"no command":   {nil, 2},
		"unknown":      {[]string{"sign"}, 2},
		"no name":      {[]string{"cert", "--dir", dir}, 2},
		"bad days":     {[]string{"ca", "--dir", dir, "--days", "0"}, 2},
		"stray arg":    {[]string{"ca", "extra"}, 2},
		"unknown flag": {[]string{"ca", "--nope"}, 2},
		"missing CA":   {[]string{"cert", "--name", "n1", "--dir", dir, "--ca", filepath.Join(dir, "none.pem")}, 1},
		"bad name":     {[]string{"cert", "--name", "../n1", "--dir", dir, "--ca", ca, "--ca-key", caKey}, 1},
		"bad host":     {[]string{"cert", "--name", "n1", "--host", "a b", "--dir", dir, "--ca", ca, "--ca-key", caKey}, 1},
		"key as CA":    {[]string{"cert", "--name", "n1", "--dir", dir, "--ca", caKey, "--ca-key", caKey}, 1},
		"help":         {[]string{"help"}, 0},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if code, out := runTLS(t, tc.args...); code != tc.code {
				t.Fatalf("exit %d, want %d: %s", code, tc.code, out)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "n1.pem")); err == nil {
		t.Fatal("a failed tls cert wrote a certificate")
	}
}

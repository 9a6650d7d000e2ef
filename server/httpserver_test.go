package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/tlscert"
)

// httpsFiles writes certificates of one CA for the public API.
type httpsFiles struct {
	t                 *testing.T
	ca, caKey         []byte
	certPath, keyPath string
}

func newHTTPSFiles(t *testing.T) *httpsFiles {
	t.Helper()
	ca, caKey, err := tlscert.NewCA(tlscert.CAOptions{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	return &httpsFiles{t: t, ca: ca, caKey: caKey,
		certPath: filepath.Join(dir, "http.pem"), keyPath: filepath.Join(dir, "http-key.pem")}
}

// write replaces the files with a certificate for name (and 127.0.0.1).
func (f *httpsFiles) write(name string) {
	f.t.Helper()
	cert, key, err := tlscert.NewCert(tlscert.CertOptions{Name: name, Hosts: []string{"127.0.0.1"}, CACert: f.ca, CAKey: f.caKey})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(f.keyPath, key, 0o600); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(f.certPath, cert, 0o644); err != nil {
		f.t.Fatal(err)
	}
}

// servedName fetches /healthz over a new TLS connection that trusts only
// the CA, and returns the common name of the certificate served.
func (f *httpsFiles) servedName(addr string) string {
	f.t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(f.ca)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		DisableKeepAlives: true,
	}}
	resp, err := client.Get("https://" + addr + "/healthz")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("healthz over HTTPS: %d", resp.StatusCode)
	}
	return resp.TLS.PeerCertificates[0].Subject.CommonName
}

func httpsNodeConfig(t *testing.T, f *httpsFiles) Config {
	t.Helper()
	var ports testkit.Ports
	gossip, err := ports.Addr(true)
	if err != nil {
		t.Fatal(err)
	}
	return Config{Name: "n1", HTTPAddr: "127.0.0.1:0", GossipAddr: gossip,
		RPCAddr: "127.0.0.1:0", DataDir: t.TempDir(), Dev: true, FastTimings: true,
		HTTPTLSCert: f.certPath, HTTPTLSKey: f.keyPath, Logger: testkit.Logger(t)}
}

// TestHTTPSServesAndReloadsTheCertificate: the public API serves HTTPS
// with the files given; ReloadTLS picks up renewed files for new
// connections, and files that do not load keep the previous certificate.
func TestHTTPSServesAndReloadsTheCertificate(t *testing.T) {
	f := newHTTPSFiles(t)
	f.write("first")
	s := startServer(t, httpsNodeConfig(t, f))
	if got := f.servedName(s.HTTPAddr()); got != "first" {
		t.Fatalf("serving %q", got)
	}
	f.write("second")
	if got := f.servedName(s.HTTPAddr()); got != "first" {
		t.Fatalf("new files served before a reload: %q", got)
	}
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
	if got := f.servedName(s.HTTPAddr()); got != "second" {
		t.Fatalf("after the reload serving %q", got)
	}
	if err := os.WriteFile(f.certPath, []byte("not a certificate"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := s.ReloadTLS(); err == nil {
		t.Fatal("a broken certificate file reloaded")
	}
	if got := f.servedName(s.HTTPAddr()); got != "second" {
		t.Fatalf("after a failed reload serving %q", got)
	}
	// Oversized request headers are refused by the server itself (over
	// HTTP/1.1; an HTTP/2 client refuses to send them, as the server
	// announces its limit).
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(f.ca)
	client := &http.Client{Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots},
		TLSNextProto:    map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
	}}
	for size, want := range map[int]int{httpMaxHeaderBytes / 2: http.StatusOK, 2 * httpMaxHeaderBytes: http.StatusRequestHeaderFieldsTooLarge} {
		req, err := http.NewRequest(http.MethodGet, "https://"+s.HTTPAddr()+"/healthz", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-Padding", strings.Repeat("x", size))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%d bytes of headers: %d, want %d", size, resp.StatusCode, want)
		}
	}
}

func TestHTTPSConfigErrors(t *testing.T) {
	f := newHTTPSFiles(t)
	cfg := httpsNodeConfig(t, f)
	cfg.HTTPTLSKey = ""
	if err := cfg.Validate(); !errors.Is(err, ErrConfig) {
		t.Fatalf("certificate without key: %v", err)
	}
	cfg = httpsNodeConfig(t, f) // the files do not exist yet
	if _, err := New(cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "--http-tls-cert") {
		t.Fatalf("missing files: %v", err)
	}
}

func TestReloadTLSWithoutHTTPSDoesNothing(t *testing.T) {
	s := &Server{log: testkit.Logger(t)}
	if err := s.ReloadTLS(); err != nil {
		t.Fatal(err)
	}
}

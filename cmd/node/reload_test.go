package main

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// TestSIGHUPReloadsTheHTTPSCertificate runs a node in this process, serving
// HTTPS, and sends the process real signals: SIGHUP makes the node serve
// renewed certificate files, SIGTERM stops it with exit code 0. The node
// registers its signal handlers before it listens, so once it answers, the
// signals cannot kill the test binary.
func TestSIGHUPReloadsTheHTTPSCertificate(t *testing.T) {
	dir := t.TempDir()
	if code, out := runTLS(t, "ca", "--dir", dir); code != 0 {
		t.Fatal(out)
	}
	ca, caKey := filepath.Join(dir, "presence-ca.pem"), filepath.Join(dir, "presence-ca-key.pem")
	issue := func(name string) {
		t.Helper()
		sub := filepath.Join(dir, name)
		if code, out := runTLS(t, "cert", "--name", name, "--host", "127.0.0.1", "--dir", sub, "--ca", ca, "--ca-key", caKey); code != 0 {
			t.Fatal(out)
		}
		// Renew in place, as a certificate manager would: replace the files.
		for _, suffix := range []string{".pem", "-key.pem"} {
			if err := os.Rename(filepath.Join(sub, name+suffix), filepath.Join(dir, "http"+suffix)); err != nil {
				t.Fatal(err)
			}
		}
	}
	issue("first")

	var ports testkit.Ports
	addr := func(udp bool) string {
		a, err := ports.Addr(udp)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	httpAddr := addr(false)
	args := []string{"--dev", "--name", "n1", "--http", httpAddr, "--gossip", addr(true),
		"--rpc", addr(false), "--data-dir", filepath.Join(dir, "data"), "--log-level", "warn",
		"--http-tls-cert", filepath.Join(dir, "http.pem"), "--http-tls-key", filepath.Join(dir, "http-key.pem")}
	logs := &testkit.LogBuffer{}
	exit := make(chan int, 1)
	go func() { exit <- run(args, env(nil), io.Discard, logs) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = syscall.Kill(os.Getpid(), syscall.SIGTERM)
			<-exit
		}
		if t.Failed() {
			t.Log(logs.String())
		}
	})

	caPEM, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots}, DisableKeepAlives: true,
	}}
	served := func() string {
		resp, err := client.Get("https://" + httpAddr + "/healthz")
		if err != nil {
			return ""
		}
		resp.Body.Close()
		return resp.TLS.PeerCertificates[0].Subject.CommonName
	}
	testkit.WaitFor(t, "the node to serve HTTPS", func() bool { return served() == "first" })
	// The image's health probe follows the node's own variable.
	https := env(map[string]string{"PRESENCE_HTTP_TLS_CERT": filepath.Join(dir, "http.pem")})
	if code := run([]string{"health", "--http", httpAddr}, https, io.Discard, io.Discard); code != 0 {
		t.Fatalf("health over HTTPS: exit %d", code)
	}
	if code := run([]string{"health", "--http", httpAddr}, env(nil), io.Discard, io.Discard); code != 1 {
		t.Fatalf("plain HTTP health probe of an HTTPS node: exit %d, want 1", code)
	}

	issue("second")
	if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the renewed certificate after SIGHUP", func() bool { return served() == "second" })

	if err := syscall.Kill(os.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	stopped = true
	select {
	case code := <-exit:
		if code != 0 {
			t.Fatalf("exit code %d after SIGTERM", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the node did not stop within 30 s of SIGTERM")
	}
	if strings.Contains(logs.String(), "not reloaded") {
		t.Fatal("a reload failed")
	}
}

package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/internal/gcpace"
	"github.com/presencehq/presence/router"
	"github.com/presencehq/presence/server"
)

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestFlagsFallBackToEnvironment(t *testing.T) {
	cfg, _, err := parseFlags([]string{"--name", "n1"}, env(map[string]string{
		"PRESENCE_NAME":             "ignored-because-flag-wins",
		"PRESENCE_HTTP":             "127.0.0.1:9999",
		"PRESENCE_JWT_SECRET":       "s3cret",
		"PRESENCE_BOOTSTRAP_EXPECT": "3",
		"PRESENCE_MAX_VOTERS":       "3",
		"PRESENCE_JOIN":             "a:7946, b:7946",
		"PRESENCE_CORS_ORIGINS":     "https://x.example",
		"PRESENCE_DEV":              "true",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Name != "n1" {
		t.Errorf("name %q: the flag must beat PRESENCE_NAME", cfg.Name)
	}
	if cfg.HTTPAddr != "127.0.0.1:9999" || strings.Join(cfg.JWTSecrets, "|") != "s3cret" || cfg.BootstrapExpect != 3 ||
		cfg.MaxVoters != 3 || !cfg.Dev {
		t.Errorf("environment not applied: %+v", cfg)
	}
	if strings.Join(cfg.Join, "|") != "a:7946|b:7946" || strings.Join(cfg.CORSOrigins, "|") != "https://x.example" {
		t.Errorf("lists: join %q cors %q", cfg.Join, cfg.CORSOrigins)
	}
	if cfg.DataDir != "data/n1" {
		t.Errorf("data dir %q, want data/n1", cfg.DataDir)
	}
}

func TestStreamLimitFlags(t *testing.T) {
	cfg, _, err := parseFlags([]string{"--max-streams-per-user", "5"}, env(map[string]string{
		"PRESENCE_MAX_STREAMS_PER_IP": "7",
		"PRESENCE_TRUSTED_PROXIES":    "10.0.0.0/8, 192.0.2.1",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxStreamsPerUser != 5 || cfg.MaxStreamsPerIP != 7 || cfg.MaxStreams != api.DefaultMaxStreams {
		t.Fatalf("limits %d %d %d", cfg.MaxStreamsPerUser, cfg.MaxStreamsPerIP, cfg.MaxStreams)
	}
	if strings.Join(cfg.TrustedProxies, "|") != "10.0.0.0/8|192.0.2.1" {
		t.Fatalf("trusted proxies %q", cfg.TrustedProxies)
	}
}

func TestGCHeadroomFlag(t *testing.T) {
	_, opts, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil || opts.gcHeadroomMiB != gcpace.DefaultMaxHeadroom>>20 {
		t.Fatalf("default: %d MiB, %v; want %d", opts.gcHeadroomMiB, err, gcpace.DefaultMaxHeadroom>>20)
	}
	_, opts, err = parseFlags(nil, env(map[string]string{"PRESENCE_GC_HEADROOM": "0"}), &bytes.Buffer{})
	if err != nil || opts.gcHeadroomMiB != 0 {
		t.Fatalf("PRESENCE_GC_HEADROOM=0: %d MiB, %v", opts.gcHeadroomMiB, err)
	}
}

func TestHoldFlags(t *testing.T) {
	cfg, _, err := parseFlags(nil, env(nil), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HoldTimeout != router.DefaultHoldTimeout || cfg.MaxHeldRequests != router.DefaultMaxHeld {
		t.Fatalf("defaults: hold %v, max held %d", cfg.HoldTimeout, cfg.MaxHeldRequests)
	}
	cfg, _, err = parseFlags([]string{"--hold-timeout", "3s"}, env(map[string]string{"PRESENCE_MAX_HELD_REQUESTS": "50"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HoldTimeout != 3*time.Second || cfg.MaxHeldRequests != 50 {
		t.Fatalf("hold %v, max held %d", cfg.HoldTimeout, cfg.MaxHeldRequests)
	}
	// 0s turns the hold off, which the server's zero value would not.
	cfg, _, err = parseFlags([]string{"--hold-timeout", "0s"}, env(nil), &bytes.Buffer{})
	if err != nil || cfg.HoldTimeout >= 0 {
		t.Fatalf("--hold-timeout 0s: %v, %v; want a negative (no hold) value", cfg.HoldTimeout, err)
	}
}

func TestTokenFlags(t *testing.T) {
	cfg, _, err := parseFlags([]string{"--jwt-issuer", "https://idp.example"}, env(map[string]string{
		"PRESENCE_JWT_SECRET":      "new-secret, old-secret",
		"PRESENCE_JWT_PUBLIC_KEYS": "/etc/presence/idp.pem,/etc/presence/idp-next.pem",
		"PRESENCE_JWKS_URL":        "https://idp.example/jwks",
		"PRESENCE_JWT_AUDIENCE":    "presence",
		"PRESENCE_JWT_ISSUER":      "ignored: the flag wins",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.JWTSecrets, "|") != "new-secret|old-secret" ||
		strings.Join(cfg.JWTPublicKeyFiles, "|") != "/etc/presence/idp.pem|/etc/presence/idp-next.pem" ||
		cfg.JWKSURL != "https://idp.example/jwks" || cfg.JWTIssuer != "https://idp.example" || cfg.JWTAudience != "presence" {
		t.Fatalf("token flags: %+v", cfg)
	}
}

func TestServiceTokenFlag(t *testing.T) {
	cfg, _, err := parseFlags(nil, env(map[string]string{"PRESENCE_SERVICE_TOKENS": "backend-new, backend-old"}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(cfg.ServiceTokens, "|") != "backend-new|backend-old" {
		t.Fatalf("service tokens %q", cfg.ServiceTokens)
	}
	cfg, _, err = parseFlags([]string{"--service-tokens", "flag-wins"}, env(map[string]string{"PRESENCE_SERVICE_TOKENS": "env"}), &bytes.Buffer{})
	if err != nil || strings.Join(cfg.ServiceTokens, "|") != "flag-wins" {
		t.Fatalf("flag and variable: %q %v", cfg.ServiceTokens, err)
	}
}

// testClusterKey is a valid --cluster-key (32 bytes of base64).
const testClusterKey = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="

func TestNodeTLSFlags(t *testing.T) {
	cfg, _, err := parseFlags([]string{"--tls-ca", "/etc/presence/ca.pem"}, env(map[string]string{
		"PRESENCE_TLS_CERT": "/etc/presence/n1.pem",
		"PRESENCE_TLS_KEY":  "/etc/presence/n1-key.pem",
	}), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSCert != "/etc/presence/n1.pem" || cfg.TLSKey != "/etc/presence/n1-key.pem" || cfg.TLSCA != "/etc/presence/ca.pem" || !cfg.PeerTLS() {
		t.Fatalf("TLS files %q %q %q", cfg.TLSCert, cfg.TLSKey, cfg.TLSCA)
	}
}

// TestRaftFlagIsDeprecated: --raft and PRESENCE_RAFT, which existing
// deployments pass, are accepted with a warning and change nothing.
func TestRaftFlagIsDeprecated(t *testing.T) {
	for name, tc := range map[string]struct {
		args []string
		env  map[string]string
	}{
		"flag":     {[]string{"--raft", "0.0.0.0:8300"}, nil},
		"variable": {nil, map[string]string{"PRESENCE_RAFT": "0.0.0.0:8300"}},
	} {
		_, opts, err := parseFlags(tc.args, env(tc.env), &bytes.Buffer{})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if len(opts.deprecated) != 1 || !strings.Contains(opts.deprecated[0], "--raft") || !strings.Contains(opts.deprecated[0], "--rpc") {
			t.Fatalf("%s: warnings %q", name, opts.deprecated)
		}
	}
	if _, opts, _ := parseFlags(nil, env(nil), &bytes.Buffer{}); len(opts.deprecated) != 0 {
		t.Fatalf("warnings without --raft: %q", opts.deprecated)
	}
}

func TestBadEnvironmentValueIsReported(t *testing.T) {
	_, _, err := parseFlags(nil, env(map[string]string{"PRESENCE_BOOTSTRAP_EXPECT": "three"}), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "PRESENCE_BOOTSTRAP_EXPECT") {
		t.Fatalf("err = %v, want one naming the variable", err)
	}
}

func TestMissingSecretsExitWithCode2(t *testing.T) {
	cases := map[string][]string{
		"no secrets":        {"--name", "n1", "--data-dir", t.TempDir()},
		"no admin token":    {"--name", "n1", "--data-dir", t.TempDir(), "--jwt-secret", "x"},
		"bad cluster key":   {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", "not-base64!"},
		"short key":         {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", "c2hvcnQ="},
		"short second key":  {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", testClusterKey + ",c2hvcnQ="},
		"unknown flag":      {"--nope"},
		"stray argument":    {"--dev", "extra"},
		"bad log level":     {"--dev", "--log-level", "loud"},
		"zero streams":      {"--dev", "--max-streams", "0"},
		"http JWKS":         {"--name", "n1", "--data-dir", t.TempDir(), "--admin-token", "a", "--jwks-url", "http://idp.example/jwks"},
		"missing key file":  {"--name", "n1", "--data-dir", t.TempDir(), "--admin-token", "a", "--jwt-public-keys", "/nonexistent/idp.pem"},
		"missing TLS file":  {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--http-tls-cert", "/nonexistent/c.pem", "--http-tls-key", "/nonexistent/k.pem"},
		"TLS cert alone":    {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--http-tls-cert", "/nonexistent/c.pem"},
		"negative per ip":   {"--dev", "--max-streams-per-ip", "-1"},
		"negative hold":     {"--dev", "--hold-timeout", "-1s"},
		"zero held":         {"--dev", "--max-held-requests", "0"},
		"negative headroom": {"--dev", "--gc-headroom", "-1"},
		"huge headroom":     {"--dev", "--gc-headroom", "2000000"},
		"bad proxy":         {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--trusted-proxies", "10.0.0.0/8,proxy.example"},
		"node TLS without a cluster key": {"--name", "n1", "--data-dir", t.TempDir(), "--dev",
			"--tls-cert", "/nonexistent/n1.pem", "--tls-key", "/nonexistent/n1-key.pem", "--tls-ca", "/nonexistent/ca.pem"},
		"node TLS cert alone": {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", testClusterKey,
			"--tls-cert", "/nonexistent/n1.pem"},
		"missing node TLS files": {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--cluster-key", testClusterKey,
			"--tls-cert", "/nonexistent/n1.pem", "--tls-key", "/nonexistent/n1-key.pem", "--tls-ca", "/nonexistent/ca.pem"},
		"service = admin": {"--name", "n1", "--data-dir", t.TempDir(), "--jwt-secret", "x", "--admin-token", "a", "--service-tokens", "b,a"},
		"even max voters": {"--name", "n1", "--data-dir", t.TempDir(), "--dev", "--max-voters", "4"},
	}
	for name, args := range cases {
		t.Run(name, func(t *testing.T) {
			var stderr bytes.Buffer
			if code := run(args, env(nil), io.Discard, &stderr); code != 2 {
				t.Fatalf("exit code %d, want 2 (stderr: %s)", code, stderr.String())
			}
			if stderr.Len() == 0 {
				t.Fatal("no message on stderr")
			}
		})
	}
}

func TestHealthFailsWithoutNode(t *testing.T) {
	var stderr bytes.Buffer
	if code := run([]string{"health", "--http", "127.0.0.1:1"}, env(nil), io.Discard, &stderr); code != 1 {
		t.Fatalf("health exit code %d, want 1", code)
	}
}

// TestNameRecordedInDataDir: without --name (or PRESENCE_NAME), the node
// takes the name its data directory recorded, so a container recreated
// with a new host name keeps its identity; a given name wins.
func TestNameRecordedInDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "node-name"), []byte("kept\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--data-dir", dir}, nil, "kept"},
		{nil, map[string]string{"PRESENCE_DATA_DIR": dir}, "kept"},
		{[]string{"--data-dir", dir, "--name", "other"}, nil, "other"},
		{[]string{"--data-dir", dir}, map[string]string{"PRESENCE_NAME": "envname"}, "envname"},
	}
	for _, c := range cases {
		cfg, _, err := parseFlags(c.args, env(c.env), &bytes.Buffer{})
		if err != nil || cfg.Name != c.want {
			t.Errorf("%v %v: name %q, %v; want %q", c.args, c.env, cfg.Name, err, c.want)
		}
	}
	host, _ := os.Hostname()
	if cfg, _, err := parseFlags([]string{"--data-dir", t.TempDir()}, env(nil), &bytes.Buffer{}); err != nil || cfg.Name != host {
		t.Errorf("empty data dir: name %q, %v; want the host name %q", cfg.Name, err, host)
	}
}

func TestDefaultAdvertise(t *testing.T) {
	ips := func(s ...string) []net.IPAddr {
		out := make([]net.IPAddr, len(s))
		for i, ip := range s {
			out[i] = net.IPAddr{IP: net.ParseIP(ip)}
		}
		return out
	}
	lookups := 0
	resolver := func(answer []net.IPAddr, err error) func(context.Context, string) ([]net.IPAddr, error) {
		return func(_ context.Context, host string) ([]net.IPAddr, error) {
			lookups++
			if host != "box" {
				t.Fatalf("looked up %q, want the host name", host)
			}
			return answer, err
		}
	}
	everywhere := server.Config{GossipAddr: "0.0.0.0:7946", RPCAddr: "0.0.0.0:7947"}
	cases := []struct {
		name    string
		cfg     server.Config
		answer  []net.IPAddr
		err     error
		want    string
		wantErr bool
	}{
		{"container", everywhere, ips("127.0.1.1", "fd00::5", "172.18.0.5"), nil, "172.18.0.5", false},
		{"IPv6 only", everywhere, ips("::1", "fd00::5"), nil, "fd00::5", false},
		{"loopback only", everywhere, ips("127.0.1.1", "::1"), nil, "", true},
		{"not resolved", everywhere, nil, errors.New("no such host"), "", true},
		{"one listener everywhere", server.Config{GossipAddr: "127.0.0.1:7946", RPCAddr: "[::]:7947"},
			ips("10.0.0.9"), nil, "10.0.0.9", false},
	}
	for _, c := range cases {
		cfg := c.cfg
		err := defaultAdvertise(&cfg, "box", resolver(c.answer, c.err))
		if (err != nil) != c.wantErr || cfg.Advertise != c.want {
			t.Errorf("%s: advertise %q, %v; want %q (error %v)", c.name, cfg.Advertise, err, c.want, c.wantErr)
		}
	}
	lookups = 0
	for _, cfg := range []server.Config{
		{GossipAddr: "127.0.0.1:7946", RPCAddr: "127.0.0.1:7947"},
		{GossipAddr: "0.0.0.0:7946", RPCAddr: "0.0.0.0:7947", Advertise: "node1"},
	} {
		before := cfg.Advertise
		if err := defaultAdvertise(&cfg, "box", resolver(ips("10.0.0.9"), nil)); err != nil || cfg.Advertise != before {
			t.Errorf("%+v: advertise %q, %v; want it unchanged", cfg, cfg.Advertise, err)
		}
	}
	if lookups != 0 {
		t.Errorf("%d lookups where nothing needed the host name", lookups)
	}
}

//go:build chaos

package chaos_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/chaos/proc"
)

// Secrets of the test clusters.
const (
	jwtSecret  = "chaos-jwt-secret"
	adminToken = "chaos-admin-token"
	// defaultArtifacts is where node logs go when CHAOS_ARTIFACTS is not set.
	defaultArtifacts = "/tmp/presence-chaos-artifacts"
	// readyTimeout bounds a (re)start until the cluster is ready.
	readyTimeout = 60 * time.Second
	// logLines is how much of each node's log a failed test prints.
	logLines = 80
)

var (
	// binary is the presence-node under test (CHAOS_BINARY, or built by TestMain).
	binary string
	// artifacts is the directory of node logs (CHAOS_ARTIFACTS).
	artifacts string
)

func TestMain(m *testing.M) {
	code, err := setup(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "chaos:", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// setup finds or builds the binary, then runs the tests.
func setup(m *testing.M) (int, error) {
	artifacts = os.Getenv("CHAOS_ARTIFACTS")
	if artifacts == "" {
		artifacts = defaultArtifacts
	}
	binary = os.Getenv("CHAOS_BINARY")
	if binary == "" {
		dir, err := os.MkdirTemp("", "presence-chaos-bin-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		if binary, err = proc.Build(dir); err != nil {
			return 0, err
		}
	}
	return m.Run(), nil
}

// startCluster starts n nodes and waits until they are ready. Cleanup kills
// them and, when the test failed, prints the end of every node's log.
func startCluster(t *testing.T, n int) *proc.Cluster {
	t.Helper()
	logDir := filepath.Join(artifacts, sanitize(t.Name()))
	if err := os.RemoveAll(logDir); err != nil {
		t.Fatal(err)
	}
	var args []string
	if level := os.Getenv("CHAOS_NODE_LOG_LEVEL"); level != "" {
		args = append(args, "--log-level", level) // e.g. debug, to trace a failure
	}
	c, err := proc.New(proc.Config{
		Binary: binary, Dir: t.TempDir(), LogDir: logDir, Nodes: n,
		JWTSecret: jwtSecret, AdminToken: adminToken, ClusterKey: randomKey(t),
		Args: args,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("node logs:\n%s", c.Logs(logLines))
		}
		t.Logf("node logs in %s", logDir)
	})
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c)
	return c
}

// waitReady fails the test when the running nodes do not become ready.
func waitReady(t *testing.T, c *proc.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	begin := time.Now()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster ready in %v", time.Since(begin).Round(time.Millisecond))
}

func randomKey(t *testing.T) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(key)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// testLogger writes the toolkit's warnings to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// configure stores the public prefix document of the test channels and
// waits until every node serves it.
func configure(t *testing.T, c *proc.Cluster, prefix string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stored, err := c.Admin(c.Nodes[0].Name).PutPrefix(ctx, prefix, chaos.PublicPrefixDocument(prefix, timeout))
	if err != nil {
		t.Fatal(err)
	}
	waitPrefix(t, c, prefix, stored)
}

// waitPrefix waits until every running node answers doc for prefix.
func waitPrefix(t *testing.T, c *proc.Cluster, prefix string, doc []byte) {
	t.Helper()
	for _, n := range c.Running() {
		err := chaos.Poll(10*time.Second, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			status, body, err := c.Admin(n.Name).GetPrefix(ctx, prefix)
			switch {
			case err != nil:
				return err
			case status != 200 || !chaos.SameJSON(body, doc):
				return fmt.Errorf("%s: GET prefix %s: %d %s, want %s", n.Name, prefix, status, body, doc)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// newPool returns a pool over urls with the timings of a browser client.
func newPool(t *testing.T, urls []string) *chaos.Pool {
	t.Helper()
	p, err := chaos.NewPool(chaos.PoolConfig{URLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTokens(t *testing.T) *chaos.Tokens {
	t.Helper()
	tokens, err := chaos.NewTokens(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// startWorkload starts w and waits until every client entered.
func startWorkload(t *testing.T, cfg chaos.WorkloadConfig) *chaos.Workload {
	t.Helper()
	w, err := chaos.NewWorkload(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Stop)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Ramp+60*time.Second)
	defer cancel()
	if err := w.WaitEntered(ctx); err != nil {
		t.Fatalf("%v (%+v)", err, w.Stats())
	}
	t.Logf("workload: %d clients entered (%+v)", w.Clients(), w.Stats())
	return w
}

// converge runs a Converge, logs it and adds it to sum.
func converge(t *testing.T, ch *chaos.Checker, within time.Duration, sum *chaos.Summary, what string) chaos.CheckResult {
	t.Helper()
	res, err := ch.Converge(context.Background(), within)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	sum.AddCheck(res)
	t.Logf("%s: %v", what, res)
	for _, ex := range res.Examples {
		t.Logf("  %s", ex)
	}
	return res
}

// owners asks node (through admin) who owns each channel.
func owners(c *proc.Cluster, n *proc.Node, channels []string) (map[string]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := make(map[string]string, len(channels))
	for _, ch := range channels {
		v, err := c.Admin(n.Name).Owner(ctx, ch)
		if err != nil {
			return nil, err
		}
		out[ch] = v.Owner
	}
	return out, nil
}

// checkNow runs one strict comparison (no retry), logs it and adds it to sum.
func checkNow(t *testing.T, ch *chaos.Checker, sum *chaos.Summary, what string) chaos.CheckResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := ch.Check(ctx)
	if err != nil {
		t.Errorf("%s: %v", what, err)
	}
	sum.AddCheck(res)
	t.Logf("%s: %v", what, res)
	for _, ex := range res.Examples {
		t.Logf("  %s", ex)
	}
	return res
}

// requireAccepted fails the test when a node rejected an update or
// answered false for a channel the prefix document makes public: every
// node must know the configuration before it serves.
func requireAccepted(t *testing.T, w *chaos.Workload) {
	t.Helper()
	if st := w.Stats(); st.Rejected > 0 {
		t.Errorf("%d updates or present channels were rejected (a node did not know the public prefix?): %+v", st.Rejected, st)
	}
}

//go:build chaos

package chaos_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/chaos/proc"
	"github.com/presencehq/presence/internal/testkit"
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
func startCluster(t testing.TB, n int) *proc.Cluster {
	t.Helper()
	logDir := filepath.Join(artifacts, testkit.FileName(t))
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
func waitReady(t testing.TB, c *proc.Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	begin := time.Now()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster ready in %v", time.Since(begin).Round(time.Millisecond))
}

func randomKey(t testing.TB) string {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(key)
}

// startWorkload starts w and waits until every client entered.
func startWorkload(t testing.TB, cfg chaos.WorkloadConfig) *chaos.Workload {
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

// owners asks node n who owns each channel.
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

// requireAccepted fails the test when a node rejected an update or
// answered false for a channel the prefix document makes public: every
// node must know the configuration before it serves.
func requireAccepted(t testing.TB, w *chaos.Workload) {
	t.Helper()
	if st := w.Stats(); st.Rejected > 0 {
		t.Errorf("%d updates or present channels were rejected (a node did not know the public prefix?): %+v", st.Rejected, st)
	}
}

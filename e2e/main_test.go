//go:build browser

package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos/proc"
	"github.com/presencehq/presence/internal/testkit"
)

const (
	// defaultNodes is the cluster size when E2E_NODES is not set.
	defaultNodes = 3
	// defaultArtifacts is where screenshots and logs go when ARTIFACTS is not set.
	defaultArtifacts = "/tmp/presence-e2e-artifacts"
)

// suite is what every test of the run shares: the binary, the browser and
// the cluster most scenarios use. TestMain fills the paths; the browser and
// the shared cluster start on first use and stop after the last test.
type suite struct {
	skip      string // why the browser tests cannot run here; "" when they can
	chromium  string
	repoRoot  string
	binary    string
	workDir   string
	artifacts string
	nodes     int

	browserOnce sync.Once
	browser     *browser
	browserErr  error

	sharedOnce sync.Once
	shared     *cluster
	sharedErr  error

	pagesOnce sync.Once
	pages     *pageServer
}

// env is the suite of this test binary; TestMain sets it before any test runs.
var env *suite

func TestMain(m *testing.M) {
	s, err := newSuite()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	env = s
	code := m.Run()
	s.close()
	if s.skip == "" {
		fmt.Printf("e2e artifacts (screenshots, node logs, browser consoles): %s\n", s.artifacts)
	}
	os.Exit(code)
}

// newSuite finds Chromium and, when it is there, builds the node binary.
func newSuite() (*suite, error) {
	s := &suite{nodes: defaultNodes}
	if v := os.Getenv("E2E_NODES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("E2E_NODES=%q: want a cluster size of at least 1", v)
		}
		s.nodes = n
	}
	s.chromium = findChromium()
	if s.chromium == "" {
		s.skip = "no Chromium found on PATH (chromium, chromium-browser, google-chrome); " +
			"install Debian's chromium package or run scripts/browser-test.sh"
		fmt.Println("SKIP e2e:", s.skip)
		return s, nil
	}
	s.artifacts = os.Getenv("ARTIFACTS")
	if s.artifacts == "" {
		s.artifacts = defaultArtifacts
	}
	if err := os.MkdirAll(s.artifacts, 0o755); err != nil {
		return nil, err
	}
	root, err := findRepoRoot()
	if err != nil {
		return nil, err
	}
	s.repoRoot = root
	if s.workDir, err = os.MkdirTemp("", "presence-e2e-"); err != nil {
		return nil, err
	}
	if s.binary, err = proc.Build(s.workDir); err != nil {
		return nil, err
	}
	fmt.Printf("e2e: %s, %d node(s), artifacts in %s\n", s.chromium, s.nodes, s.artifacts)
	return s, nil
}

func (s *suite) close() {
	if s.shared != nil {
		s.shared.stop()
	}
	if s.pages != nil {
		s.pages.close()
	}
	if s.browser != nil {
		s.browser.close()
	}
	if s.workDir != "" {
		_ = os.RemoveAll(s.workDir)
	}
}

// require skips the test when the suite cannot run on this machine.
func (s *suite) require(t *testing.T) {
	t.Helper()
	if s.skip != "" {
		t.Skip(s.skip)
	}
}

// Browser returns the headless Chromium of the run, starting it once.
func (s *suite) Browser(t *testing.T) *browser {
	t.Helper()
	s.browserOnce.Do(func() { s.browser, s.browserErr = startBrowser(s.chromium) })
	if s.browserErr != nil {
		t.Fatalf("starting %s: %v", s.chromium, s.browserErr)
	}
	return s.browser
}

// Shared returns the cluster the scenarios that kill nothing run against.
func (s *suite) Shared(t *testing.T) *cluster {
	t.Helper()
	s.sharedOnce.Do(func() {
		s.shared, s.sharedErr = startCluster(s.binary, s.workDir, s.artifacts, "shared", s.nodes)
	})
	if s.sharedErr != nil {
		t.Fatalf("starting the shared %d-node cluster: %v", s.nodes, s.sharedErr)
	}
	return s.shared
}

// Pages returns the server of the test page.
func (s *suite) Pages() *pageServer {
	s.pagesOnce.Do(func() { s.pages = newPageServer() })
	return s.pages
}

func findChromium() string {
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// findRepoRoot walks up from the working directory to the go.mod.
func findRepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// artifactPath names a file of the test in the artifacts directory.
func artifactPath(t *testing.T, name string) string {
	return filepath.Join(env.artifacts, testkit.FileName(t)+"-"+name)
}

// hold samples cond until the deadline and reports the first observation
// where it did not hold; ok is true when it held at every sample.
func hold(until time.Time, cond func() (held bool, observed string)) (string, bool) {
	const interval = 100 * time.Millisecond
	for {
		held, observed := cond()
		if !held {
			return observed, false
		}
		if !time.Now().Before(until) {
			return observed, true
		}
		time.Sleep(max(min(interval, time.Until(until)), time.Millisecond))
	}
}

// rotate returns the nodes starting with the k-th (modulo their number): the
// url list of a client that talks to nodes[k] first.
func rotate(nodes []*node, k int) []*node {
	k %= len(nodes)
	return append(slices.Clone(nodes[k:]), nodes[:k]...)
}

//go:build container

package container_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos/container"
	"github.com/presencehq/presence/internal/testkit"
)

// Settings of the suite. The environment variables are set by
// scripts/container-test.sh; the defaults let `go test -tags container`
// run alone once the image is built.
const (
	jwtSecret  = "container-chaos-jwt-secret"
	adminToken = "container-chaos-admin-token"

	defaultProject     = "presence-chaos"                   // CHAOS_COMPOSE_PROJECT
	defaultComposeFile = "../../docker-compose.cluster.yml" // CHAOS_COMPOSE_FILE
	defaultTLSFile     = "../../docker-compose.tls.yml"     // CHAOS_COMPOSE_TLS_FILE, with CHAOS_TLS=1
	defaultImage       = "presence-node:dev"                // PRESENCE_IMAGE, as the compose file
	defaultArtifacts   = "/tmp/presence-container-artifacts"

	// composeTimeout bounds one compose up or down.
	composeTimeout = 3 * time.Minute
	// readyTimeout bounds a (re)start until every node agrees.
	readyTimeout = 90 * time.Second
)

var (
	// cluster is the compose project under test; nil when docker is missing.
	cluster *container.Cluster
	// skipReason is set when the suite cannot run on this machine.
	skipReason string
	// artifacts is where container logs go (CHAOS_ARTIFACTS).
	artifacts string
	// withTLS: the nodes speak mutual TLS (CHAOS_TLS=1), with certificates
	// made for each run.
	withTLS bool
)

func TestMain(m *testing.M) {
	os.Exit(runSuite(m))
}

// runSuite removes what an earlier run left, brings the cluster up, runs
// the tests and tears the cluster down, unless CHAOS_COMPOSE_KEEP=1 leaves
// that to the caller (the script saves the logs of a failed run first).
func runSuite(m *testing.M) int {
	artifacts = envOr("CHAOS_ARTIFACTS", defaultArtifacts)
	if err := dockerInfo(); err != nil {
		skipReason = fmt.Sprintf("SKIP: docker not available (%v)", err)
		fmt.Println(skipReason)
		return m.Run()
	}
	ctx := context.Background()
	c, err := newCluster(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "container:", err)
		return 1
	}
	cluster = c
	if os.Getenv("CHAOS_COMPOSE_KEEP") != "1" {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), composeTimeout)
			defer cancel()
			if err := cluster.Down(ctx, true); err != nil {
				fmt.Fprintln(os.Stderr, "container: tear down:", err)
			}
		}()
	}
	if err := bringUp(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "container:", err)
		saveLogs(filepath.Join(artifacts, "setup"))
		return 1
	}
	return m.Run()
}

// dockerInfo returns why the Docker engine cannot be reached, if it cannot.
func dockerInfo() error {
	_, err := exec.Command("docker", "info", "--format", "{{.ServerVersion}}").Output()
	var exit *exec.ExitError
	if errors.As(err, &exit) && len(exit.Stderr) > 0 {
		return fmt.Errorf("docker info: %s", firstLine(exit.Stderr))
	}
	return err
}

// newCluster configures the compose project from the environment.
func newCluster(ctx context.Context) (*container.Cluster, error) {
	compose := strings.Fields(os.Getenv("CHAOS_COMPOSE"))
	if len(compose) == 0 {
		var err error
		if compose, err = container.DetectCompose(ctx, ""); err != nil {
			return nil, err
		}
	}
	file, err := filepath.Abs(envOr("CHAOS_COMPOSE_FILE", defaultComposeFile))
	if err != nil {
		return nil, err
	}
	var overrides []string
	if withTLS = os.Getenv("CHAOS_TLS") == "1"; withTLS {
		tlsFile, err := filepath.Abs(envOr("CHAOS_COMPOSE_TLS_FILE", defaultTLSFile))
		if err != nil {
			return nil, err
		}
		overrides = append(overrides, tlsFile)
	}
	image := envOr("PRESENCE_IMAGE", defaultImage)
	if err := exec.CommandContext(ctx, "docker", "image", "inspect", image).Run(); err != nil {
		return nil, fmt.Errorf("image %s not found: build it with scripts/docker-build.sh (scripts/container-test.sh does)", image)
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	return container.New(container.Config{
		Compose: compose, File: file, Overrides: overrides, Project: envOr("CHAOS_COMPOSE_PROJECT", defaultProject),
		AdminToken: adminToken,
		Env: []string{
			"PRESENCE_IMAGE=" + image,
			"PRESENCE_JWT_SECRET=" + jwtSecret,
			"PRESENCE_ADMIN_TOKEN=" + adminToken,
			"PRESENCE_CLUSTER_KEY=" + base64.StdEncoding.EncodeToString(key),
			"PRESENCE_DEV=false",
		},
	})
}

// bringUp starts the cluster from nothing and waits until it is ready.
func bringUp(ctx context.Context) error {
	began := time.Now()
	ctx, cancel := context.WithTimeout(ctx, composeTimeout)
	defer cancel()
	if err := cluster.Down(ctx, true); err != nil {
		return fmt.Errorf("removing leftovers: %w", err)
	}
	if withTLS {
		if err := makeCertificates(ctx); err != nil {
			return err
		}
	}
	if err := cluster.Up(ctx); err != nil {
		return err
	}
	ready, cancel := context.WithTimeout(ctx, readyTimeout)
	defer cancel()
	if err := cluster.WaitReady(ready, cluster.Services()); err != nil {
		return err
	}
	fmt.Printf("container: cluster %v up and ready in %v\n", cluster.URLs(), time.Since(began).Round(time.Millisecond))
	return nil
}

// makeCertificates runs `presence-node tls` in the TLS file's tool service,
// as docker-compose.tls.yml documents: a CA for this run, and a
// certificate for every node service, the scaled one included (its nodes
// share it), into the volume the nodes mount.
func makeCertificates(ctx context.Context) error {
	steps := [][]string{{"ca", "--dir", "/tls"}}
	for _, s := range append(cluster.Services(), scaledService) {
		steps = append(steps, []string{"cert", "--dir", "/tls", "--ca", "/tls/presence-ca.pem",
			"--ca-key", "/tls/presence-ca-key.pem", "--name", s, "--host", s})
	}
	for _, args := range steps {
		if _, err := cluster.Run(ctx, "tls", args...); err != nil {
			return fmt.Errorf("making the TLS files: %w", err)
		}
	}
	fmt.Printf("container: mutual TLS between the nodes, certificates of a CA made for this run\n")
	return nil
}

// saveLogs writes every node's log to dir and says where.
func saveLogs(dir string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := cluster.SaveLogs(ctx, dir); err != nil {
		fmt.Fprintln(os.Stderr, "container: saving logs:", err)
	}
	fmt.Fprintln(os.Stderr, "container: node logs in", dir)
}

// ensureCluster skips without docker; otherwise it starts whatever an
// earlier test left stopped, waits until every node agrees, and saves the
// node logs if the test fails.
func ensureCluster(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
	t.Cleanup(func() {
		if t.Failed() {
			saveLogs(filepath.Join(artifacts, testkit.FileName(t)))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), composeTimeout)
	defer cancel()
	if err := cluster.Up(ctx); err != nil {
		t.Fatal(err)
	}
	waitReady(t)
}

// waitReady fails the test unless every node agrees within readyTimeout.
func waitReady(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	began := time.Now()
	if err := cluster.WaitReady(ctx, cluster.Services()); err != nil {
		t.Fatal(err)
	}
	t.Logf("cluster ready in %v", time.Since(began).Round(time.Millisecond))
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func firstLine(b []byte) string {
	line, _, _ := strings.Cut(strings.TrimSpace(string(b)), "\n")
	return line
}

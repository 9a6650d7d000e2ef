//go:build unix

package proc

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// helperEnv makes the test binary act as a presence node (helperNode).
const helperEnv = "PROC_TEST_HELPER_NODE"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		os.Exit(helperNode(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// helperNode is a stand-in for presence-node: it parses the node flags,
// prints them, serves /readyz and /admin/cluster as a one-node cluster
// that sees every --join peer's name, and exits 0 on SIGTERM.
func helperNode(args []string) int {
	fs := flag.NewFlagSet("helper", flag.ContinueOnError)
	name := fs.String("name", "", "")
	addr := fs.String("http", "", "")
	for _, f := range []string{"gossip", "rpc", "data-dir", "bootstrap-expect", "jwt-secret", "admin-token", "join", "cluster-key"} {
		fs.String(f, "", "")
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fmt.Println("helper node", *name, "args:", strings.Join(args, " "))
	if os.Getenv("PRESENCE_JWT_SECRET") != "" {
		fmt.Println("PRESENCE_JWT_SECRET leaked into the node's environment")
		return 3
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{"status":"ready"}`)) })
	mux.HandleFunc("GET /admin/cluster", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer admin" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_ = json.NewEncoder(w).Encode(map[string]any{
			"members": []map[string]string{{"name": *name, "http": *addr, "state": "alive"}},
			"raft":    map[string]any{"leader": *name, "servers": []string{*name}},
		})
	})
	srv := &http.Server{Addr: *addr, Handler: mux}
	go func() { _ = srv.ListenAndServe() }()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM)
	<-sig
	fmt.Println("helper node", *name, "leaving")
	_ = srv.Close()
	return 0
}

func newHelperCluster(t *testing.T, nodes int) *Cluster {
	t.Helper()
	t.Setenv(helperEnv, "1")
	t.Setenv("PRESENCE_JWT_SECRET", "must-not-reach-the-node")
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{
		Binary: exe, Dir: t.TempDir(), LogDir: t.TempDir(), Nodes: nodes,
		JWTSecret: "jwt", AdminToken: "admin", NamePrefix: "n",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func waitReady(t *testing.T, c *Cluster) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestNodeLifecycle(t *testing.T) {
	c := newHelperCluster(t, 1)
	n := c.Nodes[0]
	if n.Name != "n1" || !strings.HasPrefix(n.URL(), "http://127.0.0.1:") {
		t.Fatalf("node %s at %s", n.Name, n.URL())
	}
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c)
	if err := n.Start(); !errors.Is(err, ErrRunning) {
		t.Errorf("Start of a running node: %v, want ErrRunning", err)
	}

	if err := n.Pause(); err != nil || !n.Paused() {
		t.Fatalf("Pause: %v, paused %v", err, n.Paused())
	}
	if err := c.Ready(context.Background()); err == nil || !strings.Contains(err.Error(), "no node running") {
		t.Errorf("Ready with the only node paused: %v", err)
	}
	if err := n.Resume(); err != nil || n.Paused() {
		t.Fatalf("Resume: %v, paused %v", err, n.Paused())
	}
	waitReady(t, c)

	if got := c.Serving(); !slices.Equal(got, []string{"n1"}) {
		t.Errorf("Serving with n1 running: %v", got)
	}
	exit, err := n.Term(10 * time.Second)
	if err != nil || exit.Code != 0 || exit.Signal != "" || exit.Took <= 0 {
		t.Fatalf("Term: %v, %v; want exit code 0", exit, err)
	}
	if n.Running() {
		t.Error("running after Term")
	}
	if n.LastExit() != exit {
		t.Errorf("LastExit %v, want what Term returned, %v", n.LastExit(), exit)
	}
	if got := c.Serving(); len(got) != 0 {
		t.Errorf("Serving with n1 stopped: %v", got)
	}
	if _, err := n.Kill(); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Kill of a stopped node: %v, want ErrNotRunning", err)
	}

	if err := n.Restart(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c)
	exit, err = n.Kill()
	if err != nil || exit.Signal != "killed" || exit.Code != -1 {
		t.Fatalf("Kill: %v, %v; want the SIGKILL", exit, err)
	}

	log := n.Tail(100)
	for _, want := range []string{"start 1 of n1", "start 2 of n1", "helper node n1 args: --name n1", "helper node n1 leaving", "exit code 0", `signal "killed"`} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "leaked") {
		t.Errorf("a PRESENCE_ variable reached the node:\n%s", log)
	}
}

func TestClusterFlags(t *testing.T) {
	c := newHelperCluster(t, 3)
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		for _, a := range []string{n.HTTP, n.Gossip, n.RPC} {
			if seen[a] {
				t.Errorf("address %s used twice", a)
			}
			seen[a] = true
		}
		args := strings.Join(n.args, " ")
		_, join, _ := strings.Cut(args, "--join ")
		join, _, _ = strings.Cut(join, " ")
		for _, o := range c.Nodes {
			joins := strings.Contains(join, o.Gossip)
			if joins != (o != n) {
				t.Errorf("%s args %q: joining %s is %v", n.Name, args, o.Name, joins)
			}
		}
		for _, want := range []string{"--bootstrap-expect 3", "--data-dir " + n.DataDir, "--jwt-secret jwt", "--admin-token admin"} {
			if !strings.Contains(args, want) {
				t.Errorf("%s args %q lack %q", n.Name, args, want)
			}
		}
	}
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	// Each helper only sees itself: the nodes disagree on the leader.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := c.WaitReady(ctx); err == nil {
		t.Error("WaitReady succeeded although every node names another leader")
	}
	if got := len(c.Running()); got != 3 {
		t.Errorf("%d nodes running, want 3", got)
	}
	for _, n := range c.Nodes {
		if c.Node(n.Name) != n || c.Admin(n.Name).URL != n.URL() || c.Admin(n.Name).Token != "admin" {
			t.Errorf("%s: Node or Admin by name does not find it", n.Name)
		}
	}
	if c.Node("nobody") != nil || c.Admin("nobody").URL != "" {
		t.Error("an unknown name has a node or an admin URL")
	}
	if logs := c.Logs(5); strings.Count(logs, "-----") != 6 {
		t.Errorf("Logs: %s", logs)
	}
}

func TestNewRejectsIncompleteConfig(t *testing.T) {
	if _, err := New(Config{Binary: "x", Dir: "d", LogDir: t.TempDir(), Nodes: 0, JWTSecret: "j", AdminToken: "a"}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("no nodes: %v, want ErrBadConfig", err)
	}
}

func TestBuildMakesARunnableNode(t *testing.T) {
	if testing.Short() {
		t.Skip("builds presence-node")
	}
	binary, err := Build(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(binary, "--help").CombinedOutput()
	if !strings.Contains(string(out), "admin-token") {
		t.Fatalf("%s --help: %v\n%s", binary, err, out)
	}
}

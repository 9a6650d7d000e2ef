//go:build unix

package proc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/internal/testkit"
)

// ErrBadConfig is returned by New for a configuration it cannot use.
var ErrBadConfig = errors.New("proc: invalid configuration")

// readyPoll paces WaitReady.
const readyPoll = 100 * time.Millisecond

// Config configures a Cluster.
type Config struct {
	Binary     string // path of the presence-node binary; required
	Dir        string // parent of the nodes' data directories; required
	LogDir     string // where each node's log file goes; required
	Nodes      int    // number of nodes; required
	JWTSecret  string // --jwt-secret; required
	AdminToken string // --admin-token; required
	ClusterKey string // --cluster-key; "" = none
	// BootstrapExpect is --bootstrap-expect; 0 = Nodes.
	BootstrapExpect int
	// Args are extra flags for every node, e.g. --log-level=debug.
	Args []string
	// NamePrefix names the nodes "<prefix>1".."<prefix>N"; "" = "node".
	NamePrefix string
}

// Cluster is a set of node processes on loopback. Every node joins all the
// others, so any of them can come back alone.
type Cluster struct {
	cfg   Config
	Nodes []*Node
}

// New allocates ports, directories and log files for cfg.Nodes nodes; it
// starts nothing.
func New(cfg Config) (*Cluster, error) {
	if cfg.Binary == "" || cfg.Dir == "" || cfg.LogDir == "" || cfg.Nodes < 1 ||
		cfg.JWTSecret == "" || cfg.AdminToken == "" {
		return nil, fmt.Errorf("%w: Binary, Dir, LogDir, Nodes, JWTSecret and AdminToken are required", ErrBadConfig)
	}
	if cfg.BootstrapExpect == 0 {
		cfg.BootstrapExpect = cfg.Nodes
	}
	if cfg.NamePrefix == "" {
		cfg.NamePrefix = "node"
	}
	if err := os.MkdirAll(cfg.LogDir, 0o755); err != nil {
		return nil, fmt.Errorf("proc: %w", err)
	}
	// Every address is free for TCP and UDP (gossip binds both) and none
	// repeats; another process may still take one before the node binds
	// it, which the node's start then reports.
	var ports testkit.Ports
	c := &Cluster{cfg: cfg}
	for i := range cfg.Nodes {
		name := cfg.NamePrefix + strconv.Itoa(i+1)
		var addrs [3]string
		for j := range addrs {
			addr, err := ports.Addr(true)
			if err != nil {
				return nil, fmt.Errorf("proc: %w", err)
			}
			addrs[j] = addr
		}
		c.Nodes = append(c.Nodes, &Node{
			Name: name, HTTP: addrs[0], Gossip: addrs[1], RPC: addrs[2],
			DataDir: filepath.Join(cfg.Dir, name),
			LogPath: filepath.Join(cfg.LogDir, name+".log"),
			binary:  cfg.Binary,
		})
	}
	for _, n := range c.Nodes {
		n.args = c.args(n)
	}
	return c, nil
}

// args are the flags of n.
func (c *Cluster) args(n *Node) []string {
	var join []string
	for _, o := range c.Nodes {
		if o != n {
			join = append(join, o.Gossip)
		}
	}
	args := []string{
		"--name", n.Name,
		"--http", n.HTTP, "--gossip", n.Gossip, "--rpc", n.RPC,
		"--data-dir", n.DataDir,
		"--bootstrap-expect", strconv.Itoa(c.cfg.BootstrapExpect),
		"--jwt-secret", c.cfg.JWTSecret, "--admin-token", c.cfg.AdminToken,
	}
	if len(join) > 0 {
		args = append(args, "--join", strings.Join(join, ","))
	}
	if c.cfg.ClusterKey != "" {
		args = append(args, "--cluster-key", c.cfg.ClusterKey)
	}
	return append(args, c.cfg.Args...)
}

// StartAll starts every node that is not running.
func (c *Cluster) StartAll() error {
	for _, n := range c.Nodes {
		if n.Running() {
			continue
		}
		if err := n.Start(); err != nil {
			return err
		}
	}
	return nil
}

// URLs returns every node's base URL, running or not.
func (c *Cluster) URLs() []string {
	out := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		out[i] = n.URL()
	}
	return out
}

// Running returns the nodes whose process is alive.
func (c *Cluster) Running() []*Node {
	var out []*Node
	for _, n := range c.Nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// Serving names the running nodes (paused ones too), in node order; with
// Admin it makes the cluster a chaos.Cluster.
func (c *Cluster) Serving() []string {
	var out []string
	for _, n := range c.Running() {
		out = append(out, n.Name)
	}
	return out
}

var _ chaos.Cluster = (*Cluster)(nil)

// Node returns the node named name, nil when there is none.
func (c *Cluster) Node(name string) *Node {
	for _, n := range c.Nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// Admin returns an admin client for the node named node; its URL is empty
// when there is no such node.
func (c *Cluster) Admin(node string) chaos.Admin {
	a := chaos.Admin{Token: c.cfg.AdminToken}
	if n := c.Node(node); n != nil {
		a.URL = n.URL()
	}
	return a
}

// WaitReady polls until every running node that is not paused answers
// /readyz, names the same Raft leader (one of them) and sees all of them
// alive; it returns the last reason otherwise when ctx ends.
func (c *Cluster) WaitReady(ctx context.Context) error {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		err := c.Ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("proc: cluster not ready: %w", err)
		case <-t.C:
		}
	}
}

// Ready is WaitReady's condition: nil when the running nodes agree.
func (c *Cluster) Ready(ctx context.Context) error {
	var names []string
	var live []*Node
	for _, n := range c.Running() {
		if !n.Paused() {
			live = append(live, n)
			names = append(names, n.Name)
		}
	}
	if len(live) == 0 {
		return errors.New("no node running")
	}
	leader := ""
	for _, n := range live {
		a := c.Admin(n.Name)
		if err := a.Ready(ctx); err != nil {
			return err
		}
		view, err := a.Cluster(ctx)
		if err != nil {
			return err
		}
		if view.Raft.Leader == "" || !slices.Contains(names, view.Raft.Leader) {
			return fmt.Errorf("%s: Raft leader %q is not a running node", n.Name, view.Raft.Leader)
		}
		if leader != "" && view.Raft.Leader != leader {
			return fmt.Errorf("%s names leader %s, another node %s", n.Name, view.Raft.Leader, leader)
		}
		leader = view.Raft.Leader
		alive := view.Alive()
		for _, name := range names {
			if !slices.Contains(alive, name) {
				return fmt.Errorf("%s does not see %s alive (alive: %v)", n.Name, name, alive)
			}
		}
	}
	return nil
}

// Close kills every running node (paused ones too) and waits for them.
func (c *Cluster) Close() {
	for _, n := range c.Nodes {
		if n.Running() {
			_, _ = n.Kill()
		}
	}
}

// Logs returns the last lines of every node's log, headed by its path.
func (c *Cluster) Logs(lines int) string {
	var b strings.Builder
	for _, n := range c.Nodes {
		fmt.Fprintf(&b, "----- %s (%s), last %d lines -----\n%s\n", n.Name, n.LogPath, lines, n.Tail(lines))
	}
	return b.String()
}

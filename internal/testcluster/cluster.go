// Package testcluster runs real presence nodes inside one test process: N
// servers on 127.0.0.1 with real HTTP, gossip, Raft and node-to-node
// transport, tight timings and temporary data directories. Tests kill,
// stop, restart and add nodes, and talk to them over HTTP like any client.
//
// Waiting is done by polling with a deadline (WaitFor, WaitReady), never by
// sleeping for a fixed time.
package testcluster

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/server"
)

// Secrets every node of a test cluster uses.
const (
	JWTSecret    = "testcluster-jwt-secret"
	AdminToken   = "testcluster-admin-token"
	ServiceToken = "testcluster-service-token" // opens /server/ (the backend's API)
)

// DefaultReadyTimeout bounds WaitReady.
const DefaultReadyTimeout = 30 * time.Second

// Option changes how Start builds the cluster.
type Option func(*options)

type options struct {
	bootstrapExpect int  // 0: the initial node count
	noKey           bool // run without a cluster key
	tls             bool // node-to-node mutual TLS
	fastGossip      bool // server.Config.FastGossip
	partitions      bool // nodes behind cuttable proxies
	capture         bool // the proxies record the traffic
	configure       func(i int, cfg *server.Config)
}

// WithBootstrapExpect sets --bootstrap-expect on every node (default: the
// number of nodes given to Start or New).
func WithBootstrapExpect(n int) Option { return func(o *options) { o.bootstrapExpect = n } }

// WithoutClusterKey runs plain gossip and an unauthenticated transport
// (default: every node shares a random cluster key).
func WithoutClusterKey() Option { return func(o *options) { o.noKey = true } }

// WithTLS makes node-to-node traffic mutual TLS: a CA of the cluster's own
// issues every node a certificate (with the cluster key, which TLS needs
// for gossip). Partition cannot tell the senders of TLS connections apart:
// it cuts them only at a node cut off from all others.
func WithTLS() Option { return func(o *options) { o.tls = true } }

// WithCapture routes the nodes' traffic through proxies, as WithPartitions
// does, which record every byte they pass between nodes (Captured).
func WithCapture() Option { return func(o *options) { o.partitions, o.capture = true, true } }

// WithFastGossip makes gossip declare a killed node dead within about two
// seconds instead of about five. Use it only in tests that kill nodes:
// under heavy load the fast timings make members suspect each other.
func WithFastGossip() Option { return func(o *options) { o.fastGossip = true } }

// WithPartitions routes every node's gossip (UDP and TCP) and node-to-node
// RPC traffic (Raft included) through proxies at its advertised addresses,
// so that Partition can cut the network between nodes. The test is skipped
// where loopback addresses other than 127.0.0.1 cannot be bound.
func WithPartitions() Option { return func(o *options) { o.partitions = true } }

// WithConfig lets a test adjust node i's configuration before each start.
func WithConfig(fn func(i int, cfg *server.Config)) Option {
	return func(o *options) { o.configure = fn }
}

// Cluster is a set of in-process nodes. Its methods are safe for concurrent
// use; failures end the test (t.Fatal) unless documented otherwise.
type Cluster struct {
	t    testing.TB
	opts options
	dir  string
	key  string
	log  *slog.Logger
	net  *network    // nil unless WithPartitions
	ca   *testkit.CA // the CA of the nodes' certificates; nil unless WithTLS
	// ports hands out the fixed ports of the nodes (gossip, and every
	// port behind proxies).
	ports *testkit.Ports

	mu    sync.Mutex
	nodes []*Node
}

// Node is one member of a Cluster. Its addresses stay the same across
// restarts.
type Node struct {
	Index int
	Name  string
	c     *Cluster
	cfg   server.Config
	srv   *server.Server // nil while stopped
	// maxVoters is the Raft voter cap of the running server.
	maxVoters int
}

// Start creates n nodes and starts them all; every node but the first
// joins the first. It does not wait: call WaitReady.
func Start(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := New(t, n, opts...)
	for i := range n {
		c.StartNode(i)
	}
	return c
}

// New creates n stopped nodes (start them with StartNode, in any order).
// Cleanup stops every node when the test ends.
func New(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	c := &Cluster{t: t, dir: t.TempDir(), log: testkit.Logger(t), ports: &testkit.Ports{}}
	for _, opt := range opts {
		opt(&c.opts)
	}
	if c.opts.bootstrapExpect == 0 {
		c.opts.bootstrapExpect = n
	}
	if !c.opts.noKey || c.opts.tls {
		key := make([]byte, 32)
		_, _ = rand.Read(key) // crypto/rand.Read never fails
		c.key = base64.StdEncoding.EncodeToString(key)
	}
	if c.opts.tls {
		c.ca = testkit.NewCA(t, "testcluster CA")
	}
	if c.opts.partitions {
		key, _ := base64.StdEncoding.DecodeString(c.key) // empty without a key
		var rec *capture
		if c.opts.capture {
			rec = &capture{}
		}
		c.net = newNetwork(t, key, c.opts.tls, rec, c.ports)
	}
	t.Cleanup(c.stopAll)
	for range n {
		c.addNode()
	}
	return c
}

// addNode appends a stopped node that joins the first node.
func (c *Cluster) addNode() *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	i := len(c.nodes)
	name := fmt.Sprintf("node%d", i)
	cfg := server.Config{
		Name:            name,
		HTTPAddr:        "127.0.0.1:0",
		GossipAddr:      "127.0.0.1:" + strconv.Itoa(c.ports.MustTake(c.t, true)),
		RPCAddr:         "127.0.0.1:0",
		BootstrapExpect: c.opts.bootstrapExpect,
		DataDir:         filepath.Join(c.dir, name),
		JWTSecrets:      []string{JWTSecret},
		AdminToken:      AdminToken,
		ServiceTokens:   []string{ServiceToken},
		ClusterKey:      c.key,
		FastTimings:     true,
		FastGossip:      c.opts.fastGossip,
		Logger:          c.log,
	}
	if c.ca != nil {
		leaf := c.ca.Issue(c.t, name, testkit.LeafOptions{Hosts: []string{"127.0.0.1"}})
		cfg.TLSCert, cfg.TLSKey, cfg.TLSCA = c.ca.WriteFiles(c.t, c.dir, name, leaf)
	}
	if c.net != nil {
		c.net.place(i, &cfg)
	}
	if i > 0 {
		cfg.Join = []string{c.nodes[0].GossipAddr()}
	}
	n := &Node{Index: i, Name: name, c: c, cfg: cfg}
	c.nodes = append(c.nodes, n)
	return n
}

// AddNode creates a node that joins every existing node, starts it and
// returns it.
func (c *Cluster) AddNode() *Node {
	c.t.Helper()
	n := c.addNode()
	c.mu.Lock()
	n.cfg.Join = c.gossipAddrsLocked(n.Index)
	c.mu.Unlock()
	c.StartNode(n.Index)
	return n
}

// gossipAddrsLocked lists the gossip addresses of every node but skip.
func (c *Cluster) gossipAddrsLocked(skip int) []string {
	var out []string
	for _, n := range c.nodes {
		if n.Index != skip {
			out = append(out, n.GossipAddr())
		}
	}
	return out
}

// Len is the number of nodes, running or not.
func (c *Cluster) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.nodes)
}

// Node returns node i.
func (c *Cluster) Node(i int) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[i]
}

// Running returns the nodes currently started.
func (c *Cluster) Running() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*Node
	for _, n := range c.nodes {
		if n.srv != nil {
			out = append(out, n)
		}
	}
	return out
}

// StartNode starts node i; its ports, chosen at its first start, are
// reused afterwards.
func (c *Cluster) StartNode(i int) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.srv != nil {
		c.t.Fatalf("testcluster: %s already running", n.Name)
	}
	cfg := n.cfg
	if c.opts.configure != nil {
		c.opts.configure(i, &cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		c.t.Fatalf("testcluster: new %s: %v", n.Name, err)
	}
	if err := srv.Start(context.Background()); err != nil {
		srv.Kill()
		c.t.Fatalf("testcluster: start %s: %v", n.Name, err)
	}
	// Keep the ports picked by the kernel for later restarts (WithConfig
	// may choose others at each start). Nodes behind proxies have fixed
	// ports.
	n.cfg.HTTPAddr = srv.HTTPAddr()
	if c.net == nil {
		n.cfg.RPCAddr = srv.RPCAddr()
	}
	n.srv = srv
	n.maxVoters = cmp.Or(cfg.MaxVoters, server.DefaultMaxVoters)
}

// Kill crashes node i: no hand-off, no leave, no leadership transfer.
func (c *Cluster) Kill(i int) {
	if srv := c.take(i); srv != nil {
		srv.Kill()
	}
}

// Stop shuts node i down gracefully, within server.DefaultShutdownTimeout,
// and fails the test if the shutdown reports an error.
func (c *Cluster) Stop(i int) {
	c.t.Helper()
	srv := c.take(i)
	if srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), server.DefaultShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		c.t.Errorf("testcluster: graceful stop of %s: %v", c.Node(i).Name, err)
	}
}

// Restart stops node i gracefully if it runs, then starts it again with
// the same name, data directory and ports; it joins every other node.
func (c *Cluster) Restart(i int) {
	c.t.Helper()
	c.Stop(i)
	c.mu.Lock()
	c.nodes[i].cfg.Join = c.gossipAddrsLocked(i)
	c.mu.Unlock()
	c.StartNode(i)
}

// take detaches node i's server, nil when it is not running.
func (c *Cluster) take(i int) *server.Server {
	c.mu.Lock()
	defer c.mu.Unlock()
	srv := c.nodes[i].srv
	c.nodes[i].srv = nil
	return srv
}

// stopAll kills whatever still runs when the test ends: a crash is as good
// as a leave for cleanup, and much faster.
func (c *Cluster) stopAll() {
	var wg sync.WaitGroup
	for i := range c.Len() {
		if srv := c.take(i); srv != nil {
			wg.Go(srv.Kill)
		}
	}
	wg.Wait()
}

// Server returns the running server of the node, nil while it is stopped.
func (n *Node) Server() *server.Server {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.srv
}

// Running reports whether the node is started.
func (n *Node) Running() bool { return n.Server() != nil }

// URL is the base URL of the node's HTTP API, such as http://127.0.0.1:4321.
func (n *Node) URL() string {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return "http://" + n.cfg.HTTPAddr
}

// Key returns the cluster key the nodes share, nil WithoutClusterKey.
func (c *Cluster) Key() []byte {
	key, _ := base64.StdEncoding.DecodeString(c.key) // encoded by New
	if len(key) == 0 {
		return nil
	}
	return key
}

// CA returns the CA of the nodes' certificates, nil without WithTLS.
func (c *Cluster) CA() *testkit.CA { return c.ca }

// Dir is the cluster's directory: data directories and TLS files.
func (c *Cluster) Dir() string { return c.dir }

// Captured returns every byte the proxies passed between nodes so far:
// node-to-node connections both ways, memberlist streams and datagrams. It
// needs WithCapture.
func (c *Cluster) Captured() []byte {
	c.t.Helper()
	if c.net == nil || c.net.capture == nil {
		c.t.Fatal(errNoCapture)
	}
	return c.net.capture.bytes()
}

// GossipAddr is the gossip address other nodes join: the bound one, or
// its proxy's in a cluster started WithPartitions.
func (n *Node) GossipAddr() string {
	if n.cfg.Advertise == "" {
		return n.cfg.GossipAddr
	}
	_, port, _ := net.SplitHostPort(n.cfg.GossipAddr)
	return net.JoinHostPort(n.cfg.Advertise, port)
}

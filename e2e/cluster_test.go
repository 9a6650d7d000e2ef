//go:build browser

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"path/filepath"
	"sync"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/chaos/proc"
	"github.com/presencehq/presence/internal/testkit"
)

const (
	// --dev mode's well-known secrets, which chaos/proc passes as flags.
	adminToken = "dev-admin-token"
	jwtSecret  = "dev-jwt-secret-not-for-production"
	// readyTimeout bounds how long a fresh cluster may take to be ready.
	readyTimeout = 60 * time.Second
	// stopTimeout is how long a node gets to leave after SIGTERM (the contract promises 10 s).
	stopTimeout = 12 * time.Second
	// failoverTimeout is the channel timeout, in seconds, of /e2e/failover/*.
	failoverTimeout = 20
)

// e2ePrefixDocument configures the channels the tests use. /e2e/topic/* keeps
// the default 60 s timeout, far above the 2 s the leave test allows, so a
// leave seen there cannot be an expiry.
var e2ePrefixDocument = fmt.Sprintf(`{"rules": [
  {"match": "/e2e/count/.+", "config": {"public": true, "count_only": true}},
  {"match": "/e2e/failover/.+", "config": {"public": true, "timeout": %d}},
  {"match": "/e2e/.+", "config": {"public": true}}
]}`, failoverTimeout)

// httpClient talks to the nodes; every call is short.
var httpClient = &http.Client{Timeout: 3 * time.Second}

// node is one presence-node process of a cluster, with the calls the
// tests make to it.
type node struct {
	*proc.Node
	admin chaos.Admin
}

// owner asks the node which node owns a channel.
func (n *node) owner(channel string) (string, error) {
	v, err := n.admin.Owner(context.Background(), channel)
	return v.Owner, err
}

// cluster is a set of nodes started together.
type cluster struct {
	label string
	procs *proc.Cluster
	nodes []*node
}

// startCluster starts size nodes in --dev mode on loopback, each joining
// the others, and waits until the cluster is ready and every node knows
// the e2e prefix. Node logs go to artifacts/<label>/.
func startCluster(binary, workDir, artifacts, label string, size int) (*cluster, error) {
	procs, err := proc.New(proc.Config{
		Binary: binary, Dir: filepath.Join(workDir, label), LogDir: filepath.Join(artifacts, label), Nodes: size,
		JWTSecret: jwtSecret, AdminToken: adminToken, Args: []string{"--dev"},
	})
	if err != nil {
		return nil, err
	}
	c := &cluster{label: label, procs: procs}
	for _, n := range procs.Nodes {
		admin := procs.Admin(n.Name)
		admin.Client = httpClient
		c.nodes = append(c.nodes, &node{Node: n, admin: admin})
	}
	begin := time.Now()
	if err := procs.StartAll(); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.waitReady(readyTimeout); err != nil {
		c.stop()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if _, err := chaos.StorePrefix(ctx, procs, "e2e", []byte(e2ePrefixDocument)); err != nil {
		c.stop()
		return nil, err
	}
	fmt.Printf("e2e: cluster %q of %d node(s) ready in %s\n", label, size, time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// stop asks every running node to leave (SIGTERM), kills those still
// running after stopTimeout, and prints how each one that did not exit
// cleanly ended.
func (c *cluster) stop() {
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		if !n.Running() {
			if exit := n.LastExit(); exit.Code != 0 {
				fmt.Printf("e2e: %s ended: %v (log: %s)\n", n.Name, exit, n.LogPath)
			}
			continue
		}
		wg.Go(func() {
			exit, err := n.Term(stopTimeout)
			switch {
			case errors.Is(err, proc.ErrNoExit):
				fmt.Printf("e2e: %s still running %s after SIGTERM, killed it\n", n.Name, stopTimeout)
			case err != nil:
				fmt.Printf("e2e: stopping %s: %v\n", n.Name, err)
			case exit.Code != 0:
				fmt.Printf("e2e: %s exited: %v (log: %s)\n", n.Name, exit, n.LogPath)
			}
		})
	}
	wg.Wait()
}

// live returns the nodes whose process runs.
func (c *cluster) live() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.Running() {
			out = append(out, n)
		}
	}
	return out
}

// waitReady polls /readyz and /admin/cluster on every node until each is
// ready, sees every node alive and agrees on a Raft leader with every node a
// server.
func (c *cluster) waitReady(timeout time.Duration) error {
	err := testkit.Poll(timeout, func() error {
		ctx := context.Background()
		for _, n := range c.nodes {
			if !n.Running() {
				return fmt.Errorf("%s exited: %v (log: %s)", n.Name, n.LastExit(), n.LogPath)
			}
			if err := n.admin.Ready(ctx); err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			v, err := n.admin.Cluster(ctx)
			if err != nil {
				return fmt.Errorf("%s: %w", n.Name, err)
			}
			alive := v.Alive()
			if len(alive) != len(c.nodes) || v.Raft.Leader == "" || len(v.Raft.Servers) != len(c.nodes) {
				return fmt.Errorf("%s sees alive %v, raft leader %q, servers %v", n.Name, alive, v.Raft.Leader, v.Raft.Servers)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("cluster %q not ready: %w", c.label, err)
	}
	return nil
}

// token mints a user token with the node's /dev/token.
func (n *node) token(id, name string) (string, error) {
	q := url.Values{"user": {id}, "username": {id}, "name": {name}}
	resp, err := httpClient.Get(n.URL() + "/dev/token?" + q.Encode())
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("/dev/token: status %d", resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.Token, nil
}

// channelSnapshot is one channel of GET /presence/get; Users stays nil when
// the answer has no "users" key (count-only channels).
type channelSnapshot struct {
	Count int `json:"count"`
	Users []struct {
		ID string `json:"id"`
	} `json:"users"`
}

// presence GETs a channel anonymously; nil when the answer is null.
func (n *node) presence(channel string) (*channelSnapshot, map[string]json.RawMessage, error) {
	resp, err := httpClient.Get(n.URL() + "/presence/get?channels[]=" + url.QueryEscape(channel))
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("/presence/get: status %d", resp.StatusCode)
	}
	var all map[string]json.RawMessage
	if err := json.NewDecoder(resp.Body).Decode(&all); err != nil {
		return nil, nil, err
	}
	raw := all[channel]
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil, nil
	}
	var snap channelSnapshot
	var keys map[string]json.RawMessage
	if err := json.Unmarshal(raw, &snap); err != nil {
		return nil, nil, err
	}
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, nil, err
	}
	return &snap, keys, nil
}

// userIDs lists the ids of a snapshot's users.
func (s *channelSnapshot) userIDs() []string {
	if s == nil {
		return nil
	}
	ids := make([]string, 0, len(s.Users))
	for _, u := range s.Users {
		ids = append(ids, u.ID)
	}
	return ids
}

// channelOwned finds a channel named prefix<N> that owner owns, so that
// stopping owner makes the channel move. Every node must name that owner:
// a node ready and seeing every member alive may not have the newest
// member in its ring yet (CI once found none of 500 channels given to
// node1), so it waits until they agree, within ownersAgreeTimeout.
func channelOwned(c *cluster, owner *node, prefix string) (string, error) {
	var found string
	err := testkit.Poll(ownersAgreeTimeout, func() error {
		for i := range 500 {
			channel := fmt.Sprintf("%s%d", prefix, i)
			agreed, err := allNameOwner(c, channel, owner.Name)
			if err != nil {
				return err
			}
			if agreed {
				found = channel
				return nil
			}
		}
		return fmt.Errorf("no %sN channel of the first 500 is owned by %s on every node", prefix, owner.Name)
	})
	return found, err
}

// ownersAgreeTimeout bounds how long after the cluster is ready its nodes
// may still disagree on a channel's owner.
const ownersAgreeTimeout = 10 * time.Second

// allNameOwner reports whether every node names owner as channel's owner;
// it stops at the first that does not.
func allNameOwner(c *cluster, channel, owner string) (bool, error) {
	for _, n := range c.nodes {
		got, err := n.owner(channel)
		if err != nil {
			return false, fmt.Errorf("GET /admin/owner on %s: %w", n.Name, err)
		}
		if got != owner {
			return false, nil
		}
	}
	return true, nil
}

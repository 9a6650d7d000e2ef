//go:build browser

package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

const (
	adminToken = "dev-admin-token" // --dev mode's well-known admin token
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

// node is one presence-node process.
type node struct {
	name    string
	http    string // host:port of the public API
	gossip  string
	raft    string
	rpc     string
	logPath string

	cmd     *exec.Cmd
	logFile *os.File
	done    chan struct{} // closed when the process has exited
	exitErr error
}

// URL is the base URL browsers use for the node.
func (n *node) URL() string { return "http://" + n.http }

// alive reports whether the process still runs.
func (n *node) alive() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// cluster is a set of nodes started together.
type cluster struct {
	label string
	nodes []*node
}

// startCluster starts size nodes in --dev mode on loopback, the first one
// alone and the others joining it, and waits until the cluster is ready and
// every node knows the e2e prefix.
func startCluster(binary, workDir, artifacts, label string, size int) (*cluster, error) {
	c := &cluster{label: label}
	taken := map[string]bool{} // nodes bind their ports only at start: never hand one out twice
	for i := range size {
		n, err := newNode(fmt.Sprintf("node%d", i+1), filepath.Join(artifacts, label), taken)
		if err != nil {
			return nil, err
		}
		c.nodes = append(c.nodes, n)
	}
	begin := time.Now()
	if err := c.launch(binary, workDir); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.waitReady(readyTimeout); err != nil {
		c.stop()
		return nil, err
	}
	if err := c.configure(); err != nil {
		c.stop()
		return nil, err
	}
	fmt.Printf("e2e: cluster %q of %d node(s) ready in %s\n", label, size, time.Since(begin).Round(time.Millisecond))
	return c, nil
}

// launch starts the first node, waits until it serves, then starts the
// others joining its gossip address.
func (c *cluster) launch(binary, workDir string) error {
	size := len(c.nodes)
	for i, n := range c.nodes {
		var join string
		if i > 0 {
			join = c.nodes[0].gossip
		}
		if err := n.start(binary, filepath.Join(workDir, c.label, n.name), join, size); err != nil {
			return err
		}
		if i > 0 {
			continue
		}
		if _, ok := poll(readyTimeout, func() (bool, string) { return n.status("/healthz") == http.StatusOK, "" }); !ok {
			return fmt.Errorf("%s never answered /healthz (log: %s)", n.name, n.logPath)
		}
	}
	return nil
}

// newNode picks free loopback ports for a node, none of taken (which it
// extends); its log goes to logPrefix-<name>.log.
func newNode(name, logPrefix string, taken map[string]bool) (*node, error) {
	var addrs [4]string
	for i := range addrs {
		addr, err := freeAddr(taken)
		if err != nil {
			return nil, err
		}
		addrs[i] = addr
	}
	return &node{
		name: name, http: addrs[0], gossip: addrs[1], raft: addrs[2], rpc: addrs[3],
		logPath: logPrefix + "-" + name + ".log",
		done:    make(chan struct{}),
	}, nil
}

// freeAddr returns a loopback address not in taken whose port is free for
// TCP and UDP (memberlist binds both) at the time of the call, and adds it
// to taken.
func freeAddr(taken map[string]bool) (string, error) {
	// Drawn below Linux's ephemeral range (32768-60999), which outgoing
	// connections use: a ":0" port could be taken by one before the node binds.
	for range 100 {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", 20000+rand.IntN(12000)))
		if err != nil {
			continue
		}
		addr := ln.Addr().String()
		pc, err := net.ListenPacket("udp", addr)
		ln.Close()
		if err == nil && !taken[addr] {
			pc.Close()
			taken[addr] = true
			return addr, nil
		}
		if err == nil {
			pc.Close()
		}
	}
	return "", errors.New("no free loopback port for both TCP and UDP")
}

// start runs the binary; its output goes to the node's log file.
func (n *node) start(binary, dataDir, join string, expect int) error {
	logFile, err := os.Create(n.logPath)
	if err != nil {
		return err
	}
	args := []string{
		"--name", n.name, "--dev",
		"--http", n.http, "--gossip", n.gossip, "--raft", n.raft, "--rpc", n.rpc,
		"--data-dir", dataDir, "--bootstrap-expect", strconv.Itoa(expect),
	}
	if join != "" {
		args = append(args, "--join", join)
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = withoutPresenceVars(os.Environ())
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("starting %s: %w", n.name, err)
	}
	n.cmd, n.logFile = cmd, logFile
	go func() {
		n.exitErr = cmd.Wait()
		logFile.Close()
		close(n.done)
	}()
	return nil
}

// withoutPresenceVars drops PRESENCE_* so the caller's environment cannot
// change the flags the tests give.
func withoutPresenceVars(environ []string) []string {
	out := environ[:0:0]
	for _, kv := range environ {
		if !strings.HasPrefix(kv, "PRESENCE_") {
			out = append(out, kv)
		}
	}
	return out
}

// kill ends the process with SIGKILL and waits for it: a crash, no goodbye.
func (n *node) kill() error {
	if !n.alive() {
		return nil
	}
	if err := n.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-n.done
	return nil
}

// stop asks every live node to leave (SIGTERM), kills those still running
// after stopTimeout, and prints how each one ended.
func (c *cluster) stop() {
	for _, n := range c.nodes {
		if n.cmd != nil && n.alive() {
			_ = n.cmd.Process.Signal(syscall.SIGTERM)
		}
	}
	for _, n := range c.nodes {
		if n.cmd == nil {
			continue
		}
		select {
		case <-n.done:
		case <-time.After(stopTimeout):
			fmt.Printf("e2e: %s still running %s after SIGTERM, killing it\n", n.name, stopTimeout)
			_ = n.kill()
		}
		if n.exitErr != nil {
			fmt.Printf("e2e: %s exited: %v (log: %s)\n", n.name, n.exitErr, n.logPath)
		}
	}
}

// live returns the nodes whose process runs.
func (c *cluster) live() []*node {
	var out []*node
	for _, n := range c.nodes {
		if n.alive() {
			out = append(out, n)
		}
	}
	return out
}

// clusterView is the answer of GET /admin/cluster.
type clusterView struct {
	Members []struct {
		Name  string `json:"name"`
		HTTP  string `json:"http"`
		State string `json:"state"`
	} `json:"members"`
	Raft struct {
		Leader  string   `json:"leader"`
		Servers []string `json:"servers"`
	} `json:"raft"`
}

// aliveMembers lists the members this view calls alive.
func (v clusterView) aliveMembers() []string {
	var names []string
	for _, m := range v.Members {
		if strings.EqualFold(m.State, "alive") {
			names = append(names, m.Name)
		}
	}
	return names
}

// waitReady polls /readyz and /admin/cluster on every node until each is
// ready, sees every node alive and agrees on a Raft leader with every node a
// server.
func (c *cluster) waitReady(timeout time.Duration) error {
	last, ok := poll(timeout, func() (bool, string) {
		for _, n := range c.nodes {
			if !n.alive() {
				return false, fmt.Sprintf("%s exited: %v (log: %s)", n.name, n.exitErr, n.logPath)
			}
			if code := n.status("/readyz"); code != http.StatusOK {
				return false, fmt.Sprintf("%s /readyz: %d", n.name, code)
			}
			var v clusterView
			if err := n.adminJSON("/admin/cluster", &v); err != nil {
				return false, fmt.Sprintf("%s /admin/cluster: %v", n.name, err)
			}
			alive := v.aliveMembers()
			if len(alive) != len(c.nodes) || v.Raft.Leader == "" || len(v.Raft.Servers) != len(c.nodes) {
				return false, fmt.Sprintf("%s sees alive %v, raft leader %q, servers %v", n.name, alive, v.Raft.Leader, v.Raft.Servers)
			}
		}
		return true, ""
	})
	if !ok {
		return fmt.Errorf("cluster %q not ready after %s: %s", c.label, timeout, last)
	}
	return nil
}

// configure stores the e2e prefix (retrying while a leader is being elected)
// and waits until every node serves it.
func (c *cluster) configure() error {
	first := c.nodes[0]
	last, ok := poll(readyTimeout, func() (bool, string) {
		code, body, err := first.admin(http.MethodPut, "/admin/prefixes/e2e", []byte(e2ePrefixDocument))
		if err != nil || code != http.StatusOK && code != http.StatusNoContent {
			return false, fmt.Sprintf("PUT /admin/prefixes/e2e on %s: %d %s %v", first.name, code, body, err)
		}
		return true, ""
	})
	if !ok {
		return errors.New(last)
	}
	last, ok = poll(readyTimeout, func() (bool, string) {
		for _, n := range c.nodes {
			if code, body, err := n.admin(http.MethodGet, "/admin/prefixes/e2e", nil); err != nil || code != http.StatusOK {
				return false, fmt.Sprintf("GET /admin/prefixes/e2e on %s: %d %s %v", n.name, code, body, err)
			}
		}
		return true, ""
	})
	if !ok {
		return errors.New(last)
	}
	return nil
}

// status GETs a path and returns the status code, 0 when the node does not answer.
func (n *node) status(path string) int {
	resp, err := httpClient.Get(n.URL() + path)
	if err != nil {
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// admin calls an /admin path with the admin token.
func (n *node) admin(method, path string, body []byte) (int, string, error) {
	req, err := http.NewRequest(method, n.URL()+path, bytes.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+adminToken)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	return resp.StatusCode, strings.TrimSpace(string(raw)), err
}

// adminJSON GETs an /admin path and decodes a 200 answer into v.
func (n *node) adminJSON(path string, v any) error {
	code, body, err := n.admin(http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return fmt.Errorf("status %d: %s", code, body)
	}
	return json.Unmarshal([]byte(body), v)
}

// owner asks the node which node owns a channel.
func (n *node) owner(channel string) (string, error) {
	var v struct {
		Owner string `json:"owner"`
	}
	err := n.adminJSON("/admin/owner?channel="+url.QueryEscape(channel), &v)
	return v.Owner, err
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

package testcluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/client"
	"github.com/presencehq/presence/cluster/autopilot"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

// requestTimeout bounds one ordinary HTTP call (not a stream).
const requestTimeout = 15 * time.Second

var httpClient = &http.Client{Timeout: requestTimeout}

// WaitFor polls cond until it returns nil; after timeout the test fails
// with cond's last error. Call it from the test goroutine.
func (c *Cluster) WaitFor(timeout time.Duration, cond func() error) {
	c.t.Helper()
	if err := testkit.Poll(timeout, cond); err != nil {
		c.t.Fatalf("testcluster: %v", err)
	}
}

// WaitReady waits until every running node answers /readyz with 200, all
// name the same Raft leader, each sees exactly the running nodes alive and
// in the Raft configuration, every voter running and at least as many
// voters as autopilot wants for that many servers (the cluster can take the
// next fault), and all agree on channel owners.
func (c *Cluster) WaitReady() {
	c.t.Helper()
	c.WaitFor(DefaultReadyTimeout, c.Ready)
}

// probeChannels are the channels whose owners WaitReady compares.
var probeChannels = []string{"/probe/a", "/probe/b", "/probe/c", "/probe/d", "/probe/e", "/probe/f"}

// Ready is WaitReady's condition: nil when the cluster is ready.
func (c *Cluster) Ready() error {
	running := c.Running()
	if len(running) == 0 {
		return errors.New("no node running")
	}
	var names []string
	for _, n := range running {
		names = append(names, n.Name)
	}
	slices.Sort(names)
	running[0].c.mu.Lock()
	wantVoters := autopilot.Voters(len(running), running[0].maxVoters)
	running[0].c.mu.Unlock()
	var leader string
	owners := map[string]string{}
	for _, n := range running {
		admin := n.Admin()
		if status, body, err := admin.Do(http.MethodGet, "/readyz", nil); err != nil || status != http.StatusOK {
			return fmt.Errorf("%s not ready: %d %s %v", n.Name, status, body, err)
		}
		view, err := admin.Cluster()
		if err != nil {
			return err
		}
		if err := checkView(n.Name, view, names, wantVoters, &leader); err != nil {
			return err
		}
		for _, ch := range probeChannels {
			owner, _, err := admin.Owner(ch)
			if err != nil {
				return err
			}
			if prev, ok := owners[ch]; ok && prev != owner {
				return fmt.Errorf("owners of %s disagree: %s and %s", ch, prev, owner)
			}
			owners[ch] = owner
		}
	}
	return nil
}

// checkView compares one node's /admin/cluster with the running nodes.
func checkView(node string, view ClusterView, running []string, wantVoters int, leader *string) error {
	alive := view.Alive()
	if !slices.Equal(alive, running) {
		return fmt.Errorf("%s sees alive %v, running %v", node, alive, running)
	}
	for _, name := range running {
		if !slices.Contains(view.Raft.Servers, name) {
			return fmt.Errorf("%s: raft servers %v lack %s", node, view.Raft.Servers, name)
		}
	}
	for _, name := range view.Raft.Voters {
		if !slices.Contains(running, name) {
			return fmt.Errorf("%s: raft voter %s is not running (voters %v)", node, name, view.Raft.Voters)
		}
	}
	if len(view.Raft.Voters) < wantVoters {
		return fmt.Errorf("%s: %d raft voters %v, want %d", node, len(view.Raft.Voters), view.Raft.Voters, wantVoters)
	}
	switch {
	case view.Raft.Leader == "":
		return fmt.Errorf("%s knows no raft leader", node)
	case *leader == "":
		*leader = view.Raft.Leader
	case *leader != view.Raft.Leader:
		return fmt.Errorf("raft leaders disagree: %s and %s", *leader, view.Raft.Leader)
	}
	return nil
}

// Leader returns the index of the node every running node names as Raft
// leader, or -1 when they do not agree or none is known.
func (c *Cluster) Leader() int {
	var leader string
	for _, n := range c.Running() {
		view, err := n.Admin().Cluster()
		if err != nil || view.Raft.Leader == "" || leader != "" && leader != view.Raft.Leader {
			return -1
		}
		leader = view.Raft.Leader
	}
	for _, n := range c.Running() {
		if n.Name == leader {
			return n.Index
		}
	}
	return -1
}

// Token mints a user token signed with the cluster's JWT secret, valid for
// an hour; the username is "user<id>".
func Token(id string, groups ...string) string {
	claims := jwt.MapClaims{
		"sub":      id,
		"username": "user" + id,
		"exp":      time.Now().Add(time.Hour).Unix(),
	}
	if len(groups) > 0 {
		claims["groups"] = groups
	}
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(JWTSecret))
	if err != nil {
		panic(fmt.Sprintf("testcluster: sign token: %v", err)) // HMAC signing cannot fail with a key
	}
	return tok
}

// Client calls one node's HTTP API with one bearer token (empty: anonymous).
type Client struct {
	Base  string
	Token string
}

// Client returns a client of the node with a user token ("" = anonymous).
func (n *Node) Client(token string) *Client { return &Client{Base: n.URL(), Token: token} }

// Admin returns a client of the node with the admin token.
func (n *Node) Admin() *Client { return n.Client(AdminToken) }

// Service returns a client of the node with the service token (/server/).
func (n *Node) Service() *Client { return n.Client(ServiceToken) }

// Backend returns the Go client of an application's backend (package
// client) for the node alone, with the service and admin tokens, and
// without retries: a test sees each answer.
func (n *Node) Backend() *client.Client {
	c, err := client.New(client.Config{URLs: []string{n.URL()}, Token: ServiceToken, AdminToken: AdminToken, Retries: -1})
	if err != nil {
		panic(fmt.Sprintf("testcluster: backend client of %s: %v", n.Name, err)) // the URL and tokens are well-formed
	}
	return c
}

// Do sends a request; body is nil, a string, a []byte (sent as JSON) or a
// value to encode as JSON. It returns the status and the whole body.
func (cl *Client) Do(method, path string, body any) (int, []byte, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		enc, err := json.Marshal(b)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(enc)
	}
	req, err := http.NewRequest(method, cl.Base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if cl.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.Token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	return resp.StatusCode, data, err
}

// getJSON GETs path, wants 200 and decodes the body into out.
func (cl *Client) getJSON(path string, out any) error {
	status, body, err := cl.Do(http.MethodGet, path, nil)
	if err != nil {
		return err
	}
	if status != http.StatusOK {
		return fmt.Errorf("GET %s%s: %d %s", cl.Base, path, status, body)
	}
	return json.Unmarshal(body, out)
}

// ClusterView is the answer of /admin/cluster.
type ClusterView struct {
	Members []api.Member `json:"members"`
	Raft    api.RaftInfo `json:"raft"`
}

// Alive returns the names of the members in state "alive", sorted.
func (v ClusterView) Alive() []string {
	var alive []string
	for _, m := range v.Members {
		if m.State == "alive" {
			alive = append(alive, m.Name)
		}
	}
	slices.Sort(alive)
	return alive
}

// Cluster GETs /admin/cluster.
func (cl *Client) Cluster() (ClusterView, error) {
	var v ClusterView
	err := cl.getJSON("/admin/cluster", &v)
	return v, err
}

// Owner GETs /admin/owner for channel.
func (cl *Client) Owner(channel string) (owner string, replicas []string, err error) {
	var v struct {
		Owner    string   `json:"owner"`
		Replicas []string `json:"replicas"`
	}
	err = cl.getJSON("/admin/owner?channel="+url.QueryEscape(channel), &v)
	return v.Owner, v.Replicas, err
}

// ChannelState is one channel of a /presence/get answer.
type ChannelState struct {
	Count         int                 `json:"count"`
	LastMessageID int64               `json:"last_message_id"`
	Users         []presence.UserInfo `json:"users"`
}

// Get GETs /presence/get for channels (a nil entry: no such channel or not
// viewable).
func (cl *Client) Get(channels ...string) (map[string]*ChannelState, error) {
	q := url.Values{}
	for _, ch := range channels {
		q.Add("channels[]", ch)
	}
	out := map[string]*ChannelState{}
	err := cl.getJSON("/presence/get?"+q.Encode(), &out)
	return out, err
}

// Update POSTs /presence/update and returns the per-channel answers.
func (cl *Client) Update(clientID string, present, leave []string) (map[string]bool, error) {
	body := map[string]any{"client_id": clientID, "present_channels": present, "leave_channels": leave}
	status, data, err := cl.Do(http.MethodPost, "/presence/update", body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, fmt.Errorf("POST %s/presence/update: %d %s", cl.Base, status, data)
	}
	out := map[string]bool{}
	return out, json.Unmarshal(data, &out)
}

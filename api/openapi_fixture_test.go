package api

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/web"
)

// The node the examples of docs/openapi.json describe: a dev node (its
// prefix "demo", browser client and demo page) in a three-node cluster, over
// the real presence engine and resolver, on which sam (user 7) is present in
// /demo/online and /demo/count/visitors. The document's info section says
// the same; keep the two in step.

// exampleDemoDocument is the "demo" prefix document a dev node stores (the
// server package's DemoPrefixDocument, which this package cannot import).
const exampleDemoDocument = `{"rules": [
  {"match": "/demo/count/.+", "config": {"public": true, "count_only": true}},
  {"match": "/demo/.+", "config": {"public": true}}
]}`

// exampleUsers are the users x-replay's "auth" may name.
var exampleUsers = map[string]*presence.User{
	"sam": {ID: "7", Username: "sam", Name: "Sam"},
	"ann": {ID: "9", Username: "ann", Name: "Ann"},
}

// The well-known secrets of a dev node: tokens in the examples verify on
// one.
const (
	exampleAdminToken   = "dev-admin-token"
	exampleServiceToken = "dev-service-token"
	exampleJWTSecret    = "dev-jwt-secret-not-for-production"
)

// exampleCluster is the three-node cluster the examples show; notReady
// makes /readyz fail as a node without a Raft leader does.
type exampleCluster struct{ notReady bool }

func (c *exampleCluster) Members() []Member {
	return []Member{
		{Name: "node1", HTTP: "127.0.0.1:8081", State: "alive"},
		{Name: "node2", HTTP: "127.0.0.1:8082", State: "alive"},
		{Name: "node3", HTTP: "127.0.0.1:8083", State: "alive"},
	}
}

func (c *exampleCluster) Raft() RaftInfo {
	return RaftInfo{Leader: "node1", Servers: []string{"node1", "node2", "node3"}, Voters: []string{"node1", "node2", "node3"}}
}

func (c *exampleCluster) Owner(string) (string, []string) { return "node2", []string{"node3"} }

func (c *exampleCluster) Ready() (bool, string) {
	if c.notReady {
		return false, "no raft leader"
	}
	return true, ""
}

// exampleNode is one fresh example node served over real HTTP.
type exampleNode struct {
	t       *testing.T
	srv     *httptest.Server
	clock   *clock.Fake
	cluster *exampleCluster
}

// exampleNodeConfig is the api.Config of an example node over engine.
func exampleNodeConfig(eng presence.Service, store PrefixStore, cl ClusterInfo, clk clock.Clock, reg *prometheus.Registry) Config {
	return Config{
		Service:       eng,
		Prefixes:      store,
		Cluster:       cl,
		JWTSecrets:    [][]byte{[]byte(exampleJWTSecret)},
		AdminToken:    exampleAdminToken,
		ServiceTokens: []string{exampleServiceToken},
		CORSOrigins:   []string{"*"},
		Dev:           true,
		Clock:         clk,
		Registry:      reg,
		Client:        web.ClientHandler(),
		Demo:          web.DemoHandler(),
	}
}

// newExampleNode starts an example node in the state the document assumes.
func newExampleNode(t *testing.T) *exampleNode {
	t.Helper()
	n := &exampleNode{t: t, clock: clock.NewFake(testStart), cluster: &exampleCluster{}}
	reg := prometheus.NewRegistry()
	res := presence.NewResolver(presence.ResolverConfig{Clock: n.clock})
	eng, err := presence.NewEngine(presence.EngineConfig{Clock: n.clock, Configs: res, Metrics: presence.NewMetrics(reg)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := eng.Close(ctx); err != nil {
			t.Errorf("engine close: %v", err)
		}
	})
	store := &resolverStore{docs: map[string][]byte{}, res: res}
	doc, err := presence.ParsePrefixDocument([]byte(exampleDemoDocument))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(context.Background(), "demo", doc.Bytes()); err != nil {
		t.Fatal(err)
	}
	h, err := New(exampleNodeConfig(eng, store, n.cluster, n.clock, reg))
	if err != nil {
		t.Fatal(err)
	}
	n.srv = httptest.NewServer(h)
	t.Cleanup(n.srv.Close)
	for _, ch := range []string{"/demo/online", "/demo/count/visitors"} {
		if ok, err := eng.Present(context.Background(), exampleUsers["sam"], "tab-1", ch); err != nil || !ok {
			t.Fatalf("sam present in %s: %v %v", ch, ok, err)
		}
		// Present may return before a new channel's actor applied it (and
		// counted itself in the gauges GET /metrics documents): a read
		// through the same mailbox comes after it (found by CI).
		if _, err := eng.State(context.Background(), exampleUsers["sam"], ch); err != nil {
			t.Fatalf("state of %s: %v", ch, err)
		}
	}
	return n
}

// authorization returns the Authorization header x-replay's auth names:
// "none" (no header), "admin", "service", a user of exampleUsers, or a
// literal value.
func (n *exampleNode) authorization(auth string) string {
	switch auth {
	case "", "none":
		return ""
	case "admin":
		return "Bearer " + exampleAdminToken
	case "service":
		return "Bearer " + exampleServiceToken
	}
	u, ok := exampleUsers[auth]
	if !ok {
		return auth
	}
	claims := jwt.MapClaims{"sub": u.ID, "username": u.Username, "name": u.Name,
		"exp": testStart.Add(24 * time.Hour).Unix()}
	signed, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(exampleJWTSecret))
	if err != nil {
		n.t.Fatal(err)
	}
	return "Bearer " + signed
}

// fillStreams opens as many streams for user as a node allows one user
// (x-replay's state "user-streams-full"); they stay open until the test ends.
func (n *exampleNode) fillStreams(user string) {
	n.t.Helper()
	for i := range DefaultMaxStreamsPerUser {
		ctx, cancel := context.WithCancel(context.Background())
		n.t.Cleanup(cancel)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, n.srv.URL+"/presence/subscribe?channels=%7B%22%2Fdemo%2Fonline%22%3A-1%7D", nil)
		if err != nil {
			n.t.Fatal(err)
		}
		req.Header.Set("Authorization", n.authorization(user))
		resp, err := n.do(req)
		if err != nil {
			n.t.Fatal(err)
		}
		n.t.Cleanup(func() { _ = resp.Body.Close() })
		if resp.StatusCode != http.StatusOK {
			n.t.Fatalf("stream %d of %s: %d", i+1, user, resp.StatusCode)
		}
	}
}

// do sends req to the node.
func (n *exampleNode) do(req *http.Request) (*http.Response, error) {
	return n.srv.Client().Do(req)
}

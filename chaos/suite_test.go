package chaos

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// adminNode answers a node's admin endpoints from a store the nodes of a
// fakeCluster share, as Raft would: PUT stores a prefix document, GET
// answers it once the node has seen lag GETs (its replication delay), and
// /admin/owner answers from owners.
type adminNode struct {
	srv   *httptest.Server
	store *prefixStore

	mu       sync.Mutex
	lag      int               // GETs of a prefix answered 404 before the document
	puts     int               // PUTs received
	owners   map[string]string // channel -> owner in this node's view
	ownerLag int               // owner GETs answered "" before owners counts
}

type prefixStore struct {
	mu   sync.Mutex
	docs map[string][]byte
}

func newAdminNode(t *testing.T, store *prefixStore) *adminNode {
	t.Helper()
	n := &adminNode{store: store, owners: map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /admin/prefixes/{prefix}", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		n.puts++
		n.mu.Unlock()
		store.mu.Lock()
		store.docs[r.PathValue("prefix")] = body
		store.mu.Unlock()
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /admin/prefixes/{prefix}", func(w http.ResponseWriter, r *http.Request) {
		n.mu.Lock()
		late := n.lag > 0
		n.lag--
		n.mu.Unlock()
		store.mu.Lock()
		doc, ok := store.docs[r.PathValue("prefix")]
		store.mu.Unlock()
		if late || !ok {
			http.Error(w, `{"errors": ["not found"]}`, http.StatusNotFound)
			return
		}
		_, _ = w.Write(doc)
	})
	mux.HandleFunc("GET /admin/owner", func(w http.ResponseWriter, r *http.Request) {
		ch := r.URL.Query().Get("channel")
		n.mu.Lock()
		owner := n.owners[ch]
		if n.ownerLag > 0 {
			n.ownerLag--
			owner = ""
		}
		n.mu.Unlock()
		_, _ = w.Write([]byte(`{"channel": "` + ch + `", "owner": "` + owner + `"}`))
	})
	n.srv = httptest.NewServer(mux)
	t.Cleanup(n.srv.Close)
	return n
}

func (n *adminNode) set(fn func(n *adminNode)) {
	n.mu.Lock()
	defer n.mu.Unlock()
	fn(n)
}

// fakeCluster is a Cluster of adminNodes.
type fakeCluster struct {
	names []string
	nodes map[string]*adminNode
}

func newFakeCluster(t *testing.T, names ...string) *fakeCluster {
	store := &prefixStore{docs: map[string][]byte{}}
	c := &fakeCluster{names: names, nodes: map[string]*adminNode{}}
	for _, name := range names {
		c.nodes[name] = newAdminNode(t, store)
	}
	return c
}

func (c *fakeCluster) Serving() []string { return c.names }

func (c *fakeCluster) Admin(node string) Admin {
	return Admin{URL: c.nodes[node].srv.URL, Token: "t"}
}

func TestConfigureWritesThroughTheFirstNodeAndWaitsForEveryNode(t *testing.T) {
	c := newFakeCluster(t, "a", "b", "c")
	c.nodes["c"].set(func(n *adminNode) { n.lag = 3 })
	stored := Configure(t, c, "room", 45*time.Second)
	if !SameJSON(stored, PublicPrefixDocument("room", 45*time.Second)) {
		t.Errorf("stored %s", stored)
	}
	for name, n := range c.nodes {
		n.mu.Lock()
		puts, lag := n.puts, n.lag
		n.mu.Unlock()
		if wantPuts := map[bool]int{true: 1}[name == "a"]; puts != wantPuts {
			t.Errorf("%s received %d PUTs, want %d", name, puts, wantPuts)
		}
		if lag > 0 {
			t.Errorf("%s was not asked until it served the document (%d GETs to go)", name, lag)
		}
	}
}

func TestWaitPrefixComparesDocumentsAsJSON(t *testing.T) {
	c := newFakeCluster(t, "a", "b")
	PutPrefix(t, c, "keep", []byte(`{"rules": [], "callback": {"url": "http://x"}}`))
	WaitPrefix(t, c, "keep", []byte(`{"callback":{"url":"http://x"},"rules":[]}`))
}

func TestWaitOwningWaitsForEveryNodesView(t *testing.T) {
	c := newFakeCluster(t, "a", "b")
	channels := ChannelNames("p", "room", 3)
	c.nodes["a"].set(func(n *adminNode) { n.owners[channels[2]] = "b" })
	// b sees itself owning a channel only after a few rounds of questions.
	c.nodes["b"].set(func(n *adminNode) { n.owners[channels[1]], n.ownerLag = "b", 2*len(channels) })
	WaitOwning(t, c, "b", channels, 10*time.Second)
	c.nodes["b"].set(func(n *adminNode) {
		if n.ownerLag > 0 {
			t.Errorf("WaitOwning returned before b saw itself owning a channel (%d answers to go)", n.ownerLag)
		}
	})
	if err := seesOwning(c.Admin("a"), "a", "c", channels); err == nil || !strings.Contains(err.Error(), "a sees c owning none") {
		t.Errorf("seesOwning of an owner of nothing: %v", err)
	}
}

func TestStorePrefixReportsWhatFailed(t *testing.T) {
	c := newFakeCluster(t, "a", "b")
	c.nodes["b"].set(func(n *adminNode) { n.lag = 1 << 30 }) // never serves it
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := StorePrefix(ctx, c, "room", []byte(`{"rules": []}`)); err == nil || !strings.Contains(err.Error(), "b: GET prefix room: 404") {
		t.Errorf("StorePrefix with a node that never serves the document: %v", err)
	}
	if _, err := StorePrefix(ctx, &fakeCluster{}, "room", []byte(`{}`)); err == nil {
		t.Error("StorePrefix without a serving node succeeded")
	}
}

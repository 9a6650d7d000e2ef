//go:build linux

package swarm

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeNode streams like a node: ": connected", then what broadcast sends.
// A stream asking for channel /t/fail is refused with 503; one whose token
// is "drop" is ended after the first broadcast.
type fakeNode struct {
	mu      sync.Mutex
	streams map[chan string]bool
	remotes map[string]int // source address -> streams
	tokens  map[string]bool
}

func newFakeNode() *fakeNode {
	return &fakeNode{streams: map[chan string]bool{}, remotes: map[string]int{}, tokens: map[string]bool{}}
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/presence/subscribe" || !strings.Contains(r.URL.Query().Get("channels"), `"/t/all":-1`) {
		http.Error(w, "bad request", http.StatusBadRequest)
		return
	}
	if strings.Contains(r.URL.Query().Get("channels"), "/t/fail") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"errors":["service temporarily unavailable"]}` + "\n"))
		return
	}
	host, _, _ := net.SplitHostPort(r.RemoteAddr)
	tok := r.URL.Query().Get("token")
	ch := make(chan string, 4)
	f.mu.Lock()
	f.streams[ch] = true
	f.remotes[host]++
	f.tokens[tok] = true
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		delete(f.streams, ch)
		f.mu.Unlock()
	}()
	w.Header().Set("Content-Type", "text/event-stream")
	_, _ = w.Write([]byte(": connected\n\n"))
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case frame := <-ch:
			_, _ = w.Write([]byte(frame))
			w.(http.Flusher).Flush()
			if tok == "drop" {
				return
			}
		}
	}
}

func (f *fakeNode) broadcast(frame string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ch := range f.streams {
		ch <- frame
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSwarmOpensStreamsFromSeveralSourcesAndSeesTheEnter(t *testing.T) {
	node := newFakeNode()
	srv := httptest.NewServer(node)
	defer srv.Close()
	addr := netip.MustParseAddrPort(srv.Listener.Addr().String())
	const streams = 60
	sw, err := Start(Config{
		Node: addr, Streams: streams, Loops: 2, Window: 8, PerSource: 30,
		Sources: []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")},
		Request: func(i int) ([]byte, error) {
			channels, token := []string{"/t/all", fmt.Sprintf("/t/%d", i)}, fmt.Sprintf("tok-%d", i)
			switch i {
			case 0:
				channels = append(channels, "/t/fail")
			case 1:
				token = "drop"
			}
			return SubscribeRequest(addr.String(), channels, token), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	waitFor(t, "every stream to open or fail", func() bool { return sw.Stats().Settled(streams) })
	st := sw.Stats()
	if st.Open != streams-1 || st.Failed != 1 || st.Started != streams || st.Events[EventConnected] != streams-1 {
		t.Fatalf("stats %+v", st)
	}
	if f := sw.Failures(); f[`status 503: {"errors":["service temporarily unavailable"]}`] != 1 || len(f) != 1 {
		t.Errorf("failures %v", f)
	}
	node.mu.Lock()
	if node.remotes["127.0.0.1"] != 29 || node.remotes["127.0.0.2"] != 30 || len(node.tokens) != streams-1 {
		t.Errorf("sources %v, %d distinct tokens", node.remotes, len(node.tokens))
	}
	node.mu.Unlock()

	sw.Expect(NewMatcher("/t/all", "u9"))
	node.broadcast(": keepalive\n\n")
	node.broadcast("event: message\ndata: {\"channel\":\"/t/all\",\"data\":{\"entering_users\":[{\"id\":\"u8\"}]}}\n\n")
	node.broadcast("event: message\ndata: {\"channel\":\"/t/all\",\"data\":{\"entering_users\":[{\"id\":\"u9\"}]}}\n\n")
	// Stream 1 was dropped after the keepalive and never sees the enters.
	waitFor(t, "the enter on every other stream", func() bool { return sw.Stats().Entered == streams-2 })
	waitFor(t, "the dropped stream", func() bool { return sw.Stats().Dropped == 1 })
	st = sw.Stats()
	if st.Events[EventMessage] != streams-2 || st.Events[EventEnter] != streams-2 || st.Events[EventKeepalive] != streams-1 || st.Open != streams-2 {
		t.Errorf("stats after the enter %+v", st)
	}
	if got := len(sw.Arrivals()); got != streams-2 {
		t.Errorf("%d arrivals, want %d", got, streams-2)
	}
	if sw.Failures()["closed by the node"] != 1 {
		t.Errorf("failures %v", sw.Failures())
	}

	// A new expectation starts counting again.
	sw.Expect(NewMatcher("/t/all", "u10"))
	if sw.Stats().Entered != 0 || len(sw.Arrivals()) != 0 {
		t.Error("Expect did not reset the arrivals")
	}
	node.broadcast("event: message\ndata: {\"channel\":\"/t/all\",\"data\":{\"entering_users\":[{\"id\":\"u10\"}]}}\n\n")
	waitFor(t, "the second enter", func() bool { return sw.Stats().Entered == streams-2 })
}

func TestSwarmReportsRefusedConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddrPort(ln.Addr().String())
	ln.Close() // nothing listens there now
	sw, err := Start(Config{Node: addr, Streams: 3, Request: func(int) ([]byte, error) { return []byte("GET / HTTP/1.1\r\n\r\n"), nil }})
	if err != nil {
		t.Fatal(err)
	}
	defer sw.Close()
	waitFor(t, "the failures", func() bool { return sw.Stats().Failed == 3 })
	if f := sw.Failures(); f["connect: connection refused"] != 3 {
		t.Errorf("failures %v", f)
	}
}

func TestConfigRejects(t *testing.T) {
	req := func(int) ([]byte, error) { return nil, nil }
	node := netip.MustParseAddrPort("127.0.0.1:1")
	for _, cfg := range []Config{
		{Node: netip.MustParseAddrPort("[::1]:1"), Streams: 1, Request: req},
		{Node: node, Request: req},
		{Node: node, Streams: 1},
		{Node: node, Streams: 3, Request: req, Sources: []netip.Addr{netip.MustParseAddr("127.0.0.2")}, PerSource: 2},
		{Node: node, Streams: 1, Request: req, Sources: []netip.Addr{netip.MustParseAddr("::1")}, PerSource: 2},
	} {
		if _, err := Start(cfg); err == nil {
			t.Errorf("Start(%+v) accepted", cfg)
		}
	}
}

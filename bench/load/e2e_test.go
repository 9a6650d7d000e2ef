package load

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/bench/token"
)

const testSecret = "test-secret"

// fakeNode is a minimal single-node presence server: it checks tokens, keeps
// who is present, answers updates, and streams entering/leaving messages.
// Channels ending in "/4" do not exist.
type fakeNode struct {
	mu      sync.Mutex
	present map[string]map[string]map[string]bool // channel -> user -> client
	streams map[string][]chan string              // channel -> subscriber frames
}

func newFakeNode() *fakeNode {
	return &fakeNode{present: map[string]map[string]map[string]bool{}, streams: map[string][]chan string{}}
}

func (f *fakeNode) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/presence/update":
		f.update(w, r)
	case "/presence/subscribe":
		f.subscribe(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (f *fakeNode) update(w http.ResponseWriter, r *http.Request) {
	var claims token.Claims
	raw, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if _, err := jwt.ParseWithClaims(raw, &claims, func(*jwt.Token) (any, error) { return []byte(testSecret), nil }); err != nil {
		http.Error(w, `{"errors":["bad token"]}`, http.StatusUnauthorized)
		return
	}
	var body updateBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.ClientID == "" {
		http.Error(w, `{"errors":["bad body"]}`, http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	answer := map[string]bool{}
	for _, ch := range body.Present {
		if strings.HasSuffix(ch, "/4") {
			answer[ch] = false
			continue
		}
		answer[ch] = true
		users := f.present[ch]
		if users == nil {
			users = map[string]map[string]bool{}
			f.present[ch] = users
		}
		if users[claims.Subject] == nil {
			users[claims.Subject] = map[string]bool{}
			f.publish(ch, fmt.Sprintf(`{"entering_users":[{"id":%q,"avatar_template":%q}]}`, claims.Subject, claims.AvatarTemplate))
		}
		users[claims.Subject][body.ClientID] = true
	}
	for _, ch := range body.Leave {
		clients := f.present[ch][claims.Subject]
		if clients == nil {
			continue
		}
		delete(clients, body.ClientID)
		if len(clients) == 0 {
			delete(f.present[ch], claims.Subject)
			f.publish(ch, fmt.Sprintf(`{"leaving_user_ids":[%q]}`, claims.Subject))
		}
	}
	_ = json.NewEncoder(w).Encode(answer)
}

// publish must be called with f.mu held.
func (f *fakeNode) publish(ch, data string) {
	frame := fmt.Sprintf("event: message\ndata: {\"channel\":%q,\"data\":%s}\n\n", ch, data)
	for _, s := range f.streams[ch] {
		s <- frame
	}
}

func (f *fakeNode) subscribe(w http.ResponseWriter, r *http.Request) {
	var chans map[string]int
	if err := json.Unmarshal([]byte(r.URL.Query().Get("channels")), &chans); err != nil {
		http.Error(w, `{"errors":["bad channels"]}`, http.StatusBadRequest)
		return
	}
	frames := make(chan string, 1<<16)
	f.mu.Lock()
	for ch := range chans {
		f.streams[ch] = append(f.streams[ch], frames)
	}
	f.mu.Unlock()
	w.Header().Set("Content-Type", "text/event-stream")
	fmt.Fprint(w, ": connected\n\n")
	w.(http.Flusher).Flush()
	for {
		select {
		case <-r.Context().Done():
			return
		case fr := <-frames:
			fmt.Fprint(w, fr)
			w.(http.Flusher).Flush()
		}
	}
}

// clients counts the (user, client, channel) memberships the node holds.
func (f *fakeNode) clients() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, users := range f.present {
		for _, clients := range users {
			n += len(clients)
		}
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestHTTPWorkloadAgainstAFakeNode(t *testing.T) {
	node := newFakeNode()
	srv := httptest.NewServer(node)
	defer srv.Close()
	// User u is in channels 2u and 2u+1 (mod 5); channel 4 does not exist.
	pop := testPopulation(t, PopulationConfig{RunID: "e2e", Users: 4, ClientsPerUser: 2, Channels: 5, ChannelsPerUser: 2, ChannelsPerCall: 2, Mix: Mix{0.2, 0.4, 0.4}})
	tracker := NewTracker([]int32{1, 1, 1, 1, 1})
	minter, err := token.NewMinter(testSecret, time.Hour, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	target, err := NewHTTPTarget(HTTPConfig{URLs: []string{srv.URL}, Client: NewHTTPClient(4, 5*time.Second), Pop: pop, Minter: minter, Tracker: tracker})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	channels := []string{"/demo/load/0", "/demo/load/1", "/demo/load/2", "/demo/load/3", "/demo/load/4"}
	sub := NewSubscriber(srv.Client(), SubscribeURL(srv.URL, channels, ""), tracker.Handler(pop))
	if err := sub.Connect(ctx); err != nil {
		t.Fatal(err)
	}

	res := Run(ctx, Warmup{Pop: pop}, target, RunConfig{Duration: time.Minute, Concurrency: 3})
	if res.Requests != 8 || res.Codes["200"] != 8 {
		t.Fatalf("warmup: %d requests, codes %v; want 8 x 200", res.Requests, res.Codes)
	}
	// 8 user-channel memberships, one of them in the missing channel 4.
	waitFor(t, "warmup deliveries", func() bool { return tracker.Outstanding(0) == 0 })
	if st := tracker.Stats(0); st.Delivery.Count() != 7 || st.Unmatched != 0 {
		t.Fatalf("warmup delivery: %d samples, %d unmatched; want 7, 0", st.Delivery.Count(), st.Unmatched)
	}
	if pop.PresentSlots() != 14 || node.clients() != 14 {
		t.Fatalf("present: tool %d, node %d; want 14 (2 clients x 7)", pop.PresentSlots(), node.clients())
	}

	tracker.SetPhase(1)
	res = Run(ctx, Workload{Pop: pop}, target, RunConfig{Duration: 200 * time.Millisecond, Concurrency: 3, Seed: 3})
	if res.Requests == 0 || res.OK != res.Requests {
		t.Fatalf("workload: %d requests, %d ok, codes %v", res.Requests, res.OK, res.Codes)
	}
	waitFor(t, "workload deliveries", func() bool { return tracker.Outstanding(1) == 0 })
	st := tracker.Stats(1)
	if st.Unmatched != 0 || st.Delivery.Count() != st.Messages.Entering {
		t.Errorf("workload: %d samples for %d entering messages, %d unmatched", st.Delivery.Count(), st.Messages.Entering, st.Unmatched)
	}
	if pop.PresentSlots() != node.clients() {
		t.Errorf("the tool believes %d clients present, the node holds %d", pop.PresentSlots(), node.clients())
	}

	Run(ctx, Cleanup{Pop: pop}, target, RunConfig{Duration: time.Minute, Concurrency: 2})
	if pop.PresentSlots() != 0 || node.clients() != 0 {
		t.Errorf("after cleanup: tool %d, node %d present", pop.PresentSlots(), node.clients())
	}
}

func TestRunAgainstTheTrivialServer(t *testing.T) {
	srv, err := StartTrivial()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pop := testPopulation(t, PopulationConfig{Users: 50, ClientsPerUser: 1, Channels: 10, ChannelsPerUser: 2, ChannelsPerCall: 1, Mix: Mix{0.8, 0.1, 0.1}})
	pop.MarkAllPresent()
	minter, _ := token.NewMinter("x", time.Hour, time.Now)
	target, err := NewHTTPTarget(HTTPConfig{URLs: []string{srv.URL}, Client: NewHTTPClient(4, 5*time.Second), Pop: pop, Minter: minter})
	if err != nil {
		t.Fatal(err)
	}
	closed := Run(context.Background(), Workload{Pop: pop}, target, RunConfig{Duration: 100 * time.Millisecond, Concurrency: 4})
	if closed.Requests == 0 || closed.Codes["200"] != closed.Requests || closed.Latency.Count() != closed.Requests {
		t.Errorf("closed loop: %d requests, codes %v, %d latencies", closed.Requests, closed.Codes, closed.Latency.Count())
	}
	open := Run(context.Background(), Workload{Pop: pop}, target, RunConfig{Duration: 100 * time.Millisecond, Rate: 2000, Concurrency: 4})
	if open.Offered == 0 || open.Requests+open.Unsent != open.Offered {
		t.Errorf("open loop: offered %d = requests %d + unsent %d does not hold", open.Offered, open.Requests, open.Unsent)
	}
}

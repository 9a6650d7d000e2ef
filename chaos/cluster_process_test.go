//go:build chaos

package chaos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/chaos/proc"
	"github.com/presencehq/presence/internal/testkit"
)

// channelTimeout is the client timeout of the chaos prefix.
const channelTimeout = 60 * time.Second

// termTimeout is the contract's bound on a graceful leave.
const termTimeout = 10 * time.Second

// TestProcessCluster is the process acceptance of clustering: three
// presence-node processes on loopback become one cluster, forward reads and
// writes, stream messages across nodes, survive a graceful leave without
// losing a user and keep their prefix documents across a full restart.
func TestProcessCluster(tt *testing.T) {
	t := testkit.NewRecap(tt) // first: its failures are repeated after the node logs
	c := startCluster(t, 3)
	chaos.Configure(t, c, "chaos", channelTimeout)
	t.Run("readiness", func(t *testing.T) { checkOneLeader(testkit.NewRecap(t), c) })
	t.Run("forwarding", func(t *testing.T) { checkForwarding(testkit.NewRecap(t), c) })
	t.Run("cross-node SSE", func(t *testing.T) { checkCrossNodeStream(testkit.NewRecap(t), c) })
	if t.Failed() {
		return
	}
	t.Run("graceful leave", func(t *testing.T) { checkGracefulLeave(testkit.NewRecap(t), c) })
	t.Run("full restart", func(t *testing.T) { checkFullRestart(testkit.NewRecap(t), c) })
}

// checkOneLeader: every node names the same Raft leader, with all three
// nodes as Raft servers and alive members.
func checkOneLeader(t testing.TB, c *proc.Cluster) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	leaders := map[string]bool{}
	for _, n := range c.Nodes {
		v, err := c.Admin(n.Name).Cluster(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leaders[v.Raft.Leader] = true
		if len(v.Raft.Servers) != 3 || len(v.Alive()) != 3 {
			t.Errorf("%s: raft servers %v, alive members %v; want 3 of each", n.Name, v.Raft.Servers, v.Alive())
		}
	}
	if len(leaders) != 1 || leaders[""] {
		t.Errorf("leaders named by the nodes: %v; want exactly one", leaders)
	}
}

// checkForwarding: clients update through node 1 only; reads through nodes
// 2 and 3 of 100 channels agree with the model.
func checkForwarding(t testing.TB, c *proc.Cluster) {
	channels := chaos.ChannelNames("chaos", "fwd", 100)
	w := startWorkload(t, chaos.WorkloadConfig{
		Pool: chaos.NewTestPool(t, []string{c.Nodes[0].URL()}), Tokens: chaos.NewTestTokens(t, jwtSecret), Channels: channels,
		Users: 100, ClientsPerUser: 2, ChannelsPerClient: 2,
		Heartbeat: 5 * time.Second, Churn: 4 * time.Second, Ramp: 2 * time.Second,
		Timeout: channelTimeout, Duration: 5 * time.Minute, IDPrefix: "fwd", Seed: 1,
		Logger: testkit.LoggerAt(t, slog.LevelWarn),
	})
	defer w.Stop()
	checker, err := chaos.NewChecker(chaos.CheckerConfig{
		Pool: chaos.NewTestPool(t, []string{c.Nodes[1].URL(), c.Nodes[2].URL()}), Model: w.Model(), Channels: channels,
	})
	if err != nil {
		t.Fatal(err)
	}
	checks := &chaos.Checks{T: t, Checker: checker}
	for i := range 3 {
		res := checks.Converge(fmt.Sprintf("forwarded read %d", i+1), 10*time.Second)
		if res.UsersChecked == 0 {
			t.Errorf("read %d checked no user: the workload entered nobody", i+1)
		}
	}
	t.Logf("workload: %+v", w.Stats())
	chaos.Require(t, checks.Summary)
	requireAccepted(t, w)
}

// sseUser is a user of the cross-node stream check.
type sseUser struct {
	id, token string
}

// checkCrossNodeStream: subscribers on nodes 2 and 3 see, in order and with
// contiguous ids, the enters and leaves of channels node 1 owns.
func checkCrossNodeStream(t testing.TB, c *proc.Cluster) {
	owned := ownedBy(t, c, c.Nodes[0].Name, chaos.ChannelNames("chaos", "sse", 40), 3)
	var mu sync.Mutex
	got := map[string]map[string][]string{} // stream -> channel -> "enter a" / "leave a"
	streams, err := chaos.StartStreams(context.Background(), chaos.StreamConfig{
		URLs: []string{c.Nodes[1].URL(), c.Nodes[2].URL()}, Channels: owned, Logger: testkit.LoggerAt(t, slog.LevelWarn),
		OnEvent: func(stream string, ev chaos.Event) {
			mu.Lock()
			defer mu.Unlock()
			if got[stream] == nil {
				got[stream] = map[string][]string{}
			}
			got[stream][ev.Channel] = append(got[stream][ev.Channel], describe(ev))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer streams.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := streams.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	tokens := chaos.NewTestTokens(t, jwtSecret)
	var users []sseUser
	for _, id := range []string{"sse-a", "sse-b"} {
		tok, err := tokens.Mint(chaos.Identity{ID: id, Username: id, Name: id})
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, sseUser{id, tok})
	}
	node1 := chaos.NewTestPool(t, []string{c.Nodes[0].URL()})
	for _, ch := range owned {
		update(t, node1, users[0], "sse-client-a", []string{ch}, nil)
		update(t, node1, users[1], "sse-client-b", []string{ch}, nil)
		update(t, node1, users[0], "sse-client-a", nil, []string{ch})
	}
	want := []string{"enter sse-a", "enter sse-b", "leave sse-a"}
	err = testkit.Poll(10*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		for _, stream := range []string{c.Nodes[1].URL() + "#0", c.Nodes[2].URL() + "#0"} {
			for _, ch := range owned {
				if !slices.Equal(got[stream][ch], want) {
					return fmt.Errorf("stream %s, channel %s: got %v, want %v", stream, ch, got[stream][ch], want)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}
	st := streams.Stats()
	t.Logf("streams: %+v", st)
	if st.Violations != 0 || st.Resyncs != 0 {
		t.Errorf("streams saw %d violations and %d resyncs, want none: %v", st.Violations, st.Resyncs, st.Examples)
	}
}

// ownedBy returns up to n of channels that node owns, by node's answers.
func ownedBy(t testing.TB, c *proc.Cluster, node string, channels []string, n int) []string {
	t.Helper()
	own, err := owners(c, c.Nodes[0], channels)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, ch := range channels {
		if own[ch] == node && len(out) < n {
			out = append(out, ch)
		}
	}
	if len(out) < n {
		t.Fatalf("%s owns only %d of %d channels", node, len(out), len(channels))
	}
	return out
}

// describe renders a message event as "enter <ids>" or "leave <ids>".
func describe(ev chaos.Event) string {
	if ev.Type != "message" {
		return ev.Type
	}
	var enter chaos.Entering
	var leave chaos.Leaving
	_ = json.Unmarshal(ev.Payload, &enter)
	_ = json.Unmarshal(ev.Payload, &leave)
	var ids []string
	for _, u := range enter.EnteringUsers {
		ids = append(ids, u.ID)
	}
	if len(ids) > 0 {
		return "enter " + strings.Join(ids, ",")
	}
	return "leave " + strings.Join(leave.LeavingUserIDs, ",")
}

// update sends one update and fails the test unless it succeeded.
func update(t testing.TB, pool *chaos.Pool, u sseUser, client string, present, leave []string) {
	t.Helper()
	body, _ := json.Marshal(map[string]any{"client_id": client, "present_channels": present, "leave_channels": leave})
	resp, err := pool.Do(context.Background(), chaos.Request{
		Method: http.MethodPost, Path: "/presence/update", Body: body, ContentType: "application/json", Token: u.token,
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Status != http.StatusOK {
		t.Fatalf("update via %s: %d %s", resp.URL, resp.Status, resp.Body)
	}
}

// checkGracefulLeave: with clients heartbeating through every node and
// streams on every node, SIGTERM makes node 3 exit 0 within 10 s, and no
// user is lost or invented while the workload goes on.
func checkGracefulLeave(t testing.TB, c *proc.Cluster) {
	channels := chaos.ChannelNames("chaos", "leave", 60)
	w := startWorkload(t, chaos.WorkloadConfig{
		Pool: chaos.NewTestPool(t, c.URLs()), Tokens: chaos.NewTestTokens(t, jwtSecret), Channels: channels,
		Users: 150, ClientsPerUser: 2, Heartbeat: 5 * time.Second, Churn: 8 * time.Second,
		Vanish: 0.05, Ramp: 2 * time.Second, Timeout: channelTimeout, Duration: 5 * time.Minute,
		IDPrefix: "gl", Seed: 2, Logger: testkit.LoggerAt(t, slog.LevelWarn),
	})
	defer w.Stop()
	streams, err := chaos.StartStreams(context.Background(), chaos.StreamConfig{
		URLs: c.URLs(), Channels: channels, Logger: testkit.LoggerAt(t, slog.LevelWarn),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer streams.Close()
	checker, err := chaos.NewChecker(chaos.CheckerConfig{Pool: chaos.NewTestPool(t, c.URLs()), Model: w.Model(), Channels: channels})
	if err != nil {
		t.Fatal(err)
	}
	checks := &chaos.Checks{T: t, Checker: checker}
	checks.Converge("before the leave", 10*time.Second)

	victim := c.Nodes[2]
	exit, err := victim.Term(termTimeout)
	t.Logf("%s after SIGTERM: %v", victim.Name, exit)
	if err != nil || exit.Code != 0 {
		t.Errorf("%s: SIGTERM: %v, %v; want exit code 0 within %v", victim.Name, exit, err, termTimeout)
	}
	checks.Converge("after the leave", 10*time.Second)
	// The workload goes on: every later read must agree at once.
	for i := range 4 {
		checks.CheckNow(fmt.Sprintf("steady read %d", i+1))
		time.Sleep(2 * time.Second)
	}
	checks.Summary.SetStreams(streams.Stats())
	t.Logf("workload: %+v; streams: %+v", w.Stats(), streams.Stats())
	fmt.Println(checks.Summary.String())
	chaos.Require(t, checks.Summary)
	requireAccepted(t, w)
}

// checkFullRestart: SIGTERM every node, start them again with the same data
// directories; a prefix document stored before is served by every node.
func checkFullRestart(t testing.TB, c *proc.Cluster) {
	doc := []byte(`{"rules": [{"match": "/keep/[0-9]+", "config": {"allowed_group_ids": ["staff"], "timeout": 30}}]}`)
	stored := chaos.PutPrefix(t, c, "keep", doc)
	var wg sync.WaitGroup
	for _, n := range c.Running() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			exit, err := n.Term(termTimeout)
			t.Logf("%s after SIGTERM: %v", n.Name, exit)
			if err != nil || exit.Code != 0 {
				t.Errorf("%s: SIGTERM: %v, %v; want exit code 0 within %v", n.Name, exit, err, termTimeout)
			}
		}()
	}
	wg.Wait()
	if err := c.StartAll(); err != nil {
		t.Fatal(err)
	}
	waitReady(t, c)
	chaos.WaitPrefix(t, c, "keep", stored)
}

package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/server"
)

// contractPropagation is the contract's bound between a prefix PUT
// returning and every node using the document (CONTRACT.md section 3).
const contractPropagation = time.Second

func TestThreeNodesFormOneCluster(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()

	leader := waitLeader(t, c)
	names := []string{"node0", "node1", "node2"}
	for i := range 3 {
		n := c.Node(i)
		view, err := n.Admin().Cluster()
		if err != nil {
			t.Fatal(err)
		}
		if view.Raft.Leader != c.Node(leader).Name {
			t.Errorf("%s names leader %q, want %q", n.Name, view.Raft.Leader, c.Node(leader).Name)
		}
		servers := slices.Sorted(slices.Values(view.Raft.Servers))
		if !slices.Equal(servers, names) {
			t.Errorf("%s: raft servers %v, want %v", n.Name, servers, names)
		}
		if len(view.Members) != 3 {
			t.Fatalf("%s: members %+v", n.Name, view.Members)
		}
		for j, m := range view.Members {
			if m.Name != names[j] || m.State != "alive" || "http://"+m.HTTP != c.Node(j).URL() {
				t.Errorf("%s: member %+v, want %s alive at %s", n.Name, m, names[j], c.Node(j).URL())
			}
		}
		for _, path := range []string{"/readyz", "/healthz"} {
			if status, body, err := n.Client("").Do(http.MethodGet, path, nil); err != nil || status != http.StatusOK {
				t.Errorf("%s %s: %d %s %v", n.Name, path, status, body, err)
			}
		}
		owner, replicas, err := n.Admin().Owner("/m/some-channel")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(names, owner) || len(replicas) != 1 || replicas[0] == owner || !slices.Contains(names, replicas[0]) {
			t.Errorf("%s: owner %q replicas %v", n.Name, owner, replicas)
		}
		if status, _, _ := n.Client("").Do(http.MethodGet, "/admin/cluster", nil); status != http.StatusUnauthorized {
			t.Errorf("%s: /admin/cluster without the admin token: %d, want 401", n.Name, status)
		}
	}
}

func TestPrefixWrittenThroughAnyNodeReachesAll(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()
	leader := waitLeader(t, c)
	var slowest time.Duration
	for i := range 3 {
		prefix := fmt.Sprintf("p%d", i)
		putPrefix(t, c, i, prefix, publicDoc(prefix))
		written := time.Now()
		waitPrefixEverywhere(t, c, prefix, true, contractPropagation)
		slowest = max(slowest, time.Since(written))
	}
	t.Logf("slowest propagation to every node after the PUT returned: %v (leader node%d)", slowest, leader)

	// Channels of the new prefix exist on every node.
	for _, n := range c.Running() {
		got, err := n.Client("").Get("/p0/x")
		if err != nil || got["/p0/x"] == nil {
			t.Errorf("%s: channel of the new prefix: %+v %v", n.Name, got, err)
		}
	}

	follower := (leader + 1) % 3
	admin := c.Node(follower).Admin()
	if status, body, err := admin.Do(http.MethodDelete, "/admin/prefixes/p1", nil); err != nil || status != http.StatusNoContent {
		t.Fatalf("DELETE through follower: %d %s %v", status, body, err)
	}
	waitPrefixEverywhere(t, c, "p1", false, contractPropagation)
	if status, _, _ := admin.Do(http.MethodDelete, "/admin/prefixes/p1", nil); status != http.StatusNotFound {
		t.Errorf("DELETE of a missing prefix through a follower: %d, want 404", status)
	}
	if status, _, _ := admin.Do(http.MethodPut, "/admin/prefixes/bad", `{"rules":[{"match":"(","config":{}}]}`); status != http.StatusBadRequest {
		t.Errorf("bad document through a follower: %d, want 400", status)
	}
	var list struct {
		Prefixes map[string]json.RawMessage `json:"prefixes"`
	}
	_, body, _ := admin.Do(http.MethodGet, "/admin/prefixes", nil)
	if err := json.Unmarshal(body, &list); err != nil || len(list.Prefixes) != 2 {
		t.Errorf("prefixes after delete: %s %v", body, err)
	}
}

func TestBootstrapWaitsForExpectedServers(t *testing.T) {
	c := testcluster.Start(t, 2, testcluster.WithBootstrapExpect(3))
	c.WaitFor(settleTimeout, func() error {
		for _, n := range c.Running() {
			view, err := n.Admin().Cluster()
			if err != nil {
				return err
			}
			if alive := len(view.Alive()); alive != 2 {
				return fmt.Errorf("%s sees %d alive", n.Name, alive)
			}
		}
		return nil
	})
	// Two of three: nobody may have bootstrapped.
	for _, n := range c.Running() {
		view, _ := n.Admin().Cluster()
		if view.Raft.Leader != "" || len(view.Raft.Servers) != 0 {
			t.Fatalf("%s bootstrapped with 2 of 3 servers: %+v", n.Name, view.Raft)
		}
		status, body, _ := n.Client("").Do(http.MethodGet, "/readyz", nil)
		if status != http.StatusServiceUnavailable || !strings.Contains(string(body), "raft leader") {
			t.Errorf("%s /readyz before bootstrap: %d %s", n.Name, status, body)
		}
	}
	c.AddNode()
	c.WaitReady()
	putPrefix(t, c, 2, "late", publicPrefix)
	waitPrefixEverywhere(t, c, "late", true, settleTimeout)
}

func TestNodeStartedBeforeItsSeedJoins(t *testing.T) {
	c := testcluster.New(t, 3)
	c.StartNode(1) // both join node0, which is not running yet
	c.StartNode(2)
	for _, i := range []int{1, 2} {
		status, body, _ := c.Node(i).Client("").Do(http.MethodGet, "/readyz", nil)
		if status != http.StatusServiceUnavailable {
			t.Errorf("%s ready before joining: %d %s", c.Node(i).Name, status, body)
		}
	}
	c.StartNode(0)
	c.WaitReady()
}

// startModelCluster starts 3 nodes with the public prefix "m" and gives
// 200 of its channels a population: updates random updates of up to
// maxPerUser channels each, through random nodes, checked against the
// model. The random source is seeded from the clock (logged).
func startModelCluster(t *testing.T, updates, maxPerUser int) (*testcluster.Cluster, *model, *rand.Rand, []string) {
	t.Helper()
	c := testcluster.Start(t, 3)
	c.WaitReady()
	putPrefix(t, c, 0, "m", publicPrefix)
	waitPrefixEverywhere(t, c, "m", true, settleTimeout)

	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	channels := channelNames(200)
	m := newModel()
	randomUpdates(t, c, m, rng, updates, channels, maxPerUser)
	m.checkAll(t, c, channels)
	return c, m, rng, channels
}

func TestModelOf200ChannelsThroughRandomNodes(t *testing.T) {
	c, _, _, channels := startModelCluster(t, 60, 3)

	// Every node reports the same last message id for every channel.
	var first map[string]*testcluster.ChannelState
	for _, n := range c.Running() {
		got := map[string]*testcluster.ChannelState{}
		for start := 0; start < len(channels); start += 50 {
			part, err := n.Client("").Get(channels[start : start+50]...)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range part {
				got[k] = v
			}
		}
		if first == nil {
			first = got
			continue
		}
		for _, ch := range channels {
			if got[ch].LastMessageID != first[ch].LastMessageID {
				t.Errorf("%s: %s last id %d, node0 says %d", n.Name, ch, got[ch].LastMessageID, first[ch].LastMessageID)
			}
		}
	}
}

func TestSubscriberOnAnotherNodeReceivesOwnersMessagesInOrder(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()
	putPrefix(t, c, 0, "m", publicPrefix)
	waitPrefixEverywhere(t, c, "m", true, settleTimeout)

	ch := channelOwnedBy(t, c, "node0")
	watcher := c.Node(1).Client(testcluster.Token("watcher"))
	start, err := watcher.Get(ch)
	if err != nil {
		t.Fatal(err)
	}
	from := start[ch].LastMessageID
	stream, err := watcher.Subscribe(map[string]int64{ch: from}, "")
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()

	var want []string // "+id" for an entering user, "-id" for a leaving one
	for u := range 10 {
		id := fmt.Sprint(u)
		if _, err := c.Node(2).Client(testcluster.Token(id)).Update("c", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
		want = append(want, "+"+id)
	}
	for u := range 4 {
		id := fmt.Sprint(u)
		if _, err := c.Node(0).Client(testcluster.Token(id)).Update("c", nil, []string{ch}); err != nil {
			t.Fatal(err)
		}
		want = append(want, "-"+id)
	}
	err = stream.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
		var got []string
		next := from + 1
		for _, ev := range events {
			if ev.Event != "message" {
				return fmt.Errorf("unexpected %s event %s", ev.Event, ev.Data)
			}
			msg, err := ev.Message()
			if err != nil {
				return err
			}
			if msg.MessageID != next {
				return fmt.Errorf("message id %d, want %d", msg.MessageID, next)
			}
			next++
			for _, u := range msg.Data.EnteringUsers {
				got = append(got, "+"+u.ID)
			}
			for _, id := range msg.Data.LeavingUserIDs {
				got = append(got, "-"+id)
			}
		}
		if !slices.Equal(got, want) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// waitLeader waits until the running nodes agree on a Raft leader (an
// election may be under way) and returns its index.
func waitLeader(t *testing.T, c *testcluster.Cluster) int {
	t.Helper()
	leader := -1
	c.WaitFor(settleTimeout, func() error {
		if leader = c.Leader(); leader < 0 {
			return fmt.Errorf("nodes do not agree on a raft leader")
		}
		return nil
	})
	return leader
}

// touch makes user enter every channel through the running nodes in turn,
// so that the streams following them have messages to carry.
func touch(t *testing.T, c *testcluster.Cluster, m *model, channels []string, user string) {
	t.Helper()
	running := c.Running()
	for i, ch := range channels {
		n := running[i%len(running)]
		if _, err := n.Client(testcluster.Token(user)).Update("t", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
		m.apply(user, "t", []string{ch}, nil)
	}
}

// channelOwnedBy finds a channel of prefix "m" that node owns.
func channelOwnedBy(t *testing.T, c *testcluster.Cluster, node string) string {
	t.Helper()
	for i := range 1000 {
		ch := fmt.Sprintf("/m/owned%d", i)
		owner, _, err := c.Node(0).Admin().Owner(ch)
		if err != nil {
			t.Fatal(err)
		}
		if owner == node {
			return ch
		}
	}
	t.Fatalf("no channel owned by %s", node)
	return ""
}

func TestJoinAndGracefulLeaveMoveChannelsWithoutLoss(t *testing.T) {
	c, m, rng, channels := startModelCluster(t, 40, 2)

	// Streams on node0, which stays, follow 8 channels whatever their owner.
	watched := channels[:8]
	streams := openStreams(t, c, 0, watched, m)

	owners := ownersOf(t, c, channels)
	c.AddNode()
	c.WaitReady()
	m.checkAll(t, c, channels)
	moved := countMoved(owners, ownersOf(t, c, channels))
	if moved == 0 {
		t.Fatal("a fourth node took over no channel")
	}
	t.Logf("join: %d of %d channels moved to node3; resync events so far: %d", moved, len(channels), resyncCount(streams))
	touch(t, c, m, watched, "joined")
	randomUpdates(t, c, m, rng, 40, channels, 1)
	m.checkAll(t, c, channels)

	owners = ownersOf(t, c, channels)
	c.Stop(1)
	c.WaitReady()
	m.checkAll(t, c, channels)
	moved = countMoved(owners, ownersOf(t, c, channels))
	t.Logf("leave: %d of %d channels moved off node1; resync events so far: %d", moved, len(channels), resyncCount(streams))
	if moved == 0 {
		t.Fatal("no channel moved when node1 left")
	}
	touch(t, c, m, watched, "left")
	randomUpdates(t, c, m, rng, 40, channels, 1)
	m.checkAll(t, c, channels)

	checkStreams(t, c, streams, watched)
}

// watch is a stream of one channel and the id it started after.
type watch struct {
	stream *testcluster.Stream
	from   int64
}

// openStreams subscribes on node i to each channel from its current id
// (see subscribe), as user "watcher": a node crashing later cannot fail a
// stream's catch-up (which would close it, for the client to reconnect).
func openStreams(t *testing.T, c *testcluster.Cluster, i int, channels []string, m *model) map[string]watch {
	t.Helper()
	out := map[string]watch{}
	for _, ch := range channels {
		out[ch] = subscribe(t, c, m, i, ch, "watcher")
	}
	return out
}

// checkStreams waits until every stream has caught up with its channel's
// last id, or was last told to resync it, and checks continuity: no id
// repeated, no gap without resync.
func checkStreams(t *testing.T, c *testcluster.Cluster, streams map[string]watch, channels []string) {
	t.Helper()
	got, err := c.Node(0).Client("").Get(channels...)
	if err != nil {
		t.Fatal(err)
	}
	resyncs := 0
	for _, ch := range channels {
		want, w := got[ch].LastMessageID, streams[ch]
		err := w.stream.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
			last, err := checkContinuity(events, map[string]int64{ch: w.from})
			if err != nil {
				return err
			}
			if n := len(events); n > 0 && events[n-1].Event == "resync" {
				return nil // the client re-reads the channel
			}
			if last[ch] < want {
				return fmt.Errorf("%s: stream at id %d, channel at %d", ch, last[ch], want)
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
		for _, ev := range w.stream.Events() {
			if ev.Event == "resync" {
				resyncs++
			}
		}
	}
	t.Logf("%d streams, %d resync events", len(channels), resyncs)
}

func resyncCount(streams map[string]watch) int {
	n := 0
	for _, w := range streams {
		for _, ev := range w.stream.Events() {
			if ev.Event == "resync" {
				n++
			}
		}
	}
	return n
}

func ownersOf(t *testing.T, c *testcluster.Cluster, channels []string) map[string]string {
	t.Helper()
	admin := c.Running()[0].Admin()
	out := map[string]string{}
	for _, ch := range channels {
		owner, _, err := admin.Owner(ch)
		if err != nil {
			t.Fatal(err)
		}
		out[ch] = owner
	}
	return out
}

func countMoved(before, after map[string]string) int {
	n := 0
	for ch, owner := range before {
		if after[ch] != owner {
			n++
		}
	}
	return n
}

func TestRestartOfEveryNodeKeepsPrefixDocuments(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()
	var prefixes []string
	for i := range 3 {
		prefix := fmt.Sprintf("keep%d", i)
		putPrefix(t, c, i, prefix, publicDoc(prefix))
		prefixes = append(prefixes, prefix)
	}
	for _, p := range prefixes {
		waitPrefixEverywhere(t, c, p, true, settleTimeout)
	}

	// A restarted follower is ready only with the documents loaded.
	follower := (waitLeader(t, c) + 1) % 3
	c.Restart(follower)
	waitNodeReady(t, c, follower)
	checkPrefixes(t, c.Node(follower), prefixes)

	for i := range 3 {
		start := time.Now()
		c.Stop(i)
		t.Logf("graceful stop of node%d took %v", i, time.Since(start).Round(time.Millisecond))
	}
	for i := range 3 {
		c.Restart(i)
	}
	c.WaitReady()
	for _, n := range c.Running() {
		checkPrefixes(t, n, prefixes)
	}
}

// waitNodeReady waits for node i's /readyz to answer 200.
func waitNodeReady(t *testing.T, c *testcluster.Cluster, i int) {
	t.Helper()
	c.WaitFor(settleTimeout, func() error {
		status, body, err := c.Node(i).Client("").Do(http.MethodGet, "/readyz", nil)
		if err != nil || status != http.StatusOK {
			return fmt.Errorf("%s /readyz: %d %s %v", c.Node(i).Name, status, body, err)
		}
		return nil
	})
}

// checkPrefixes wants node n to hold exactly prefixes, now.
func checkPrefixes(t *testing.T, n *testcluster.Node, prefixes []string) {
	t.Helper()
	var list struct {
		Prefixes map[string]json.RawMessage `json:"prefixes"`
	}
	status, body, err := n.Admin().Do(http.MethodGet, "/admin/prefixes", nil)
	if err != nil || status != http.StatusOK || json.Unmarshal(body, &list) != nil {
		t.Fatalf("%s: GET /admin/prefixes: %d %s %v", n.Name, status, body, err)
	}
	got := slices.Sorted(maps.Keys(list.Prefixes))
	if !slices.Equal(got, prefixes) {
		t.Errorf("%s holds prefixes %v, want %v", n.Name, got, prefixes)
	}
}

func TestAdminWritesHoldForANewLeaderAndDeadServersAreReaped(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.WithFastGossip(), testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.LeaderHold = 3 * time.Second
		cfg.ReapAfter = time.Second
	}))
	c.WaitReady()
	leader := waitLeader(t, c)
	follower := (leader + 1) % 3
	c.Kill(leader)
	// Written at once: the follower holds it until a new leader is elected.
	putPrefix(t, c, follower, "afterkill", publicPrefix)
	waitPrefixEverywhere(t, c, "afterkill", true, settleTimeout)
	c.WaitReady()

	// The new leader removes the dead server from Raft after ReapAfter.
	dead := c.Node(leader).Name
	c.WaitFor(settleTimeout, func() error {
		view, err := c.Node(follower).Admin().Cluster()
		if err != nil {
			return err
		}
		if len(view.Raft.Servers) != 2 || slices.Contains(view.Raft.Servers, dead) {
			return fmt.Errorf("raft servers %v still hold %s", view.Raft.Servers, dead)
		}
		return nil
	})

	// Without a quorum no leader comes: the write fails with 503 after the hold.
	other := 3 - leader - follower
	c.Kill(other)
	status, body, err := c.Node(follower).Admin().Do(http.MethodPut, "/admin/prefixes/noquorum", publicPrefix)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("write without quorum: %d %s %v, want 503", status, body, err)
	}
}

func TestSubscribersSurviveAQuickCrashAndRestartOfTheOwner(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()
	putPrefix(t, c, 0, "m", publicPrefix)
	waitPrefixEverywhere(t, c, "m", true, settleTimeout)
	ch := channelOwnedBy(t, c, "node2")
	if _, err := c.Node(1).Client(testcluster.Token("1")).Update("c", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	streams := openStreams(t, c, 0, []string{ch}, newModel())

	// Restarted before gossip can declare it dead: only its new incarnation
	// tells the others that its channels and registered subscribers are gone.
	c.Kill(2)
	c.StartNode(2)
	c.WaitReady()

	// The stream must come back to life: users keep entering until one of
	// them is streamed (a resync on the way is allowed: the state was lost).
	w := streams[ch]
	user := 1
	c.WaitFor(settleTimeout, func() error {
		user++
		id := fmt.Sprint(user)
		if _, err := c.Node(1).Client(testcluster.Token(id)).Update("c", []string{ch}, nil); err != nil {
			return err
		}
		return w.stream.WaitEvents(time.Second, func(events []testcluster.Event) error {
			if _, err := checkContinuity(events, map[string]int64{ch: w.from}); err != nil {
				return err
			}
			for _, ev := range events {
				msg, _ := ev.Message()
				for _, u := range msg.Data.EnteringUsers {
					if u.ID == id {
						return nil
					}
				}
			}
			return fmt.Errorf("user %s entering %s not streamed: %+v", id, ch, events)
		})
	})
	t.Logf("stream live again after %d users entered", user-1)
}

// TestWholeClusterShutdownEndsWithoutWaitingForHandOffs: when every node
// shuts down at once, none can take channels over. Each node sees the
// others draining and stops waiting for hand-offs rather than spending the
// whole drain budget of its shutdown context (minutes here), so every
// Shutdown returns long before that.
func TestWholeClusterShutdownEndsWithoutWaitingForHandOffs(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()
	putPrefix(t, c, 0, "m", publicPrefix)
	waitPrefixEverywhere(t, c, "m", true, settleTimeout)
	m := newModel()
	for i, ch := range channelNames(30) {
		enter(t, c, m, i%3, fmt.Sprintf("u%d", i), ch)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	done := make(chan error, c.Len())
	for i := range c.Len() {
		srv := c.Node(i).Server()
		go func() { done <- srv.Shutdown(ctx) }()
	}
	bound := time.After(time.Minute) // far below the drain budget, far above a gossip round
	for range c.Len() {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("shutdown: %v", err)
			}
		case <-bound:
			t.Fatal("the nodes kept waiting to hand channels to each other")
		}
	}
}

//go:build container

package container_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/internal/testkit"
)

// Settings of the elasticity scenarios.
const (
	// scaledService is docker-compose.cluster.yml's service of extra nodes.
	scaledService = "node"
	// reapWait bounds the wait for a killed node's removal from Raft: the
	// leader's grace period (30 s) and a margin.
	reapWait = 45 * time.Second
	// leaderPoll paces the leader watch.
	leaderPoll = 250 * time.Millisecond
	// maxLeaderGap is the longest the watched nodes may all go without
	// naming a Raft leader: an election after the leader's crash (Raft's
	// one-second timeouts), never a lasting loss of quorum.
	maxLeaderGap = 5 * time.Second
)

// TestContainerScaleOutAndIn: with 500 clients heartbeating through node1..3,
// the compose service "node" is scaled from 0 to 4, one node at a time
// (nodes found through the DNS alias every node joins), so the cluster
// grows from 3 to 7 nodes and settles on 5 Raft voters and 2 non-voters;
// then scaled to 1 (three nodes stop gracefully at once) and the last extra
// node is killed. No user is lost or invented, the streams keep their ids
// in order, node1..3 never go without a Raft leader for longer than an
// election, and the Raft configuration ends with exactly node1..3, all
// voting.
func TestContainerScaleOutAndIn(t *testing.T) {
	r := start(t, scenario{prefix: "scale", channels: 100, users: 250, heartbeat: faultHeartbeat,
		staleApply: 2 * time.Second, perNode: 2, vanish: 0.02})
	t.Cleanup(func() { // the next scenario starts from the three nodes
		_ = compose(func(ctx context.Context) (err error) { _, err = cluster.Scale(ctx, scaledService, 0); return err })
	})
	watch := watchLeader(cluster.Services())
	fixed := cluster.Services()
	var extras []string
	for n := 1; n <= 4; n++ {
		extras = scaleTo(t, n)
		waitReadyOf(t, append(slices.Clone(fixed), extras...))
		r.Logf("%d nodes, ready: %v", len(fixed)+n, extras)
	}
	all := append(slices.Clone(fixed), extras...)
	waitRaftServers(t, all, 5, readyTimeout)
	r.Converge("seven nodes", convergeWithin)
	r.hold("seven nodes", 2)

	left := scaleTo(t, 1)
	r.Logf("scaled to one extra node: %v stopped at once (SIGTERM), %v left", without(extras, left), left)
	r.Converge("three nodes stopped", convergeWithin)
	waitReadyOf(t, append(slices.Clone(fixed), left...))
	victim := left[0]
	killed := time.Now()
	if err := docker(func(ctx context.Context) error { return cluster.Kill(ctx, victim) }); err != nil {
		t.Fatal(err)
	}
	r.w.Model().NoteCrash(killed)
	r.Logf("%s killed at %s", victim, stamp())
	r.settle(victim+" killed", convergeWithin)
	waitRaftServers(t, fixed, 3, reapWait)
	r.Logf("raft configuration: exactly %v, all voting", fixed)
	r.hold("three nodes", 2)

	polls, missed, longest := watch.end()
	r.Logf("raft leader watch: %d polls, %d without a leader, longest stretch without one %v", polls, missed, longest)
	if longest > maxLeaderGap {
		t.Errorf("node1..3 named no raft leader for %v", longest)
	}
	scaleTo(t, 0)
	r.finish()
}

// TestContainerRecreateAll stops every container, holds the addresses
// they had, and recreates them all (compose up --force-recreate, volumes
// kept): every node comes back at a new address, the cluster forms again
// with its prefix documents, and every user whose clients kept
// heartbeating is back, no ghost once the timeout passed, streams resumed
// with a resync rather than a gap.
func TestContainerRecreateAll(t *testing.T) {
	const heartbeat = 10 * time.Second
	r := start(t, scenario{prefix: "recreate", channels: 100, users: 250, heartbeat: heartbeat, perNode: 2})
	scenarioDoc := chaos.Configure(t, cluster, "recreate", channelTimeout)
	keepDoc := chaos.PutPrefix(t, cluster, "kept", []byte(`{"rules": [{"match": "/kept/[0-9]+",
		"config": {"allowed_group_ids": ["staff"], "timeout": 45}}]}`))
	before := addresses(t)

	began := time.Now()
	if err := compose(cluster.StopAll); err != nil {
		t.Fatal(err)
	}
	var release func(context.Context) error
	err := docker(func(ctx context.Context) (err error) {
		release, err = cluster.HoldAddresses(ctx, len(before))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = docker(release) })
	if err := compose(cluster.Recreate); err != nil {
		t.Fatal(err)
	}
	if err := docker(release); err != nil {
		t.Fatal(err)
	}
	waitReady(t)
	r.Logf("stop, recreate and every node ready took %v", time.Since(began).Round(time.Millisecond))
	after := addresses(t)
	for s, addr := range after {
		if slices.Contains(valuesOf(before), addr) {
			t.Errorf("%s came back at %s, an address of the cluster before (%v): not a new address", s, addr, before)
		}
	}
	r.Logf("addresses before %v, after %v", before, after)
	chaos.WaitPrefix(t, cluster, "kept", keepDoc)
	chaos.WaitPrefix(t, cluster, "recreate", scenarioDoc)
	r.streams.Rehome()
	r.settle("after recreating every container", heartbeat+chaos.DefaultBudget+convergeWithin)
	r.hold("after recreating every container", 3)
	r.finish()
}

// scaleTo runs n extra nodes and returns their names.
func scaleTo(t *testing.T, n int) []string {
	t.Helper()
	var names []string
	err := compose(func(ctx context.Context) (err error) { names, err = cluster.Scale(ctx, scaledService, n); return err })
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != n {
		t.Fatalf("scaled to %d, running %v", n, names)
	}
	return names
}

// waitReadyOf waits until exactly the nodes of names agree (see Ready).
func waitReadyOf(t *testing.T, names []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	if err := cluster.WaitReady(ctx, names); err != nil {
		t.Fatal(err)
	}
}

// waitRaftServers waits until every node of names lists exactly them as
// Raft servers, voters of them voting.
func waitRaftServers(t *testing.T, names []string, voters int, within time.Duration) {
	t.Helper()
	want := slices.Sorted(slices.Values(names))
	err := testkit.Poll(within, func() error {
		for _, n := range names {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			view, err := cluster.Admin(n).Cluster(ctx)
			cancel()
			if err != nil {
				return err
			}
			servers := slices.Sorted(slices.Values(view.Raft.Servers))
			if !slices.Equal(servers, want) || len(view.Raft.Voters) != voters {
				return fmt.Errorf("%s: raft servers %v, voters %v; want servers %v, %d voters",
					n, servers, view.Raft.Voters, want, voters)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// addresses returns the address of each service's container.
func addresses(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, s := range cluster.Services() {
		err := docker(func(ctx context.Context) (err error) { out[s], err = cluster.Address(ctx, s); return err })
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func valuesOf(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// without returns the names of all that are not in some.
func without(all, some []string) []string {
	var out []string
	for _, n := range all {
		if !slices.Contains(some, n) {
			out = append(out, n)
		}
	}
	return out
}

// leaderWatch polls nodes' /admin/cluster and measures the stretches
// during which none of them named a Raft leader.
type leaderWatch struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	polls   int
	missed  int
	longest time.Duration
	since   time.Time // start of the current stretch without a leader
}

func watchLeader(nodes []string) *leaderWatch {
	w := &leaderWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(leaderPoll)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			w.observe(time.Now(), leaderKnown(nodes))
		}
	}()
	return w
}

// leaderKnown reports whether one of nodes names a Raft leader.
func leaderKnown(nodes []string) bool {
	for _, n := range nodes {
		ctx, cancel := context.WithTimeout(context.Background(), leaderPoll)
		view, err := cluster.Admin(n).Cluster(ctx)
		cancel()
		if err == nil && view.Raft.Leader != "" {
			return true
		}
	}
	return false
}

func (w *leaderWatch) observe(now time.Time, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	switch {
	case !known:
		w.missed++
		if w.since.IsZero() {
			w.since = now
		}
		w.longest = max(w.longest, now.Sub(w.since))
	case !w.since.IsZero():
		w.longest = max(w.longest, now.Sub(w.since))
		w.since = time.Time{}
	}
}

// end stops the watch and returns the polls, those without a leader, and
// the longest stretch without one.
func (w *leaderWatch) end() (polls, missed int, longest time.Duration) {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polls, w.missed, w.longest
}

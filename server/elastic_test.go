package server_test

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/server"
)

// leaderWatch polls a node's /admin/cluster and keeps the longest stretch
// during which it knew no Raft leader.
type leaderWatch struct {
	stop chan struct{}
	done chan struct{}

	mu      sync.Mutex
	polls   int
	longest time.Duration
	missing time.Time // start of the current stretch without a leader
	errors  int
}

func watchLeader(n *testcluster.Node) *leaderWatch {
	w := &leaderWatch{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			view, err := n.Admin().Cluster()
			w.observe(time.Now(), err == nil && view.Raft.Leader != "", err != nil)
		}
	}()
	return w
}

func (w *leaderWatch) observe(now time.Time, known, failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.polls++
	if failed {
		w.errors++
	}
	switch {
	case !known && w.missing.IsZero():
		w.missing = now
	case known && !w.missing.IsZero():
		w.longest = max(w.longest, now.Sub(w.missing))
		w.missing = time.Time{}
	}
}

// end stops polling and returns the polls made and the longest stretch
// without a leader.
func (w *leaderWatch) end() (polls, errors int, longest time.Duration) {
	close(w.stop)
	<-w.done
	w.observe(time.Now(), true, false)
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.polls, w.errors, w.longest
}

// waitRaftServers waits until every running node's Raft configuration has
// exactly the running nodes, with voters voting.
func waitRaftServers(t *testing.T, c *testcluster.Cluster, voters int) {
	t.Helper()
	var names []string
	for _, n := range c.Running() {
		names = append(names, n.Name)
	}
	c.WaitFor(settleTimeout, func() error {
		for _, n := range c.Running() {
			view, err := n.Admin().Cluster()
			if err != nil {
				return err
			}
			servers := slices.Sorted(slices.Values(view.Raft.Servers))
			if !slices.Equal(servers, names) || len(view.Raft.Voters) != voters {
				return fmt.Errorf("%s: raft servers %v, voters %v; want servers %v, %d voters",
					n.Name, servers, view.Raft.Voters, names, voters)
			}
		}
		return nil
	})
}

// TestScaleThreeToSevenToThree: under updates, four nodes join three: they
// join Raft as non-voters and the cluster settles on five voters; three of
// them then leave at once (SIGTERM) and a fourth is killed: no user is
// lost or invented, the nodes that stay never go without a Raft leader for
// longer than an election, and the configuration ends with exactly the
// three live nodes, all voting.
func TestScaleThreeToSevenToThree(t *testing.T) {
	// LAN gossip timings: seven nodes in one process under the race
	// detector make the fast ones suspect live members.
	c := testcluster.Start(t, 3, testcluster.WithConfig(func(_ int, cfg *server.Config) {
		cfg.ReapAfter = 2 * time.Second
	}))
	c.WaitReady()
	putPrefix(t, c, 0, "m", publicPrefix)
	waitPrefixEverywhere(t, c, "m", true, settleTimeout)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	channels := channelNames(100)
	m := newModel()
	randomUpdates(t, c, m, rng, 30, channels, 2)
	watch := watchLeader(c.Node(0))

	// One at a time: nodes joining all at once can leave a channel behind
	// a chain of hand-off tombstones longer than the router's hop limit.
	for range 4 {
		c.AddNode()
		c.WaitReady()
	}
	waitRaftServers(t, c, 5)
	m.checkAll(t, c, channels)
	randomUpdates(t, c, m, rng, 30, channels, 1)
	m.checkAll(t, c, channels)

	var wg sync.WaitGroup
	for _, i := range []int{3, 4, 5} {
		wg.Go(func() { c.Stop(i) })
	}
	wg.Wait()
	m.checkAll(t, c, channels)
	c.Kill(6)
	m.checkAll(t, c, channels)
	randomUpdates(t, c, m, rng, 30, channels, 1)
	c.WaitReady()
	waitRaftServers(t, c, 3)
	m.checkAll(t, c, channels)

	polls, errs, longest := watch.end()
	t.Logf("node0 polled %d times (%d failed), longest stretch without a raft leader: %v", polls, errs, longest)
	if longest > 2*time.Second {
		t.Errorf("node0 knew no raft leader for %v", longest)
	}
	if errs > 0 {
		t.Errorf("%d polls of node0 failed", errs)
	}
	putPrefix(t, c, 1, "after", publicDoc("after"))
}

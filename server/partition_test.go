package server_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/server"
)

// healBound is the bound on convergence after a partition heals.
const healBound = 10 * time.Second

// faultHold is how long the cut lasts at least after each side saw the
// other dead: past memberlist's GossipToTheDeadTime in its fast timings
// (2 s), after which nobody gossips to the dead or probes them and only
// the rejoin loop merges the sides, as after the container suite's 20 s
// disconnect. It is the fault's duration, not a wait for a result. It
// stays short of the cut TestPartitionLongCutRaftCatchUpWithin10s needs.
const faultHold = 4 * time.Second

// partitionHoldWrite is the leader hold of the partition test's nodes:
// shorter than the default so the minority's refused write is quick.
const partitionHoldWrite = 2 * time.Second

// TestPartitionBothSidesServeAndHealWithin10s cuts node2 off from node0
// and node1 (gossip, Raft and RPC, both ways) until each side sees the
// other dead, then checks that each side serves its own clients, that only
// the majority accepts admin writes, and that after the heal every node
// converges within healBound on the union of the live clients, the
// majority's prefix document, and without the users who left on either side.
func TestPartitionBothSidesServeAndHealWithin10s(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.WithPartitions(), testcluster.WithFastGossip(),
		testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.LeaderHold = partitionHoldWrite }))
	c.WaitReady()
	putPrefix(t, c, 0, "m", publicPrefix) // default timeout 60 s: nobody expires during the test
	waitPrefixEverywhere(t, c, "m", true, settleTimeout)
	t.Logf("raft leader before the cut: node%d", waitLeader(t, c))

	// The channel lives on node2 and is copied on node0, so each side of
	// the cut holds its whole state.
	ch := channelOwnedWith(t, c, "node2", "node0")
	m := newModel()
	enter(t, c, m, 0, "a", ch)
	enter(t, c, m, 1, "l1", ch)
	enter(t, c, m, 2, "l2", ch)
	streams := map[int]watch{0: subscribe(t, c, m, 0, ch, "w0"), 2: subscribe(t, c, m, 2, ch, "w2")}
	beats := newHeartbeats(t)
	beats.add(c, 0, "a", ch)

	cut := time.Now()
	c.Partition([]int{0, 1}, []int{2})
	waitSides(t, c, []int{0, 1}, []int{2})
	detected := time.Now()
	t.Logf("each side saw the other dead %v after the cut", detected.Sub(cut).Round(time.Millisecond))

	sidesServe(t, c, m, ch, beats)
	adminWritesNeedTheMajority(t, c)

	time.Sleep(time.Until(detected.Add(faultHold))) // the fault's duration
	t.Logf("cut statistics before the heal: %+v (cut for %v)", c.CutStats(), time.Since(cut).Round(time.Millisecond))
	seen := eventCounts(streams)
	healAndConverge(t, c, m, ch)
	beats.stop(t)
	checkPartitionStreams(t, c, m, ch, streams, seen)
}

// eventCounts returns how many events each stream received so far.
func eventCounts(streams map[int]watch) map[int]int {
	n := make(map[int]int, len(streams))
	for i, w := range streams {
		n[i] = len(w.stream.Events())
	}
	return n
}

// sidesServe: each side serves ch for its own clients. On node2 user b
// enters and l1 leaves; on the majority c enters and l2 leaves.
func sidesServe(t *testing.T, c *testcluster.Cluster, m *model, ch string, beats *heartbeats) {
	t.Helper()
	enter(t, c, m, 2, "b", ch)
	enter(t, c, m, 1, "c", ch)
	leave(t, c, m, 2, "l1", ch)
	leave(t, c, m, 0, "l2", ch)
	beats.add(c, 2, "b", ch)
	beats.add(c, 1, "c", ch)
	waitUsers(t, c, 2, ch, []string{"a", "b", "l2"}, []string{"c", "l1"})
	for _, i := range []int{0, 1} {
		waitUsers(t, c, i, ch, []string{"a", "c", "l1"}, []string{"b", "l2"})
	}
	waitStatus(t, c, 2, "/readyz", http.StatusServiceUnavailable)
}

// adminWritesNeedTheMajority: a prefix PUT answers 503 after the hold on
// node2 and 200 on node0; node2 does not see the majority's document.
func adminWritesNeedTheMajority(t *testing.T, c *testcluster.Cluster) {
	t.Helper()
	refusedOnMinority(t, c, 2, "partmin")
	waitMajorityLeader(t, c, []int{0, 1})
	putPrefix(t, c, 0, "partmaj", publicDoc("partmaj"))
	waitStatus(t, c, 2, "/admin/prefixes/partmaj", http.StatusNotFound)
}

// healAndConverge heals the cut and waits at most healBound for every
// node to agree with the model and hold the majority's document only;
// once the cluster settled, it checks again (no user came back).
func healAndConverge(t *testing.T, c *testcluster.Cluster, m *model, ch string) {
	t.Helper()
	healed := time.Now()
	c.Heal()
	var lastWait error
	c.WaitFor(healBound, func() error {
		err := converged(c, m, ch)
		if err != nil {
			lastWait = err
		}
		return err
	})
	t.Logf("converged %v after the heal; the last unmet condition: %v", time.Since(healed).Round(time.Millisecond), lastWait)
	c.WaitReady()
	if err := converged(c, m, ch); err != nil {
		t.Errorf("after the cluster settled: %v", err)
	}
}

// raftBackoffCap is hashicorp/raft's longest pause between a leader's
// retries of appends to an unreachable follower: 10 ms doubled up to
// 10 times (replication.go: failureWait, maxFailureScale).
const raftBackoffCap = 10240 * time.Millisecond

// TestPartitionLongCutRaftCatchUpWithin10s: after a cut long enough for
// the leader's retries of appends to node2 to back off to 5 s or more, the
// heal comes right after a refused retry, so the leader's own next retry
// would come up to raftBackoffCap later, beyond healBound. The leader sees
// node2's heartbeats resume after writes it missed and hands leadership
// over (raftstore.Store's catch-up watcher); the new leader sends them at once.
func TestPartitionLongCutRaftCatchUpWithin10s(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.WithPartitions(), testcluster.WithFastGossip(),
		testcluster.WithConfig(func(_ int, cfg *server.Config) { cfg.LeaderHold = partitionHoldWrite }))
	c.WaitReady()
	c.Partition([]int{0, 1}, []int{2})
	waitSides(t, c, []int{0, 1}, []int{2})
	waitMajorityLeader(t, c, []int{0, 1})
	putPrefix(t, c, 0, "partmaj", publicDoc("partmaj"))

	// Heal within a poll of a refused retry that followed a pause of 5 s
	// or more: the leader's next pause is twice as long, up to the cap.
	var pause time.Duration
	c.WaitFor(2*raftBackoffCap+settleTimeout, func() error {
		at := c.RefusedRaftAppends(2)
		n := len(at)
		if n < 2 {
			return fmt.Errorf("%d refused appends to node2", n)
		}
		if pause = at[n-1].Sub(at[n-2]); pause < 5*time.Second || time.Since(at[n-1]) > 100*time.Millisecond {
			return fmt.Errorf("%d refused appends to node2, the last pause %v", n, pause)
		}
		return nil
	})
	healed := time.Now()
	c.Heal()
	t.Logf("healed after a retry that followed a pause of %v", pause.Round(time.Millisecond))
	waitStatusWithin(t, c, healBound, 2, "/admin/prefixes/partmaj", http.StatusOK)
	t.Logf("node2 serves the majority's prefix document %v after the heal", time.Since(healed).Round(time.Millisecond))
}

// channelOwnedWith finds a channel of prefix "m" with the given owner and
// first replica.
func channelOwnedWith(t *testing.T, c *testcluster.Cluster, owner, replica string) string {
	t.Helper()
	for i := range 1000 {
		ch := fmt.Sprintf("/m/part%d", i)
		o, reps, err := c.Node(0).Admin().Owner(ch)
		if err != nil {
			t.Fatal(err)
		}
		if o == owner && len(reps) > 0 && reps[0] == replica {
			return ch
		}
	}
	t.Fatalf("no channel owned by %s with replica %s", owner, replica)
	return ""
}

// subscribe opens a stream of ch on node i from its current id, then
// makes user "w<i>" enter ch through node i and waits for that message:
// the stream is live from then on.
func subscribe(t *testing.T, c *testcluster.Cluster, m *model, i int, ch, user string) watch {
	t.Helper()
	cl := c.Node(i).Client(testcluster.Token(user))
	st, err := cl.Get(ch)
	if err != nil {
		t.Fatal(err)
	}
	from := st[ch].LastMessageID
	s, err := cl.Subscribe(map[string]int64{ch: from}, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	enter(t, c, m, i, user, ch)
	if err := s.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
		return streamed(events, user)
	}); err != nil {
		t.Fatalf("node%d: %v", i, err)
	}
	return watch{stream: s, from: from}
}

// streamed reports whether a message of events has user entering.
func streamed(events []testcluster.Event, user string) error {
	for _, ev := range events {
		msg, _ := ev.Message()
		for _, u := range msg.Data.EnteringUsers {
			if u.ID == user {
				return nil
			}
		}
	}
	return fmt.Errorf("user %s entering not streamed", user)
}

// enter makes user's client (named after the user) enter ch through node
// i, retrying while ownership moves, and records it in m.
func enter(t *testing.T, c *testcluster.Cluster, m *model, i int, user, ch string) {
	t.Helper()
	update(t, c, i, user, []string{ch}, nil)
	m.apply(user, user, []string{ch}, nil)
}

// leave makes user's client leave ch through node i.
func leave(t *testing.T, c *testcluster.Cluster, m *model, i int, user, ch string) {
	t.Helper()
	update(t, c, i, user, nil, []string{ch})
	m.apply(user, user, nil, []string{ch})
}

func update(t *testing.T, c *testcluster.Cluster, i int, user string, present, leave []string) {
	t.Helper()
	cl := c.Node(i).Client(testcluster.Token(user))
	c.WaitFor(settleTimeout, func() error {
		got, err := cl.Update(user, present, leave)
		if err != nil {
			return fmt.Errorf("user %s through node%d: %w", user, i, err)
		}
		for _, ch := range present {
			if !got[ch] {
				return fmt.Errorf("user %s through node%d: present %s answered false", user, i, ch)
			}
		}
		return nil
	})
}

// heartbeats keeps clients present, each through one node, every
// heartbeatEvery, until stop.
type heartbeats struct {
	done     chan struct{}
	wg       sync.WaitGroup
	ok, fail atomic.Int64
}

const heartbeatEvery = 500 * time.Millisecond

// newHeartbeats returns an empty set of loops, stopped at the test's end.
func newHeartbeats(t *testing.T) *heartbeats {
	h := &heartbeats{done: make(chan struct{})}
	t.Cleanup(func() { h.stop(t) })
	return h
}

// add keeps user's client (named after the user, which entered ch
// already) present in ch through node i.
func (h *heartbeats) add(c *testcluster.Cluster, i int, user, ch string) {
	cl := c.Node(i).Client(testcluster.Token(user))
	h.wg.Go(func() {
		tick := time.NewTicker(heartbeatEvery)
		defer tick.Stop()
		for {
			select {
			case <-h.done:
				return
			case <-tick.C:
			}
			if got, err := cl.Update(user, []string{ch}, nil); err != nil || !got[ch] {
				h.fail.Add(1)
				continue
			}
			h.ok.Add(1)
		}
	})
}

// stop ends the loops once and logs their counts.
func (h *heartbeats) stop(t *testing.T) {
	select {
	case <-h.done:
		return
	default:
	}
	close(h.done)
	h.wg.Wait()
	t.Logf("heartbeats: %d answered, %d failed (across the cut and the heal)", h.ok.Load(), h.fail.Load())
}

// waitSides waits until every node of each side sees the nodes of its
// side alive and the others not.
func waitSides(t *testing.T, c *testcluster.Cluster, sides ...[]int) {
	t.Helper()
	c.WaitFor(settleTimeout, func() error {
		for _, side := range sides {
			var want []string
			for _, i := range side {
				want = append(want, c.Node(i).Name)
			}
			for _, i := range side {
				view, err := c.Node(i).Admin().Cluster()
				if err != nil {
					return err
				}
				if alive := view.Alive(); !slices.Equal(alive, want) {
					return fmt.Errorf("node%d sees alive %v, want %v", i, alive, want)
				}
			}
		}
		return nil
	})
}

// usersOf lists the users node i answers for ch.
func usersOf(c *testcluster.Cluster, i int, ch string) ([]string, error) {
	got, err := c.Node(i).Client("").Get(ch)
	if err != nil {
		return nil, err
	}
	if got[ch] == nil {
		return nil, fmt.Errorf("node%d: %s is null", i, ch)
	}
	var ids []string
	for _, u := range got[ch].Users {
		ids = append(ids, u.ID)
	}
	slices.Sort(ids)
	return ids, nil
}

// waitUsers waits until node i lists every user of with and none of without.
func waitUsers(t *testing.T, c *testcluster.Cluster, i int, ch string, with, without []string) {
	t.Helper()
	c.WaitFor(settleTimeout, func() error {
		ids, err := usersOf(c, i, ch)
		if err != nil {
			return err
		}
		for _, u := range with {
			if !slices.Contains(ids, u) {
				return fmt.Errorf("node%d lists %v: %s missing", i, ids, u)
			}
		}
		for _, u := range without {
			if slices.Contains(ids, u) {
				return fmt.Errorf("node%d lists %v: %s is on the other side", i, ids, u)
			}
		}
		return nil
	})
}

// waitStatus waits until node i answers a GET of path (admin token) with want.
func waitStatus(t *testing.T, c *testcluster.Cluster, i int, path string, want int) {
	t.Helper()
	waitStatusWithin(t, c, settleTimeout, i, path, want)
}

// waitStatusWithin is waitStatus with its own bound.
func waitStatusWithin(t *testing.T, c *testcluster.Cluster, within time.Duration, i int, path string, want int) {
	t.Helper()
	c.WaitFor(within, func() error {
		status, body, err := c.Node(i).Admin().Do(http.MethodGet, path, nil)
		if err != nil || status != want {
			return fmt.Errorf("node%d GET %s: %d %s %v, want %d", i, path, status, bytes.TrimSpace(body), err, want)
		}
		return nil
	})
}

// refusedOnMinority wants a prefix PUT through node i to answer 503 with
// a JSON error body, no sooner than the leader hold.
func refusedOnMinority(t *testing.T, c *testcluster.Cluster, i int, prefix string) {
	t.Helper()
	start := time.Now()
	status, body, err := c.Node(i).Admin().Do(http.MethodPut, "/admin/prefixes/"+prefix, publicDoc(prefix))
	took := time.Since(start)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("PUT on the minority: %d %s %v, want 503", status, body, err)
	}
	var e struct {
		Errors []string `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Errorf("503 body %s is not a JSON errors list: %v", body, err)
	}
	if took < partitionHoldWrite {
		t.Errorf("503 after %v, before the leader hold of %v", took, partitionHoldWrite)
	}
	t.Logf("minority PUT: 503 %s after %v", bytes.TrimSpace(body), took.Round(time.Millisecond))
}

// waitMajorityLeader waits until node side[0] names a Raft leader of side.
func waitMajorityLeader(t *testing.T, c *testcluster.Cluster, side []int) {
	t.Helper()
	c.WaitFor(settleTimeout, func() error {
		view, err := c.Node(side[0]).Admin().Cluster()
		if err != nil {
			return err
		}
		for _, i := range side {
			if view.Raft.Leader == c.Node(i).Name {
				return nil
			}
		}
		return fmt.Errorf("majority leader %q", view.Raft.Leader)
	})
}

// converged checks every node against the model and the prefix documents
// written during the partition.
func converged(c *testcluster.Cluster, m *model, ch string) error {
	for _, n := range c.Running() {
		if err := m.check(n, []string{ch}); err != nil {
			return err
		}
		for prefix, want := range map[string]int{"partmaj": http.StatusOK, "partmin": http.StatusNotFound} {
			status, body, err := n.Admin().Do(http.MethodGet, "/admin/prefixes/"+prefix, nil)
			if err != nil || status != want {
				return fmt.Errorf("%s GET prefix %s: %d %s %v, want %d", n.Name, prefix, status, bytes.TrimSpace(body), err, want)
			}
		}
	}
	return nil
}

// checkPartitionStreams checks the subscribers of both sides. Each side
// missed the other's changes, so the merge must tell each stream to re-read
// the channel (a resync after seen[i] events) without waiting for the
// channel's next change; the enter that follows then arrives as a message
// (or inside another resync), and ids never repeat.
func checkPartitionStreams(t *testing.T, c *testcluster.Cluster, m *model, ch string, streams map[int]watch, seen map[int]int) {
	t.Helper()
	for i, w := range streams {
		err := w.stream.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
			if resyncsIn(events[seen[i]:]) == 0 {
				return fmt.Errorf("no resync since the heal")
			}
			return nil
		})
		if err != nil {
			t.Errorf("stream on node%d: %v; events %+v", i, err, w.stream.Events())
		}
	}
	before := eventCounts(streams)
	enter(t, c, m, 1, "d", ch)
	for i, w := range streams {
		err := w.stream.WaitEvents(settleTimeout, func(events []testcluster.Event) error {
			if _, err := checkContinuity(events, map[string]int64{ch: w.from}); err != nil {
				return err
			}
			if resyncsIn(events[before[i]:]) > 0 {
				return nil // the client fetches the channel, d included
			}
			return streamed(events, "d")
		})
		t.Logf("stream on node%d: %d events, %d resync", i, len(w.stream.Events()), resyncsIn(w.stream.Events()))
		if err != nil {
			t.Errorf("stream on node%d: %v; events %+v", i, err, w.stream.Events())
		}
	}
}

func resyncsIn(events []testcluster.Event) int {
	n := 0
	for _, ev := range events {
		if ev.Event == "resync" {
			n++
		}
	}
	return n
}

package router

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/wire"
)

// populated is a cluster with presence in every channel and, on every
// node, one subscription following all of them.
type populated struct {
	c     *testCluster
	chs   []string
	m     model
	last  map[string]int64 // each channel's last message id
	round int              // checkAfterMove rounds, for fresh user ids
	cols  map[string]*collector
}

func populate(t *testing.T, c *testCluster, nChannels int) *populated {
	t.Helper()
	p := &populated{c: c, chs: testChannels(nChannels), m: make(model), cols: map[string]*collector{}}
	from := make(map[string]int64, len(p.chs))
	for _, ch := range p.chs {
		from[ch] = -1
	}
	for _, n := range c.nodes {
		sub, err := n.r.Subscribe(context.Background(), testUser(0), from)
		if err != nil {
			t.Fatal(err)
		}
		p.cols[n.name] = collect(t, sub)
	}
	// Every channel gets a user, then random traffic.
	ctx := testCtx(t)
	for i, ch := range p.chs {
		n := c.nodes[i%len(c.nodes)]
		u := testUser(2 * (i % 6)) // staff, so staff channels accept them
		if _, err := n.r.Update(ctx, u, "tab0", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
		p.m.present(ch, u.ID, "tab0")
	}
	applyRandomUpdates(t, c, c.nodes, p.chs, p.m, rand.New(rand.NewPCG(3, 4)), 200)
	p.last = p.lastIDs(t, c.nodes[0])
	return p
}

// lastIDs reads every channel's last message id through n.
func (p *populated) lastIDs(t *testing.T, n *testNode) map[string]int64 {
	t.Helper()
	out := make(map[string]int64, len(p.chs))
	for start := 0; start < len(p.chs); start += presence.MaxChannelsPerCall {
		batch := p.chs[start:min(start+presence.MaxChannelsPerCall, len(p.chs))]
		states, err := n.r.Get(testCtx(t), testUser(0), batch)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range batch {
			out[ch] = states[ch].LastMessageID
		}
	}
	return out
}

// checkAfterMove verifies, through every node in nodes, that every user is
// still present, that ids continued where they were (a new message gets
// the next id), that exactly one node runs each channel (its ring owner),
// and that every subscription's stream is in order without unexplained
// gaps.
func (p *populated) checkAfterMove(t *testing.T, nodes []*testNode, runners []*testNode) {
	t.Helper()
	checkModel(t, nodes, p.chs, p.m)
	if got := p.lastIDs(t, nodes[0]); !mapsEqual(got, p.last) {
		t.Fatalf("last ids changed by the move")
	}
	checkSingleRunner(t, p.chs, runners)
	// One more message per channel: its id follows the last one.
	ctx := testCtx(t)
	p.round++
	for i, ch := range p.chs {
		n := nodes[i%len(nodes)]
		u := testUser(100*p.round + 2*(i%3))
		if _, err := n.r.Update(ctx, u, "late", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
		p.m.present(ch, u.ID, "late")
	}
	got := p.lastIDs(t, nodes[len(nodes)-1])
	for _, ch := range p.chs {
		if got[ch] != p.last[ch]+1 {
			t.Fatalf("%s: new message has id %d, want %d", ch, got[ch], p.last[ch]+1)
		}
	}
	p.last = got
	for name, col := range p.cols {
		testkit.WaitFor(t, "subscribers on "+name+" to see the new messages", func() bool {
			evs := col.events()
			for _, ch := range p.chs {
				if !streamReached(evs, ch, p.last[ch]) {
					return false
				}
			}
			return true
		})
		for _, ch := range p.chs {
			checkStream(t, col.events(), ch)
		}
	}
}

// checkSingleRunner verifies that each channel runs on exactly one of
// nodes, its owner in the ring of nodes.
func checkSingleRunner(t *testing.T, chs []string, nodes []*testNode) {
	t.Helper()
	runs := map[string][]string{}
	var names []string
	for _, n := range nodes {
		names = append(names, n.name)
		for _, ch := range n.engine.Channels() {
			runs[ch] = append(runs[ch], n.name)
		}
	}
	rg := ring.New(1, names)
	for _, ch := range chs {
		owner := rg.Owner(ch)
		if !slices.Equal(runs[ch], []string{owner}) {
			t.Fatalf("%s runs on %v, want only its owner %s", ch, runs[ch], owner)
		}
	}
}

// streamReached reports whether the events of ch reached position id.
func streamReached(evs []presence.Event, ch string, id int64) bool {
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].Channel == ch && evs[i].LastID >= id {
			return true
		}
	}
	return false
}

func resyncs(evs []presence.Event) int {
	n := 0
	for _, ev := range evs {
		if ev.Kind == presence.EventResync {
			n++
		}
	}
	return n
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func handoffs(n *testNode, dir string) float64 {
	return testutilValue(n.r.m.handoffs.WithLabelValues(dir))
}

func TestJoinMovesChannels(t *testing.T) {
	for _, joinerFirst := range []bool{false, true} {
		t.Run(fmt.Sprintf("joinerFirst=%v", joinerFirst), func(t *testing.T) {
			c := newTestCluster(t, 3, nil)
			p := populate(t, c, 200)
			d := c.addNode("n4")
			all := c.nodes
			if joinerFirst {
				d.r.SetMembers(members(all...))
			}
			for _, n := range all[:3] {
				n.r.SetMembers(members(all...))
			}
			if !joinerFirst {
				d.r.SetMembers(members(all...))
			}
			c.waitSettled(all...)

			moved := 0
			for _, ch := range p.chs {
				if owner, _ := d.r.Owner(ch); owner == d.name {
					moved++
				}
			}
			if moved < len(p.chs)/8 || moved > len(p.chs)/2 {
				t.Errorf("%d of %d channels moved to the joiner, want about a quarter", moved, len(p.chs))
			}
			p.checkAfterMove(t, all, all)
			// Pulls answered after the old owners settled may still be
			// installing when Settled turns true; the reads above waited.
			if in := handoffs(d, handoffIn); int(in) != moved {
				t.Errorf("joiner received %v channels, owns %d", in, moved)
			}
			for name, col := range p.cols {
				if n := resyncs(col.events()); n != 0 {
					t.Errorf("subscription on %s saw %d resyncs", name, n)
				}
			}
		})
	}
}

func TestDrainMovesEverything(t *testing.T) {
	c := newTestCluster(t, 4, nil)
	p := populate(t, c, 200)
	leaver := c.nodes[1]
	if len(leaver.engine.Channels()) == 0 {
		t.Fatal("the leaver runs no channel")
	}
	held := len(leaver.engine.Channels())
	if err := leaver.r.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if chs := leaver.engine.Channels(); len(chs) != 0 {
		t.Fatalf("after Drain the leaver still runs %v", chs)
	}
	if out := handoffs(leaver, handoffOut); int(out) != held {
		t.Errorf("leaver handed %v channels over, held %d", out, held)
	}
	stay := []*testNode{c.nodes[0], c.nodes[2], c.nodes[3]}
	// Before the others notice, requests through any node still work.
	p.checkAfterMove(t, c.nodes, stay)
	// Then membership drops the leaver everywhere; it keeps forwarding, but
	// owners stop pushing to it, so its subscribers are left out (a leaving
	// server ends its streams; clients reconnect elsewhere).
	delete(p.cols, leaver.name)
	for _, n := range c.nodes {
		n.r.SetMembers(members(stay...))
	}
	c.waitSettled(c.nodes...)
	p.checkAfterMove(t, append(stay, leaver), stay)
	for name, col := range p.cols {
		if n := resyncs(col.events()); n != 0 {
			t.Errorf("subscription on %s saw %d resyncs", name, n)
		}
	}
}

func TestPullWhenPushFails(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	p := populate(t, c, 100)
	for _, n := range c.nodes {
		n.caller.setFail(func(_ string, method uint16) error {
			if method == wire.MethodInstall {
				return errors.New("install refused by the test")
			}
			return nil
		})
	}
	d := c.addNode("n4")
	c.setMembers(c.nodes...)
	// Pushes fail; every first touch at the joiner pulls instead.
	checkModel(t, c.nodes, p.chs, p.m)
	if got := p.lastIDs(t, c.nodes[0]); !mapsEqual(got, p.last) {
		t.Fatal("last ids changed by the pulls")
	}
	if handoffs(d, handoffIn) == 0 {
		t.Fatal("nothing was pulled")
	}
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.retryFailedPushes(c.nodes...)
	p.checkAfterMove(t, c.nodes, c.nodes)
}

func TestUnreachablePreviousOwnerStartsFreshThenMerges(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a := c.nodes[0]
	d := c.addNode("n3")
	ch := channelMoving(t, []string{"n1", "n2"}, "n1", []string{"n1", "n2", "n3"}, "n3")
	if _, err := a.r.Update(ctx, user("old"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	sub, err := a.r.Subscribe(ctx, nil, map[string]int64{ch: -1})
	if err != nil {
		t.Fatal(err)
	}
	col := collect(t, sub)
	before := p1LastID(t, a, ch)

	// The joiner cannot reach anybody's extract; the old owner cannot push.
	d.caller.setFail(func(_ string, method uint16) error {
		if method == wire.MethodExtract {
			return errors.New("unreachable")
		}
		return nil
	})
	for _, n := range c.nodes[:2] {
		n.caller.setFail(func(_ string, method uint16) error {
			if method == wire.MethodInstall {
				return errors.New("unreachable")
			}
			return nil
		})
	}
	c.clk.Advance(time.Second) // the fresh incarnation's ids come from the clock
	c.setMembers(c.nodes...)
	got, err := d.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if got[ch] == nil || got[ch].Count != 0 || got[ch].LastMessageID <= before {
		t.Fatalf("fresh start: %+v, want empty with ids above %d", got[ch], before)
	}
	if _, err := d.r.Update(ctx, user("new"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	// The network heals: the old owner's retried push merges both states.
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.retryFailedPushes(a)
	got, err = a.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"new", "old"}) {
		t.Fatalf("after the merge users are %v", ids)
	}
	// The merge itself tells subscribers to re-read the channel; they do
	// not wait for its next change.
	testkit.WaitFor(t, "a resync", func() bool { return resyncs(col.events()) > 0 })
	if _, err := a.r.Update(ctx, user("later"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	// It follows the resync as the next message.
	next := got[ch].LastMessageID + 1
	testkit.WaitFor(t, "later's enter", func() bool {
		msgs := col.messages(ch)
		return len(msgs) > 0 && msgs[len(msgs)-1].LastID == next
	})
	checkStream(t, col.events(), ch)
}

// channelMoving returns a public channel owned by from among before and by
// to among after.
func channelMoving(t *testing.T, before []string, from string, after []string, to string) string {
	t.Helper()
	rb, ra := ring.New(1, before), ring.New(2, after)
	for i := range 100000 {
		ch := fmt.Sprintf("/pub/m%d", i)
		if rb.Owner(ch) == from && ra.Owner(ch) == to {
			return ch
		}
	}
	t.Fatal("no channel moving as asked")
	return ""
}

func p1LastID(t *testing.T, n *testNode, ch string) int64 {
	t.Helper()
	got, err := n.r.Get(testCtx(t), nil, []string{ch})
	if err != nil || got[ch] == nil {
		t.Fatalf("get %s: %v %v", ch, got, err)
	}
	return got[ch].LastMessageID
}

func TestPullPushRaceHammer(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	p := populate(t, c, 120)
	d := c.addNode("n4")
	all := c.nodes

	// Heartbeats of present clients and reads hammer every node while the
	// membership changes in a different order on each node: the joiner
	// first, so it pulls while the others push.
	d.r.SetMembers(members(all...))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	for w := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 9))
			ctx := context.Background()
			for {
				select {
				case <-stop:
					return
				default:
				}
				n := all[rng.IntN(len(all))]
				ch := p.chs[rng.IntN(len(p.chs))]
				var err error
				if uids := p.m.users(ch); len(uids) > 0 && rng.IntN(2) == 0 {
					uid := uids[rng.IntN(len(uids))]
					u := userByID(uid)
					for client := range p.m[ch][uid] {
						_, err = n.r.Update(ctx, u, client, []string{ch}, nil)
						break
					}
				} else {
					_, err = n.r.Get(ctx, testUser(0), []string{ch})
				}
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		})
	}
	for _, i := range []int{2, 0, 1} {
		all[i].r.SetMembers(members(all...))
	}
	c.waitSettled(all...)
	close(stop)
	wg.Wait()
	if n := failures.Load(); n > 0 {
		t.Errorf("%d calls failed during the hand-off, first: %v", n, firstErr.Load())
	}
	p.checkAfterMove(t, all, all)
}

// userByID rebuilds the test user with id uid.
func userByID(uid string) *presence.User {
	var i int
	fmt.Sscan(uid, &i)
	return testUser(i)
}

func TestInterestReRegisteredOnOwnerChange(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	d := c.addNode("n3")
	all := c.nodes
	ch := channelMoving(t, []string{"n1", "n2"}, "n2", []string{"n1", "n2", "n3"}, "n3")
	if _, err := b.r.Update(ctx, user("1"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	sub, err := a.r.Subscribe(ctx, nil, map[string]int64{ch: -1})
	if err != nil {
		t.Fatal(err)
	}
	col := collect(t, sub)
	testkit.WaitFor(t, "interest at the owner", func() bool { return len(b.r.fan.Remote(ch)) == 1 })

	// The channel moves from b to d while a does not know d yet, and d
	// loses the interest that came with it.
	b.r.SetMembers(members(all...))
	d.r.SetMembers(members(all...))
	c.waitSettled(b, d)
	if len(d.engine.Channels()) != 1 {
		t.Fatalf("d runs %v", d.engine.Channels())
	}
	d.r.fan.Drop(ch)
	if _, err := d.r.Update(ctx, user("2"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err) // published while nobody forwards it to a
	}
	// a learns about d: it registers again with the new owner and fills the
	// message it missed.
	a.r.SetMembers(members(all...))
	testkit.WaitFor(t, "interest at the new owner", func() bool { return len(d.r.fan.Remote(ch)) == 1 })
	if _, err := d.r.Update(ctx, user("3"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "both messages at a", func() bool { return len(col.messages(ch)) == 2 })
	checkStream(t, col.events(), ch)
	if n := resyncs(col.events()); n != 0 {
		t.Errorf("%d resyncs; the gap should have been filled", n)
	}
}

// TestDrainAnnouncedBeforeTheHandOff: the others learn that a node drains
// (its gossip announcement) before or while it hands its channels over.
// They leave it out of their rings, so its channels go to their new owners
// whether the owner pulls one first or the leaver pushes it: every channel
// keeps its users and ids, requests through any node work, and nobody
// resyncs.
func TestDrainAnnouncedBeforeTheHandOff(t *testing.T) {
	c := newTestCluster(t, 4, nil)
	p := populate(t, c, 200)
	leaver := c.nodes[1]
	stay := []*testNode{c.nodes[0], c.nodes[2], c.nodes[3]}
	for _, n := range stay {
		n.r.SetMembers(members(c.nodes...), leaver.name)
	}
	// Requests before the drain: new owners pull from the leaver.
	checkModel(t, c.nodes, p.chs, p.m)
	if err := leaver.r.Drain(testCtx(t)); err != nil {
		t.Fatal(err)
	}
	if chs := leaver.engine.Channels(); len(chs) != 0 {
		t.Fatalf("after Drain the leaver still runs %v", chs)
	}
	p.checkAfterMove(t, c.nodes, stay)
	for name, col := range p.cols {
		if n := resyncs(col.events()); n != 0 {
			t.Errorf("subscription on %s saw %d resyncs", name, n)
		}
	}
}

// TestWholeClusterDrainingRefusesUnheldChannelsAtOnce: every node shuts
// down at once and sees the others draining. A channel a node holds is
// still served by it; a channel nobody holds is refused at once with
// ErrUnavailable instead of bouncing between the nodes (each would forward
// it to another) until the retries run out.
func TestWholeClusterDrainingRefusesUnheldChannelsAtOnce(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.Retries, cfg.RetryBackoff = 8, time.Hour })
	ctx := testCtx(t)
	held := testChannels(1)[0]
	if _, err := c.nodes[0].r.Update(ctx, testUser(0), "tab", []string{held}, nil); err != nil {
		t.Fatal(err)
	}
	names := []string{"n1", "n2", "n3"}
	for _, n := range c.nodes {
		var others []string
		for _, name := range names {
			if name != n.name {
				others = append(others, name)
			}
		}
		n.r.SetMembers(members(c.nodes...), others...)
		drainCtx, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
		_ = n.r.Drain(drainCtx) // nobody can take channels: the drain cannot end
		cancel()
	}
	// A retry would wait an hour (RetryBackoff): the test's deadline
	// fails the call long before, so an answer means no retry.
	servedByHolder := false
	for _, n := range c.nodes {
		_, err := n.r.Update(ctx, testUser(2), "tab", []string{"/pub/never-used"}, nil)
		if !errors.Is(err, presence.ErrUnavailable) {
			t.Fatalf("unheld channel through %s: %v, want ErrUnavailable", n.name, err)
		}
		if !slices.Contains(n.engine.Channels(), held) {
			continue
		}
		got, err := n.r.Get(ctx, testUser(0), []string{held})
		if err != nil || got[held] == nil || len(got[held].Users) != 1 {
			t.Fatalf("held channel through its holder %s: %v, %v", n.name, got[held], err)
		}
		servedByHolder = true
	}
	if !servedByHolder {
		t.Fatalf("no node holds %s", held)
	}
}

// TestTombstoneChainOfSeveralJoinsExpires: a channel handed from joiner to
// joiner as four nodes join one after another leaves a tombstone on each
// previous holder, pointing at the next. A request entering at the first
// runs out of hops along that chain; once the tombstones to nodes that no
// longer own the channel are stale, the ring routes it to the owner.
func TestTombstoneChainOfSeveralJoinsExpires(t *testing.T) {
	c := newTestCluster(t, 3, func(cfg *Config) { cfg.HoldTimeout = 50 * time.Millisecond })
	names := []string{"n1", "n2", "n3"}
	var ch string
	for i := 0; i < 100000 && ch == ""; i++ {
		cand := fmt.Sprintf("/pub/chain%d", i)
		ok := true
		for j := 4; j <= 7 && ok; j++ {
			ok = ring.New(1, append(slices.Clone(names), joinerNames(j)...)).Owner(cand) == fmt.Sprintf("n%d", j)
		}
		if ok {
			ch = cand
		}
	}
	if ch == "" {
		t.Fatal("no channel that every joiner takes in turn")
	}
	first := c.node(ring.New(1, names).Owner(ch))
	ctx := testCtx(t)
	if _, err := first.r.Update(ctx, user("a"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	for j := 4; j <= 7; j++ {
		n := c.addNode(fmt.Sprintf("n%d", j))
		c.setMembers(c.nodes...)
		c.waitSettled(c.nodes...)
		testkit.WaitFor(t, "the channel on the joiner", func() bool { return slices.Contains(n.engine.Channels(), ch) })
	}
	if _, err := first.r.Get(ctx, nil, []string{ch}); !errors.Is(err, presence.ErrMoved) {
		t.Fatalf("get through the chain's start: %v, want ErrMoved (out of hops)", err)
	}
	c.clk.Advance(staleTombstoneAfter + time.Second)
	for _, n := range c.nodes {
		got, err := n.r.Get(ctx, nil, []string{ch})
		if err != nil || !slices.Equal(userIDs(got[ch]), []string{"a"}) {
			t.Fatalf("get through %s once the tombstones are stale: %v, %v", n.name, got[ch], err)
		}
	}
}

// joinerNames returns n4 up to nj.
func joinerNames(j int) []string {
	var out []string
	for k := 4; k <= j; k++ {
		out = append(out, fmt.Sprintf("n%d", k))
	}
	return out
}

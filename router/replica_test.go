package router

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/replica"
	"github.com/presencehq/presence/router/wire"
)

func withReplication(cfg *Config) { cfg.Replication = true }

// replicaChannel returns a public channel owned by owner among names, with
// its replica.
func replicaChannel(t *testing.T, names []string, owner string) (ch, replica string) {
	t.Helper()
	rg := ring.New(1, names)
	for i := range 10000 {
		ch := fmt.Sprintf("/pub/r%d", i)
		if o, rep := rg.OwnerAndReplica(ch); o == owner {
			return ch, rep
		}
	}
	t.Fatalf("no channel owned by %s", owner)
	return "", ""
}

// channelWith returns a channel that owner owns among names, with replica
// as its replica.
func channelWith(t *testing.T, names []string, owner, replica string) string {
	t.Helper()
	rg := ring.New(1, names)
	for i := range 10000 {
		ch := fmt.Sprintf("/pub/r%d", i)
		if o, rep := rg.OwnerAndReplica(ch); o == owner && rep == replica {
			return ch
		}
	}
	t.Fatalf("no channel owned by %s with replica %s", owner, replica)
	return ""
}

// update sends an update of client "tab" through n and fails the test
// unless it is answered.
func update(t *testing.T, n *testNode, u *presence.User, present, leave []string) {
	t.Helper()
	if _, err := n.r.Update(testCtx(t), u, "tab", present, leave); err != nil {
		t.Fatal(err)
	}
}

// replicaClients returns how many clients node keeps in its copy of ch.
func replicaClients(n *testNode, ch string) int {
	clients := -1
	for _, k := range n.r.repl.Copies().Inspect(ch) {
		clients = max(clients, len(k.Snapshot.Clients))
	}
	return clients
}

// copyExpiry returns the expiry of user's client "tab" in node's copy of ch.
func copyExpiry(n *testNode, ch, userID string) int64 {
	for _, k := range n.r.repl.Copies().Inspect(ch) {
		for _, cs := range k.Snapshot.Clients {
			if cs.User.ID == userID {
				return cs.ExpiresAtUnixNano
			}
		}
	}
	return 0
}

// without returns c's nodes except victim.
func without(c *testCluster, victim *testNode) []*testNode {
	var rest []*testNode
	for _, n := range c.nodes {
		if n != victim {
			rest = append(rest, n)
		}
	}
	return rest
}

// partition cuts victim off from the others both ways: it sees itself
// alone, the others see each other.
func partition(c *testCluster, victim *testNode) {
	cutOff(c, victim)
	victim.caller.setFail(func(string, uint16) error { return errors.New("unreachable") })
	victim.r.SetMembers(members(victim))
	rest := without(c, victim)
	for _, n := range rest {
		n.r.SetMembers(members(rest...))
	}
}

// waitUsers waits until n lists exactly the users want in ch.
func waitUsers(t *testing.T, n *testNode, ch, what string, want ...string) {
	t.Helper()
	testkit.WaitFor(t, what, func() bool {
		got, err := n.r.Get(testCtx(t), nil, []string{ch})
		return err == nil && got[ch] != nil && slices.Equal(userIDs(got[ch]), want)
	})
}

// leaveThroughACutNode: n1 holds ch (replica n2) with users k and m; n3,
// cut off and seeing itself alone, answers k's leave without any state of
// ch. It returns with the network whole again and the views still split.
func leaveThroughACutNode(t *testing.T) (c *testCluster, holder, lone *testNode, ch string) {
	c = newTestCluster(t, 3, withReplication)
	holder, lone = c.node("n1"), c.node("n3")
	ch = channelWith(t, []string{"n1", "n2", "n3"}, "n1", "n2")
	update(t, holder, user("k"), []string{ch}, nil)
	update(t, holder, user("m"), []string{ch}, nil)
	c.clk.Advance(time.Second)
	partition(c, lone)
	update(t, lone, user("k"), nil, []string{ch})
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	return c, holder, lone, ch
}

// cutOff makes every node but victim unable to reach victim.
func cutOff(c *testCluster, victim *testNode) {
	for _, n := range c.nodes {
		if n != victim {
			n.caller.setFail(func(addr string, _ uint16) error {
				if addr == victim.tr.Addr() {
					return errors.New("unreachable")
				}
				return nil
			})
		}
	}
}

func TestReplicaPromotedWhenOwnerDies(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	owner := c.node("n1")
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	rep := c.node(repName)
	for _, u := range []string{"a", "b", "c"} {
		update(t, rep, user(u), []string{ch}, nil)
		// An acknowledged enter is on the replica: no pass, no clock.
		if n := replicaClients(rep, ch); n < 1 {
			t.Fatalf("replica holds no copy after %s's acknowledged present", u)
		}
	}
	if n := replicaClients(rep, ch); n != 3 {
		t.Fatalf("replica holds %d clients after three acknowledged presents, want 3", n)
	}
	before := p1LastID(t, owner, ch)

	cutOff(c, owner)
	rest := without(c, owner)
	c.setMembers(rest...)
	got, err := rest[0].r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"a", "b", "c"}) {
		t.Fatalf("after the promotion users are %v, want [a b c]", ids)
	}
	// Every published message reached the copy first: the ids continue.
	if got[ch].LastMessageID != before {
		t.Fatalf("last id %d after the promotion, want %d (continuing)", got[ch].LastMessageID, before)
	}
	update(t, rep, user("d"), []string{ch}, nil)
	if id := p1LastID(t, rep, ch); id != before+1 {
		t.Fatalf("first id after the promotion %d, want %d", id, before+1)
	}
	if p := testutilValue(rep.r.m.promotions); p != 1 {
		t.Fatalf("promotions on the replica: %v, want 1", p)
	}
}

func TestHeartbeatReachesTheReplicaWithinAnInterval(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	owner, rep := c.node("n1"), c.node(repName)
	update(t, owner, user("a"), []string{ch}, nil)
	first := copyExpiry(rep, ch, "a")
	c.clk.Advance(10 * time.Second)
	update(t, owner, user("a"), []string{ch}, nil)
	c.clk.Advance(DefaultReplicationInterval)
	want := first + int64(10*time.Second)
	testkit.WaitFor(t, "the batched heartbeat on the replica", func() bool { return copyExpiry(rep, ch, "a") == want })
}

func TestReplicaWithoutACopyIsRefilled(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	owner, rep := c.node("n1"), c.node(repName)
	update(t, owner, user("a"), []string{ch}, nil)
	// The replica loses its copy (as after a restart nobody noticed).
	drop := wire.ReplicateRequest{From: owner.member(), Boot: owner.r.boot, Items: []wire.ReplItem{{Kind: presence.ChangeStopped, Channel: ch}}}
	if _, err := rep.r.repl.HandleReplicate(testCtx(t), wire.Marshal(drop.Encode)); err != nil || replicaClients(rep, ch) != -1 {
		t.Fatalf("dropping the copy: %v, %d clients left", err, replicaClients(rep, ch))
	}
	update(t, owner, user("b"), []string{ch}, nil)
	testkit.WaitFor(t, "the copy sent again whole", func() bool { return replicaClients(rep, ch) == 2 })
}

func TestRestartedOwnerGetsItsCopyBack(t *testing.T) {
	c := newTestCluster(t, 2, withReplication)
	ctx := testCtx(t)
	ch, repName := replicaChannel(t, []string{"n1", "n2"}, "n1")
	owner, rep := c.node("n1"), c.node(repName)
	update(t, owner, user("a"), []string{ch}, nil)
	before := p1LastID(t, owner, ch)
	// The same process asking (it handed the channel away and wants it
	// back) does not get its own old copy: the channel went on elsewhere.
	same, err := rep.r.extract(ctx, ch, owner.member(), owner.r.boot)
	if err != nil {
		t.Fatal(err)
	}
	if same.Outcome == wire.ExtractSnapshot {
		t.Fatal("the owner's own process got its old copy back")
	}
	// The owner restarted before anyone noticed and pulls its channel from
	// the node it would be on without it, the replica, which hands back
	// the copy.
	reply, err := rep.r.extract(ctx, ch, owner.member(), owner.r.boot+2)
	if err != nil {
		t.Fatal(err)
	}
	if reply.Outcome != wire.ExtractSnapshot || len(reply.Snap.Clients) != 1 || reply.Snap.LastID != before {
		t.Fatalf("extract after the restart: outcome %v, snapshot %+v; want a's copy up to %d", reply.Outcome, reply.Snap, before)
	}
}

func TestStaleOwnerIsFencedAndHandsOver(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	stale := c.node("n1")
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	rep := c.node(repName)
	update(t, stale, user("a"), []string{ch}, nil)
	sub, err := stale.r.Subscribe(ctx, nil, map[string]int64{ch: p1LastID(t, stale, ch)})
	if err != nil {
		t.Fatal(err)
	}
	watch := collect(t, sub)
	// The others drop n1 (paused, say) and the replica takes the channel
	// over; n1's own view still has everyone.
	rest := without(c, stale)
	c.setMembers(rest...)
	update(t, rep, user("b"), []string{ch}, nil)
	// n1 serves an enter as if it still owned the channel: its replica
	// refuses the change, n1 publishes nothing and hands its state over.
	update(t, stale, user("z"), []string{ch}, nil)
	got, err := rep.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"a", "b", "z"}) {
		t.Fatalf("users on the new owner %v, want [a b z]", ids)
	}
	testkit.WaitFor(t, "n1 to give the channel up", func() bool { return !slices.Contains(stale.engine.Channels(), ch) })
	checkStream(t, watch.events(), ch)
	if testutilValue(rep.r.m.replicaRefused) == 0 {
		t.Fatal("the replica refused nothing")
	}
}

func TestPausedOwnerCopyDoesNotBringBackLeftUsers(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	owner := c.node("n1")
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	rep := c.node(repName)
	for _, u := range []string{"a", "b"} {
		update(t, rep, user(u), []string{ch}, nil)
	}
	// The owner is paused: the others drop it and the replica takes over.
	rest := without(c, owner)
	cutOff(c, owner)
	c.setMembers(rest...)
	c.clk.Advance(2 * time.Second)
	update(t, rep, user("b"), nil, []string{ch})
	// The owner comes back with its stale copy; the channel is handed back
	// and the merge must not resurrect b.
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.setMembers(c.nodes...)
	c.waitSettled(c.nodes...)
	got, err := owner.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"a"}) {
		t.Fatalf("after the owner's return users are %v, want [a]", ids)
	}
}

// TestPromotedCopyDropsAClientThatLeftJustAfterItsLastHeartbeat: the
// grace a promoted copy gets must not make its clients look heard later
// than they were. Here the client's last heartbeat reached the copy at
// 5 s, and it left at 5.5 s on the other side of a partition: the merge
// drops it (with the grace folded into the expiry it was kept, a ghost).
func TestPromotedCopyDropsAClientThatLeftJustAfterItsLastHeartbeat(t *testing.T) {
	cfg := &presence.Config{Timeout: 10}
	c := presence.NewCopy(&presence.ChannelSnapshot{Channel: "/x", Config: cfg, LastID: 1})
	c.Apply(&presence.Change{Kind: presence.ChangeEnter, UserID: "u", ClientID: "t", User: &presence.User{ID: "u"}, Config: cfg, ExpiresAt: 15e9, At: 5e9})
	snap := c.Snapshot(time.Second)
	if out := replica.DropLeft(snap, map[string]int64{replica.ClientKey("u", "t"): 5.5e9}); len(out.Clients) != 0 {
		t.Fatalf("kept %+v after its leave", out.Clients)
	}
}

func TestLeaveWithoutPresenceStillFencesALateCopy(t *testing.T) {
	c := newTestCluster(t, 1, withReplication)
	ctx := testCtx(t)
	n := c.nodes[0]
	ch := "/pub/late"
	heard := c.clk.Now().UnixNano()
	c.clk.Advance(time.Second)
	// The leave reaches this node before the copy holding the client.
	update(t, n, user("k"), nil, []string{ch})
	exp := heard + int64(pubConfig.TimeoutSeconds())*int64(time.Second)
	snap := &presence.ChannelSnapshot{Channel: ch, Config: pubConfig, LastID: 5, Clients: []presence.ClientSnapshot{
		{User: presence.UserInfo{ID: "k"}, ClientID: "tab", ExpiresAtUnixNano: exp},
		{User: presence.UserInfo{ID: "m"}, ClientID: "tab", ExpiresAtUnixNano: exp},
	}}
	if err := n.r.installLocal(ctx, snap, nil, nil, "", ""); err != nil {
		t.Fatal(err)
	}
	got, err := n.r.Get(ctx, nil, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"m"}) {
		t.Fatalf("users %v after the late copy, want [m]", ids)
	}
}

func TestHolderRefusesAStaleOwnersCopy(t *testing.T) {
	c := newTestCluster(t, 2, withReplication)
	ch, _ := replicaChannel(t, []string{"n1", "n2"}, "n1")
	holder, stale := c.node("n1"), c.node("n2")
	update(t, holder, user("a"), []string{ch}, nil)
	q := wire.ReplicateRequest{From: stale.member(), Boot: 1, Items: []wire.ReplItem{{Kind: presence.ChangeSnapshot, Channel: ch,
		Snap: &presence.ChannelSnapshot{Channel: ch, Config: pubConfig, LastID: 1, Clients: []presence.ClientSnapshot{
			{User: presence.UserInfo{ID: "ghost"}, ClientID: "tab", ExpiresAtUnixNano: c.clk.Now().Add(time.Minute).UnixNano()},
		}},
	}}}
	resp, err := holder.r.repl.HandleReplicate(testCtx(t), wire.Marshal(q.Encode))
	if err != nil {
		t.Fatal(err)
	}
	reply, err := wire.DecodeReplicateReply(resp)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(reply.Refused, []string{ch}) {
		t.Fatalf("refused %v, want [%s]", reply.Refused, ch)
	}
	if n := replicaClients(holder, ch); n != -1 {
		t.Fatalf("the holder kept a stale copy with %d clients", n)
	}
}

func TestForwardedUpdateReadAfterItsDeadlineIsDropped(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := testCtx(t)
	n := c.nodes[0]
	// The sender gave up a second ago (it has retried elsewhere since):
	// applied now, the present could bring back a user who left meanwhile.
	q := wire.UpdateRequest{Header: wire.Header{Hops: 1, Deadline: c.clk.Now().Add(-time.Second).UnixNano()},
		User: user("a"), ClientID: "tab", Present: []string{"/pub/late"}}
	// ErrMoved: the sender, if it still listens, routes the update again.
	if _, err := n.r.serveUpdate(ctx, &q, nil); !errors.Is(err, presence.ErrMoved) {
		t.Fatalf("late forwarded update: %v, want ErrMoved", err)
	}
	got, err := n.r.Get(ctx, nil, []string{"/pub/late"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got["/pub/late"]); len(ids) != 0 {
		t.Fatalf("users %v after a dropped update, want none", ids)
	}
	q.Header.Deadline = c.clk.Now().Add(time.Second).UnixNano()
	if _, err := n.r.serveUpdate(ctx, &q, nil); err != nil {
		t.Fatalf("update within its deadline: %v", err)
	}
}

// thirdNodeWatch is a channel owned by n1 with a subscriber on the node
// that is neither its owner nor its replica.
type thirdNodeWatch struct {
	owner, rep, other *testNode
	ch                string
	before            int64 // the last id when the subscription began
	watch             *collector
}

// watchFromTheThirdNode: user a enters (the replica gets the channel's
// snapshot), the third node subscribes, and b's enter reaches it. With
// unreplicated, b enters first and the owner's replication stops before
// the subscription: the replica never learns of the third node's interest.
func watchFromTheThirdNode(t *testing.T, unreplicated bool) (*testCluster, thirdNodeWatch) {
	c := newTestCluster(t, 3, withReplication)
	w := thirdNodeWatch{owner: c.node("n1")}
	var repName string
	w.ch, repName = replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	w.rep = c.node(repName)
	for _, n := range c.nodes {
		if n != w.owner && n != w.rep {
			w.other = n
		}
	}
	update(t, w.owner, user("a"), []string{w.ch}, nil)
	w.before = p1LastID(t, w.other, w.ch)
	if unreplicated {
		update(t, w.owner, user("b"), []string{w.ch}, nil)
		w.owner.caller.setFail(func(_ string, method uint16) error {
			if method == wire.MethodReplicate {
				return errors.New("unreachable")
			}
			return nil
		})
	}
	sub, err := w.other.r.Subscribe(testCtx(t), nil, map[string]int64{w.ch: w.before})
	if err != nil {
		t.Fatal(err)
	}
	w.watch = collect(t, sub)
	if !unreplicated {
		update(t, w.owner, user("b"), []string{w.ch}, nil)
	}
	testkit.WaitFor(t, "b's enter on the third node", func() bool { return len(w.watch.messages(w.ch)) == 1 })
	return c, w
}

func TestSubscriberElsewhereContinuesAfterPromotion(t *testing.T) {
	c, w := watchFromTheThirdNode(t, false)
	owner, rep, ch, before, watch := w.owner, w.rep, w.ch, w.before, w.watch
	cutOff(c, owner)
	c.setMembers(without(c, owner)...)
	update(t, rep, user("c"), []string{ch}, nil)
	// The promoted copy knows the third node's interest and continues the
	// ids: c's enter arrives as the next message, not as a resync.
	testkit.WaitFor(t, "c's enter on the third node", func() bool { return len(watch.messages(ch)) == 2 })
	checkStream(t, watch.events(), ch)
	msgs := watch.messages(ch)
	if got := msgs[1].Message.ID; got != before+2 {
		t.Fatalf("c's enter has id %d, want %d (continuing after b's)", got, before+2)
	}
	for _, ev := range watch.events() {
		if ev.Kind == presence.EventResync {
			t.Fatalf("the subscriber got a resync: %+v", ev)
		}
	}
}

// TestLeaveAnsweredWithoutTheStateReachesTheHolder: a node cut off from
// the holder of a channel serves it without its state, so a client's
// leave there changes nothing locally. When the views merge, the node's
// hand-off carries the leave to the holder, which drops the client
// instead of keeping it until its timeout (a ghost).
func TestLeaveAnsweredWithoutTheStateReachesTheHolder(t *testing.T) {
	c, holder, _, ch := leaveThroughACutNode(t)
	c.setMembers(c.nodes...)
	waitUsers(t, holder, ch, "k's leave to reach the holder", "m")
}

// TestLeaveAnsweredByTheCutOwnerSurvivesTheHandBack: the channel's owner
// is cut off; the client enters through the others, which serve the
// channel meanwhile, and leaves through the owner, which has nothing of
// it. When the views merge, the channel is handed back to its owner, whose
// leave log must drop the client.
func TestLeaveAnsweredByTheCutOwnerSurvivesTheHandBack(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	owner := c.node("n2")
	ch := channelWith(t, []string{"n1", "n2", "n3"}, "n2", "n1")

	partition(c, owner)
	rest := without(c, owner)
	update(t, rest[0], user("k"), []string{ch}, nil)
	update(t, rest[0], user("m"), []string{ch}, nil)
	c.clk.Advance(time.Second)
	update(t, owner, user("k"), nil, []string{ch}) // answered by the cut owner, which has nothing

	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.setMembers(c.nodes...)
	c.waitSettled(c.nodes...)
	waitUsers(t, owner, ch, "k's leave to hold after the hand-back", "m")
}

// TestLeavesHandedToANodeWithoutTheChannelReachTheHolder: a leave answered
// by a cut-off node that has nothing of the channel is handed, while the
// member lists merge, to the owner in that node's partial view, which does
// not hold the channel either. Once the views agree, the holder keeps the
// channel (nothing moves and nothing merges), so the leave must have been
// passed on to it: the node that got the leaves forwards them to where the
// channel is.
func TestLeavesHandedToANodeWithoutTheChannelReachTheHolder(t *testing.T) {
	c, holder, lone, ch := leaveThroughACutNode(t)
	// n3 sees n2 first; without n1, n2 owns ch, but it holds only a copy.
	lone.r.SetMembers(members(c.node("n2"), lone))
	c.waitSettled(lone)
	c.setMembers(c.nodes...)
	c.waitSettled(c.nodes...)
	waitUsers(t, holder, ch, "k's leave to reach the holder", "m")
}

// TestLeavesOwedByANodeWithoutTheChannelAreHandedOn: leaves reach a node
// that owns the channel by its (partial) view but does not hold it; it keeps
// them, and when its view changes and gives the channel to the holder, its
// rebalance pass hands them on, so the holder drops the client.
func TestLeavesOwedByANodeWithoutTheChannelAreHandedOn(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	holder, lone := c.node("n1"), c.node("n3")
	ch := channelWith(t, []string{"n1", "n2", "n3"}, "n1", "n2")
	update(t, holder, user("k"), []string{ch}, nil)
	update(t, holder, user("m"), []string{ch}, nil)
	c.clk.Advance(time.Second)

	lone.r.SetMembers(members(lone)) // n3 sees itself alone: it owns ch
	c.waitSettled(lone)
	q := wire.LeavesRequest{From: c.node("n2").member(), Channel: ch,
		Leaves: map[string]int64{replica.ClientKey("k", "tab"): c.clk.Now().UnixNano()}}
	if err := lone.r.takeLeaves(ctx, q); err != nil {
		t.Fatal(err)
	}
	got, err := holder.r.Get(ctx, nil, []string{ch})
	if err != nil || !slices.Equal(userIDs(got[ch]), []string{"k", "m"}) {
		t.Fatalf("before n3 sees the others: %v, %v; want k and m still at the holder", got[ch], err)
	}

	lone.r.SetMembers(members(c.nodes...))
	c.waitSettled(c.nodes...)
	waitUsers(t, holder, ch, "k's leave to be handed on to the holder", "m")
}

// TestSubscriberNodeRegistersAgainAfterAFailedCatchUp: a node subscribed
// when the owner could no longer replicate, so the replica's copy does not
// know its interest. The owner dies; the node's catch-up with the new
// holder fails at first (views still disagree). It must try again:
// otherwise its interest is registered nowhere and its subscribers never
// hear of the channel again.
func TestSubscriberNodeRegistersAgainAfterAFailedCatchUp(t *testing.T) {
	c, w := watchFromTheThirdNode(t, true)
	owner, rep, other, ch, watch := w.owner, w.rep, w.other, w.ch, w.watch
	cutOff(c, owner)
	var failedSince atomic.Int64
	other.caller.setFail(func(addr string, method uint16) error {
		if addr == owner.tr.Addr() || method == wire.MethodSince && failedSince.Add(1) <= 4 {
			return errors.New("unreachable")
		}
		return nil
	})
	c.setMembers(without(c, owner)...)
	update(t, rep, user("c"), []string{ch}, nil)
	testkit.WaitFor(t, "c's enter on the third node", func() bool { return len(watch.messages(ch)) == 2 })
	if failedSince.Load() < 4 {
		t.Fatalf("only %d catch-ups failed: the test did not make the first ones fail", failedSince.Load())
	}
}

// TestForwardedPresentOvertakenByALeaveIsDropped: a forwarded present that
// waited on its way (held up behind a hand-off while its sender gave up)
// reaches the holder after the same client's leave, sent later, was
// applied there: it must not bring the client back until its timeout. A
// present sent after the leave is applied.
func TestForwardedPresentOvertakenByALeaveIsDropped(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	holder := c.node("n1")
	ch := channelWith(t, []string{"n1", "n2", "n3"}, "n1", "n2")
	update(t, holder, user("k"), []string{ch}, nil)
	update(t, holder, user("m"), []string{ch}, nil)
	forwarded := func(sent time.Time) wire.UpdateRequest {
		deadline := sent.Add(holder.r.cfg.ForwardTimeout).UnixNano()
		return wire.UpdateRequest{Header: wire.Header{Hops: 1, Deadline: deadline}, User: user("k"), ClientID: "tab", Present: []string{ch}}
	}
	stale := forwarded(c.clk.Now())
	c.clk.Advance(time.Second)
	update(t, holder, user("k"), nil, []string{ch}) // the leave, sent after the present
	c.clk.Advance(time.Second)

	vals, err := holder.r.serveUpdate(ctx, &stale, nil)
	if err != nil || len(vals) != 1 || vals[0] {
		t.Fatalf("overtaken present answered %v, %v; want false", vals, err)
	}
	got, err := holder.r.Get(ctx, nil, []string{ch})
	if err != nil || !slices.Equal(userIDs(got[ch]), []string{"m"}) {
		t.Fatalf("after the overtaken present: %v, %v; want only m", got[ch], err)
	}

	fresh := forwarded(c.clk.Now())
	if vals, err := holder.r.serveUpdate(ctx, &fresh, nil); err != nil || len(vals) != 1 || !vals[0] {
		t.Fatalf("present sent after the leave answered %v, %v; want true", vals, err)
	}
	got, err = holder.r.Get(ctx, nil, []string{ch})
	if err != nil || !slices.Equal(userIDs(got[ch]), []string{"k", "m"}) {
		t.Fatalf("after a present sent after the leave: %v, %v; want k and m", got[ch], err)
	}
}

// TestPromotedCopyKnowsInterestRegisteredAfterItsSnapshot: the third node
// subscribes after the replica got the channel's snapshot. The interest
// change reaches the replica on its own, so when the owner dies the
// promoted channel pushes to the third node at once, even though every
// catch-up of the third node fails.
func TestPromotedCopyKnowsInterestRegisteredAfterItsSnapshot(t *testing.T) {
	c, w := watchFromTheThirdNode(t, false)
	testkit.WaitFor(t, "the replica's copy to list the third node", func() bool {
		for _, k := range w.rep.r.repl.Copies().Inspect(w.ch) {
			for _, in := range k.Interest {
				if in.Node.Name == w.other.name {
					return true
				}
			}
		}
		return false
	})
	cutOff(c, w.owner)
	w.other.caller.setFail(func(addr string, method uint16) error {
		if addr == w.owner.tr.Addr() || method == wire.MethodSince {
			return errors.New("unreachable")
		}
		return nil
	})
	c.setMembers(without(c, w.owner)...)
	update(t, w.rep, user("c"), []string{w.ch}, nil)
	testkit.WaitFor(t, "c's enter on the third node", func() bool { return len(w.watch.messages(w.ch)) == 2 })
	if got := w.watch.messages(w.ch)[1].Message.ID; got != w.before+2 {
		t.Fatalf("c's enter has id %d, want %d", got, w.before+2)
	}
}

// TestClientStoppedDuringAPartitionLeavesAtItsTimeout: the owner is cut
// off; the others promote the replica's copy. Client k stops heartbeating
// at the cut, m goes on through the majority. When the partition heals and
// the two states merge, k is still listed until its timeout (its last
// heartbeat plus 60 s, within the expiry precision) and gone after it;
// m stays.
func TestClientStoppedDuringAPartitionLeavesAtItsTimeout(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	owner, rep := c.node("n1"), c.node("n2")
	ch := channelWith(t, []string{"n1", "n2", "n3"}, "n1", "n2")
	update(t, owner, user("k"), []string{ch}, nil) // k's last heartbeat
	update(t, owner, user("m"), []string{ch}, nil)
	lastHeard := c.clk.Now()

	partition(c, owner)
	c.clk.Advance(20 * time.Second)
	update(t, rep, user("m"), []string{ch}, nil) // m goes on; k has stopped
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.setMembers(c.nodes...)
	c.waitSettled(c.nodes...)
	waitUsers(t, owner, ch, "the merged channel to list k and m", "k", "m")

	timeout := time.Duration(pubConfig.TimeoutSeconds()) * time.Second
	c.clk.Advance(lastHeard.Add(timeout - time.Second).Sub(c.clk.Now()))
	got, err := owner.r.Get(testCtx(t), nil, []string{ch})
	if err != nil || !slices.Equal(userIDs(got[ch]), []string{"k", "m"}) {
		t.Fatalf("a second before k's timeout: %v, %v; want k still listed", got[ch], err)
	}
	// Past the timeout, the promoted copy's grace and the wheel's precision.
	c.clk.Advance(time.Second + 2*DefaultReplicationInterval + time.Second)
	waitUsers(t, owner, ch, "k to leave after its timeout", "m")
}

// TestForwardedPresentExpiresFromItsSendTime: the owner counts a forwarded
// present's expiry from when it was sent (its header's deadline less the
// forward timeout), not from when it arrived: a present that waited on
// its way cannot outlive a leave sent after it when copies are merged.
func TestForwardedPresentExpiresFromItsSendTime(t *testing.T) {
	c := newTestCluster(t, 2, withReplication)
	owner := c.node("n1")
	ch, _ := replicaChannel(t, []string{"n1", "n2"}, "n1")
	now := c.clk.Now()
	sent := now.Add(-3 * time.Second)
	q := wire.UpdateRequest{Header: wire.Header{Epoch: owner.r.view.Load().epoch, Hops: 1, Deadline: sent.Add(owner.r.cfg.ForwardTimeout).UnixNano()},
		User: user("a"), ClientID: "tab", Present: []string{ch}}
	body := wire.Marshal(func(e *wire.Encoder) { wire.EncodeUpdateBatch(e, 1, func(int) *wire.UpdateRequest { return &q }) })
	resp, err := owner.r.Handle(testCtx(t), wire.MethodUpdate, body)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := wire.DecodeUpdateResults(resp, "n1"); err != nil || len(res) != 1 || res[0].Err != nil || !slices.Equal(res[0].Vals, []bool{true}) {
		t.Fatalf("forwarded present answered %+v, %v", res, err)
	}
	snap, err := owner.engine.Export(testCtx(t), ch)
	if err != nil || snap == nil || len(snap.Clients) != 1 {
		t.Fatalf("export: %+v, %v", snap, err)
	}
	if want := sent.Add(time.Duration(pubConfig.TimeoutSeconds()) * time.Second).UnixNano(); snap.Clients[0].ExpiresAtUnixNano != want {
		t.Fatalf("expiry %d, want %d (the send time + the timeout)", snap.Clients[0].ExpiresAtUnixNano, want)
	}
}

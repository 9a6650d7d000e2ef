package router

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/wire"
)

// ownedChannel returns a channel of prefix that owner owns among names,
// and its replica.
func ownedChannel(t *testing.T, names []string, prefix, owner string) (ch, replica string) {
	t.Helper()
	rg := ring.New(1, names)
	for i := range 10000 {
		ch := fmt.Sprintf("/%s/o%d", prefix, i)
		if o, rep := rg.OwnerAndReplica(ch); o == owner {
			return ch, rep
		}
	}
	t.Fatalf("no channel of %s owned by %s", prefix, owner)
	return "", ""
}

// enters sends a present of client "tab" of u through n and returns the
// answer for ch.
func enters(t *testing.T, n *testNode, u *presence.User, ch string) bool {
	t.Helper()
	got, err := n.r.Update(testCtx(t), u, "tab", []string{ch}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return got[ch]
}

func TestInspectListsCountOnlyUsersFromEveryNode(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	names := []string{"n1", "n2", "n3"}
	var chs []string
	for i, owner := range names {
		ch, _ := ownedChannel(t, names, "count", owner)
		chs = append(chs, ch)
		// Entered through the next node: forwarded to the owner.
		for _, u := range []string{"a", "b"} {
			if !enters(t, c.nodes[(i+1)%3], user(u), ch) {
				t.Fatalf("%s could not enter %s", u, ch)
			}
		}
	}
	asked := append(slices.Clone(chs), "/nope/x", "bad", chs[0])
	for _, n := range c.nodes {
		before := n.caller.count(wire.MethodInspect)
		got, err := n.r.Inspect(ctx, asked)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 || got["/nope/x"] != nil || got["bad"] != nil {
			t.Fatalf("%s: inspect answered %v", n.name, got)
		}
		for _, ch := range chs {
			st := got[ch]
			if st == nil || !st.CountOnly || st.Count != 2 || !slices.Equal(userIDs(st), []string{"a", "b"}) || st.Users[0].Username != "ua" {
				t.Fatalf("%s: inspect of %s: %+v", n.name, ch, st)
			}
		}
		if calls := n.caller.count(wire.MethodInspect) - before; calls != 2 {
			t.Errorf("%s made %d inspect calls for channels of 3 owners, want 2 (one per other node)", n.name, calls)
		}
		// The browsers' read of the same channels still hides who.
		states, err := n.r.Get(ctx, user("a"), chs)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range chs {
			if st := states[ch]; st == nil || st.Count != 2 || st.Users != nil {
				t.Fatalf("%s: get of count-only %s: %+v", n.name, ch, st)
			}
		}
	}
	many := make([]string, presence.MaxInspectChannels+1)
	for i := range many {
		many[i] = fmt.Sprintf("/pub/m%d", i)
	}
	if _, err := c.nodes[0].r.Inspect(ctx, many); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("%d channels: %v, want ErrInvalid", len(many), err)
	}
	got, err := c.nodes[0].r.Inspect(ctx, many[:presence.MaxInspectChannels])
	if err != nil || len(got) != presence.MaxInspectChannels {
		t.Fatalf("%d channels: %d states, %v", presence.MaxInspectChannels, len(got), err)
	}
}

func TestCanAgreesWithUpdateOnEveryNode(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	users := map[string]*presence.User{"anonymous": nil, "staff": user("s", "staff"), "other": user("o", "ops")}
	for _, n := range c.nodes {
		for _, ch := range []string{"/pub/can", "/staff/can", "/count/can", "/cap/can", "/nope/can", "no name"} {
			cfg, _ := testConfigs{}.Resolve(ctx, ch)
			for who, u := range users {
				acc, err := n.r.Can(ctx, u, ch)
				if err != nil {
					t.Fatal(err)
				}
				if want := presence.AccessOf(cfg, u); acc != want {
					t.Errorf("%s: can(%s, %q) = %+v, want %+v", n.name, who, ch, acc, want)
				}
				if u.Anonymous() {
					continue
				}
				got, err := n.r.Update(ctx, u, "can-"+n.name, []string{ch}, nil)
				if err != nil {
					t.Fatal(err)
				}
				if got[ch] != acc.CanEnter {
					t.Errorf("%s: %s in %q: update %v, can_enter %v", n.name, who, ch, got[ch], acc.CanEnter)
				}
			}
		}
	}
	var forwarded int64
	for _, n := range c.nodes {
		forwarded += n.caller.count(wire.MethodCan)
	}
	if forwarded == 0 {
		t.Fatal("no can? was asked of the channel's owner")
	}
	// Can never takes a channel's state: nothing was pulled or started.
	for _, n := range c.nodes {
		for _, ch := range n.engine.Channels() {
			if ch == "/nope/can" {
				t.Fatalf("%s started an actor for a channel that does not exist", n.name)
			}
		}
	}
}

func TestClearThroughAnyNodePublishesOneLeave(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	names := []string{"n1", "n2", "n3"}
	for i, owner := range names {
		ch, _ := ownedChannel(t, names, "pub", owner)
		watcher, via := c.nodes[(i+1)%3], c.nodes[(i+2)%3]
		for _, u := range []string{"b", "a"} {
			update(t, via, user(u), []string{ch}, nil)
		}
		sub, err := watcher.r.Subscribe(ctx, nil, map[string]int64{ch: p1LastID(t, watcher, ch)})
		if err != nil {
			t.Fatal(err)
		}
		watch := collect(t, sub)
		if err := via.r.Clear(ctx, ch); err != nil {
			t.Fatal(err)
		}
		testkit.WaitFor(t, "the clear's message on "+watcher.name, func() bool { return len(watch.messages(ch)) == 1 })
		if m := watch.messages(ch)[0].Message; !slices.Equal(m.LeavingUserIDs, []string{"a", "b"}) {
			t.Fatalf("clear of %s published %+v, want one leave of a and b", ch, m)
		}
		got, err := watcher.r.Inspect(ctx, []string{ch})
		if err != nil || got[ch] == nil || got[ch].Count != 0 {
			t.Fatalf("after the clear: %+v %v", got[ch], err)
		}
		// Clearing it again, or a channel nobody uses, publishes nothing.
		for _, again := range []string{ch, "/pub/unused", "/nope/x", "bad"} {
			if err := via.r.Clear(ctx, again); err != nil {
				t.Fatalf("clear %q: %v", again, err)
			}
		}
		c.clk.Advance(time.Second)
		if !enters(t, via, user("a"), ch) {
			t.Fatal("a cleared user could not enter again")
		}
		testkit.WaitFor(t, "a's new enter", func() bool { return len(watch.messages(ch)) == 2 })
		checkStream(t, watch.events(), ch)
	}
}

// TestClearedUsersStayGoneWhenAStaleCopyComesBack: the owner is cut off
// (paused, say), its replica takes the channel over and clears it; the
// owner's copy, handed back when it returns, must not bring the cleared
// users back.
func TestClearedUsersStayGoneWhenAStaleCopyComesBack(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	owner := c.node("n1")
	ch, repName := replicaChannel(t, []string{"n1", "n2", "n3"}, "n1")
	rep := c.node(repName)
	for _, u := range []string{"a", "b"} {
		update(t, rep, user(u), []string{ch}, nil)
	}
	rest := without(c, owner)
	cutOff(c, owner)
	c.setMembers(rest...)
	c.clk.Advance(2 * time.Second)
	if err := rep.r.Clear(ctx, ch); err != nil {
		t.Fatal(err)
	}
	c.clk.Advance(time.Second)
	update(t, rep, user("c"), []string{ch}, nil)
	for _, n := range c.nodes {
		n.caller.setFail(nil)
	}
	c.setMembers(c.nodes...)
	c.waitSettled(c.nodes...)
	got, err := owner.r.Inspect(ctx, []string{ch})
	if err != nil {
		t.Fatal(err)
	}
	if ids := userIDs(got[ch]); !slices.Equal(ids, []string{"c"}) {
		t.Fatalf("after the owner's return users are %v, want [c]", ids)
	}
}

// TestCapHoldsThroughForwardingAndFailover: a channel of at most two users,
// entered through other nodes; a third user is refused wherever it asks,
// the two keep heartbeating, and all of that holds on the replica once the
// owner is gone.
func TestCapHoldsThroughForwardingAndFailover(t *testing.T) {
	c := newTestCluster(t, 3, withReplication)
	ctx := testCtx(t)
	owner := c.node("n1")
	ch, repName := ownedChannel(t, []string{"n1", "n2", "n3"}, "cap", "n1")
	rep := c.node(repName)
	for i, u := range []string{"a", "b"} {
		if !enters(t, c.nodes[i+1], user(u), ch) {
			t.Fatalf("%s refused below the cap", u)
		}
	}
	sub, err := rep.r.Subscribe(ctx, nil, map[string]int64{ch: p1LastID(t, rep, ch)})
	if err != nil {
		t.Fatal(err)
	}
	watch := collect(t, sub)
	check := func(when string, nodes []*testNode) {
		t.Helper()
		for _, n := range nodes {
			if enters(t, n, user("z"), ch) {
				t.Fatalf("%s: a third user entered through %s", when, n.name)
			}
			for _, u := range []string{"a", "b"} {
				if !enters(t, n, user(u), ch) {
					t.Fatalf("%s: heartbeat of %s through %s refused", when, u, n.name)
				}
			}
		}
		got, err := nodes[0].r.Inspect(ctx, []string{ch})
		if err != nil || !slices.Equal(userIDs(got[ch]), []string{"a", "b"}) {
			t.Fatalf("%s: users %v, %v", when, userIDs(got[ch]), err)
		}
	}
	check("owner alive", c.nodes)
	cutOff(c, owner)
	rest := without(c, owner)
	c.setMembers(rest...)
	check("owner gone", rest)
	if msgs := watch.messages(ch); len(msgs) != 0 {
		t.Fatalf("refusals and heartbeats published %d messages", len(msgs))
	}
	update(t, rest[0], user("a"), nil, []string{ch})
	if !enters(t, rest[1], user("z"), ch) {
		t.Fatal("refused below the cap after a leave")
	}
	testkit.WaitFor(t, "a's leave and z's enter", func() bool { return len(watch.messages(ch)) == 2 })
}

func TestServerOpsRejectBadFrames(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := context.Background()
	r := c.nodes[0].r
	for _, m := range []uint16{wire.MethodInspect, wire.MethodCan, wire.MethodClear} {
		if _, err := r.Handle(ctx, m, []byte{0xff, 0xff, 0xff}); !errors.Is(err, presence.ErrInvalid) {
			t.Errorf("method %d with garbage: %v, want ErrInvalid", m, err)
		}
	}
	too := wire.InspectRequest{Header: wire.Header{Hops: 1}, Channels: make([]string, presence.MaxInspectChannels+1)}
	if _, err := r.Handle(ctx, wire.MethodInspect, wire.Marshal(too.Encode)); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("forwarded inspect of %d channels: %v, want ErrInvalid", len(too.Channels), err)
	}
	// A forwarded clear read after its sender's deadline is dropped: applied
	// late, it would clear clients that entered since.
	update(t, c.nodes[0], user("a"), []string{"/pub/late"}, nil)
	late := wire.ClearRequest{Header: wire.Header{Hops: 1, Deadline: c.clk.Now().Add(-time.Second).UnixNano()}, Channel: "/pub/late"}
	if _, err := r.Handle(ctx, wire.MethodClear, wire.Marshal(late.Encode)); !errors.Is(err, presence.ErrUnavailable) {
		t.Fatalf("late forwarded clear: %v, want ErrUnavailable", err)
	}
	if got, _ := r.Inspect(ctx, []string{"/pub/late"}); got["/pub/late"].Count != 1 {
		t.Fatal("a late clear was applied")
	}
	late.Header.Deadline = c.clk.Now().Add(time.Second).UnixNano()
	if _, err := r.Handle(ctx, wire.MethodClear, wire.Marshal(late.Encode)); err != nil {
		t.Fatalf("clear within its deadline: %v", err)
	}
	if got, _ := r.Inspect(ctx, []string{"/pub/late"}); got["/pub/late"].Count != 0 {
		t.Fatal("the clear was not applied")
	}
	bad := wire.CanRequest{Header: wire.Header{Hops: 1}, Channel: "bad"}
	resp, err := r.Handle(ctx, wire.MethodCan, wire.Marshal(bad.Encode))
	if reply, derr := wire.DecodeCanReply(resp); err != nil || derr != nil || reply.Access != (presence.Access{}) {
		t.Fatalf("can of an invalid name: %+v %v %v", reply, err, derr)
	}
}

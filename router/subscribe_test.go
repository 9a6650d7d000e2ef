package router

import (
	"errors"
	"fmt"
	"testing"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

func TestRemoteSubscriberReceivesInOrder(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, a.name, "/pub/room")

	sub, err := b.r.Subscribe(ctx, nil, map[string]int64{ch: p1LastID(t, b, ch)})
	if err != nil {
		t.Fatal(err)
	}
	col := collect(t, sub)
	testkit.WaitFor(t, "the owner to learn b's interest", func() bool { return len(a.r.fan.Remote(ch)) == 1 })

	const users = 30
	for i := range users {
		entry := []*testNode{a, b}[i%2]
		if _, err := entry.r.Update(ctx, user(fmt.Sprint(i)), "tab", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := range users / 2 {
		if _, err := b.r.Update(ctx, user(fmt.Sprint(i)), "tab", nil, []string{ch}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "every message on b", func() bool { return len(col.messages(ch)) == users+users/2 })
	msgs := col.messages(ch)
	for i, ev := range msgs {
		if i > 0 && ev.Message.ID != msgs[i-1].Message.ID+1 {
			t.Fatalf("message %d has id %d after %d", i, ev.Message.ID, msgs[i-1].Message.ID)
		}
		if i < users && (len(ev.Message.EnteringUsers) != 1 || ev.Message.EnteringUsers[0].ID != fmt.Sprint(i)) {
			t.Fatalf("message %d: %+v, want user %d entering", i, ev.Message, i)
		}
	}
	checkStream(t, col.events(), ch)
	if b.engine.Channels() != nil && len(b.engine.Channels()) != 0 {
		t.Errorf("b runs channels %v; a owns them", b.engine.Channels())
	}
}

func TestRemoteSubscriberCatchUpAndAudience(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, a.name, "/staff/room")
	for i := range 4 {
		if _, err := a.r.Update(ctx, testUser(2*i), "tab", []string{ch}, nil); err != nil {
			t.Fatal(err)
		}
	}
	st, err := b.r.Get(ctx, testUser(0), []string{ch})
	if err != nil || st[ch] == nil || st[ch].Count != 4 {
		t.Fatalf("get: %v %v", st, err)
	}
	first := st[ch].LastMessageID - 3

	// A staff subscriber catches up from the first message; an outsider is
	// refused; an anonymous one too.
	staff, err := b.r.Subscribe(ctx, testUser(0), map[string]int64{ch: first - 1})
	if err != nil {
		t.Fatal(err)
	}
	staffCol := collect(t, staff)
	outsider, err := b.r.Subscribe(ctx, testUser(1), map[string]int64{ch: -1})
	if err != nil {
		t.Fatal(err)
	}
	outCol := collect(t, outsider)
	testkit.WaitFor(t, "the catch-up", func() bool { return len(staffCol.messages(ch)) == 4 })
	testkit.WaitFor(t, "the outsider to be refused", func() bool {
		evs := outCol.events()
		return len(evs) == 1 && evs[0].Kind == presence.EventUnavailable
	})
	if _, err := b.r.Update(ctx, testUser(8), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the live message", func() bool { return len(staffCol.messages(ch)) == 5 })
	checkStream(t, staffCol.events(), ch)
	if got := staffCol.messages(ch)[0].Message.ID; got != first {
		t.Errorf("catch-up starts at %d, want %d", got, first)
	}
}

func TestInterestDroppedWhenLastSubscriberLeaves(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, a.name, "/pub/room")
	from := map[string]int64{ch: p1LastID(t, b, ch)}
	sub1, err := b.r.Subscribe(ctx, nil, from)
	if err != nil {
		t.Fatal(err)
	}
	sub2, err := b.r.Subscribe(ctx, nil, from)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "interest", func() bool { return len(a.r.fan.Remote(ch)) == 1 })
	sub1.Close()
	if _, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	col := collect(t, sub2)
	testkit.WaitFor(t, "the remaining subscriber to get the message", func() bool { return len(col.messages(ch)) == 1 })
	sub2.Close()
	// The off drops it. (A registration of sub1's catch-up still in flight
	// when sub1 closed can land after the off; the next push then learns
	// that b follows nothing, which publishing again exercises.)
	i := 100
	testkit.WaitFor(t, "interest to be dropped", func() bool {
		if len(a.r.fan.Remote(ch)) == 0 {
			return true
		}
		i++
		_, err := a.r.Update(ctx, user(fmt.Sprint(i)), "tab", []string{ch}, nil)
		return err != nil
	})
	if len(a.r.fan.Remote(ch)) != 0 {
		t.Fatal("interest kept")
	}
}

func TestStaleInterestClearedByPushReply(t *testing.T) {
	c := newTestCluster(t, 2, nil)
	ctx := testCtx(t)
	a, b := c.nodes[0], c.nodes[1]
	ch := channelOwnedBy(t, a, a.name, "/pub/room")
	// The off of b's only subscriber is lost: the interest outlives it.
	b.caller.setFail(func(_ string, method uint16) error {
		if method == wire.MethodInterest {
			return errors.New("lost")
		}
		return nil
	})
	sub, err := b.r.Subscribe(ctx, nil, map[string]int64{ch: -1})
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "interest", func() bool { return len(a.r.fan.Remote(ch)) == 1 })
	sub.Close()
	testkit.WaitFor(t, "the off to be tried", func() bool { return b.caller.count(wire.MethodInterest) == 1 })
	if len(a.r.fan.Remote(ch)) != 1 {
		t.Fatal("interest dropped without its off")
	}
	if _, err := a.r.Update(ctx, user("1"), "tab", []string{ch}, nil); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the stale interest to go", func() bool { return len(a.r.fan.Remote(ch)) == 0 })
}

package autopilot

import (
	"context"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// TestBootstrapExpect: nothing before the seeds are met and the expected
// servers are alive; then the first ones by name bootstrap with the same
// configuration, voters capped, and bootstrap is over.
func TestBootstrapExpect(t *testing.T) {
	r := newFakeRaft(false)
	c := newFakeCluster("n1", "n2", "n3", "n4", "n5", "n6")
	c.joined = false
	h := newHarness(t, Config{BootstrapExpect: 7}, r, c)
	h.step() // not joined
	c.joined = true
	h.step() // six of seven
	c.set("n7", StatusAlive, time.Time{})
	c.set("n0", StatusLeaving, time.Time{}) // not a candidate
	h.step("bootstrap n1 n2 n3 n4 n5 | n6 n7")
	if !h.a.bootstrapDone {
		t.Fatal("bootstrap still pending after bootstrapping")
	}
}

// TestBootstrapWaitsForExistingCluster: a server among the chosen holding
// Raft state means a cluster exists: this one waits to be added. A server
// not among the first chosen never bootstraps; an unanswered question is
// asked again.
func TestBootstrapWaitsForExistingCluster(t *testing.T) {
	t.Run("state found", func(t *testing.T) {
		r := newFakeRaft(false)
		c := newFakeCluster("n1", "n2", "n3")
		c.state["n3"] = true
		h := newHarness(t, Config{BootstrapExpect: 3}, r, c)
		h.step()
		if !h.a.bootstrapDone {
			t.Fatal("still trying to bootstrap beside an existing cluster")
		}
	})
	t.Run("state found on a member not chosen", func(t *testing.T) {
		// New nodes whose names sort first meet a cluster that exists.
		r := newFakeRaft(false)
		c := newFakeCluster("a1", "a2", "n1", "x1", "x2", "x3")
		c.state["x2"] = true
		h := newHarness(t, Config{BootstrapExpect: 3}, r, c)
		h.a.cfg.Self = "a1"
		h.step()
		if !h.a.bootstrapDone {
			t.Fatal("bootstrapped beside an existing cluster")
		}
	})
	t.Run("not chosen", func(t *testing.T) {
		r := newFakeRaft(false)
		c := newFakeCluster("a0", "a1", "n1")
		h := newHarness(t, Config{BootstrapExpect: 2}, r, c)
		h.step()
		if h.a.bootstrapDone {
			t.Fatal("gave up although a chosen server may still bootstrap")
		}
	})
	t.Run("unanswered", func(t *testing.T) {
		r := newFakeRaft(false)
		c := newFakeCluster("n1", "n2")
		c.forgetAnswers = true
		h := newHarness(t, Config{BootstrapExpect: 2}, r, c)
		h.step()
		c.forgetAnswers = false
		h.step("bootstrap n1 | n2")
	})
}

// TestHandOverPromotesASuccessor: a leaving leader that is the only voter
// promotes the alive non-voter with the furthest log before handing
// leadership over; with other voters it only transfers; a follower does
// nothing.
func TestHandOverPromotesASuccessor(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), nonvoter("n2"), nonvoter("n3"), nonvoter("n4"))
	c := newFakeCluster("n1", "n2", "n3", "n4")
	c.set("n4", StatusLeaving, time.Time{})
	ahead := caughtUp
	ahead.LastIndex++
	c.setProgress("n2", caughtUp)
	c.setProgress("n3", ahead)
	c.setProgress("n4", ahead) // leaving: never chosen
	h := newHarness(t, Config{}, r, c)
	h.a.SetLeaving()
	if err := h.a.HandOver(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ops := r.takeOps(); len(ops) != 2 || ops[0] != "voter n3" || ops[1] != "transfer" {
		t.Fatalf("operations %q, want n3 promoted, then the transfer", ops)
	}
	if err := h.a.HandOver(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ops := r.takeOps(); len(ops) != 1 || ops[0] != "transfer" {
		t.Fatalf("with another voter: %q, want only the transfer", ops)
	}
	r.mu.Lock()
	r.leader = false
	r.mu.Unlock()
	if err := h.a.HandOver(context.Background()); err != nil || len(r.takeOps()) != 0 {
		t.Fatalf("a follower handed over: %v", err)
	}
}

// TestWaitRemoved returns once the configuration no longer lists this
// server, and with an error when ctx ends first.
func TestWaitRemoved(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"))
	h := newHarness(t, Config{}, r, newFakeCluster("n1", "n2"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := h.a.WaitRemoved(ctx); err == nil {
		t.Fatal("WaitRemoved returned nil while still a server")
	}
	done := make(chan error, 1)
	go func() { done <- h.a.WaitRemoved(context.Background()) }()
	if err := r.RemoveServer(context.Background(), "n1"); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		case <-time.After(time.Millisecond):
			h.clock.Advance(removalPoll)
		}
	}
}

// TestRunRoundsOnKickAndLeadership: Run starts a round on Kick and on a
// leadership change, and ends with its context.
func TestRunRoundsOnKickAndLeadership(t *testing.T) {
	r := newFakeRaft(true, voter("n1"))
	c := newFakeCluster("n1")
	h := newHarness(t, Config{}, r, c)
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan struct{})
	go func() {
		defer close(ended)
		h.a.Run(ctx)
	}()
	added := func(name string) func() bool {
		return func() bool {
			servers, _ := r.Servers()
			for _, s := range servers {
				if s.ID == name {
					return true
				}
			}
			return false
		}
	}
	c.set("n2", StatusAlive, time.Time{})
	h.a.Kick()
	testkit.WaitFor(t, "n2 added after a kick", added("n2"))
	c.set("n3", StatusAlive, time.Time{})
	r.leaderCh <- true
	testkit.WaitFor(t, "n3 added after a leadership change", added("n3"))
	cancel()
	<-ended
}

package autopilot

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/presencehq/presence/cluster/raftstore"
)

// fastCfg keeps the defaults but a short stabilization, to read the
// steps of a test easily.
var fastCfg = Config{Stabilization: 10 * time.Second, ReapAfter: 30 * time.Second}

// TestNewServersJoinAsNonvotersAndArePromotedOnceStable: members that are
// not servers are added as non-voters at once; they are promoted only
// after staying healthy for the stabilization period, and only as many as
// keep the voters odd.
func TestNewServersJoinAsNonvotersAndArePromotedOnceStable(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"))
	c := newFakeCluster("n1", "n2", "n3", "n4")
	h := newHarness(t, fastCfg, r, c)
	h.step("nonvoter n4")
	h.wantConfig("n1 n2 n3 | n4")
	c.setProgress("n4", caughtUp)
	h.step() // healthy from now on
	h.clock.Advance(fastCfg.Stabilization)
	h.step() // stable, but four voters would not be odd

	c.set("n5", StatusAlive, time.Time{})
	c.setProgress("n5", caughtUp)
	h.step("nonvoter n5")
	h.step()
	h.clock.Advance(fastCfg.Stabilization - time.Second)
	h.step() // n5 not stable yet
	h.clock.Advance(time.Second)
	h.step("voter n4", "voter n5")
	h.wantConfig("n1 n2 n3 n4 n5")
}

// TestVotersCappedAtMaxVoters: seven servers make five voters and two
// non-voters; a voter's death promotes a non-voter before the dead one is
// reaped, and the reaping leaves five again.
func TestVotersCappedAtMaxVoters(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"))
	c := newFakeCluster("n1", "n2", "n3", "n4", "n5", "n6", "n7")
	for _, n := range []string{"n4", "n5", "n6", "n7"} {
		c.setProgress(n, caughtUp)
	}
	h := newHarness(t, fastCfg, r, c)
	h.step("nonvoter n4", "nonvoter n5", "nonvoter n6", "nonvoter n7")
	h.step()
	h.clock.Advance(fastCfg.Stabilization)
	h.step("voter n4", "voter n5")
	h.wantConfig("n1 n2 n3 n4 n5 | n6 n7")

	c.set("n2", StatusFailed, h.clock.Now())
	h.step("voter n6")
	h.wantConfig("n1 n2 n3 n4 n5 n6 | n7")
	h.clock.Advance(fastCfg.ReapAfter)
	h.step("remove n2")
	h.step()
	h.wantConfig("n1 n3 n4 n5 n6 | n7")
}

// TestLaggingNonvoterIsNotPromoted: a non-voter behind the leader's log, in
// another term, out of contact or not answering is not healthy; its
// stabilization starts once it is.
func TestLaggingNonvoterIsNotPromoted(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), nonvoter("n4"), nonvoter("n5"))
	c := newFakeCluster("n1", "n2", "n3", "n4", "n5")
	c.setProgress("n5", caughtUp)
	h := newHarness(t, fastCfg, r, c)
	lagging := []raftstore.Progress{
		{Term: 3, LastIndex: 1000 - DefaultMaxTrailingLogs - 1, LastContact: time.Millisecond},
		{Term: 2, LastIndex: 1000, LastContact: time.Millisecond},
		{Term: 3, LastIndex: 1000, LastContact: -1},
		{Term: 3, LastIndex: 1000, LastContact: DefaultLastContactThreshold + time.Millisecond},
	}
	for _, p := range lagging {
		c.setProgress("n4", p)
		h.step()
		h.clock.Advance(fastCfg.Stabilization)
	}
	c.mu.Lock()
	delete(c.progress, "n4") // no answer
	c.mu.Unlock()
	h.step()
	h.clock.Advance(fastCfg.Stabilization)
	h.step() // n5 stable, n4 not: five voters need both
	c.setProgress("n4", caughtUp)
	h.step()
	h.clock.Advance(fastCfg.Stabilization)
	h.step("voter n5", "voter n4")
}

// TestDepartedServersRemoved: a server that left goes at once; a failed
// one once it has been dead for ReapAfter (counted from its failure); one
// membership no longer knows once ReapAfter has passed since this leader
// noticed (a new term starts that count again).
func TestDepartedServersRemoved(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), voter("n4"), voter("n5"), nonvoter("n6"), nonvoter("n7"))
	c := newFakeCluster("n1", "n2", "n3", "n4", "n5", "n6", "n7")
	h := newHarness(t, fastCfg, r, c)
	c.set("n6", StatusLeft, h.clock.Now())
	c.set("n7", StatusLeaving, time.Time{})
	h.step("remove n6")

	c.set("n2", StatusFailed, h.clock.Now().Add(-20*time.Second))
	c.forget("n3")
	h.step()
	h.clock.Advance(10 * time.Second)
	h.step("remove n2")
	h.clock.Advance(15 * time.Second)
	h.a.newTerm() // a new leader counts n3's absence from when it notices
	h.step()
	h.clock.Advance(fastCfg.ReapAfter - time.Second)
	h.step()
	h.clock.Advance(time.Second)
	h.step("remove n3")
	c.set("n7", StatusLeft, h.clock.Now())
	h.step("remove n7")
	h.wantConfig("n1 n4 n5")
}

// TestRemovalsNeverTakeAMajorityOfVoters: three of five voters failed long
// ago: a round removes two, the next one the third.
func TestRemovalsNeverTakeAMajorityOfVoters(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), voter("n4"), voter("n5"))
	c := newFakeCluster("n1", "n2")
	for _, n := range []string{"n3", "n4", "n5"} {
		c.set(n, StatusFailed, t0.Add(-time.Hour))
	}
	h := newHarness(t, fastCfg, r, c)
	h.step("remove n3", "remove n4")
	h.step("remove n5")
	h.wantConfig("n1 n2")
}

// TestWholeClusterStoppingKeepsItsConfiguration: while this node and every
// other member shut down, departures are not removals: the cluster forms
// again as it was. A node shutting down while others stay still removes
// those that left.
func TestWholeClusterStoppingKeepsItsConfiguration(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), nonvoter("n4"))
	c := newFakeCluster("n1", "n2", "n3", "n4")
	h := newHarness(t, fastCfg, r, c)
	h.a.SetLeaving()
	c.set("n1", StatusLeaving, time.Time{})
	c.set("n4", StatusLeft, h.clock.Now())
	h.step("remove n4") // n2 and n3 stay
	c.set("n2", StatusLeft, h.clock.Now())
	c.set("n3", StatusLeaving, time.Time{})
	h.step()
	h.clock.Advance(time.Hour)
	h.step()
	h.wantConfig("n1 n2 n3")
	// A member that stays: n2's departure is a removal again, but a leaving
	// leader adds nobody.
	c.set("n5", StatusAlive, time.Time{})
	h.step("remove n2")
	h.step()
	h.wantConfig("n1 n3")
}

// TestSurplusVoterDemoted: four voters, all alive: the greatest name that
// is not the leader loses its vote; not while a voter is down.
func TestSurplusVoterDemoted(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), voter("n4"), voter("n5"))
	c := newFakeCluster("n1", "n2", "n3", "n4")
	c.set("n5", StatusFailed, t0)
	h := newHarness(t, fastCfg, r, c)
	h.step()
	h.clock.Advance(fastCfg.ReapAfter)
	h.step("remove n5")
	h.step("demote n4")
	h.wantConfig("n1 n2 n3 | n4")
	c.setProgress("n4", caughtUp)
	h.step()
	h.clock.Advance(fastCfg.Stabilization)
	h.step() // four would be even: n4 stays a non-voter
}

// TestMovedServerIsLeftAsItIs: a member back at another Raft address (a
// restarted container) changes nothing in the configuration: Raft finds
// it by name, and rewriting a follower's address races inside
// hashicorp/raft.
func TestMovedServerIsLeftAsItIs(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), nonvoter("n4"))
	c := newFakeCluster("n1", "n2", "n3", "n4")
	h := newHarness(t, fastCfg, r, c)
	h.step()
	before, _ := r.Servers()
	c.move("n2", "10.0.0.2:8300")
	c.move("n4", "10.0.0.4:8300")
	c.move("n1", "10.0.0.1:8300") // the leader itself
	h.step()
	after, _ := r.Servers()
	if !slices.Equal(before, after) {
		t.Fatalf("configuration changed from %v to %v", before, after)
	}
	h.wantConfig("n1 n2 n3 | n4")
}

// TestNewServerAtAMovedServersOldAddressIsAdded: a restarted container
// gets the IP another server was recorded with before it moved (compose
// and Kubernetes hand addresses out again). Raft refuses two servers at one
// address, so the newcomer is recorded by its name instead of never
// joining.
func TestNewServerAtAMovedServersOldAddressIsAdded(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"))
	c := newFakeCluster("n1", "n2", "n3")
	h := newHarness(t, fastCfg, r, c)
	h.step()
	c.move("n2", "10.0.0.2:8300")
	c.set("n4", StatusAlive, time.Time{})
	c.move("n4", addr("n2"))
	h.step("nonvoter n4")
	h.wantConfig("n1 n2 n3 | n4")
	servers, _ := r.Servers()
	if i := slices.IndexFunc(servers, func(s raftstore.Server) bool { return s.ID == "n4" }); i < 0 || servers[i].Addr != "n4:8300" {
		t.Fatalf("servers %v: want n4 recorded by its name at the Raft port", servers)
	}
}

// TestFollowerChangesNothing: only the leader reconciles.
func TestFollowerChangesNothing(t *testing.T) {
	r := newFakeRaft(false, voter("n1"), voter("n2"))
	c := newFakeCluster("n1", "n2", "n3")
	c.set("n2", StatusLeft, t0)
	h := newHarness(t, fastCfg, r, c)
	h.step()
	h.clock.Advance(time.Hour)
	h.step()
}

// TestFailedChangeIsRetried: a refused change is logged and made again in
// a later round.
func TestFailedChangeIsRetried(t *testing.T) {
	r := newFakeRaft(true, voter("n1"), voter("n2"), voter("n3"), voter("n4"))
	c := newFakeCluster("n1", "n2", "n3")
	c.set("n4", StatusLeft, t0)
	r.fail["remove n4"] = errors.New("leadership lost")
	h := newHarness(t, fastCfg, r, c)
	h.step()
	delete(r.fail, "remove n4")
	h.step("remove n4")
}

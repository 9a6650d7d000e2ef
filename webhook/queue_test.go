package webhook

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

// down makes rcv answer 503 while it is true.
func down(rcv *receiver) func(bool) {
	return func(isDown bool) {
		if isDown {
			rcv.setAnswer(func(*Payload) int { return http.StatusServiceUnavailable })
		} else {
			rcv.setAnswer(nil)
		}
	}
}

func reasonOf(t *testing.T, e Event) string {
	t.Helper()
	var data struct {
		Reason string `json:"reason"`
	}
	if e.Type != TypeResync || json.Unmarshal(e.Data, &data) != nil {
		t.Fatalf("event %+v is no resync", e)
	}
	return data.Reason
}

// checkCovered wants got, a channel's deduped events, to end at sim's last
// message and every message of sim to be delivered or covered by a later
// resync event: nothing lost silently.
func checkCovered(t *testing.T, got []Event, sim *channelSim) {
	t.Helper()
	if len(got) == 0 || got[len(got)-1].MessageID != sim.last {
		t.Fatalf("%s: events %v do not reach the last id %d", sim.name, ids(got), sim.last)
	}
	for i, e := range got {
		if i > 0 && e.MessageID != got[i-1].MessageID+1 && e.Type != TypeResync {
			t.Fatalf("%s: a gap before event %d (%v) that no resync covers", sim.name, e.MessageID, ids(got))
		}
	}
}

func TestAChannelQueueOverflowsIntoAResync(t *testing.T) {
	rcv := newReceiver(t)
	setDown := down(rcv)
	setDown(true)
	r := newRig(t, func(c *Config) { c.MaxChannelQueue = 10 })
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("first"))
	r.waitFor("the first batch to fail", 0, func() bool { return value(r.d.m.failures.WithLabelValues("a")) > 0 })
	for i := range 50 {
		r.d.Publish(sim.enter(fmt.Sprint(i)))
	}
	r.d.mu.Lock()
	pending := len(r.d.chans[sim.name].pending)
	r.d.mu.Unlock()
	if pending > 10 {
		t.Fatalf("%d events queued behind the failing batch, bound 10", pending)
	}
	setDown(false)
	r.waitFor("delivery once the receiver is back", time.Second, func() bool { return r.acked(sim) })
	got := deduped(rcv.events())[sim.name]
	checkCovered(t, got, sim)
	if got[0].MessageID != 11 || got[0].Type != TypeEnteringUsers || !slices.ContainsFunc(got, func(e Event) bool {
		return e.Type == TypeResync && reasonOf(t, e) == ReasonOverflow
	}) {
		t.Fatalf("events %+v: want the first event, then an overflow resync", got)
	}
	if value(r.d.m.resyncs.WithLabelValues("a", ReasonOverflow)) == 0 {
		t.Fatal("overflow resyncs not counted")
	}
}

func TestADestinationQueueStaysBounded(t *testing.T) {
	rcv := newReceiver(t)
	setDown := down(rcv)
	setDown(true)
	r := newRig(t, func(c *Config) { c.MaxDestinationQueue = 200; c.MaxBatch = 10 })
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	var sims []*channelSim
	for i := range 40 {
		sims = append(sims, newChannelSim(fmt.Sprintf("/a/c%d", i), int64(1000*i), r.clk))
	}
	for round := range 30 {
		for _, s := range sims {
			r.d.Publish(s.enter(fmt.Sprint(round)))
		}
		r.clk.Advance(50 * time.Millisecond)
		r.d.mu.Lock()
		queued := r.d.dests["a"].queued
		r.d.mu.Unlock()
		// The bound, plus one summary per channel and the batches tried.
		if limit := 200 + len(sims) + 10*DefaultMaxInFlight; queued > limit {
			t.Fatalf("round %d: %d events queued, bound %d", round, queued, limit)
		}
	}
	setDown(false)
	r.waitFor("every channel delivered", time.Second, func() bool { return r.acked(sims...) })
	got := deduped(rcv.events())
	for _, s := range sims {
		checkCovered(t, got[s.name], s)
	}
}

func TestABatchFailingForAnHourBecomesAResync(t *testing.T) {
	rcv := newReceiver(t)
	setDown := down(rcv)
	setDown(true)
	r := newRig(t, func(c *Config) { c.RetryMax = time.Minute })
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	for i := range 3 {
		r.d.Publish(sim.enter(fmt.Sprint(i)))
	}
	r.waitFor("the batch given up", 10*time.Second, func() bool {
		return value(r.d.m.resyncs.WithLabelValues("a", ReasonExpired)) > 0
	})
	if r.clk.Now().Sub(rigStart) < DefaultGiveUpAfter {
		t.Fatalf("given up after %v", r.clk.Now().Sub(rigStart))
	}
	setDown(false)
	r.waitFor("the resync delivered", time.Second, func() bool { return r.acked(sim) })
	got := deduped(rcv.events())[sim.name]
	if len(got) != 1 || got[0].MessageID != sim.last || reasonOf(t, got[0]) != ReasonExpired {
		t.Fatalf("delivered %+v, want one expired resync at %d", got, sim.last)
	}
	if got[0].Time.After(time.UnixMilli(sim.published[0].PublishedAtUnixMilli)) {
		t.Fatalf("the resync's time %v is not its oldest event's", got[0].Time)
	}
}

func TestAnInstalledStateIsDeliveredFromItsPosition(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 100, r.clk)
	for i := range 20 { // published on the previous holder
		if i%3 == 2 {
			sim.leave(fmt.Sprint(i - 1))
		} else {
			sim.enter(fmt.Sprint(i))
		}
	}
	// This node holds nothing of the channel: it delivers what the state
	// does not know to be acknowledged, occupancy derived from its users.
	installed := sim.snapshot(110)
	r.d.Installed(installed)
	// Messages the previous holder had not published come next, already
	// queued: they are not delivered twice.
	r.d.Publish(sim.published[len(sim.published)-1])
	r.d.Publish(sim.enter("later"))
	r.waitFor("the installed events", 0, func() bool { return r.acked(sim) })
	got := deduped(rcv.events())[sim.name]
	want := &channelSim{name: sim.name, published: sim.published[10:]}
	checkSequence(t, got, want)
	if n := len(rcv.events()); n != len(got) {
		t.Fatalf("%d events delivered for %d messages: duplicates", n, len(got))
	}
}

func TestAnInstalledStateWhoseBacklogIsTooShortStartsWithAResync(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 100, r.clk)
	for i := range 30 {
		sim.enter(fmt.Sprint(i))
	}
	s := sim.snapshot(105)
	s.Backlog = s.Backlog[20:] // 121..130: 106..120 are lost
	r.d.Installed(s)
	r.waitFor("the events", 0, func() bool { return r.acked(sim) })
	got := deduped(rcv.events())[sim.name]
	if len(got) != 11 || got[0].MessageID != 120 || reasonOf(t, got[0]) != ReasonLost ||
		!slices.Equal(ids(got[1:]), messageIDs(sim.published[20:])) {
		t.Fatalf("delivered %v, want a lost resync at 120, then 121..130", ids(got))
	}
	// A state whose position is its last id has nothing to deliver.
	other := newChannelSim("/a/c", 500, r.clk)
	other.enter("x")
	r.d.Installed(other.snapshot(other.last))
	if r.d.Pending(other.name) {
		t.Fatal("a state delivered whole queued events")
	}
}

func TestOccupancyOfAnInstalledBacklog(t *testing.T) {
	sim := newChannelSim("/a/b", 0, clock.NewFake(rigStart))
	sim.enter("a") // 1 occupied
	sim.enter("b") // 2
	sim.leave("a") // 3
	sim.leave("b") // 4 vacated
	sim.enter("c") // 5 occupied
	sim.leave("c") // 6 vacated
	sim.enter("d") // 7 occupied
	s := sim.snapshot(0)
	flags := occupancy(s)
	for i, m := range sim.published {
		if flags[i].occupied != m.Occupied || flags[i].vacated != m.Vacated {
			t.Errorf("message %d: derived %+v, want occupied %v vacated %v", m.ID, flags[i], m.Occupied, m.Vacated)
		}
	}
	// Before a resync marker (a merge) nothing is known.
	s.Backlog = slices.Clone(s.Backlog)
	marker := *s.Backlog[4]
	marker.Resync, marker.EnteringUsers = true, nil
	s.Backlog[4] = &marker
	flags = occupancy(s)
	if flags[6] != (occupancyFlags{occupied: true}) || flags[0].occupied || flags[3].vacated {
		t.Fatalf("flags %+v: want those after the marker only", flags)
	}
}

func TestPublishSkipsWhatItHadAndResyncsOverAGap(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	first := sim.enter("x")
	r.d.Publish(first)
	r.d.Publish(first) // again: not new
	sim.enter("y")     // 12 never reaches this node
	sim.last += 1000   // a restarted incarnation jumps
	jump := sim.enter("z")
	r.d.Publish(jump)
	r.waitFor("the events", 0, func() bool { return r.acked(sim) })
	got := deduped(rcv.events())[sim.name]
	if !slices.Equal(ids(got), []int64{11, jump.ID - 1, jump.ID}) || reasonOf(t, got[1]) != ReasonLost {
		t.Fatalf("delivered %v, want 11, a resync before the gap, %d", ids(got), jump.ID)
	}
	if n := len(rcv.events()); n != 3 {
		t.Fatalf("%d events delivered, want 3", n)
	}
}

func TestAHandedOverChannelStopsDeliveringHere(t *testing.T) {
	rcv := newReceiver(t)
	setDown := down(rcv)
	setDown(true)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x"))
	r.waitFor("a failed batch", 0, func() bool { return value(r.d.m.failures.WithLabelValues("a")) > 0 })
	r.d.Publish(sim.enter("y"))
	if !r.d.Pending(sim.name) {
		t.Fatal("a channel with undelivered events is not pending")
	}
	r.d.HandedOver(sim.name)
	if r.d.Pending(sim.name) {
		t.Fatal("a handed-over channel is still pending here")
	}
	// Its failing batch is not retried for it: the new holder delivers.
	r.waitFor("the handed-over batch released", time.Second, func() bool {
		r.d.mu.Lock()
		defer r.d.mu.Unlock()
		return len(r.d.chans) == 0 && r.d.dests["a"].queued == 0
	})
	setDown(false)
	r.clk.Advance(time.Minute)
	r.d.mu.Lock()
	inflight := r.d.dests["a"].inflight
	r.d.mu.Unlock()
	if inflight != 0 || len(rcv.events()) != 0 {
		t.Fatalf("%d requests in flight, %d events delivered for a handed-over channel", inflight, len(rcv.events()))
	}
}

func TestTheOldestUndeliveredAgeAndQueueGauges(t *testing.T) {
	rcv := newReceiver(t)
	setDown := down(rcv)
	setDown(true)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x"))
	r.d.Publish(sim.enter("y"))
	r.waitFor("the gauges", time.Second, func() bool {
		return value(r.d.m.queued.WithLabelValues("a")) == 2 && value(r.d.m.oldest.WithLabelValues("a")) >= 5
	})
	setDown(false)
	r.waitFor("the gauges back to zero", time.Second, func() bool {
		return r.acked(sim) && value(r.d.m.queued.WithLabelValues("a")) == 0 && value(r.d.m.oldest.WithLabelValues("a")) == 0
	})
}

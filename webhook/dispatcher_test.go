package webhook

import (
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

// checkSequence wants the deduped events of sim's channel to be its
// published messages, in order, with their payloads and occupancy.
func checkSequence(t *testing.T, got []Event, sim *channelSim) {
	t.Helper()
	if !slices.Equal(ids(got), messageIDs(sim.published)) {
		t.Fatalf("%s: deduped event ids %v, want the published %v", sim.name, ids(got), messageIDs(sim.published))
	}
	for i, e := range got {
		m := sim.published[i]
		want := TypeEnteringUsers
		switch {
		case m.CountOnly:
			want = TypeCountDelta
		case len(m.LeavingUserIDs) > 0:
			want = TypeLeavingUserIDs
		}
		if e.Type != want || e.Occupied != m.Occupied || e.Vacated != m.Vacated || e.Channel != sim.name {
			t.Fatalf("%s: event %d is %+v, want type %s, occupied %v, vacated %v", sim.name, i, e, want, m.Occupied, m.Vacated)
		}
		if !e.Time.Equal(time.UnixMilli(m.PublishedAtUnixMilli)) {
			t.Fatalf("%s: event %d at %v, want %v", sim.name, i, e.Time, time.UnixMilli(m.PublishedAtUnixMilli))
		}
	}
}

func TestDeliversEveryChannelsEventsInOrder(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sims := []*channelSim{newChannelSim("/a/one", 1000, r.clk), newChannelSim("/a/two", 5_000_000, r.clk), newChannelSim("/a/count", 77, r.clk)}
	sims[2].countOnly = true
	for i := range 60 {
		for _, s := range sims {
			switch i % 4 {
			case 0:
				r.d.Publish(s.enter("u1"))
			case 1:
				r.d.Publish(s.enter(fmt.Sprint("u", i)))
			case 2:
				r.d.Publish(s.leave("u1"))
			case 3:
				r.d.Publish(s.leave(fmt.Sprint("u", i-2)))
			}
		}
		r.clk.Advance(7 * time.Millisecond)
	}
	r.waitFor("every event acknowledged", 0, func() bool { return r.acked(sims...) })
	got := deduped(rcv.events())
	for _, s := range sims {
		checkSequence(t, got[s.name], s)
	}
	// The first message occupied each channel, every fourth vacated it.
	if e := got["/a/one"][0]; !e.Occupied || got["/a/one"][3].Vacated != true {
		t.Fatalf("occupancy not delivered: %+v, %+v", e, got["/a/one"][3])
	}
	if string(got["/a/one"][0].Data) != `{"entering_users":[{"id":"u1","username":"uu1","name":"","avatar_template":""}]}` ||
		string(got["/a/one"][2].Data) != `{"leaving_user_ids":["u1"]}` || string(got["/a/count"][2].Data) != `{"count_delta":-1}` {
		t.Fatalf("payloads %s, %s, %s", got["/a/one"][0].Data, got["/a/one"][2].Data, got["/a/count"][2].Data)
	}
	if _, rejected, _ := rcv.counts(); rejected != 0 || rcv.maxEvents > DefaultMaxBatch {
		t.Fatalf("%d requests rejected, %d events in the largest; want none, at most %d", rejected, rcv.maxEvents, DefaultMaxBatch)
	}
	if n := value(r.d.m.events.WithLabelValues("a")); n != 180 {
		t.Fatalf("presence_webhook_events_delivered_total %v, want 180", n)
	}
	if value(r.d.m.deliveries.WithLabelValues("a")) < 2 {
		t.Fatal("deliveries not counted")
	}
}

func TestABatchWaitsForAHundredEventsOrOneSecond(t *testing.T) {
	rcv := newReceiver(t)
	// A tick of an hour: the test schedules by hand (kicks still run).
	r := newRig(t, func(c *Config) { c.Tick = time.Hour })
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 100, r.clk)
	start := func() {
		reqs, _ := r.d.schedule()
		for _, req := range reqs {
			go r.d.send(req)
		}
	}
	for i := range 99 {
		r.d.Publish(sim.enter(fmt.Sprint(i)))
	}
	if reqs, _ := r.d.schedule(); len(reqs) != 0 {
		t.Fatalf("99 fresh events were sent (%d requests) before a hundred or a second", len(reqs))
	}
	r.d.Publish(sim.enter("99")) // the hundredth: sent at once
	testkit.WaitFor(t, "a full batch", func() bool { return r.ack(sim.name) == sim.last })
	if _, _, accepted := rcv.counts(); accepted != 1 || rcv.maxEvents != 100 {
		t.Fatalf("%d requests, largest %d events; want one of 100", accepted, rcv.maxEvents)
	}
	for i := range 30 {
		r.d.Publish(sim.leave(fmt.Sprint(i)))
	}
	r.clk.Advance(DefaultMaxWait - time.Millisecond)
	if reqs, _ := r.d.schedule(); len(reqs) != 0 {
		t.Fatal("30 events were sent before they waited a second")
	}
	r.clk.Advance(time.Millisecond)
	start()
	testkit.WaitFor(t, "the waiting events", func() bool { return r.ack(sim.name) == sim.last })
	checkSequence(t, deduped(rcv.events())[sim.name], sim)
}

func TestRetriesAfter500sWithTheSameDeliveryID(t *testing.T) {
	rcv := newReceiver(t)
	failures := 3
	rcv.setAnswer(func(*Payload) int {
		if failures > 0 {
			failures--
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	for i := range 5 {
		r.d.Publish(sim.enter(fmt.Sprint(i)))
	}
	r.waitFor("delivery after three 500s", 250*time.Millisecond, func() bool { return r.ack(sim.name) == sim.last })
	rcv.mu.Lock()
	attempts := rcv.attempts
	rcv.mu.Unlock()
	if len(attempts) != 1 {
		t.Fatalf("attempts by delivery id %v, want one delivery tried four times", attempts)
	}
	for id, statuses := range attempts {
		if len(statuses) != 4 || statuses[3] != "OK" || id == "" {
			t.Fatalf("delivery %q answered %v, want three failures then OK", id, statuses)
		}
	}
	checkSequence(t, deduped(rcv.events())[sim.name], sim)
	if n := value(r.d.m.retries.WithLabelValues("a")); n != 3 {
		t.Fatalf("retries %v, want 3", n)
	}
	if n := value(r.d.m.failures.WithLabelValues("a")); n != 3 {
		t.Fatalf("failures %v, want 3", n)
	}
}

func TestRetriesWhileTheConnectionIsRefused(t *testing.T) {
	var ports testkit.Ports
	addr := fmt.Sprintf("127.0.0.1:%d", ports.MustTake(t, false))
	r := newRig(t, nil)
	r.hook("a", "http://"+addr+"/presence-hook", presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x"))
	r.d.Publish(sim.leave("x"))
	r.waitFor("refused connections", 250*time.Millisecond, func() bool {
		return value(r.d.m.failures.WithLabelValues("a")) >= 2
	})
	if r.ack(sim.name) != 0 {
		t.Fatal("acknowledged without a receiver")
	}
	// The receiver starts listening where the webhook points.
	rcv := newReceiver(t)
	rcv.srv.Close()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(rcv.serve), ReadHeaderTimeout: time.Minute}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	r.waitFor("delivery once the receiver listens", 250*time.Millisecond, func() bool { return r.ack(sim.name) == sim.last })
	checkSequence(t, deduped(rcv.events())[sim.name], sim)
}

func TestAFailingChannelHoldsItsLaterEventsButNotOtherChannels(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(p *Payload) int {
		if slices.ContainsFunc(p.Events, func(e Event) bool { return e.Channel == "/a/bad" }) {
			return http.StatusInternalServerError
		}
		return http.StatusOK
	})
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	bad, good := newChannelSim("/a/bad", 10, r.clk), newChannelSim("/a/good", 20, r.clk)
	r.d.Publish(bad.enter("x"))
	r.waitFor("the bad channel's batch to fail", 0, func() bool {
		return value(r.d.m.failures.WithLabelValues("a")) >= 1
	})
	r.d.Publish(bad.leave("x")) // waits behind its channel's failed batch
	for i := range 5 {
		r.d.Publish(good.enter(fmt.Sprint(i)))
	}
	r.waitFor("the good channel's events", 0, func() bool { return r.acked(good) })
	for _, e := range rcv.events() {
		if e.Channel == bad.name {
			t.Fatalf("the failing channel's event %+v was acknowledged", e)
		}
	}
	// The failing channel's second event was never sent while its first
	// was not acknowledged; and while the destination was probed one
	// request at a time, the good channel's batch went in the probe after
	// the first failed retry, not after a run of lucky backoffs.
	rcv.mu.Lock()
	badTries := slices.IndexFunc(rcv.tried, func(d delivery) bool {
		return slices.ContainsFunc(d.payload.Events, func(e Event) bool { return e.Channel == good.name })
	})
	if badTries > 2 {
		t.Errorf("the good channel's first try came after %d tries of the failing channel, want at most 2", badTries)
	}
	for _, d := range rcv.tried {
		for _, e := range d.payload.Events {
			if e.Channel == bad.name && e.MessageID != bad.published[0].ID {
				t.Errorf("event %d of the failing channel was sent before its first was acknowledged", e.MessageID)
			}
		}
	}
	rcv.mu.Unlock()
	rcv.setAnswer(nil)
	r.waitFor("the failing channel's events once accepted", time.Second, func() bool { return r.acked(bad) })
	checkSequence(t, deduped(rcv.events())[bad.name], bad)
	checkSequence(t, deduped(rcv.events())[good.name], good)
}

func TestBackoffDoublesUpToItsCapWithJitter(t *testing.T) {
	r := newRig(t, nil)
	for n := 1; n <= 80; n++ {
		full := DefaultRetryMax
		if n <= 20 {
			full = min(DefaultRetryBase<<(n-1), DefaultRetryMax)
		}
		for range 20 {
			got := r.d.backoff(n)
			if got < full/2 || got > full {
				t.Fatalf("backoff after %d failures %v, want between %v and %v", n, got, full/2, full)
			}
		}
	}
	// An hour of failures is at least a dozen tries, at the 5 minute cap.
	var total time.Duration
	tries := 0
	for total < time.Hour {
		tries++
		total += r.d.backoff(tries)
	}
	if tries < 12 {
		t.Fatalf("%d tries in an hour", tries)
	}
}

func TestBadSignaturesAreRejectedUntilTheSecretIsRight(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hooks.Store("a", &presence.Webhook{URL: rcv.url(), Secret: "not the receiver's", Events: presence.AllWebhookEvents})
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x"))
	r.waitFor("a rejected request", 0, func() bool { _, rejected, _ := rcv.counts(); return rejected > 0 })
	if r.ack(sim.name) != 0 {
		t.Fatal("a request with a bad signature was acknowledged")
	}
	r.hook("a", rcv.url(), presence.AllWebhookEvents) // the admin fixes the secret
	r.waitFor("the retry signed with the new secret", 250*time.Millisecond, func() bool { return r.acked(sim) })
	checkSequence(t, deduped(rcv.events())[sim.name], sim)
}

func TestEventsListSelectsMessages(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.WebhookOccupied|presence.WebhookVacated)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x")) // occupied
	r.d.Publish(sim.enter("y"))
	r.d.Publish(sim.leave("x"))
	r.d.Publish(sim.leave("y")) // vacated
	marker := sim.next()        // a merge's resync marker: always delivered
	marker.Resync = true
	r.d.Publish(marker)
	r.waitFor("the selected events", 0, func() bool { return r.ack(sim.name) == marker.ID })
	got := deduped(rcv.events())[sim.name]
	if !slices.Equal(ids(got), []int64{11, 14, 15}) || !got[0].Occupied || got[0].Type != TypeEnteringUsers ||
		!got[1].Vacated || got[1].Type != TypeLeavingUserIDs || got[2].Type != TypeResync || string(got[2].Data) != `{"reason":"merge"}` {
		t.Fatalf("delivered %+v, want the occupying and vacating messages and the resync", got)
	}
}

func TestAWebhookRemovedDropsItsQueue(t *testing.T) {
	rcv := newReceiver(t)
	rcv.setAnswer(func(*Payload) int { return http.StatusServiceUnavailable })
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x"))
	r.waitFor("a failure", 0, func() bool { return value(r.d.m.failures.WithLabelValues("a")) > 0 })
	r.hooks.Delete("a")
	r.waitFor("the destination dropped", 0, func() bool {
		r.d.mu.Lock()
		defer r.d.mu.Unlock()
		return len(r.d.dests) == 0 && len(r.d.chans) == 0
	})
	r.d.Publish(sim.enter("y"))
	if r.d.Pending(sim.name) {
		t.Fatal("a channel without webhook queued an event")
	}
	if n := series(r.d.m.failures); n != 0 {
		t.Fatalf("%d failure series left for the removed webhook", n)
	}
}

func TestMetricsAreLabelledByPrefixNotURL(t *testing.T) {
	rcv := newReceiver(t)
	r := newRig(t, nil)
	r.hook("a", rcv.url(), presence.AllWebhookEvents)
	sim := newChannelSim("/a/b", 10, r.clk)
	r.d.Publish(sim.enter("x"))
	r.waitFor("the delivery and a gauge update", 0, func() bool {
		return r.acked(sim) && value(r.d.m.queued.WithLabelValues("a")) == 0
	})
	families, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if strings.Contains(l.GetValue(), "127.0.0.1") {
					t.Fatalf("%s carries the URL: %v", f.GetName(), l)
				}
			}
		}
	}
}

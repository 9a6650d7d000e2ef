package load

import (
	"strings"
	"testing"
	"time"
)

func TestReadEventsParsesTheContractFrames(t *testing.T) {
	stream := ": connected\n\n" +
		"id: abc\r\nevent: message\r\n" +
		`data: {"channel": "/demo/load/3", "message_id": 18, "data": {"entering_users": [{"id": "r-u1", "username": "u", "avatar_template": "/load/42/{size}.png"}]}}` + "\r\n\r\n" +
		": keepalive\n\n" +
		"id: abd\nevent: message\n" + `data: {"channel": "/demo/load/3", "message_id": 19, "data": {"leaving_user_ids": ["r-u1"]}}` + "\n\n" +
		"event: message\n" + `data: {"channel": "/demo/count/x", "message_id": 1, "data": {"count_delta": -2}}` + "\n\n" +
		"event: resync\n" + `data: {"channel": "/demo/load/4"}` + "\n\n" +
		"event: unavailable\n" + `data: {"channel": "/nope/1"}` + "\n\n" +
		"event: message\ndata: {\"channel\": \"/half\"" // cut off: never dispatched
	var got []Event
	err := ReadEvents(strings.NewReader(stream), func(ev Event) { got = append(got, ev) })
	if err == nil {
		t.Fatal("a stream that ends must return its read error")
	}
	want := []struct {
		kind    EventKind
		channel string
	}{
		{EventEntering, "/demo/load/3"}, {EventLeaving, "/demo/load/3"}, {EventCountDelta, "/demo/count/x"},
		{EventResync, "/demo/load/4"}, {EventUnavailable, "/nope/1"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d events %+v, want %d", len(got), got, len(want))
	}
	for i, w := range want {
		if got[i].Kind != w.kind || got[i].Channel != w.channel {
			t.Errorf("event %d: %v %q, want %v %q", i, got[i].Kind, got[i].Channel, w.kind, w.channel)
		}
		if got[i].At.IsZero() {
			t.Errorf("event %d has no arrival time", i)
		}
	}
	if e := got[0].Entering; len(e) != 1 || e[0].ID != "r-u1" || StampOf(e[0].AvatarTemplate) != 42 {
		t.Errorf("entering users %+v", e)
	}
}

func TestStampRoundTrip(t *testing.T) {
	if got := StampOf(AvatarWithStamp(123456)); got != 123456 {
		t.Errorf("StampOf(AvatarWithStamp(123456)) = %d", got)
	}
	for _, s := range []string{"", "/letter_avatar/x/{size}.png", "/load/x/{size}.png"} {
		if StampOf(s) != 0 {
			t.Errorf("StampOf(%q) != 0", s)
		}
	}
}

func TestSubscribeURLEncodesChannelsAndToken(t *testing.T) {
	u := SubscribeURL("http://n1:8080/", []string{"/demo/load/1"}, "tok")
	want := "http://n1:8080/presence/subscribe?channels=%7B%22%2Fdemo%2Fload%2F1%22%3A-1%7D&token=tok"
	if u != want {
		t.Errorf("got  %s\nwant %s", u, want)
	}
}

func TestTrackerMatchesEntersToDeliveries(t *testing.T) {
	// Channel 0 has two subscribers, channel 1 one, channel 2 none.
	tr := NewTracker([]int32{2, 1, 0})
	t0 := time.Unix(1000, 0)
	tr.SetPhase(1)
	s1, s2 := tr.NextStamp(), tr.NextStamp()
	tr.Expect(0, 7, s1, t0)
	tr.Expect(0, 7, s2, t0.Add(time.Second)) // the same user entered again later
	tr.Expect(2, 7, tr.NextStamp(), t0)      // unwatched: not tracked
	if n := tr.Outstanding(1); n != 4 {
		t.Fatalf("outstanding %d, want 2 enters x 2 subscribers", n)
	}
	// The newer enter's message arrives: matched by stamp, not by age.
	tr.Deliver(0, 7, s2, t0.Add(time.Second+5*time.Millisecond))
	tr.Deliver(0, 7, s1, t0.Add(10*time.Millisecond))
	tr.Deliver(0, 7, s1, t0.Add(20*time.Millisecond))
	tr.Deliver(0, 8, 0, t0) // nobody expected user 8
	tr.SetPhase(2)
	st := tr.Stats(1)
	if st.Delivery.Count() != 3 || st.Missing != 1 || st.Unmatched != 1 {
		t.Fatalf("stats %d samples, %d missing, %d unmatched; want 3, 1, 1", st.Delivery.Count(), st.Missing, st.Unmatched)
	}
	if st.Delivery.Min() != 5*time.Millisecond || st.Delivery.Max() != 20*time.Millisecond {
		t.Errorf("delivery min/max %v/%v, want 5ms/20ms", st.Delivery.Min(), st.Delivery.Max())
	}
	// A cancelled enter is no longer awaited; a stampless message takes the
	// oldest outstanding one.
	s3, s4 := tr.NextStamp(), tr.NextStamp()
	tr.Expect(1, 3, s3, t0)
	tr.Expect(1, 3, s4, t0.Add(time.Second))
	tr.Cancel(1, 3, s3)
	tr.Deliver(1, 3, 0, t0.Add(time.Second+time.Millisecond))
	if st := tr.Stats(2); st.Delivery.Count() != 1 || st.Delivery.Max() != time.Millisecond || st.Missing != 0 {
		t.Errorf("phase 2: %d samples, max %v, %d missing; want 1, 1ms, 0", st.Delivery.Count(), st.Delivery.Max(), st.Missing)
	}
}

func TestHandlerCountsAndMatches(t *testing.T) {
	p := testPopulation(t, PopulationConfig{RunID: "r", Users: 5, ClientsPerUser: 1, Channels: 5, ChannelsPerUser: 1, ChannelsPerCall: 1})
	tr := NewTracker([]int32{1, 1, 1, 1, 1})
	tr.Expect(3, 1, 9, time.Unix(0, 0))
	h := tr.Handler(p)
	h(Event{Kind: EventEntering, Channel: "/demo/load/3", At: time.Unix(0, int64(time.Millisecond)),
		Entering: []EnteringUser{{ID: "r-u1", AvatarTemplate: AvatarWithStamp(9)}, {ID: "someone-else"}}})
	h(Event{Kind: EventLeaving, Channel: "/demo/load/3"})
	st := tr.Stats(0)
	if st.Delivery.Count() != 1 || st.Unmatched != 1 || st.Messages.Entering != 1 || st.Messages.Leaving != 1 {
		t.Errorf("stats %+v", st)
	}
}

func TestParseMemory(t *testing.T) {
	text := `# HELP go_memstats_heap_inuse_bytes Number of heap bytes that are in use.
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 1.2345e+07
go_memstats_heap_inuse_bytes_total_not_this 5
process_resident_memory_bytes 4.2e+07
process_cpu_seconds_total 12.5
`
	m, err := ParseMemory(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if m.HeapInuse != 12345000 || m.RSS != 42000000 || m.CPU != 12.5 {
		t.Errorf("memory %+v", m)
	}
	if _, err := ParseMemory(strings.NewReader("up 1\n")); err == nil {
		t.Error("metrics without memory gauges accepted")
	}
}

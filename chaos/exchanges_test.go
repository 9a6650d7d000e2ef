package chaos

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestExchangesWindowSplitsTheOutage(t *testing.T) {
	t0 := time.Unix(1_700_000_000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	var x Exchanges
	add := func(node string, start, latency float64, status int) {
		x.Add(Exchange{Node: node, Path: "/presence/update", Start: at(start),
			Latency: time.Duration(latency * float64(time.Second)), Status: status, Err: map[bool]string{true: "refused"}[status == 0]})
	}
	add("a", -1, 0.001, 503) // before the window
	for i := range 98 {
		add("a", 1+float64(i)/100, 0.002, 200)
	}
	add("b", 1.5, 2.6, 200) // held across the view change
	add("b", 2, 0.01, 503)
	add("c", 1.2, 0.001, 0) // the node that is out
	add("c", 1.3, 0.001, 0)
	add("c", 0.9, 0.2, 0)    // under way when c went out
	add("c", 9, 0.003, 200)  // back: live again
	add("a", 10, 0.001, 200) // after the window
	x.AddStreamEnd(StreamEnd{Node: "c", At: at(1.1)})
	x.AddStreamEnd(StreamEnd{Node: "b", At: at(3), Err: "EOF"})

	out := Outage{Node: "c", Start: at(1), End: at(5)}
	st := x.Window(at(1), at(10), out)
	if st.Live.Requests != 101 || st.Live.NonOK != 1 || st.Live.Unanswered != 0 {
		t.Errorf("live: %+v", st.Live)
	}
	if !reflect.DeepEqual(st.Live.Statuses, map[int]int{200: 100, 503: 1}) {
		t.Errorf("live statuses %v", st.Live.Statuses)
	}
	if st.Live.P50 != 2*time.Millisecond || st.Live.P99 != 10*time.Millisecond || st.Live.Max != 2600*time.Millisecond {
		t.Errorf("live latency p50 %v p99 %v max %v", st.Live.P50, st.Live.P99, st.Live.Max)
	}
	if len(st.Live.Examples) != 1 || !strings.Contains(st.Live.Examples[0], "HTTP 503") {
		t.Errorf("live examples %q", st.Live.Examples)
	}
	if st.Down.Requests != 2 || st.Down.Unanswered != 2 || st.Down.Failed() != 2 { // the one begun before from is out of the window
		t.Errorf("down: %+v", st.Down)
	}
	if st.LiveStreamEnds != 1 || st.DownStreamEnds != 1 || len(st.StreamEndExamples) != 1 {
		t.Errorf("stream ends: live %d down %d %q", st.LiveStreamEnds, st.DownStreamEnds, st.StreamEndExamples)
	}

	rounds := []Round{{Name: "round 1", Out: out, Detected: 2 * time.Second}, {Name: "round 2", Out: Outage{Node: "a", Start: at(9.5)}}}
	reps := x.Report(rounds, at(20))
	if reps[0].Live.Requests != 101 || reps[1].Live.Requests != 0 || reps[1].Down.Requests != 1 {
		t.Errorf("rounds: %+v / %+v", reps[0].WindowStats, reps[1].WindowStats)
	}
	if line := reps[0].String(); !strings.Contains(line, "detected after 2s") || !strings.Contains(line, "p99 within detection + 1 s") {
		t.Errorf("round line %q", line)
	}
	total := x.Total(rounds, at(20))
	if total.Live.Requests != 101 || total.Down.Requests != 3 || total.LiveStreamEnds != 1 || total.Detected != 2*time.Second {
		t.Errorf("total %+v", total)
	}
	// From before the outage, the exchange under way when c went out is c's.
	if st := x.Window(at(0), at(10), out); st.Down.Requests != 3 || st.Live.Requests != 101 {
		t.Errorf("window with the exchange under way: live %+v down %+v", st.Live, st.Down)
	}
	if total.Live.Requests != 101 {
		t.Errorf("total %+v", total)
	}
}

package chaos

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"
)

// Exchange is one HTTP request a scenario's clients sent to a node (one
// attempt of a Pool call, or a stream's connection), and what came of it.
type Exchange struct {
	Node    string        // the node's base URL
	Path    string        // without the query
	Start   time.Time     // when it was sent
	Latency time.Duration // until the answer was read, or the attempt failed
	Status  int           // the answer's status; 0 when none came (refused, reset, timed out)
	Err     string        // why no answer came
}

// StreamEnd is a subscription stream a node ended (not the client).
type StreamEnd struct {
	Node string
	At   time.Time
	Err  string
}

// Exchanges records the exchanges of a scenario, for the report of what
// clients saw while a node was down (Window). Safe for concurrent use; a
// nil *Exchanges records nothing.
type Exchanges struct {
	mu   sync.Mutex
	list []Exchange
	ends []StreamEnd
}

// Add records x.
func (r *Exchanges) Add(x Exchange) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.list = append(r.list, x)
	r.mu.Unlock()
}

// AddStreamEnd records a stream a node ended.
func (r *Exchanges) AddStreamEnd(e StreamEnd) {
	if r == nil {
		return
	}
	r.mu.Lock()
	r.ends = append(r.ends, e)
	r.mu.Unlock()
}

// Outage is a node that could not serve from Start until End (killed,
// paused or cut off, until it was back and ready); a zero End lasts to the
// end of the window.
type Outage struct {
	Node       string // base URL
	Start, End time.Time
}

// covers reports whether an exchange with node from start to end met the
// outage: a request under way when the node was killed met it too.
func (o Outage) covers(node string, start, end time.Time) bool {
	return node == o.Node && !end.Before(o.Start) && (o.End.IsZero() || start.Before(o.End))
}

// anyCovers reports whether one of outs covers the exchange.
func anyCovers(outs []Outage, node string, start, end time.Time) bool {
	for _, o := range outs {
		if o.covers(node, start, end) {
			return true
		}
	}
	return false
}

// Tally adds up exchanges.
type Tally struct {
	Requests   int
	NonOK      int // answered with a status outside 2xx
	Unanswered int // no answer: refused, reset, timed out
	Statuses   map[int]int
	// P50, P99 and Max are latencies of the answered exchanges.
	P50, P99, Max time.Duration
	Examples      []string // the first non-2xx or unanswered exchanges
}

// Failed is the number of exchanges without a 2xx answer.
func (t Tally) Failed() int { return t.NonOK + t.Unanswered }

func (t Tally) String() string {
	s := fmt.Sprintf("%d requests, %d non-2xx, %d unanswered", t.Requests, t.NonOK, t.Unanswered)
	if t.Requests-t.Unanswered > 0 {
		s += fmt.Sprintf("; latency p50 %v, p99 %v, max %v", round(t.P50), round(t.P99), round(t.Max))
	}
	if len(t.Statuses) > 0 && t.NonOK > 0 {
		s += fmt.Sprintf("; statuses %v", t.Statuses)
	}
	return s
}

// round shortens a latency for a report.
func round(d time.Duration) time.Duration {
	if d >= 100*time.Millisecond {
		return d.Round(10 * time.Millisecond)
	}
	return d.Round(100 * time.Microsecond)
}

// WindowStats is what clients saw in a time window: Live, the exchanges
// with nodes that were up; Down, those with the node of the outage while
// it was out; and the streams nodes ended.
type WindowStats struct {
	Live, Down                     Tally
	LiveStreamEnds, DownStreamEnds int
	StreamEndExamples              []string
}

// maxTallyExamples bounds the examples of a Tally.
const maxTallyExamples = 5

// Window adds up the exchanges begun in [from, to): those that met one of
// outs apart from the others.
func (r *Exchanges) Window(from, to time.Time, outs ...Outage) WindowStats {
	r.mu.Lock()
	list := slices.Clone(r.list)
	ends := slices.Clone(r.ends)
	r.mu.Unlock()
	var live, down []Exchange
	for _, x := range list {
		if x.Start.Before(from) || !x.Start.Before(to) {
			continue
		}
		if anyCovers(outs, x.Node, x.Start, x.Start.Add(x.Latency)) {
			down = append(down, x)
		} else {
			live = append(live, x)
		}
	}
	st := WindowStats{Live: tally(live), Down: tally(down)}
	for _, e := range ends {
		switch {
		case e.At.Before(from) || !e.At.Before(to):
		case anyCovers(outs, e.Node, e.At, e.At):
			st.DownStreamEnds++
		default:
			st.LiveStreamEnds++
			if len(st.StreamEndExamples) < maxTallyExamples {
				st.StreamEndExamples = append(st.StreamEndExamples,
					fmt.Sprintf("%s ended a stream at %s: %s", e.Node, e.At.Format("15:04:05.000"), e.Err))
			}
		}
	}
	return st
}

// tally adds up list.
func tally(list []Exchange) Tally {
	t := Tally{Requests: len(list), Statuses: map[int]int{}}
	var lat []time.Duration
	for _, x := range list {
		ok := x.Status >= 200 && x.Status < 300
		switch {
		case x.Status == 0:
			t.Unanswered++
		case !ok:
			t.NonOK++
		}
		if x.Status != 0 {
			t.Statuses[x.Status]++
			lat = append(lat, x.Latency)
		}
		if !ok && len(t.Examples) < maxTallyExamples {
			what := x.Err
			if x.Status != 0 {
				what = fmt.Sprintf("HTTP %d", x.Status)
			}
			t.Examples = append(t.Examples, fmt.Sprintf("%s %s at %s after %v: %s",
				x.Node, x.Path, x.Start.Format("15:04:05.000"), round(x.Latency), what))
		}
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		t.P50, t.P99, t.Max = quantile(lat, 0.50), quantile(lat, 0.99), lat[len(lat)-1]
	}
	return t
}

// quantile returns the q-quantile of sorted (nearest rank).
func quantile(sorted []time.Duration, q float64) time.Duration {
	i := int(float64(len(sorted))*q+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// Round is one fault of a scenario: the outage and how long the other
// nodes took to declare the node gone (0 when not measured).
type Round struct {
	Name     string
	Out      Outage
	Detected time.Duration
}

// RoundReport is a round with what clients saw from its fault until the
// next round's (or the end).
type RoundReport struct {
	Round
	WindowStats
}

// String is the round's line of the test log.
func (r RoundReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: ", r.Name)
	if r.Detected > 0 {
		fmt.Fprintf(&b, "detected after %v; ", round(r.Detected))
	}
	fmt.Fprintf(&b, "live nodes: %s", r.Live)
	if r.Detected > 0 && r.Live.P99 > 0 {
		fmt.Fprintf(&b, " (p99 %s detection + 1 s)", map[bool]string{true: "within", false: "beyond"}[r.Live.P99 <= r.Detected+time.Second])
	}
	fmt.Fprintf(&b, "; streams ended by live nodes %d", r.LiveStreamEnds)
	fmt.Fprintf(&b, "; the node while out: %s", r.Down)
	return b.String()
}

// Report adds up the exchanges of every round, each from its fault until
// the next one's, the last until end. An exchange with a node that met any
// round's outage (one under way when the next round's fault came too)
// counts as the node's while out.
func (r *Exchanges) Report(rounds []Round, end time.Time) []RoundReport {
	outs := outages(rounds)
	out := make([]RoundReport, len(rounds))
	for i, rd := range rounds {
		to := end
		if i+1 < len(rounds) {
			to = rounds[i+1].Out.Start
		}
		out[i] = RoundReport{Round: rd, WindowStats: r.Window(rd.Out.Start, to, outs...)}
	}
	return out
}

func outages(rounds []Round) []Outage {
	out := make([]Outage, len(rounds))
	for i, rd := range rounds {
		out[i] = rd.Out
	}
	return out
}

// Total adds up the reports of every round: counts summed, latencies of
// all the rounds' exchanges together, the longest detection time.
func (r *Exchanges) Total(rounds []Round, end time.Time) RoundReport {
	if len(rounds) == 0 {
		return RoundReport{}
	}
	total := RoundReport{Round: Round{Name: "all rounds"}, WindowStats: r.Window(rounds[0].Out.Start, end, outages(rounds)...)}
	for _, rd := range rounds {
		total.Detected = max(total.Detected, rd.Detected)
	}
	return total
}

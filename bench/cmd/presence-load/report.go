package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presencehq/presence/bench/chart"
	"github.com/presencehq/presence/bench/hist"
	"github.com/presencehq/presence/bench/load"
)

// report is everything one invocation measured; it is also the --json
// output.
type report struct {
	RunID            string         `json:"run_id"`
	Setup            setup          `json:"setup"`
	Baseline         *phase         `json:"baseline,omitempty"`
	Warmup           *phase         `json:"warmup,omitempty"`
	Presence         []*phase       `json:"presence,omitempty"`
	Memory           []*nodeMemory  `json:"memory,omitempty"`
	WatchedChannels  int            `json:"watched_channels"`
	StreamDrops      uint64         `json:"stream_drops"`
	Redis            []*phase       `json:"redis,omitempty"`
	RedisExpiryCalls uint64         `json:"redis_expiry_calls,omitempty"`
	Plot             string         `json:"plot,omitempty"`
	Owners           map[string]int `json:"owners,omitempty"` // channels per node (routes owner, other)
	Notes            []string       `json:"notes,omitempty"`
	opts             *options
}

type setup struct {
	URLs               []string  `json:"urls"`
	Users              int       `json:"users"`
	ClientsPerUser     int       `json:"clients_per_user"`
	Channels           int       `json:"channels"`
	Prefix             string    `json:"prefix"`
	ChannelsPerUser    int       `json:"channels_per_user"`
	ChannelsPerCall    int       `json:"channels_per_call"`
	Subscribers        int       `json:"subscribers"`
	SubscriberChannels int       `json:"subscriber_channels"`
	Mix                load.Mix  `json:"mix"`
	DurationS          float64   `json:"duration_s"`
	Rates              []float64 `json:"offered_rates"`
	Routes             []string  `json:"routes"`
	Rounds             int       `json:"rounds"`
	Concurrency        int       `json:"concurrency"`
	Connections        int       `json:"connections"`
	Redis              string    `json:"redis,omitempty"`
	RedisPipeline      int       `json:"redis_pipeline,omitempty"`
}

type nodeMemory struct {
	URL    string       `json:"url"`
	Before *load.Memory `json:"before,omitempty"`
	After  *load.Memory `json:"after,omitempty"`
	Err    string       `json:"error,omitempty"`
}

type latency struct {
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	P999 float64 `json:"p99_9"`
	Max  float64 `json:"max"`
	Mean float64 `json:"mean"`
}

type kindStats struct {
	Count   uint64  `json:"count"`
	Latency latency `json:"latency_ms"`
}

type delivery struct {
	Samples   uint64             `json:"samples"`
	Latency   latency            `json:"latency_ms"`
	Missing   int                `json:"missing"`
	Unmatched uint64             `json:"unmatched"`
	Messages  load.MessageCounts `json:"messages"`
}

// cpuUse is the CPU time per request of a run, in microseconds: each node's
// process (from its /metrics), their sum, and the load tool's process.
type cpuUse struct {
	Nodes      []float64 `json:"nodes"`
	NodesTotal float64   `json:"nodes_total"`
	Tool       float64   `json:"load_tool"`
}

type phase struct {
	Target          string               `json:"target"`
	OfferedRate     float64              `json:"offered_rate"`
	Pipeline        int                  `json:"pipeline,omitempty"`
	ElapsedS        float64              `json:"elapsed_s"`
	Requests        uint64               `json:"requests"`
	OK              uint64               `json:"ok"`
	Offered         uint64               `json:"offered,omitempty"`
	Unsent          uint64               `json:"unsent,omitempty"`
	Idle            uint64               `json:"idle_picks,omitempty"`
	Entering        uint64               `json:"entering_calls"`
	Throughput      float64              `json:"throughput"`
	OKThroughput    float64              `json:"ok_throughput"`
	Latency         latency              `json:"latency_ms"`
	ByKind          map[string]kindStats `json:"by_kind"`
	Codes           map[string]uint64    `json:"codes"`
	Delivery        *delivery            `json:"delivery,omitempty"`
	RatioToBaseline float64              `json:"ratio_to_baseline,omitempty"`
	RatioToPresence float64              `json:"ratio_to_presence,omitempty"`
	Route           string               `json:"route,omitempty"`
	Round           int                  `json:"round,omitempty"`
	RatioToRoute    float64              `json:"ratio_to_first_route,omitempty"` // over the first route's run of the same round and rate
	CPU             *cpuUse              `json:"cpu_us_per_request,omitempty"`
	p50, p99        time.Duration
}

func newReport(o *options) *report {
	return &report{RunID: o.runID, opts: o, Setup: setup{
		URLs: o.urls, Users: o.users, ClientsPerUser: o.clientsPerUser, Channels: o.channels,
		Prefix: o.prefix, ChannelsPerUser: o.channelsPerUser, ChannelsPerCall: o.channelsPerCall,
		Subscribers: o.subscribers, SubscriberChannels: o.subscriberChans, Mix: o.mix,
		DurationS: o.duration.Seconds(), Rates: o.rates(), Concurrency: o.concurrency,
		Connections: o.connections, Redis: o.redis, RedisPipeline: o.redisPipeline,
		Routes: routeNames(o.routes), Rounds: o.rounds,
	}}
}

func (r *report) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func summarize(h *hist.Histogram) latency {
	return latency{P50: ms(h.Quantile(0.5)), P90: ms(h.Quantile(0.9)), P99: ms(h.Quantile(0.99)),
		P999: ms(h.Quantile(0.999)), Max: ms(h.Max()), Mean: ms(h.Mean())}
}

func newPhase(target string, rate float64, res *load.RunResult, st *load.PhaseStats) *phase {
	p := &phase{
		Target: target, OfferedRate: rate, ElapsedS: res.Elapsed.Seconds(),
		Requests: res.Requests, OK: res.OK, Offered: res.Offered, Unsent: res.Unsent, Idle: res.Idle,
		Entering: res.Entering, Throughput: res.Throughput(), OKThroughput: res.OKThroughput(),
		Latency: summarize(&res.Latency), ByKind: map[string]kindStats{}, Codes: res.Codes,
		p50: res.Latency.Quantile(0.5), p99: res.Latency.Quantile(0.99),
	}
	for k := range res.Kinds {
		if res.Kinds[k] > 0 {
			p.ByKind[load.Kind(k).String()] = kindStats{Count: res.Kinds[k], Latency: summarize(&res.ByKind[k])}
		}
	}
	if st != nil {
		p.Delivery = &delivery{Samples: st.Delivery.Count(), Latency: summarize(&st.Delivery),
			Missing: st.Missing, Unmatched: st.Unmatched, Messages: st.Messages}
	}
	return p
}

// finish computes the ratios between systems.
func (r *report) finish() {
	for _, p := range r.Presence {
		if r.Baseline != nil && r.Baseline.Throughput > 0 {
			p.RatioToBaseline = p.Throughput / r.Baseline.Throughput
		}
	}
	r.finishRoutes()
	first := r.firstRouteRuns()
	for i, p := range r.Redis {
		if len(first) == 0 {
			break
		}
		// Redis runs repeat the presence rates, once per pipeline setting.
		if ours := first[i%len(first)]; ours.Throughput > 0 {
			p.RatioToPresence = p.Throughput / ours.Throughput
		}
	}
}

// finishRoutes compares each run with the first route's run of the same
// round and rate, which ran just before it.
func (r *report) finishRoutes() {
	first := r.Setup.Routes[0]
	for _, p := range r.Presence {
		if p.Route == first {
			continue
		}
		for _, q := range r.Presence {
			if q.Route == first && q.Round == p.Round && q.OfferedRate == p.OfferedRate && q.Throughput > 0 {
				p.RatioToRoute = p.Throughput / q.Throughput
			}
		}
	}
}

// firstRouteRuns are the presence runs of the first route in the first
// round: one per rate, what the Redis runs are compared with.
func (r *report) firstRouteRuns() []*phase {
	var out []*phase
	for _, p := range r.Presence {
		if p.Route == r.Setup.Routes[0] && p.Round == 1 {
			out = append(out, p)
		}
	}
	return out
}

// byRoute groups the presence runs by route, in --route order.
func (r *report) byRoute() [][]*phase {
	var out [][]*phase
	for _, name := range r.Setup.Routes {
		var group []*phase
		for _, p := range r.Presence {
			if p.Route == name {
				group = append(group, p)
			}
		}
		out = append(out, group)
	}
	return out
}

func routeNames(rs []load.Route) []string {
	out := make([]string, len(rs))
	for i, r := range rs {
		out[i] = r.String()
	}
	return out
}

func (r *report) writeJSON(w io.Writer) error {
	r.finish()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func (r *report) writeText(w io.Writer) {
	r.finish()
	o := r.opts
	fmt.Fprintf(w, "presence-load %s\n", r.RunID)
	fmt.Fprintf(w, "  %s users x %d clients per user, %s channels %s<i>, %d channels per user, %d per heartbeat call\n",
		commas(float64(o.users)), o.clientsPerUser, commas(float64(o.channels)), o.prefix, o.channelsPerUser, o.channelsPerCall)
	fmt.Fprintf(w, "  mix heartbeat/enter/leave %.2f/%.2f/%.2f, %d workers, %d connections per node, %s per run\n",
		o.mix[0], o.mix[1], o.mix[2], o.concurrency, o.connections, o.duration)
	if len(o.urls) > 0 {
		fmt.Fprintf(w, "  nodes: %s; %d subscribers x %d channels (%d of %d channels watched)\n",
			strings.Join(o.urls, ", "), o.subscribers, min(o.subscriberChans, o.channels), r.WatchedChannels, o.channels)
	}
	if b := r.Baseline; b != nil {
		fmt.Fprintf(w, "\nbaseline, %s, closed loop: %s req/s  %s\n", b.Target, commas(b.Throughput), latencyLine(b.Latency))
	}
	if p := r.Warmup; p != nil {
		fmt.Fprintf(w, "\nwarmup (each client enters its channels in one call): %s calls in %.1fs = %s req/s  %s\n",
			commas(float64(p.Requests)), p.ElapsedS, commas(p.Throughput), latencyLine(p.Latency))
		fmt.Fprintf(w, "  status: %s\n", codesLine(p.Codes))
		writeDelivery(w, p.Delivery)
	}
	for _, p := range r.Presence {
		writePhase(w, p, r.Baseline, r.Setup.Routes[0])
	}
	if len(r.Setup.Rates) > 1 {
		for _, group := range r.byRoute() {
			if len(group) > 0 {
				writeSweepTable(w, sweepName(group[0]), group)
			}
		}
	}
	r.writeRouteSummary(w)
	if len(r.Owners) > 0 {
		fmt.Fprintf(w, "\nchannels owned per node: %s\n", ownersLine(r.Owners))
	}
	writeMemory(w, r.Memory)
	if r.StreamDrops > 0 {
		fmt.Fprintf(w, "  subscriber streams dropped and reconnected: %d\n", r.StreamDrops)
	}
	for _, p := range r.Redis {
		writeRedis(w, p)
	}
	if len(r.Setup.Rates) > 1 {
		for _, group := range byPipeline(r.Redis) {
			writeSweepTable(w, redisName(group[0].Pipeline), group)
		}
	}
	if r.Plot != "" {
		fmt.Fprintf(w, "\nplot: %s\n", r.Plot)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
}

// writeRouteSummary prints each route's throughput over the first route's,
// round by round and over all rounds, and the CPU time per request of each.
func (r *report) writeRouteSummary(w io.Writer) {
	routes := r.Setup.Routes
	if len(routes) < 2 || len(r.Presence) == 0 {
		return
	}
	groups := r.byRoute()
	fmt.Fprintf(w, "\nroutes compared with route %s (same round, same rate):\n", routes[0])
	for i := 1; i < len(routes); i++ {
		ratios := make([]string, len(groups[i]))
		for j, p := range groups[i] {
			ratios[j] = strconv.FormatFloat(p.RatioToRoute, 'f', 2, 64)
		}
		mine, base := meanThroughput(groups[i]), meanThroughput(groups[0])
		overall := 0.0
		if base > 0 {
			overall = mine / base
		}
		fmt.Fprintf(w, "  %s / %s: %s; mean %s / %s req/s = %.2f\n", routes[i], routes[0], strings.Join(ratios, ", "),
			commas(mine), commas(base), overall)
	}
	for i, name := range routes {
		if nodes, tool, ok := meanCPU(groups[i]); ok {
			fmt.Fprintf(w, "  route %s: CPU per request, mean of the runs: nodes %.1f µs, load tool %.1f µs\n", name, nodes, tool)
		}
	}
}

func meanThroughput(ps []*phase) float64 {
	if len(ps) == 0 {
		return 0
	}
	var sum float64
	for _, p := range ps {
		sum += p.Throughput
	}
	return sum / float64(len(ps))
}

// meanCPU averages the CPU per request of runs that measured it.
func meanCPU(ps []*phase) (nodes, tool float64, ok bool) {
	n := 0
	for _, p := range ps {
		if p.CPU != nil {
			nodes, tool, n = nodes+p.CPU.NodesTotal, tool+p.CPU.Tool, n+1
		}
	}
	if n == 0 {
		return 0, 0, false
	}
	return nodes / float64(n), tool / float64(n), true
}

func sweepName(p *phase) string {
	if p.Route == "" || p.Target == "presence /presence/update" {
		return "presence"
	}
	return "presence, route " + p.Route
}

func ownersLine(owners map[string]int) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(owners)) {
		parts = append(parts, n+" "+commas(float64(owners[n])))
	}
	return strings.Join(parts, ", ")
}

func writePhase(w io.Writer, p *phase, base *phase, firstRoute string) {
	mode := "closed loop"
	if p.OfferedRate > 0 {
		mode = "offered " + commas(p.OfferedRate) + " req/s"
	}
	fmt.Fprintf(w, "\n%s (%s): %s req/s", p.Target, mode, commas(p.Throughput))
	if base != nil && p.RatioToBaseline > 0 {
		fmt.Fprintf(w, " = %.2f x trivial handler %s req/s", p.RatioToBaseline, commas(base.Throughput))
	}
	if p.RatioToRoute > 0 {
		fmt.Fprintf(w, " = %.2f x route %s (round %d)", p.RatioToRoute, firstRoute, p.Round)
	}
	fmt.Fprintf(w, "\n  requests %s (ok %s = %s/s)  %s\n", commas(float64(p.Requests)), commas(float64(p.OK)), commas(p.OKThroughput), latencyLine(p.Latency))
	for _, k := range []string{"heartbeat", "enter", "leave"} {
		if ks, ok := p.ByKind[k]; ok {
			fmt.Fprintf(w, "  %-9s %10s  %s\n", k, commas(float64(ks.Count)), latencyLine(ks.Latency))
		}
	}
	if p.Unsent > 0 {
		fmt.Fprintf(w, "  offered %s, not started before the end (tool saturated): %s\n", commas(float64(p.Offered)), commas(float64(p.Unsent)))
	}
	fmt.Fprintf(w, "  status: %s\n", codesLine(p.Codes))
	writeCPU(w, p.CPU)
	writeDelivery(w, p.Delivery)
}

func writeCPU(w io.Writer, u *cpuUse) {
	if u == nil {
		return
	}
	nodes := make([]string, len(u.Nodes))
	for i, n := range u.Nodes {
		nodes[i] = strconv.FormatFloat(n, 'f', 1, 64)
	}
	fmt.Fprintf(w, "  CPU per request: nodes %.1f µs (%s), load tool %.1f µs\n", u.NodesTotal, strings.Join(nodes, " + "), u.Tool)
}

func writeDelivery(w io.Writer, d *delivery) {
	if d == nil || *d == (delivery{}) {
		return // nothing subscribed, nothing to say
	}
	fmt.Fprintf(w, "  delivery enter -> subscriber: %s samples  %s; missing %d, unmatched %d\n",
		commas(float64(d.Samples)), latencyLine(d.Latency), d.Missing, d.Unmatched)
	m := d.Messages
	fmt.Fprintf(w, "  stream events: entering_users %s, leaving_user_ids %s, resync %d, unavailable %d\n",
		commas(float64(m.Entering)), commas(float64(m.Leaving)), m.Resync, m.Unavailable)
}

func writeRedis(w io.Writer, p *phase) {
	mode := "closed loop"
	if p.OfferedRate > 0 {
		mode = "offered " + commas(p.OfferedRate) + " ops/s"
	}
	fmt.Fprintf(w, "\n%s (%s): %s ops/s", p.Target, mode, commas(p.Throughput))
	if p.RatioToPresence > 0 {
		fmt.Fprintf(w, " = %.2f x presence", p.RatioToPresence)
	}
	fmt.Fprintf(w, "\n  operations %s  %s\n  status: %s\n", commas(float64(p.Requests)), latencyLine(p.Latency), codesLine(p.Codes))
}

func writeSweepTable(w io.Writer, name string, ps []*phase) {
	fmt.Fprintf(w, "\n%s sweep:\n  %10s %10s %10s %9s %9s %9s %11s %11s %8s\n", name,
		"offered/s", "achieved/s", "ok/s", "p50", "p99", "p99.9", "deliv p50", "deliv p99", "errors")
	for _, p := range ps {
		dp50, dp99 := "-", "-"
		if p.Delivery != nil && p.Delivery.Samples > 0 {
			dp50, dp99 = fmtMs(p.Delivery.Latency.P50), fmtMs(p.Delivery.Latency.P99)
		}
		fmt.Fprintf(w, "  %10s %10s %10s %9s %9s %9s %11s %11s %8s\n", commas(p.OfferedRate), commas(p.Throughput),
			commas(p.OKThroughput), fmtMs(p.Latency.P50), fmtMs(p.Latency.P99), fmtMs(p.Latency.P999),
			dp50, dp99, commas(float64(p.Requests-p.OK)))
	}
}

func writeMemory(w io.Writer, mem []*nodeMemory) {
	if len(mem) == 0 {
		return
	}
	fmt.Fprintf(w, "\nserver memory (from /metrics, before warmup -> after the last run):\n")
	for _, m := range mem {
		if m.Before == nil || m.After == nil {
			fmt.Fprintf(w, "  %s: unavailable (%s)\n", m.URL, m.Err)
			continue
		}
		fmt.Fprintf(w, "  %s: heap in use %s -> %s, RSS %s -> %s\n", m.URL,
			mib(m.Before.HeapInuse), mib(m.After.HeapInuse), mib(m.Before.RSS), mib(m.After.RSS))
	}
}

func latencyLine(l latency) string {
	return fmt.Sprintf("p50 %s  p99 %s  p99.9 %s  max %s", fmtMs(l.P50), fmtMs(l.P99), fmtMs(l.P999), fmtMs(l.Max))
}

func codesLine(codes map[string]uint64) string {
	if len(codes) == 0 {
		return "none"
	}
	keys := slices.Sorted(maps.Keys(codes))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " x " + commas(float64(codes[k]))
	}
	return strings.Join(parts, ", ")
}

// fmtMs prints milliseconds with about three significant digits.
func fmtMs(v float64) string {
	switch {
	case v >= 1000:
		return strconv.FormatFloat(v/1000, 'f', 2, 64) + "s"
	case v >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64) + "ms"
	case v >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64) + "ms"
	case v >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(v, 'f', 3, 64) + "ms"
}

func mib(b float64) string { return strconv.FormatFloat(b/(1<<20), 'f', 1, 64) + " MiB" }

// commas rounds v and groups its digits by thousands.
func commas(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// writePlot draws the sweep of every system that ran one.
func (r *report) writePlot(path string) error {
	var series []chart.Series
	add := func(name string, ps []*phase) {
		s := chart.Series{Name: name}
		for _, p := range ps {
			s.Points = append(s.Points, chart.Point{Offered: p.OfferedRate, Achieved: p.Throughput, P50: p.p50, P99: p.p99})
		}
		if len(s.Points) > 0 {
			series = append(series, s)
		}
	}
	for _, group := range r.byRoute() {
		if len(group) > 0 {
			add(sweepName(group[0]), group)
		}
	}
	for _, group := range byPipeline(r.Redis) {
		add(redisName(group[0].Pipeline), group)
	}
	if err := chart.WriteSweep(path, "presence-load sweep ("+r.RunID+")", series); err != nil {
		return err
	}
	r.Plot = path
	return nil
}

// byPipeline groups Redis runs by pipeline setting, in increasing order.
func byPipeline(ps []*phase) [][]*phase {
	groups := map[int][]*phase{}
	for _, p := range ps {
		groups[p.Pipeline] = append(groups[p.Pipeline], p)
	}
	var out [][]*phase
	for _, pl := range slices.Sorted(maps.Keys(groups)) {
		out = append(out, groups[pl])
	}
	return out
}

func redisName(pipeline int) string {
	if pipeline > 1 {
		return "redis pipeline " + strconv.Itoa(pipeline)
	}
	return "redis"
}

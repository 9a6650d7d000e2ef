package wrk

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets of issue #17 for heartbeats over HTTP.
const (
	// TargetRateRatio: the node's rate at least this times the bare handler's.
	TargetRateRatio = 0.9
	// TargetP99Ratio: the node's p99 at most this times the bare handler's.
	TargetP99Ratio = 1.5
)

// ReportConfig names the servers of a report.
type ReportConfig struct {
	// Baseline is the bare handler's name, Subject the node's; ratios are
	// Subject over Baseline and over each other server.
	Baseline, Subject string
}

// serverStats are a server's measured runs.
type serverStats struct {
	name string
	runs map[int]Run // by round
}

// Report writes the measured runs (round > 0) in the order given, each
// server's means, and the ratios of the subject to the others, per round
// and of the means, against the targets.
func Report(w io.Writer, runs []Run, cfg ReportConfig) error {
	var servers []*serverStats
	byName := map[string]*serverStats{}
	var rounds []int
	for _, r := range runs {
		if r.Round <= 0 {
			continue
		}
		s := byName[r.Server]
		if s == nil {
			s = &serverStats{name: r.Server, runs: map[int]Run{}}
			byName[r.Server] = s
			servers = append(servers, s)
		}
		if _, dup := s.runs[r.Round]; dup {
			return fmt.Errorf("wrk: two runs of %s in round %d", r.Server, r.Round)
		}
		s.runs[r.Round] = r
		if !slices.Contains(rounds, r.Round) {
			rounds = append(rounds, r.Round)
		}
	}
	if len(servers) == 0 {
		return fmt.Errorf("wrk: no measured runs")
	}
	slices.Sort(rounds)

	fmt.Fprintln(w, "runs, in the order they ran:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tserver\tload 1m\treq/s\tp50\tp90\tp99\tp99.9\tmax\tfailed\tserver CPU/req\twrk CPU/req\t")
	for _, r := range runs {
		if r.Round <= 0 {
			continue
		}
		fmt.Fprintf(tw, "%d\t%s\t%.2f\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t\n", r.Round, r.Server, r.LoadAvg[0],
			group(r.Rate()), ms(r.P50), ms(r.P90), ms(r.P99), ms(r.P999), ms(r.Max), r.Errors(),
			micros(r.CPUPerRequest()), micros(r.ClientCPUPerRequest()))
	}
	_ = tw.Flush()

	fmt.Fprintln(w, "\nper server, over the rounds:")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "server\tmean req/s\tmin–max req/s\tmean p99\tmin–max p99\tmean CPU/req\tmean wrk CPU/req\t")
	for _, s := range servers {
		rates, p99s := s.series(rounds)
		fmt.Fprintf(tw, "%s\t%s\t%s–%s\t%s\t%s–%s\t%s\t%s\t\n", s.name, group(mean(rates)), group(slices.Min(rates)), group(slices.Max(rates)),
			msf(mean(p99s)), msf(slices.Min(p99s)), msf(slices.Max(p99s)),
			microsf(mean(s.perRequest(rounds, Run.CPUPerRequest))), microsf(mean(s.perRequest(rounds, Run.ClientCPUPerRequest))))
	}
	_ = tw.Flush()

	subject := byName[cfg.Subject]
	if subject == nil {
		return nil
	}
	fmt.Fprintf(w, "\nratios of %s, per round and of the means:\n", cfg.Subject)
	for _, other := range servers {
		if other == subject {
			continue
		}
		reportRatios(w, subject, other, rounds, other.name == cfg.Baseline)
	}
	if baseline := byName[cfg.Baseline]; baseline != nil && baseline != subject {
		reportCPUBound(w, subject, baseline, rounds)
	}
	var failed []string
	for _, s := range servers {
		for _, round := range rounds {
			if r, ok := s.runs[round]; ok && r.Errors() > 0 {
				failed = append(failed, fmt.Sprintf("%s round %d: %d non-2xx, %d connect, %d read, %d write errors, %d timeouts",
					s.name, round, r.Non2xx, r.ConnectErrors, r.ReadErrors, r.WriteErrors, r.Timeouts))
			}
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nWARNING: calls failed, the rates above count them too:\n  %s\n", strings.Join(failed, "\n  "))
	}
	return nil
}

func reportRatios(w io.Writer, subject, other *serverStats, rounds []int, baseline bool) {
	var rateRatios, p99Ratios []string
	for _, round := range rounds {
		a, okA := subject.runs[round]
		b, okB := other.runs[round]
		if !okA || !okB {
			continue
		}
		rateRatios = append(rateRatios, fmt.Sprintf("%.2f", a.Rate()/b.Rate()))
		p99Ratios = append(p99Ratios, fmt.Sprintf("%.2f", float64(a.P99)/float64(b.P99)))
	}
	sr, sp := subject.series(rounds)
	or, op := other.series(rounds)
	rate, p99 := mean(sr)/mean(or), mean(sp)/mean(op)
	fmt.Fprintf(w, "  %s / %s req/s: %s; means %s / %s = %.2f", subject.name, other.name, strings.Join(rateRatios, ", "),
		group(mean(sr)), group(mean(or)), rate)
	if baseline {
		fmt.Fprintf(w, " (target >= %.2f: %s)", TargetRateRatio, verdict(rate >= TargetRateRatio))
	}
	fmt.Fprintf(w, "\n  %s / %s p99:   %s; means %s / %s = %.2f", subject.name, other.name, strings.Join(p99Ratios, ", "),
		msf(mean(sp)), msf(mean(op)), p99)
	if baseline {
		fmt.Fprintf(w, " (target <= %.2f: %s)", TargetP99Ratio, verdict(p99 <= TargetP99Ratio))
	}
	fmt.Fprintln(w)
}

// reportCPUBound explains the rate ratio by CPU time when the runs have
// it: with the servers and wrk sharing the cores, a run's rate is about
// the cores over the CPU per request of server and wrk together, so the
// subject's rate ratio follows from the four means, and the target rate
// ratio from a budget of server CPU per request the subject must keep to.
func reportCPUBound(w io.Writer, subject, baseline *serverStats, rounds []int) {
	sCPU, bCPU := subject.perRequest(rounds, Run.CPUPerRequest), baseline.perRequest(rounds, Run.CPUPerRequest)
	sClient, bClient := subject.perRequest(rounds, Run.ClientCPUPerRequest), baseline.perRequest(rounds, Run.ClientCPUPerRequest)
	if len(sCPU) == 0 || len(bCPU) == 0 || len(sClient) == 0 || len(bClient) == 0 {
		return
	}
	bTotal := mean(bCPU) + mean(bClient)
	sTotal := mean(sCPU) + mean(sClient)
	budget := bTotal/TargetRateRatio - mean(sClient)
	fmt.Fprintf(w, "\nCPU per request, server + wrk (the cores are shared): %s %s + %s, %s %s + %s;\n",
		baseline.name, microsf(mean(bCPU)), microsf(mean(bClient)), subject.name, microsf(mean(sCPU)), microsf(mean(sClient)))
	fmt.Fprintf(w, "  rate ratio they predict: %.2f; for %.2fx, %s may spend at most %s per request (it spends %s)\n",
		bTotal/sTotal, TargetRateRatio, subject.name, microsf(budget), microsf(mean(sCPU)))
}

// series are the server's rates and p99s (ms) over the rounds it ran in.
func (s *serverStats) series(rounds []int) (rates, p99s []float64) {
	for _, round := range rounds {
		if r, ok := s.runs[round]; ok {
			rates = append(rates, r.Rate())
			p99s = append(p99s, float64(r.P99)/float64(time.Millisecond))
		}
	}
	return rates, p99s
}

// perRequest is a CPU time per request (µs: the server's or wrk's, as cpu
// reads it) over the rounds whose runs have it.
func (s *serverStats) perRequest(rounds []int, cpu func(Run) time.Duration) []float64 {
	var out []float64
	for _, round := range rounds {
		if c := cpu(s.runs[round]); c > 0 {
			out = append(out, float64(c)/float64(time.Microsecond))
		}
	}
	return out
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

func mean(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	var sum float64
	for _, x := range xs {
		sum += x
	}
	return sum / float64(len(xs))
}

// group formats a rate with thousands separators: 42,592.
func group(v float64) string {
	s := fmt.Sprintf("%.0f", v)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

func ms(d time.Duration) string { return msf(float64(d) / float64(time.Millisecond)) }

func msf(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 10:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

func micros(d time.Duration) string {
	if d <= 0 {
		return "-"
	}
	return microsf(float64(d) / float64(time.Microsecond))
}

func microsf(v float64) string {
	if v <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f µs", v)
}

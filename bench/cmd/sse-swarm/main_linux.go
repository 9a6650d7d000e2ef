//go:build linux

// Command sse-swarm holds many idle SSE streams open against one presence
// node with two epoll event loops and measures the node's memory per stream
// and the delivery of one enter to all of them (issue #17, target 2). Run
// it with -h for the node flags a large run needs.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/presencehq/presence/bench/load"
	"github.com/presencehq/presence/bench/swarm"
	"github.com/presencehq/presence/bench/token"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "sse-swarm:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := (&bench{o: o, out: stdout, log: stderr, client: &http.Client{Timeout: 10 * time.Second}}).run(ctx); err != nil {
		fmt.Fprintln(stderr, "sse-swarm:", err)
		return 1
	}
	return 0
}

type bench struct {
	o        *options
	out, log io.Writer
	client   *http.Client
	minter   *token.Minter
}

// memory is the node's memory at one moment; -1 where unknown.
type memory struct {
	rss, metricsRSS, heap int64
}

func (b *bench) run(ctx context.Context) error {
	o := b.o
	var err error
	if b.minter, err = token.NewMinter(o.jwtSecret, 24*time.Hour, time.Now); err != nil {
		return err
	}
	limit, err := raiseNoFile(uint64(o.streams) + 256)
	if err != nil {
		return fmt.Errorf("open-file limit: %w", err)
	}
	if limit < uint64(o.streams)+64 {
		return fmt.Errorf("open-file limit %d is too low for %d streams: raise it (ulimit -Hn, as root) or open fewer", limit, o.streams)
	}
	srcs := o.sources()
	fmt.Fprintf(b.out, "sse-swarm %s: %s streams x %d channels (%s and %d of %s %s<i>) to %s\n",
		o.runID, group(int64(o.streams)), o.channelsPerStream, o.target(), o.channelsPerStream-1, group(int64(o.channels)), o.prefix, o.url)
	fmt.Fprintf(b.out, "  from %v..%v (%s streams each), %d event loops, %d set up at once, open-file limit %s\n",
		srcs[0], srcs[len(srcs)-1], group(int64(o.perSource)), o.loops, o.window, group(int64(limit)))

	before := b.memory(ctx)
	b.printMemory("node before", before)
	sw, err := swarm.Start(swarm.Config{
		Node: o.node, Streams: o.streams, Sources: srcs, PerSource: o.perSource, Loops: o.loops, Window: o.window,
		Request: b.request,
	})
	if err != nil {
		return err
	}
	defer sw.Close()
	if err := b.open(ctx, sw); err != nil {
		return err
	}
	open := sw.Stats().Open
	after := b.memory(ctx)
	if o.settle > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(o.settle):
		}
		settled := b.memory(ctx)
		b.printMemory("node right after opening", after)
		after = settled
		b.printMemory(fmt.Sprintf("node %v later", o.settle), after)
	} else {
		b.printMemory("node after opening", after)
	}
	b.printPerStream(before, after, open)

	var users []string
	for k := range o.enters {
		user := fmt.Sprintf("%s-enter-%d", o.runID, k)
		users = append(users, user)
		if err := b.enter(ctx, sw, user, k+1); err != nil {
			return err
		}
	}
	b.printStreams(sw)
	if o.leave && len(users) > 0 {
		for _, u := range users {
			if err := b.update(ctx, u, fmt.Sprintf(`{"client_id":"swarm","leave_channels":[%q]}`, o.target()), "{}"); err != nil {
				fmt.Fprintf(b.log, "leave of %s: %v\n", u, err)
			}
		}
	}
	if o.hold > 0 {
		fmt.Fprintf(b.log, "holding the streams open for %v\n", o.hold)
		select {
		case <-ctx.Done():
		case <-time.After(o.hold):
		}
	}
	return nil
}

// request is stream i's subscribe request, signed in as its own user.
func (b *bench) request(i int) ([]byte, error) {
	id := fmt.Sprintf("%s-s%d", b.o.runID, i)
	tok, err := b.minter.Mint(token.User{ID: id, Username: id})
	if err != nil {
		return nil, err
	}
	return swarm.SubscribeRequest(b.o.host, b.o.channelsOf(i), tok), nil
}

// open waits until every stream is open or failed, printing progress
// every second.
func (b *bench) open(ctx context.Context, sw *swarm.Swarm) error {
	start := time.Now()
	lastProgress := start
	deadline := start.Add(b.o.openTimeout)
	for {
		st := sw.Stats()
		if st.Settled(b.o.streams) {
			took := time.Since(start)
			fmt.Fprintf(b.out, "opened %s streams in %.1f s (%s/s); %s failed\n", group(st.Open), took.Seconds(),
				group(int64(float64(st.Open)/took.Seconds())), group(st.Failed+st.Dropped))
			b.printFailures(sw)
			if st.Open == 0 {
				return errors.New("no stream opened")
			}
			return nil
		}
		if now := time.Now(); now.After(deadline) {
			fmt.Fprintf(b.out, "gave up after %v: %s open, %s failed of %s\n", b.o.openTimeout, group(st.Open), group(st.Failed), group(int64(b.o.streams)))
			b.printFailures(sw)
			return errors.New("streams did not open in time")
		} else if now.Sub(lastProgress) >= time.Second {
			lastProgress = now
			fmt.Fprintf(b.log, "  %s open, %s being set up, %s failed, %.0f s\n", group(st.Open),
				group(st.Started-st.Open-st.Failed-st.Dropped), group(st.Failed), now.Sub(start).Seconds())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// enter makes user enter the target channel and measures its delivery to
// every open stream.
func (b *bench) enter(ctx context.Context, sw *swarm.Swarm, user string, k int) error {
	sw.Expect(swarm.NewMatcher(b.o.target(), user))
	want := sw.Stats().Open
	cpu0, cpuErr := procCPU(b.o.pid)
	t0 := time.Now()
	if err := b.update(ctx, user, fmt.Sprintf(`{"client_id":"swarm","present_channels":[%q]}`, b.o.target()),
		fmt.Sprintf(`{%q:true}`, b.o.target())); err != nil {
		return fmt.Errorf("enter: %w", err)
	}
	deadline := t0.Add(b.o.deliverTimeout)
	for sw.Stats().Entered < want && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(2 * time.Millisecond)
	}
	cpu1, cpuErr1 := procCPU(b.o.pid)
	arrivals := sw.Arrivals()
	delays := make([]time.Duration, len(arrivals))
	for i, at := range arrivals {
		delays[i] = at.Sub(t0)
	}
	slices.Sort(delays)
	got := int64(len(delays))
	fmt.Fprintf(b.out, "enter %d (%s into %s): %s of %s open streams read entering_users", k, user, b.o.target(), group(got), group(want))
	if got > 0 {
		fmt.Fprintf(b.out, ", all of them within %s (p50 %s, p99 %s)", dur(delays[len(delays)-1]), dur(pct(delays, 50)), dur(pct(delays, 99)))
	}
	if got < want {
		fmt.Fprintf(b.out, "; %s missing after %v", group(want-got), b.o.deliverTimeout)
	}
	fmt.Fprintln(b.out)
	if b.o.pid > 0 && cpuErr == nil && cpuErr1 == nil && got > 0 {
		// /proc counts CPU time in ticks of 10 ms: below 20 of them the
		// figure per frame says nothing.
		if used := cpu1 - cpu0; used >= 200*time.Millisecond {
			fmt.Fprintf(b.out, "  node CPU meanwhile %s = %.1f µs per delivered frame\n",
				dur(used), float64(used)/float64(time.Microsecond)/float64(got))
		} else {
			fmt.Fprintf(b.out, "  node CPU meanwhile %s (too few 10 ms ticks for a figure per frame)\n", dur(used))
		}
	}
	return nil
}

// update posts an update for user and checks its answer.
func (b *bench) update(ctx context.Context, user, body, want string) error {
	tok, err := b.minter.Mint(token.User{ID: user, Username: user, Name: "Swarm " + user})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.o.url+"/presence/update", strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Content-Type", "application/json")
	resp, err := b.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || string(bytes.TrimSpace(answer)) != want {
		return fmt.Errorf("POST /presence/update: %s %s (want %s)", resp.Status, bytes.TrimSpace(answer), want)
	}
	return nil
}

func (b *bench) memory(ctx context.Context) memory {
	m := memory{rss: -1, metricsRSS: -1, heap: -1}
	if b.o.pid > 0 {
		if rss, err := procRSS(b.o.pid); err == nil {
			m.rss = rss
		} else {
			fmt.Fprintf(b.log, "node RSS: %v\n", err)
		}
	}
	if b.o.metrics {
		if mm, err := load.ScrapeMemory(ctx, b.client, b.o.url); err == nil {
			m.metricsRSS, m.heap = int64(mm.RSS), int64(mm.HeapInuse)
		} else {
			fmt.Fprintf(b.log, "node /metrics: %v\n", err)
		}
	}
	return m
}

func (b *bench) printMemory(what string, m memory) {
	var parts []string
	if m.rss >= 0 {
		parts = append(parts, "VmRSS "+mib(m.rss))
	}
	if m.metricsRSS >= 0 {
		parts = append(parts, "RSS (/metrics) "+mib(m.metricsRSS), "heap in use "+mib(m.heap))
	}
	if len(parts) == 0 {
		parts = append(parts, "unknown (give --pid, or --metrics)")
	}
	self, _ := procRSS(0)
	fmt.Fprintf(b.out, "%s: %s; sse-swarm itself: RSS %s\n", what, strings.Join(parts, ", "), mib(self))
}

// printPerStream prints the node's memory growth per open stream.
func (b *bench) printPerStream(before, after memory, open int64) {
	if open == 0 {
		return
	}
	per := func(a, b int64) string {
		if a < 0 || b < 0 {
			return "unknown"
		}
		return fmt.Sprintf("%.2f KiB", float64(b-a)/1024/float64(open))
	}
	rss, total := after.rss, after.rss
	if rss < 0 {
		total = after.metricsRSS
	}
	fmt.Fprintf(b.out, "per open stream (%s): RSS %s (VmRSS) / %s (/metrics), heap %s; node RSS in all %s\n",
		group(open), per(before.rss, rss), per(before.metricsRSS, after.metricsRSS), per(before.heap, after.heap), mib(total))
}

func (b *bench) printFailures(sw *swarm.Swarm) {
	f := sw.Failures()
	reasons := make([]string, 0, len(f))
	for r := range f {
		reasons = append(reasons, r)
	}
	slices.SortFunc(reasons, func(x, y string) int { return f[y] - f[x] })
	for i, r := range reasons {
		if i == 10 {
			fmt.Fprintf(b.out, "  ... %d more reasons\n", len(reasons)-i)
			break
		}
		fmt.Fprintf(b.out, "  %s x %s\n", r, group(int64(f[r])))
	}
}

func (b *bench) printStreams(sw *swarm.Swarm) {
	st := sw.Stats()
	fmt.Fprintf(b.out, "streams at the end: %s open, %s dropped by the node; frames read: %s connected, %s keepalive, %s message, %s unavailable, %s resync, %s other\n",
		group(st.Open), group(st.Dropped), group(st.Events[swarm.EventConnected]), group(st.Events[swarm.EventKeepalive]),
		group(st.Events[swarm.EventMessage]+st.Events[swarm.EventEnter]), group(st.Events[swarm.EventUnavailable]),
		group(st.Events[swarm.EventResync]), group(st.Events[swarm.EventOther]))
	if st.Events[swarm.EventUnavailable] > 0 {
		fmt.Fprintf(b.out, "WARNING: channels unavailable: does --prefix name a public prefix of the node (--dev: /demo/)?\n")
	}
	if st.Dropped > 0 {
		b.printFailures(sw)
	}
}

func pct(sorted []time.Duration, p float64) time.Duration {
	i := int(float64(len(sorted))*p/100+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%.0f µs", float64(d)/float64(time.Microsecond))
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

func group(n int64) string {
	s := fmt.Sprint(n)
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

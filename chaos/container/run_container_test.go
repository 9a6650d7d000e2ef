//go:build container

package container_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
)

// Settings shared by the scenarios.
const (
	// channelTimeout is the client timeout of every scenario's prefix.
	channelTimeout = 60 * time.Second
	// convergeWithin is how soon after a fault every channel must agree
	// with the model again (no user lost).
	convergeWithin = 10 * time.Second
	// termTimeout is the contract's bound on a graceful leave.
	termTimeout = 10 * time.Second
	// sampleChannels is enough channels that each of three nodes owns some.
	sampleChannels = 30
	// readPause separates the strict reads of hold.
	readPause = 2 * time.Second
)

// scenario is the traffic of one test.
type scenario struct {
	prefix     string        // prefix of the channels, one per test
	channels   int           // channels the clients move across
	users      int           // simulated users, two clients (tabs) each
	heartbeat  time.Duration // pause between a client's updates
	staleApply time.Duration // see chaos.WorkloadConfig.StaleApply
	perNode    int           // subscription streams per node
	// vanish is the probability that a move is a closed tab instead; see
	// chaos.WorkloadConfig.Vanish.
	vanish float64
}

// run is one scenario under way: clients heartbeating through random
// nodes, streams on every node, a checker and the summary of every check.
type run struct {
	t       *testing.T
	names   []string
	w       *chaos.Workload
	streams *chaos.StreamChecker
	checker *chaos.Checker
	sum     chaos.Summary
	rng     *rand.Rand
	began   time.Time
	done    bool // finish ran
}

// start brings the cluster to full strength, configures sc's prefix and
// starts the traffic; every channel agrees with the model before it returns.
func start(t *testing.T, sc scenario) *run {
	t.Helper()
	ensureCluster(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := &run{t: t, names: chaos.ChannelNames(sc.prefix, "room", sc.channels), rng: rand.New(rand.NewPCG(seed, 0)),
		began: time.Now()}
	configure(t, sc.prefix, channelTimeout)
	w, err := chaos.NewWorkload(chaos.WorkloadConfig{
		Pool: newPool(t), Tokens: newTokens(t), Channels: r.names,
		Users: sc.users, ClientsPerUser: 2, Heartbeat: sc.heartbeat, Churn: 30 * time.Second,
		Vanish: sc.vanish, Ramp: 10 * time.Second, Timeout: channelTimeout, StaleApply: sc.staleApply,
		Duration: 15 * time.Minute, IDPrefix: sc.prefix, Seed: seed, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	r.w = w
	t.Cleanup(w.Stop)
	r.streams, err = chaos.StartStreams(context.Background(), chaos.StreamConfig{
		URLs: cluster.URLs(), Channels: r.names, PerNode: sc.perNode, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.streams.Close)
	t.Cleanup(r.reportIncomplete) // runs first: the streams are still open
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := r.streams.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if err := w.WaitEntered(ctx); err != nil {
		t.Fatalf("%v (%+v)", err, w.Stats())
	}
	r.logf("%d clients entered, %d streams connected", w.Clients(), r.streams.Stats().Connected)
	r.checker, err = chaos.NewChecker(chaos.CheckerConfig{Pool: newPool(t), Model: w.Model(), Channels: r.names})
	if err != nil {
		t.Fatal(err)
	}
	r.converge("before any fault", convergeWithin)
	return r
}

// logf logs with the time since the scenario began.
func (r *run) logf(format string, args ...any) {
	r.t.Helper()
	r.t.Logf("[%6.1fs] %s", time.Since(r.began).Seconds(), fmt.Sprintf(format, args...))
}

// converge waits until every channel agrees with the model, at most
// within, and adds the last comparison to the summary.
func (r *run) converge(what string, within time.Duration) chaos.CheckResult {
	r.t.Helper()
	res, err := r.checker.Converge(context.Background(), within)
	if err != nil {
		r.t.Errorf("%s: %v", what, err)
	}
	r.record(what, res)
	return res
}

// settle is the check after a fault that may leave ghosts: every user
// must be back within lostWithin; a ghost (a user listed after its
// acknowledged leave, or after its timeout) may stay until the channel
// timeout has passed since then, the contract's "at the latest".
func (r *run) settle(what string, lostWithin time.Duration) {
	r.t.Helper()
	began := time.Now()
	first, err := r.checker.Converge(context.Background(), lostWithin)
	if err != nil || first.Ghosts == 0 {
		if err != nil {
			r.t.Errorf("%s: %v", what, err)
		}
		r.record(what, first)
		return
	}
	r.logf("%s: %v; ghosts may stay until the channel timeout", what, first)
	for _, ex := range first.Examples {
		r.t.Logf("  %s", ex)
	}
	deadline := began.Add(lostWithin + channelTimeout + 2*time.Second)
	last, err := r.checker.Converge(context.Background(), time.Until(deadline))
	if err != nil {
		r.t.Errorf("%s, after the timeout: %v", what, err)
	}
	var examples []string
	for _, ex := range first.Examples {
		if !strings.HasPrefix(ex, "ghost:") {
			examples = append(examples, ex)
		}
	}
	for _, ex := range last.Examples {
		if strings.HasPrefix(ex, "ghost:") {
			examples = append(examples, ex)
		}
	}
	r.record(fmt.Sprintf("%s, ghosts after the timeout (%v later)", what, time.Since(began).Round(time.Second)),
		chaos.CheckResult{
			Channels: first.Channels, UsersChecked: first.UsersChecked, Lost: first.Lost, Missing: first.Missing,
			Ghosts: last.Ghosts, Attempts: first.Attempts + last.Attempts, Examples: examples,
		})
}

// hold lets the traffic go on for reads strict comparisons, readPause
// apart: the cluster must stay in agreement with the model, not only reach it.
func (r *run) hold(what string, reads int) {
	r.t.Helper()
	for i := range reads {
		time.Sleep(readPause) // traffic under way between two reads
		r.checkNow(fmt.Sprintf("%s, read %d", what, i+1))
	}
}

// checkNow runs one strict comparison (no retry) and adds it to the summary.
func (r *run) checkNow(what string) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := r.checker.Check(ctx)
	if err != nil {
		r.t.Errorf("%s: %v", what, err)
	}
	r.record(what, res)
}

func (r *run) record(what string, res chaos.CheckResult) {
	r.t.Helper()
	r.sum.AddCheck(res)
	r.logf("%s: %v", what, res)
	for _, ex := range res.Examples {
		r.t.Logf("  %s", ex)
	}
}

// waitOwning waits until service rejoined and takes channels back: every
// node's /admin/owner shows it owning some of the sampled channels (the
// service believes that as soon as it starts; the others only once they
// have seen it rejoin), then every node is ready, its hand-offs done. The
// streams that ran away from it are then sent back home.
func (r *run) waitOwning(service string) {
	r.t.Helper()
	waitReady(r.t)
	err := chaos.Poll(readyTimeout, func() error {
		for _, s := range cluster.Services() {
			if err := r.seesOwning(s, service); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		r.t.Fatal(err)
	}
	waitReady(r.t)
	r.streams.Rehome()
	r.logf("%s owns channels again", service)
}

// seesOwning returns nil once node's /admin/owner gives owner one of the
// sampled channels.
func (r *run) seesOwning(node, owner string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ch := range r.names[:min(sampleChannels, len(r.names))] {
		v, err := cluster.Admin(node).Owner(ctx, ch)
		if err != nil {
			return err
		}
		if v.Owner == owner {
			return nil
		}
	}
	return fmt.Errorf("%s sees %s owning none of the sampled channels", node, owner)
}

// finish checks once more, stops the traffic, prints the summary line and
// fails the test on any loss, ghost or stream violation.
func (r *run) finish() {
	r.t.Helper()
	r.converge("at the end", convergeWithin)
	r.done = true
	r.w.Stop()
	r.streams.Close()
	st := r.streams.Stats()
	r.sum.SetStreams(st)
	ws := r.w.Stats()
	r.logf("workload: %+v", ws)
	r.logf("streams: %+v", st)
	fmt.Printf("%s: %s (%v)\n", r.t.Name(), r.sum.String(), time.Since(r.began).Round(time.Second))
	chaos.Require(r.t, r.sum)
	if ws.Rejected > 0 {
		r.t.Errorf("%d updates or present channels were rejected (a node did not know the public prefix?)", ws.Rejected)
	}
	if r.sum.UsersChecked == 0 || st.Messages == 0 {
		r.t.Errorf("nothing was checked: %d users, %d stream messages", r.sum.UsersChecked, st.Messages)
	}
}

// reportIncomplete prints the summary so far of a scenario that stopped
// before finish (a fatal error), so that every run reports its counts.
func (r *run) reportIncomplete() {
	if r.done {
		return
	}
	r.sum.SetStreams(r.streams.Stats())
	fmt.Printf("%s (stopped early): %s (%v)\n", r.t.Name(), r.sum.String(), time.Since(r.began).Round(time.Second))
}

// newPool returns a pool over every node with a browser client's timings.
func newPool(t *testing.T) *chaos.Pool {
	t.Helper()
	p, err := chaos.NewPool(chaos.PoolConfig{URLs: cluster.URLs()})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTokens(t *testing.T) *chaos.Tokens {
	t.Helper()
	tokens, err := chaos.NewTokens(jwtSecret)
	if err != nil {
		t.Fatal(err)
	}
	return tokens
}

// shuffled returns the services in a random order.
func (r *run) shuffled() []string {
	s := cluster.Services()
	r.rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

// stamp is a wall-clock time for the log, to match with node logs.
func stamp() string { return time.Now().UTC().Format("15:04:05.000") }

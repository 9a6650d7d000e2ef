//go:build container

package container_test

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/internal/testkit"
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
// nodes, streams on every node, and the checks with their summary.
type run struct {
	*chaos.Checks
	t       *testing.T
	names   []string
	w       *chaos.Workload
	streams *chaos.StreamChecker
	rng     *rand.Rand
	done    bool // finish ran
}

// start brings the cluster to full strength, configures sc's prefix and
// starts the traffic; every channel agrees with the model before it returns.
func start(t *testing.T, sc scenario) *run {
	t.Helper()
	ensureCluster(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	r := &run{Checks: &chaos.Checks{T: t, Began: time.Now()}, t: t,
		names: chaos.ChannelNames(sc.prefix, "room", sc.channels), rng: rand.New(rand.NewPCG(seed, 0))}
	chaos.Configure(t, cluster, sc.prefix, channelTimeout)
	w, err := chaos.NewWorkload(chaos.WorkloadConfig{
		Pool: chaos.NewTestPool(t, cluster.URLs()), Tokens: chaos.NewTestTokens(t, jwtSecret), Channels: r.names,
		Users: sc.users, ClientsPerUser: 2, Heartbeat: sc.heartbeat, Churn: 30 * time.Second,
		Vanish: sc.vanish, Ramp: 10 * time.Second, Timeout: channelTimeout, StaleApply: sc.staleApply,
		Duration: 15 * time.Minute, IDPrefix: sc.prefix, Seed: seed, Logger: testkit.LoggerAt(t, slog.LevelWarn),
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
		URLs: cluster.URLs(), Channels: r.names, PerNode: sc.perNode, Logger: testkit.LoggerAt(t, slog.LevelWarn),
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
	r.Logf("%d clients entered, %d streams connected", w.Clients(), r.streams.Stats().Connected)
	r.Checker, err = chaos.NewChecker(chaos.CheckerConfig{Pool: chaos.NewTestPool(t, cluster.URLs()), Model: w.Model(), Channels: r.names})
	if err != nil {
		t.Fatal(err)
	}
	r.Converge("before any fault", convergeWithin)
	return r
}

// settle is the check after a fault that may leave ghosts: every user
// must be back within lostWithin; a ghost (a user listed after its
// acknowledged leave, or after its timeout) may stay until the channel
// timeout has passed since then, the contract's "at the latest".
func (r *run) settle(what string, lostWithin time.Duration) {
	r.t.Helper()
	began := time.Now()
	first, err := r.Checker.Converge(context.Background(), lostWithin)
	if err != nil || first.Ghosts == 0 {
		if err != nil {
			r.t.Errorf("%s: %v", what, err)
		}
		r.Record(what, first)
		return
	}
	r.Logf("%s: %v; ghosts may stay until the channel timeout", what, first)
	for _, ex := range first.Examples {
		r.t.Logf("  %s", ex)
	}
	deadline := began.Add(lostWithin + channelTimeout + 2*time.Second)
	last, err := r.Checker.Converge(context.Background(), time.Until(deadline))
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
	r.Record(fmt.Sprintf("%s, ghosts after the timeout (%v later)", what, time.Since(began).Round(time.Second)),
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
		r.CheckNow(fmt.Sprintf("%s, read %d", what, i+1))
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
	chaos.WaitOwning(r.t, cluster, service, r.names[:min(sampleChannels, len(r.names))], readyTimeout)
	waitReady(r.t)
	r.streams.Rehome()
	r.Logf("%s owns channels again", service)
}

// finish checks once more, stops the traffic, prints the summary line and
// fails the test on any loss, ghost or stream violation.
func (r *run) finish() {
	r.t.Helper()
	r.Converge("at the end", convergeWithin)
	r.done = true
	r.w.Stop()
	r.streams.Close()
	st := r.streams.Stats()
	r.Summary.SetStreams(st)
	ws := r.w.Stats()
	r.Logf("workload: %+v", ws)
	r.Logf("streams: %+v", st)
	fmt.Printf("%s: %s (%v)\n", r.t.Name(), r.Summary.String(), time.Since(r.Began).Round(time.Second))
	chaos.Require(r.t, r.Summary)
	if ws.Rejected > 0 {
		r.t.Errorf("%d updates or present channels were rejected (a node did not know the public prefix?)", ws.Rejected)
	}
	if r.Summary.UsersChecked == 0 || st.Messages == 0 {
		r.t.Errorf("nothing was checked: %d users, %d stream messages", r.Summary.UsersChecked, st.Messages)
	}
}

// reportIncomplete prints the summary so far of a scenario that stopped
// before finish (a fatal error), so that every run reports its counts.
func (r *run) reportIncomplete() {
	if r.done {
		return
	}
	r.Summary.SetStreams(r.streams.Stats())
	fmt.Printf("%s (stopped early): %s (%v)\n", r.t.Name(), r.Summary.String(), time.Since(r.Began).Round(time.Second))
}

// shuffled returns the services in a random order.
func (r *run) shuffled() []string {
	s := cluster.Services()
	r.rng.Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
	return s
}

// stamp is a wall-clock time for the log, to match with node logs.
func stamp() string { return time.Now().UTC().Format("15:04:05.000") }

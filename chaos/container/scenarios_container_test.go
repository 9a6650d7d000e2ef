//go:build container

package container_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/presencehq/presence/chaos"
	"github.com/presencehq/presence/chaos/container"
)

// Settings of the scenarios.
const (
	// faultHeartbeat is the clients' pause between updates in the fault
	// scenarios: a browser's 30 s, a little faster. A user a fault lost does
	// not come back by itself within convergeWithin; only the cluster can
	// keep it.
	faultHeartbeat = 25 * time.Second
	// disconnectFor is how long a node stays off the network; it exceeds
	// the failure detector (about five seconds).
	disconnectFor = 20 * time.Second
	// dockerTimeout bounds one docker command.
	dockerTimeout = time.Minute
)

// TestContainerKill: while 500 clients heartbeat through random nodes, a
// node is killed with `docker kill` (SIGKILL) killRounds times at random
// moments: up to 3 s after the previous victim is named an owner again,
// and in the second round the node that just came back, within 200 ms of
// that, while channels are handed back to it (the hand-back window). Every
// node is killed at least once, in a random order. Within 10 s of each kill every channel's users equal the model
// again (no ghosts once the timeout passed), and the streams on every node
// keep their ids in order. Every request the other nodes answered meanwhile
// got a 2xx answer and none of their streams ended (the kill is a pause,
// not an error).
func TestContainerKill(t *testing.T) {
	const (
		killRounds     = 4
		handBackRound  = 2 // kills the node that came back in round 1
		handBackWindow = 200 * time.Millisecond
		maxKillDelay   = 3 * time.Second
	)
	r := start(t, scenario{prefix: "kill", channels: 200, users: 250, heartbeat: faultHeartbeat,
		staleApply: 2 * time.Second, perNode: 2, vanish: 0.02})
	var rounds []chaos.Round
	var back string      // the previous victim, restarted
	var backAt time.Time // when another node first named it an owner again
	var ready *chaos.ReadyWatch
	// Every node is killed at least once, so that every container gets its
	// address anew (the lowest free one): the network-cut scenario, next,
	// needs its victim to get its own address back when it reconnects.
	order := r.shuffled()
	victims := []string{order[0], order[0], order[1], order[2]}
	for round := 1; round <= killRounds; round++ {
		victim := victims[round-1]
		delay := time.Duration(r.rng.Int64N(int64(maxKillDelay)))
		if round == handBackRound {
			delay = time.Duration(r.rng.Int64N(int64(handBackWindow)))
		}
		if back != "" {
			time.Sleep(time.Until(backAt.Add(delay))) // the fault's timing
		}
		killed := time.Now() // before the command: a request under way then meets the kill
		if ready != nil {
			rounds[len(rounds)-1].Out.End = ready.End(killed)
		}
		if err := docker(func(ctx context.Context) error { return cluster.Kill(ctx, victim) }); err != nil {
			t.Fatal(err)
		}
		r.w.Model().NoteCrash(killed)
		detected := r.fault(victim, killed)
		when := "first round"
		if back != "" {
			when = fmt.Sprintf("%v after %s was named an owner again", killed.Sub(backAt).Round(time.Millisecond), back)
		}
		if round == handBackRound {
			when += " (hand-back window)"
		}
		r.Logf("round %d: %s killed at %s, %s", round, victim, stamp(), when)
		r.settle(fmt.Sprintf("round %d, %s killed", round, victim), convergeWithin)
		detection, err := detected()
		if err != nil {
			t.Errorf("round %d: %v", round, err)
		}
		if err := docker(func(ctx context.Context) error { return cluster.Start(ctx, victim) }); err != nil {
			t.Fatal(err)
		}
		ready = chaos.WatchReady(cluster.Admin(victim))
		back, backAt = victim, chaos.WaitHandBack(t, cluster, victim, r.names[:min(sampleChannels, len(r.names))], readyTimeout)
		r.streams.Rehome()
		rounds = append(rounds, chaos.Round{Name: fmt.Sprintf("round %d, %s killed", round, victim),
			Out: chaos.Outage{Node: cluster.URL(victim), Start: killed}, Detected: detection})
	}
	r.waitOwning(back)
	rounds[len(rounds)-1].Out.End = ready.End(time.Now())
	r.Converge("the last victim back", convergeWithin)
	r.hold("the last victim back", 2)
	chaos.ReportRounds(t, r.ex, "container kill", rounds, time.Now(), true)
	r.finish()
}

// TestContainerNetworkDisconnect takes one node off the cluster network
// with `docker network disconnect` for 20 s (clients on the host cannot
// reach it either), then connects it back at the same address: users are
// back within 10 s, no ghosts once the timeout passed, no two owners
// publishing (stream ids never repeat or go backwards), and the node owns
// channels again. The majority side holds requests for the channels that
// move: every request it answered got a 2xx answer and none of its streams
// ended. The cut-off node answers nobody while cut off (clients cannot
// reach it); once back, until it owns channels again, its answers are
// reported, not asserted: it rejoins with a stale view, is fenced, and
// hands its state over.
func TestContainerNetworkDisconnect(t *testing.T) {
	// A request stuck in the cut-off node's socket may be applied when it
	// is back: the model allows that for the cut and some margin.
	r := start(t, scenario{prefix: "cut", channels: 100, users: 250, heartbeat: faultHeartbeat,
		staleApply: disconnectFor + 5*time.Second, perNode: 2, vanish: 0.02})
	victim := r.shuffled()[0]
	var addr string
	if err := docker(func(ctx context.Context) (err error) { addr, err = cluster.Address(ctx, victim); return err }); err != nil {
		t.Fatal(err)
	}
	var att container.Attachment
	cut := time.Now()
	err := docker(func(ctx context.Context) (err error) { att, err = cluster.Disconnect(ctx, victim); return err })
	if err != nil {
		t.Fatal(err)
	}
	r.w.Model().NoteCrash(cut)
	detected := r.fault(victim, cut)
	connected := false
	t.Cleanup(func() { // a failed test must not leave the next one a node short
		if !connected {
			_ = docker(func(ctx context.Context) error { return cluster.Connect(ctx, victim, att) })
		}
	})
	r.Logf("%s disconnected from %s for %v at %s", victim, att.Network, disconnectFor, stamp())
	time.Sleep(disconnectFor) // the fault itself: the node stays cut off this long
	if err := docker(func(ctx context.Context) error { return cluster.Connect(ctx, victim, att) }); err != nil {
		t.Fatal(err)
	}
	connected = true
	// No address is fixed: Docker gives the lowest free one, which is the
	// node's own as long as no container was created meanwhile. A running
	// node cannot change the address it advertises.
	var back string
	if err := docker(func(ctx context.Context) (err error) { back, err = cluster.Address(ctx, victim); return err }); err != nil {
		t.Fatal(err)
	}
	if back != addr {
		t.Fatalf("%s reconnected at %s, not its address %s", victim, back, addr)
	}
	r.Logf("%s connected again at %s (%s)", victim, stamp(), back)
	detection, err := detected()
	if err != nil {
		t.Error(err)
	}
	r.settle(fmt.Sprintf("%s reconnected", victim), convergeWithin)
	r.waitOwning(victim)
	rounds := []chaos.Round{{Name: fmt.Sprintf("%s cut off %v", victim, disconnectFor),
		Out: chaos.Outage{Node: cluster.URL(victim), Start: cut, End: time.Now()}, Detected: detection}}
	// Traffic goes on for a while after the heal, under the stream checks.
	r.hold("after the heal", 3)
	chaos.ReportRounds(t, r.ex, "container network disconnect", rounds, time.Now(), true)
	r.finish()
}

// TestContainerRollingRestart stops each node in turn with SIGTERM (`docker
// stop`) and starts it again, while 500 clients heartbeat through random
// nodes: every node exits 0 within 10 s, no user is lost or invented while
// it is away or when it takes its channels back, and the streams on every
// node keep their ids in order (gaps only after a resync).
func TestContainerRollingRestart(t *testing.T) {
	r := start(t, scenario{prefix: "roll", channels: 100, users: 250, heartbeat: faultHeartbeat, perNode: 2,
		vanish: 0.02})
	for _, s := range cluster.Services() {
		var exit container.Exit
		err := docker(func(ctx context.Context) (err error) { exit, err = cluster.Stop(ctx, s); return err })
		if err != nil {
			t.Fatal(err)
		}
		r.Logf("%s after SIGTERM: %v", s, exit)
		if exit.Code != 0 || exit.Took > termTimeout {
			t.Errorf("%s: SIGTERM: %v; want exit code 0 within %v", s, exit, termTimeout)
		}
		r.Converge(fmt.Sprintf("%s stopped", s), convergeWithin)
		r.hold(fmt.Sprintf("%s away", s), 3)
		if err := docker(func(ctx context.Context) error { return cluster.Start(ctx, s) }); err != nil {
			t.Fatal(err)
		}
		r.waitOwning(s)
		r.Converge(fmt.Sprintf("%s back", s), convergeWithin)
		r.hold(fmt.Sprintf("%s back", s), 3)
	}
	r.finish()
}

// TestContainerDownUp takes the whole project down with `compose down`
// (volumes kept) and up again while clients keep heartbeating: every node
// serves the prefix documents stored before and never answers that a
// configured channel does not exist, users are back within a heartbeat of
// the cluster's return, ghosts gone once the timeout passed, and streams
// resume with a resync instead of a gap or a repeated id.
func TestContainerDownUp(t *testing.T) {
	const heartbeat = 10 * time.Second
	// Presence is soft state, gone with the last node: only clients that
	// keep heartbeating come back, so none closes its tab silently here.
	r := start(t, scenario{prefix: "downup", channels: 100, users: 250, heartbeat: heartbeat, perNode: 2})
	scenarioDoc := chaos.Configure(t, cluster, "downup", channelTimeout) // the same document again: nothing changes
	keepDoc := chaos.PutPrefix(t, cluster, "keep", []byte(`{"rules": [{"match": "/keep/[0-9]+",
		"config": {"allowed_group_ids": ["staff"], "timeout": 30}}],
		"callback": {"url": "http://app.internal/presence-config", "cache_seconds": 20}}`))

	began := time.Now()
	if err := compose(func(ctx context.Context) error { return cluster.Down(ctx, false) }); err != nil {
		t.Fatal(err)
	}
	r.Logf("compose down (volumes kept) took %v", time.Since(began).Round(time.Millisecond))
	began = time.Now()
	if err := compose(cluster.Up); err != nil {
		t.Fatal(err)
	}
	waitReady(t)
	r.Logf("compose up until every node was ready took %v", time.Since(began).Round(time.Millisecond))
	chaos.WaitPrefix(t, cluster, "keep", keepDoc)
	chaos.WaitPrefix(t, cluster, "downup", scenarioDoc)
	r.streams.Rehome()

	// Clients re-announce themselves with their next heartbeat, sent at
	// most a heartbeat and an exhausted retry budget after the cluster came
	// back. Leaves that nodes still settling ownership acknowledged may be
	// lost: such ghosts must be gone once the timeout passed.
	r.settle("after down and up", heartbeat+chaos.DefaultBudget+convergeWithin)
	r.hold("after down and up", 3)
	r.finish()
}

// docker runs one docker command under dockerTimeout.
func docker(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	return f(ctx)
}

// compose runs one compose command under composeTimeout.
func compose(f func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), composeTimeout)
	defer cancel()
	return f(ctx)
}

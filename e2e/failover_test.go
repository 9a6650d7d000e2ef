//go:build browser

package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// failoverHeartbeatMs is the heartbeat interval of the clients in the
// failover test, a quarter of the channel timeout (the defaults are 30 s and
// 60 s; shorter here to keep the test short). The timeout must leave room for
// the client's way back: a heartbeat due just after the kill meets the dead
// node (connection refused), goes to the next URL after a back-off of about a
// second, and waits there (the node holds it) until memberlist declared the
// owner dead and its replica took the channel over, a few seconds.
const failoverHeartbeatMs = 5000

// streamRecoveryTimeout bounds how long after the hold window A's own event
// stream may still be reconnecting (its back-off grows like the updates').
const streamRecoveryTimeout = 10 * time.Second

// TestFailoverAfterNodeKill: A talks to the node that owns the channel, B to
// another node. A's node is killed with SIGKILL. A's client must move to
// another URL of its list and keep A present through it, and the cluster must
// move the channel to a live owner:
//
//  1. within the channel timeout after the kill, the survivors agree on a
//     live owner, A's client has heartbeated through a live node since then,
//     and B sees A;
//  2. from then until a full timeout (plus the 1 s expiry precision) has
//     passed since the kill, B sees A at every sample: whatever A's state was
//     at the kill would have expired by the end, so A is kept alive by
//     heartbeats through the survivors, not by leftovers;
//  3. at the end every survivor answers GET /presence/get with A present,
//     and A's own page has its event stream open on a live node again and
//     shows A.
func TestFailoverAfterNodeKill(t *testing.T) {
	env.require(t)
	if env.nodes < 2 {
		t.Skipf("failover needs at least 2 nodes; E2E_NODES=%d", env.nodes)
	}
	c, err := startCluster(env.binary, env.workDir, env.artifacts, "failover", env.nodes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	victim := c.nodes[0]
	channel, err := channelOwned(c, victim, "/e2e/failover/")
	if err != nil {
		t.Fatal(err)
	}
	// A fails over to a node other than B's first when there is one, so the
	// enter and the stream take different paths through the cluster.
	others := slices.Clone(c.nodes[1:])
	slices.Reverse(others)
	aliceURLs := append([]*node{victim}, others...)
	alice := openUser(t, "alice-failover", "Alice", aliceURLs, failoverHeartbeatMs)
	bob := openUser(t, "bob-failover", "Bob", rotate(c.nodes, 1), failoverHeartbeatMs)
	t.Logf("channel %s owned by %s; alice's urls %v; bob talks to %s", channel, victim.Name, names(aliceURLs), bob.node.Name)

	bob.subscribeAndWait(channel)
	alice.subscribeAndWait(channel)
	alice.call("enter", channel)
	bob.waitView(channel, enterDeadline, "see alice enter", func(v channelView) bool { return v.has(alice.id) })
	bob.screenshot("before-kill")

	killedAt := time.Now()
	if _, err := victim.Kill(); err != nil {
		t.Fatalf("killing %s: %v", victim.Name, err)
	}
	t.Logf("killed %s (SIGKILL)", victim.Name)
	timeout := failoverTimeout * time.Second

	recovered := waitRecovered(t, c, victim, alice, bob, channel, killedAt, timeout)
	t.Logf("recovered %s after the kill", recovered.Sub(killedAt).Round(time.Millisecond))

	// Whatever A's state was at the kill has expired by the end of this
	// window (the timeout plus the 1 s expiry precision).
	holdPresent(t, bob, alice.id, channel, killedAt, killedAt.Add(timeout+2*time.Second))
	for _, n := range c.live() {
		snap, _, err := n.presence(channel)
		if err != nil || !slices.Contains(snap.userIDs(), alice.id) {
			t.Errorf("GET /presence/get on %s %s after the kill: %+v, %v; want alice present",
				n.Name, time.Since(killedAt).Round(time.Millisecond), snap, err)
		}
	}
	waitStreamBack(t, alice, victim, channel)
}

// holdPresent fails the test unless the observer's page shows the user at
// every sample until the deadline.
func holdPresent(t *testing.T, observer *user, id, channel string, killedAt, until time.Time) {
	t.Helper()
	last, ok := hold(until, func() (bool, string) {
		v, err := observer.view(channel)
		if err != nil {
			return false, err.Error()
		}
		return v.has(id), fmt.Sprintf("%s at +%s after the kill", v, time.Since(killedAt).Round(time.Millisecond))
	})
	observer.screenshot("after-failover")
	if !ok {
		t.Fatalf("%s vanished from %s's page after the failover: %s", id, observer.id, last)
	}
}

// waitStreamBack waits until the user's own page has its event stream open
// on a live node again and shows the user in the channel.
func waitStreamBack(t *testing.T, u *user, victim *node, channel string) {
	t.Helper()
	err := testkit.Poll(streamRecoveryTimeout, func() error {
		st, err := u.client()
		if err != nil {
			return err
		}
		v, err := u.view(channel)
		if err != nil {
			return err
		}
		if onLive := !strings.HasPrefix(st.URL, victim.URL()); !onLive || !st.Connected || !v.has(u.id) {
			return fmt.Errorf("client %+v, channel %s", st, v)
		}
		return nil
	})
	u.screenshot("after-failover")
	if err != nil {
		t.Fatalf("%s's page did not reconnect to a live node showing them: %v", u.id, err)
	}
}

// waitRecovered polls until the survivors agree on a live owner of the
// channel, alice has heartbeated through a live node since they agreed, and
// bob's page shows alice; it fails the test at the deadline and returns when
// all three held.
func waitRecovered(t *testing.T, c *cluster, victim *node, alice, bob *user, channel string, killedAt time.Time, timeout time.Duration) time.Time {
	t.Helper()
	deadline := killedAt.Add(timeout)
	var settledAt time.Time
	err := testkit.PollUntil(deadline, func() error {
		if settledAt.IsZero() {
			owners := map[string]string{}
			for _, n := range c.live() {
				owner, err := n.owner(channel)
				if err != nil {
					owner = err.Error()
				}
				owners[n.Name] = owner
			}
			if !agreeOnLiveOwner(owners, victim.Name) {
				return fmt.Errorf("survivors name the owner %v", owners)
			}
			settledAt = time.Now()
			t.Logf("ownership of %s settled on %v, seen %s after the kill", channel, owners, settledAt.Sub(killedAt).Round(time.Millisecond))
		}
		if ok, seen := heartbeatSince(alice, victim, settledAt); !ok {
			return errors.New(seen)
		}
		v, err := bob.view(channel)
		if err != nil {
			return err
		}
		if !v.has(alice.id) {
			return fmt.Errorf("bob's page: %s", v)
		}
		return nil
	})
	if err != nil {
		bob.screenshot("timeout")
		alice.screenshot("timeout")
		t.Fatalf("no recovery within the channel timeout (%ds) after killing %s: %v", failoverTimeout, victim.Name, err)
	}
	return time.Now()
}

// agreeOnLiveOwner reports whether every survivor names the same owner and
// it is not the killed node.
func agreeOnLiveOwner(owners map[string]string, dead string) bool {
	first := ""
	for _, owner := range owners {
		if owner == dead || (first != "" && owner != first) {
			return false
		}
		if _, survivor := owners[owner]; !survivor {
			return false // an error text, or a node that is not a survivor
		}
		first = owner
	}
	return first != ""
}

// heartbeatSince reports whether alice's client got a 2xx answer to a
// POST /presence/update from a node other than victim, sent after since.
func heartbeatSince(alice *user, victim *node, since time.Time) (bool, string) {
	reqs, err := alice.requests()
	if err != nil {
		return false, err.Error()
	}
	var recent []string
	for _, r := range reqs {
		if r.Method != http.MethodPost || !strings.Contains(r.URL, "/presence/update") || r.At < since.UnixMilli() {
			continue
		}
		if r.Status >= 200 && r.Status < 300 && !strings.HasPrefix(r.URL, victim.URL()) {
			return true, ""
		}
		recent = append(recent, fmt.Sprintf("%s -> %d %s", r.URL, r.Status, r.Error))
	}
	return false, fmt.Sprintf("no successful update through a live node since ownership settled; alice's updates since: %v", recent)
}

func names(nodes []*node) []string {
	out := make([]string, len(nodes))
	for i, n := range nodes {
		out[i] = n.Name
	}
	return out
}

//go:build browser

package e2e

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

const (
	// pauseHeartbeatMs is alice's heartbeat in the pause test: several of
	// them fall within the failure detection (a few seconds).
	pauseHeartbeatMs = 2000
	// pauseSettle bounds the time from the kill until the survivors agree on
	// a live owner and alice heartbeated through her node since.
	pauseSettle = 20 * time.Second
	// pauseAfter is how long the pages are watched once the channel moved.
	pauseAfter = 3 * pauseHeartbeatMs * time.Millisecond
)

// TestKillIsAPauseForTheSurvivorsClients: alice's page talks to node X,
// bob's to node Y, and the channel they share is owned by a third node Z,
// which is killed with SIGKILL. For the clients of the surviving nodes the
// kill must be a pause, not an error (CONTRACT.md section 6): X holds
// alice's heartbeats until the channel's new owner answers instead of
// failing them, and the new owner continues the channel from its replica.
// So bob's page never shows alice leave (not even a leave and enter in
// quick succession: his page records every change of the channel), alice's
// page reports no error, and every request either page made was answered
// 2xx.
func TestKillIsAPauseForTheSurvivorsClients(t *testing.T) {
	env.require(t)
	if env.nodes < 3 {
		t.Skipf("the pause test needs 3 nodes; E2E_NODES=%d", env.nodes)
	}
	c, err := startCluster(env.binary, env.workDir, env.artifacts, "pause", 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.stop)
	x, y, z := c.nodes[0], c.nodes[1], c.nodes[2]
	channel, err := channelOwned(c, z, "/e2e/pause/")
	if err != nil {
		t.Fatal(err)
	}
	alice := openUser(t, "alice-pause", "Alice", []*node{x, y}, pauseHeartbeatMs)
	bob := openUser(t, "bob-pause", "Bob", []*node{y, x}, pauseHeartbeatMs)
	t.Logf("channel %s owned by %s; alice talks to %s, bob to %s", channel, z.Name, x.Name, y.Name)

	bob.subscribeAndWait(channel)
	alice.subscribeAndWait(channel)
	alice.call("enter", channel, map[string]any{"onlyWhileActive": false})
	bob.waitView(channel, enterDeadline, "see alice enter", func(v channelView) bool { return v.has(alice.id) })
	// Wait for one heartbeat after the enter: the enter is on Z's replica.
	enteredAt := time.Now()
	testkit.WaitFor(t, "alice's first heartbeat", func() bool { ok, _ := heartbeatSince(alice, z, enteredAt); return ok })

	killedAt := time.Now()
	if _, err := z.Kill(); err != nil {
		t.Fatalf("killing %s: %v", z.Name, err)
	}
	t.Logf("killed %s (SIGKILL)", z.Name)
	settled := waitMoved(t, c, z, alice, channel, killedAt)
	t.Logf("the channel moved and alice heartbeated through %s %v after the kill", x.Name, settled.Sub(killedAt).Round(time.Millisecond))
	holdPresent(t, bob, alice.id, channel, killedAt, settled.Add(pauseAfter))

	requireNoLeave(t, bob, alice.id, channel)
	for _, u := range []*user{alice, bob} {
		requireNoErrors(t, u, killedAt)
	}
	alice.screenshot("after-kill")
}

// waitMoved waits until the survivors agree on a live owner of channel and
// alice got a 2xx answer to a heartbeat sent after that; it returns then.
func waitMoved(t *testing.T, c *cluster, victim *node, alice *user, channel string, killedAt time.Time) time.Time {
	t.Helper()
	var movedAt time.Time
	err := testkit.PollUntil(killedAt.Add(pauseSettle), func() error {
		if movedAt.IsZero() {
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
			movedAt = time.Now()
		}
		if ok, seen := heartbeatSince(alice, victim, movedAt); !ok {
			return fmt.Errorf("%s", seen)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("within %v of the kill: %v", pauseSettle, err)
	}
	return time.Now()
}

// requireNoLeave fails the test when the observer's page ever showed the
// channel without id after it first showed id.
func requireNoLeave(t *testing.T, observer *user, id, channel string) {
	t.Helper()
	hist, err := observer.history()
	if err != nil {
		t.Fatal(err)
	}
	seen := false
	changes := 0
	for _, ch := range hist {
		if ch.Channel != channel {
			continue
		}
		changes++
		has := slices.Contains(ch.Users, id)
		if seen && !has {
			t.Errorf("%s's page showed %s without %s at %s (users %v); every change: %s", observer.id, channel, id,
				time.UnixMilli(ch.At).Format("15:04:05.000"), ch.Users, describeHistory(hist, channel))
			return
		}
		seen = seen || has
	}
	if !seen {
		t.Errorf("%s's page never showed %s in %s (%d changes)", observer.id, id, channel, changes)
	}
	t.Logf("%s's page went through %d changes of %s, %s present in each since the enter", observer.id, changes, channel, id)
}

func describeHistory(hist []change, channel string) string {
	var out []string
	for _, ch := range hist {
		if ch.Channel == channel {
			out = append(out, fmt.Sprintf("%s %v", time.UnixMilli(ch.At).Format("15:04:05.000"), ch.Users))
		}
	}
	return strings.Join(out, "; ")
}

// requireNoErrors fails the test when the user's client reported an error,
// or got anything but a 2xx answer, since since.
func requireNoErrors(t *testing.T, u *user, since time.Time) {
	t.Helper()
	errs, err := u.errors()
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range errs {
		if e.At >= since.UnixMilli() {
			t.Errorf("%s's page reported an error at %s: %s", u.id, time.UnixMilli(e.At).Format("15:04:05.000"), e.Error)
		}
	}
	reqs, err := u.requests()
	if err != nil {
		t.Fatal(err)
	}
	answered, pending := 0, 0
	for _, r := range reqs {
		if r.At < since.UnixMilli() {
			continue
		}
		if r.Status == 0 && r.Error == "" {
			pending++ // still waiting for its answer
			continue
		}
		if r.Status < 200 || r.Status > 299 {
			t.Errorf("%s's %s %s at %s: status %d %s", u.id, r.Method, r.URL,
				time.UnixMilli(r.At).Format("15:04:05.000"), r.Status, r.Error)
			continue
		}
		answered++
	}
	t.Logf("%s's page: %d requests answered since the kill, %d waiting for an answer", u.id, answered, pending)
}

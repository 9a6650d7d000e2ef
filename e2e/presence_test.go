//go:build browser

package e2e

import (
	"slices"
	"testing"
	"time"
)

// Deadlines of the contract's browser experience, as functional limits.
const (
	enterDeadline = time.Second     // another user sees an enter
	leaveDeadline = 2 * time.Second // another user sees a closed tab leave
)

// TestEnterSeenWithinOneSecond: A enters a channel through one node, B,
// subscribed through another node, sees A within 1 s.
func TestEnterSeenWithinOneSecond(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	const channel = "/e2e/topic/enter"
	alice := openUser(t, "alice-enter", "Alice", rotate(c.nodes, 0), 0)
	bob := openUser(t, "bob-enter", "Bob", rotate(c.nodes, 1), 0)
	t.Logf("alice talks to %s, bob to %s", alice.node.Name, bob.node.Name)

	bob.subscribeAndWait(channel)
	bob.waitView(channel, setupTimeout, "see the channel without alice", func(v channelView) bool { return !v.has(alice.id) })

	start := time.Now()
	alice.call("enter", channel)
	bob.waitView(channel, time.Until(start.Add(enterDeadline)), "see alice enter", func(v channelView) bool { return v.has(alice.id) })
	t.Logf("bob saw alice %s after she entered", time.Since(start).Round(time.Millisecond))
	alice.screenshot("entered")
	bob.screenshot("sees-alice")
}

// TestTabCloseLeaveSeenWithinTwoSeconds: A closes her tab; the client's
// pagehide handler sends the leave as a keepalive request, and B sees A
// leave within 2 s. The channel's timeout is 60 s, so this cannot be expiry.
func TestTabCloseLeaveSeenWithinTwoSeconds(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	const channel = "/e2e/topic/close"
	alice := openUser(t, "alice-close", "Alice", rotate(c.nodes, 0), 0)
	bob := openUser(t, "bob-close", "Bob", rotate(c.nodes, 1), 0)
	t.Logf("alice talks to %s, bob to %s", alice.node.Name, bob.node.Name)

	bob.subscribeAndWait(channel)
	alice.call("enter", channel)
	bob.waitView(channel, setupTimeout, "see alice enter", func(v channelView) bool { return v.has(alice.id) })
	bob.screenshot("before-close")

	start := time.Now()
	alice.close()
	bob.waitView(channel, time.Until(start.Add(leaveDeadline)), "see alice leave after her tab closed",
		func(v channelView) bool { return !v.has(alice.id) })
	t.Logf("bob saw alice leave %s after her tab started closing", time.Since(start).Round(time.Millisecond))
	bob.screenshot("after-close")
	if snap, _, err := c.nodes[len(c.nodes)-1].presence(channel); err != nil || snap == nil || slices.Contains(snap.userIDs(), alice.id) {
		t.Fatalf("GET /presence/get after the close: %+v, %v; want the channel without %s", snap, err, alice.id)
	}
}

// TestCountOnlyChannel: two users in a count-only channel, each through a
// different node, both see 2 and never a user; when one leaves both see 1.
func TestCountOnlyChannel(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	const channel = "/e2e/count/visitors"
	const deadline = 2 * time.Second
	alice := openUser(t, "alice-count", "Alice", rotate(c.nodes, 0), 0)
	bob := openUser(t, "bob-count", "Bob", rotate(c.nodes, 1), 0)

	users := []*user{alice, bob}
	for _, u := range users {
		u.subscribeAndWait(channel)
	}
	start := time.Now()
	for _, u := range users {
		u.call("enter", channel)
	}
	countIs := func(n int) func(channelView) bool {
		return func(v channelView) bool { return v.CountOnly && v.Count == n && len(v.Users) == 0 }
	}
	for _, u := range users {
		u.waitView(channel, time.Until(start.Add(deadline)), "show a count-only channel with 2 present", countIs(2))
	}
	for _, u := range users {
		u.screenshot("two")
	}
	observer := c.nodes[len(c.nodes)-1]
	snap, keys, err := observer.presence(channel)
	if err != nil || snap == nil || snap.Count != 2 {
		t.Fatalf("GET /presence/get on %s: %+v, %v; want count 2", observer.Name, snap, err)
	}
	if _, ok := keys["users"]; ok {
		t.Fatalf("GET /presence/get on %s reveals users of a count-only channel: %v", observer.Name, keys)
	}

	// The client sends at most one update per second (Discourse's throttle),
	// so the deadline runs from the server's acknowledgement of the leave.
	alice.call("leave", channel)
	start = time.Now()
	for _, u := range users {
		u.waitView(channel, time.Until(start.Add(deadline)), "show 1 present after alice's leave was acknowledged", countIs(1))
	}
}

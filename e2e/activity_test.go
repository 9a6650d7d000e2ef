//go:build browser

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/presencehq/presence/internal/testkit"
)

// Thresholds of enter({onlyWhileActive}) as the activity scenarios use them.
const (
	// browserHiddenTime is the client's default: a hidden tab leaves after 10 s.
	browserHiddenTime = 10 * time.Second
	// shortUnseenTime is the idle threshold of the idle scenario, below
	// Discourse's 60 s minimum, which the test page lowers with minActiveOptions.
	shortUnseenTime = 5 * time.Second
	// activityMargin is what the contract allows on top of a threshold for
	// another user to see the leave: the client's timer, the update and the
	// stream through the cluster.
	activityMargin = 2 * time.Second
	// returnDeadline bounds how long another user waits to see a returning
	// user: the update may wait out the 1 s throttle behind the leave, then
	// it is an enter like any other (enterDeadline).
	returnDeadline = time.Second + enterDeadline
)

// openClient is openUser with client options passed to new PresenceClient.
func openClient(t *testing.T, id, name string, urls []*node, clientOptions map[string]any) *user {
	t.Helper()
	token, err := urls[0].token(id, name)
	if err != nil {
		t.Fatalf("token for %s from %s: %v", id, urls[0].Name, err)
	}
	tb := env.Browser(t).newUser(t, id)
	tb.mustDo("open the test page", chromedp.Navigate(env.Pages().srv.URL))
	bases := make([]string, len(urls))
	for i, n := range urls {
		bases[i] = n.URL()
	}
	tb.call("start", map[string]any{"urls": bases, "token": token, "name": name, "clientOptions": clientOptions})
	return &user{tab: tb, id: id, name: name, node: urls[0]}
}

// visibility returns the page's document.visibilityState.
func (u *user) visibility() (string, error) {
	return eval[string](u.tab, `document.visibilityState`)
}

// waitVisibility polls until the page reports the visibility state want.
func (u *user) waitVisibility(want string) {
	u.t.Helper()
	err := testkit.Poll(stepTimeout, func() error {
		v, err := u.visibility()
		if err != nil {
			return err
		}
		if v != want {
			return fmt.Errorf("document.visibilityState is %s", v)
		}
		return nil
	})
	if err != nil {
		u.t.Fatalf("%s: want document.visibilityState %s: %v", u.id, want, err)
	}
}

// active reads handle.active of the page's handle on a channel.
func (u *user) active(channel string) bool {
	u.t.Helper()
	name, _ := json.Marshal(channel)
	v, err := eval[bool](u.tab, fmt.Sprintf(`window.e2e.channel(%s).active`, name))
	if err != nil {
		u.t.Fatalf("%s: reading active of %s: %v", u.id, channel, err)
	}
	return v
}

// waitActive polls the user's own page until handle.active is want.
func (u *user) waitActive(channel string, want bool, timeout time.Duration) {
	u.t.Helper()
	testkit.WaitForWithin(u.t, timeout, fmt.Sprintf("%s: %s: active to become %t", u.id, channel, want),
		func() bool { return u.active(channel) == want })
}

// coverWithSecondTab opens another tab in the same window as u's and makes it
// the active one, which hides u's page as a user switching tabs does. The
// returned function closes that tab.
func (u *user) coverWithSecondTab() (closeTab func()) {
	u.t.Helper()
	second, cancel := chromedp.NewContext(u.ctx, chromedp.WithNewWindow(false))
	ctx, cancelStep := context.WithTimeout(second, stepTimeout)
	defer cancelStep()
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		cancel()
		u.t.Fatalf("%s: opening a second tab: %v", u.id, err)
	}
	return cancel
}

// bringToFront makes u's tab the active tab of its window again.
func (u *user) bringToFront() {
	u.t.Helper()
	ctx, cancel := context.WithTimeout(u.ctx, stepTimeout)
	defer cancel()
	if _, err := chromedp.Call(ctx, page.BringToFront, cdp.Empty{}); err != nil {
		u.t.Fatalf("%s: bringing the tab to the front: %v", u.id, err)
	}
}

// click clicks the page's heading: a trusted click, as a user makes it.
func (u *user) click() {
	u.t.Helper()
	u.mustDo("click the page", chromedp.Click(chromedp.ID("who")))
}

// TestActivityHiddenTabLeavesAndReturns: alice enters one channel with the
// default onlyWhileActive and another with onlyWhileActive: false, then opens
// a second tab in front of hers. Bob sees her leave the first channel within
// browserHiddenTime + 2 s of her tab being hidden (and not at once), stay in
// the second, and come back to the first when her tab is shown again.
func TestActivityHiddenTabLeavesAndReturns(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	const tracked, always = "/e2e/topic/hidden", "/e2e/topic/hidden-always"
	alice := openClient(t, "alice-hidden", "Alice", rotate(c.nodes, 0), nil)
	bob := openUser(t, "bob-hidden", "Bob", rotate(c.nodes, 1), 0)
	t.Logf("alice talks to %s, bob to %s", alice.node.Name, bob.node.Name)

	bob.subscribeAndWait(tracked)
	bob.subscribeAndWait(always)
	alice.waitVisibility("visible")
	alice.call("enter", tracked)
	alice.call("enter", always, map[string]any{"onlyWhileActive": false})
	for _, ch := range []string{tracked, always} {
		bob.waitView(ch, setupTimeout, "see alice enter "+ch, func(v channelView) bool { return v.has(alice.id) })
	}

	hiddenFrom := time.Now() // no later than the moment the page is hidden
	closeSecond := alice.coverWithSecondTab()
	defer closeSecond()
	alice.waitVisibility("hidden")
	t.Logf("alice's page is hidden %s after the second tab was opened", time.Since(hiddenFrom).Round(time.Millisecond))

	// Hidden for less than browserHiddenTime: still present.
	if last, ok := hold(hiddenFrom.Add(browserHiddenTime/2), func() (bool, string) {
		v, err := bob.view(tracked)
		if err != nil {
			return false, err.Error()
		}
		return v.has(alice.id), v.String()
	}); !ok {
		t.Fatalf("bob saw alice leave %s within %s of her tab being hidden: %s", tracked, browserHiddenTime/2, last)
	}
	bob.waitView(tracked, time.Until(hiddenFrom.Add(browserHiddenTime+activityMargin)),
		"see alice leave after her tab was hidden for "+browserHiddenTime.String(),
		func(v channelView) bool { return !v.has(alice.id) })
	t.Logf("bob saw alice leave %s after her tab was hidden", time.Since(hiddenFrom).Round(time.Millisecond))
	if alice.active(tracked) || !alice.active(always) {
		t.Fatalf("alice's own page: active(%s)=%t active(%s)=%t; want false, true",
			tracked, alice.active(tracked), always, alice.active(always))
	}
	bob.screenshot("alice-hidden")
	if v, err := bob.view(always); err != nil || !v.has(alice.id) {
		t.Fatalf("bob's view of %s while alice is hidden: %s, %v; want alice there (onlyWhileActive: false)", always, v, err)
	}

	shownAt := time.Now()
	alice.bringToFront()
	alice.waitVisibility("visible")
	bob.waitView(tracked, time.Until(shownAt.Add(returnDeadline)), "see alice back after her tab was shown",
		func(v channelView) bool { return v.has(alice.id) })
	t.Logf("bob saw alice back %s after her tab was brought to the front", time.Since(shownAt).Round(time.Millisecond))
	alice.waitActive(tracked, true, stepTimeout)
}

// TestActivityIdleTabLeavesAndComesBackOnClick: alice enters with a
// userUnseenTime of 5 s (the page lowers the 60 s minimum) and does nothing;
// bob sees her leave within 5 s + 2 s of her last click, and back on her
// next click.
func TestActivityIdleTabLeavesAndComesBackOnClick(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	const channel = "/e2e/topic/idle"
	unseen := shortUnseenTime.Milliseconds()
	alice := openClient(t, "alice-idle", "Alice", rotate(c.nodes, 0), map[string]any{
		"minActiveOptions": map[string]any{"userUnseenTime": unseen},
	})
	bob := openUser(t, "bob-idle", "Bob", rotate(c.nodes, 1), 0)
	t.Logf("alice talks to %s, bob to %s", alice.node.Name, bob.node.Name)
	bob.subscribeAndWait(channel)

	alice.click()
	lastClick := time.Now()
	alice.call("enter", channel, map[string]any{"activeOptions": map[string]any{"userUnseenTime": unseen}})
	bob.waitView(channel, time.Until(lastClick.Add(shortUnseenTime)), "see alice enter", func(v channelView) bool { return v.has(alice.id) })

	bob.waitView(channel, time.Until(lastClick.Add(shortUnseenTime+activityMargin)),
		"see alice leave after she was idle for "+shortUnseenTime.String(),
		func(v channelView) bool { return !v.has(alice.id) })
	t.Logf("bob saw alice leave %s after her last click", time.Since(lastClick).Round(time.Millisecond))
	alice.waitActive(channel, false, stepTimeout)
	bob.screenshot("alice-idle")

	clickedAt := time.Now()
	alice.click()
	bob.waitView(channel, time.Until(clickedAt.Add(returnDeadline)), "see alice back after her click",
		func(v channelView) bool { return v.has(alice.id) })
	t.Logf("bob saw alice back %s after her click", time.Since(clickedAt).Round(time.Millisecond))
	alice.waitActive(channel, true, stepTimeout)
}

// TestActivityUnloadLeaveWithoutKeepalive: alice's client has no keepalive
// fetch, so when she closes her tab the leave goes out as navigator.sendBeacon,
// a form body carrying the token in its token field. Bob sees her leave
// within 2 s; the channel's 60 s timeout cannot be what removed her.
func TestActivityUnloadLeaveWithoutKeepalive(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	const channel = "/e2e/topic/beacon"
	alice := openClient(t, "alice-beacon", "Alice", rotate(c.nodes, 0), map[string]any{"keepalive": false})
	bob := openUser(t, "bob-beacon", "Bob", rotate(c.nodes, 1), 0)
	t.Logf("alice talks to %s, bob to %s", alice.node.Name, bob.node.Name)

	bob.subscribeAndWait(channel)
	alice.call("enter", channel)
	bob.waitView(channel, setupTimeout, "see alice enter", func(v channelView) bool { return v.has(alice.id) })

	start := time.Now()
	alice.close()
	bob.waitView(channel, time.Until(start.Add(leaveDeadline)), "see alice leave after her tab closed (sendBeacon)",
		func(v channelView) bool { return !v.has(alice.id) })
	t.Logf("bob saw alice leave %s after her tab started closing", time.Since(start).Round(time.Millisecond))
}

// demoAway is what the demo shows of its own user's activity.
type demoAway struct {
	Greyed bool   `json:"greyed"`
	Banner string `json:"banner"`
}

const demoAwayJS = `({
  greyed: document.getElementById("me").classList.contains("away"),
  banner: document.getElementById("away").hidden ? "" : document.getElementById("away").textContent,
})`

// waitDemoAway polls the demo's own-user status until it is away (want) or not.
func waitDemoAway(t *testing.T, tb *tab, want bool, timeout time.Duration) {
	t.Helper()
	err := testkit.Poll(timeout, func() error {
		v, err := eval[demoAway](tb, demoAwayJS)
		if err != nil {
			return err
		}
		if v.Greyed != want || (v.Banner != "") != want {
			return fmt.Errorf("the demo shows %+v", v)
		}
		return nil
	})
	if err != nil {
		tb.screenshot("timeout")
		t.Fatalf("%s: own status away=%t within %s: not met: %v", tb.label, want, timeout, err)
	}
}

// TestActivityDemo: in the demo opened with ?idle=5, an idle user greys out
// on their own page and leaves "who is online" for the others (but still
// counts as a visitor, entered onlyWhileActive: false), and comes back on a
// click.
func TestActivityDemo(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	b := env.Browser(t)
	idler, watcher := b.newUser(t, "idle-ida"), b.newUser(t, "watching-walt")
	idleNode, watchNode := c.nodes[0], c.nodes[1%len(c.nodes)]
	const visitorsChannel = "/demo/count/visitors"
	before, _, err := watchNode.presence(visitorsChannel)
	if err != nil || before == nil {
		t.Fatalf("GET %s: %+v, %v", visitorsChannel, before, err)
	}

	signIn(t, idler, idleNode, "Idle Ida")
	signIn(t, watcher, watchNode, "Watching Walt")
	// The session survives the navigation: the demo starts again, idle after 5 s.
	idler.mustDo("open the demo with ?idle=5", chromedp.Navigate(idleNode.URL()+"/?idle=5"))
	waitDemo(t, idler, setupTimeout, "show the app again", func(v demoView) bool { return v.SignedIn && v.Connected })
	idler.mustDo("click the page", chromedp.Click(chromedp.CSS("header h1")))
	lastClick := time.Now()
	both := []string{"Idle Ida", "Watching Walt"}
	waitDemo(t, watcher, time.Until(lastClick.Add(shortUnseenTime)), "list both online", func(v demoView) bool {
		return containsAll(v.Online, both)
	})

	waitDemo(t, watcher, time.Until(lastClick.Add(shortUnseenTime+activityMargin)), "see Ida leave who is online", func(v demoView) bool {
		return !slices.Contains(v.Online, "Idle Ida") && slices.Contains(v.Online, "Watching Walt")
	})
	t.Logf("Walt saw Ida leave %s after her last click", time.Since(lastClick).Round(time.Millisecond))
	waitDemoAway(t, idler, true, stepTimeout)
	if v, err := eval[demoView](watcher, demoViewJS); err != nil || v.Visitors != fmt.Sprint(before.Count+2) {
		t.Fatalf("visitors while Ida is idle: %+v, %v; want %d (both pages are open)", v, err, before.Count+2)
	}
	idler.screenshot("away")

	clickedAt := time.Now()
	idler.mustDo("click the page", chromedp.Click(chromedp.CSS("header h1")))
	waitDemo(t, watcher, time.Until(clickedAt.Add(returnDeadline)), "see Ida back online", func(v demoView) bool {
		return containsAll(v.Online, both)
	})
	t.Logf("Walt saw Ida back %s after her click", time.Since(clickedAt).Round(time.Millisecond))
	waitDemoAway(t, idler, false, stepTimeout)

	// Leave the shared cluster's demo channels as they were for the next test.
	idler.close()
	watcher.close()
	err = testkit.Poll(setupTimeout, func() error {
		snap, _, err := watchNode.presence(visitorsChannel)
		if err != nil || snap == nil {
			return fmt.Errorf("%v %v", snap, err)
		}
		if snap.Count != before.Count {
			return fmt.Errorf("%d", snap.Count)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("visitors after both tabs closed: %v, want %d", err, before.Count)
	}
}

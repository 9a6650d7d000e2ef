//go:build browser

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/presencehq/presence/internal/testkit"
)

// demoView is what the demo app shows, read from its DOM.
type demoView struct {
	SignedIn  bool     `json:"signedIn"`
	Online    []string `json:"online"`
	Viewers   []string `json:"viewers"`
	Repliers  string   `json:"repliers"`
	Visitors  string   `json:"visitors"`
	Members   []string `json:"members"`
	Owners    []string `json:"owners"`
	Connected bool     `json:"connected"`
}

const demoViewJS = `(() => {
  const texts = (sel) => [...document.querySelectorAll(sel)].map((e) => e.textContent.trim());
  return {
    signedIn: !document.getElementById("app").hidden,
    online: texts("#online-list .person-name"),
    viewers: texts("#viewers .person-name"),
    repliers: document.getElementById("repliers").textContent.trim(),
    visitors: document.getElementById("visitors").textContent.trim(),
    members: texts("#members tr td:first-child > span:first-child"),
    owners: texts("#owners tr td:nth-child(2)"),
    connected: document.getElementById("conn-dot").classList.contains("on"),
  };
})()`

// demoChannels is how many channels the demo lists owners for with a topic
// open: online, visitors, five topics and the open topic's replying channel.
const demoChannels = 8

// waitDemo polls the demo's DOM until cond holds.
func waitDemo(t *testing.T, tb *tab, timeout time.Duration, what string, cond func(demoView) bool) {
	t.Helper()
	err := testkit.Poll(timeout, func() error {
		v, err := eval[demoView](tb, demoViewJS)
		if err != nil {
			return err
		}
		if !cond(v) {
			return fmt.Errorf("the demo shows %+v", v)
		}
		return nil
	})
	if err != nil {
		tb.screenshot("timeout")
		t.Fatalf("%s: %s within %s: not met: %v", tb.label, what, timeout, err)
	}
}

// signIn opens the demo served by n and signs in with a name.
func signIn(t *testing.T, tb *tab, n *node, name string) {
	t.Helper()
	tb.mustDo("sign in to the demo on "+n.Name,
		chromedp.Navigate(n.URL()+"/"),
		chromedp.WaitVisible(chromedp.ID("signin-name")),
		chromedp.SendKeys(chromedp.ID("signin-name"), name),
		// A click, not Submit: form.submit() skips the app's submit handler.
		chromedp.Click(chromedp.CSS(`#signin-form button[type="submit"]`)),
	)
	waitDemo(t, tb, setupTimeout, "show the app after signing in", func(v demoView) bool { return v.SignedIn })
}

// TestDemoApp signs in as two people in two browser contexts, each on the
// demo served by a different node, checks that each sees the other online,
// in the open topic and replying, and saves the view as docs/demo.png when
// the cluster has three nodes or more.
func TestDemoApp(t *testing.T) {
	env.require(t)
	c := env.Shared(t)
	b := env.Browser(t)
	ada, grace := b.newUser(t, "ada"), b.newUser(t, "grace")
	adaNode, graceNode := c.nodes[0], c.nodes[1%len(c.nodes)]
	t.Logf("ada uses the demo of %s, grace the demo of %s", adaNode.Name, graceNode.Name)

	start := time.Now()
	signIn(t, ada, adaNode, "Ada Lovelace")
	signIn(t, grace, graceNode, "Grace Hopper")
	both := []string{"Ada Lovelace", "Grace Hopper"}
	for _, tb := range []*tab{ada, grace} {
		waitDemo(t, tb, setupTimeout, "list both users under who is online", func(v demoView) bool {
			return containsAll(v.Online, both) && v.Visitors == "2" && v.Connected
		})
	}
	t.Logf("both online on both pages %s after the first sign-in", time.Since(start).Round(time.Millisecond))

	for _, tb := range []*tab{ada, grace} {
		tb.mustDo("open topic 1", chromedp.Evaluate[chromedp.Void](`location.hash = "#/topic/1"`))
	}
	grace.mustDo("type a reply", chromedp.SendKeys(chromedp.ID("reply"), "Present!"))
	waitDemo(t, ada, setupTimeout, "show grace viewing and replying, and the cluster panel", func(v demoView) bool {
		return containsAll(v.Viewers, both) &&
			strings.Contains(v.Repliers, "Grace Hopper is replying") &&
			len(v.Members) == len(c.nodes) &&
			len(v.Owners) == demoChannels && !slices.Contains(v.Owners, "?") &&
			v.Connected
	})
	waitDemo(t, grace, setupTimeout, "show ada viewing the topic", func(v demoView) bool {
		return containsAll(v.Viewers, both)
	})

	grace.screenshot("replying")
	png := ada.screenshot("two-users")
	if png == nil {
		t.Fatal("no screenshot of the demo")
	}
	// docs/demo.png shows a real cluster; smaller runs leave it alone.
	if len(c.nodes) < 3 {
		t.Logf("docs/demo.png kept: this run has %d node(s); the screenshot is in %s", len(c.nodes), env.artifacts)
		return
	}
	path := filepath.Join(env.repoRoot, "docs", "demo.png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatalf("writing %s: %v", path, err)
	}
	t.Logf("saved %s", path)
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

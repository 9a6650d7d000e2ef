package server_test

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testcluster"
	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/ring"
	"github.com/presencehq/presence/router/ratelimit"
)

// postUpdate makes one heartbeat of the user of token at node url and
// returns the status and the Retry-After header.
func postUpdate(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/presence/update", strings.NewReader(`{"client_id":"tab"}`))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Retry-After")
}

// TestRateLimitIsClusterWide is issue #14's acceptance test over HTTP: one
// user spreading /presence/update calls over three nodes gets 429s (with
// Retry-After) after about 20 calls, as from one node, not after 60.
func TestRateLimitIsClusterWide(t *testing.T) {
	c := testcluster.Start(t, 3)
	c.WaitReady()
	token := testcluster.Token("burst")
	start := time.Now()
	allowed, refused := 0, 0
	for i := range 60 {
		switch status, retry := postUpdate(t, c.Node(i%3).URL(), token); status {
		case http.StatusOK:
			allowed++
		case http.StatusTooManyRequests:
			refused++
			if secs, err := strconv.Atoi(retry); err != nil || secs < 1 {
				t.Fatalf("429 with Retry-After %q", retry)
			}
		default:
			t.Fatalf("call %d at node %d: status %d", i+1, i%3, status)
		}
	}
	// The bucket refills while the calls run: 2 tokens a second on top of 20.
	most := 20 + int(2*time.Since(start).Seconds())
	t.Logf("%d of 60 calls allowed, %d refused, in %v (a bucket allows at most %d)", allowed, refused, time.Since(start).Round(time.Millisecond), most)
	if allowed < 18 || allowed > most {
		t.Fatalf("%d of 60 calls allowed, want 18 to %d", allowed, most)
	}
}

// TestRateLimitSurvivesItsKeeper: when the node keeping a user's bucket
// crashes, the others decide alone until the ring gives the bucket to one
// of them: the user's calls are limited, never failed for it, and once the
// ring moved, limited by one bucket again, not one per node.
func TestRateLimitSurvivesItsKeeper(t *testing.T) {
	c := testcluster.Start(t, 3, testcluster.WithFastGossip())
	c.WaitReady()
	names := []string{c.Node(0).Name, c.Node(1).Name, c.Node(2).Name}
	keeper := slices.Index(names, ring.New(1, names).Owner(ratelimit.KeyPrefix+"orphan"))
	var survivors []int
	for i := range 3 {
		if i != keeper {
			survivors = append(survivors, i)
		}
	}
	token := testcluster.Token("orphan")
	call := func(i int) int {
		status, _ := postUpdate(t, c.Node(survivors[i%2]).URL(), token)
		if status != http.StatusOK && status != http.StatusTooManyRequests {
			t.Fatalf("call %d at %s: status %d", i+1, c.Node(survivors[i%2]).Name, status)
		}
		return status
	}
	for i := range 4 { // tokens borrowed ahead on both survivors
		if call(i) != http.StatusOK {
			t.Fatalf("call %d before the crash refused", i+1)
		}
	}
	c.Kill(keeper)
	// Until gossip notices, each survivor decides with its own bucket
	// (or, once its ring moved, borrows of the new keeper's fresh one):
	// 10 calls are within any of them, and none may be refused or fail.
	for i := range 10 {
		if call(i) != http.StatusOK {
			t.Fatalf("call %d after the keeper crashed refused", i+1)
		}
	}
	testkit.WaitFor(t, "the survivors' rings without the crashed keeper", func() bool {
		for _, i := range survivors {
			if view, err := c.Node(i).Admin().Cluster(); err != nil || len(view.Alive()) != 2 {
				return false
			}
		}
		return true
	})
	start := time.Now()
	allowed := 0
	for i := range 60 {
		if call(i) == http.StatusOK {
			allowed++
		}
	}
	// At most: a fresh bucket on the new keeper, the tokens the survivors
	// borrowed of the old one and had not spent (MaxBorrow each), the
	// refill. At least: what is left of the new bucket after the 10 calls
	// above, some of which it may have served.
	most := ratelimit.DefaultBurst + 2*ratelimit.DefaultMaxBorrow + int(2*time.Since(start).Seconds())
	t.Logf("%d of 60 calls allowed after the ring moved the bucket (at most %d)", allowed, most)
	if allowed < ratelimit.DefaultBurst-10-2 || allowed > most {
		t.Fatalf("%d of 60 calls allowed over two survivors, want %d to %d", allowed, ratelimit.DefaultBurst-10-2, most)
	}
}

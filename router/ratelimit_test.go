package router

import (
	"testing"
	"time"

	"github.com/presencehq/presence/router/ratelimit"
	"github.com/presencehq/presence/router/wire"
)

// TestRateLimitAcrossNodes: the routers' limiters share one bucket per
// user over the node transport, whichever nodes the calls reach: a burst
// round-robin over three nodes gets about 20 calls, not 60, and calls
// every 100 ms get about 2 a second.
func TestRateLimitAcrossNodes(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	ctx := testCtx(t)
	keeper := c.nodes[0].r.Ring().Owner(ratelimit.KeyPrefix + "alice")
	allowed := 0
	for i := range 60 {
		if ok, _ := c.nodes[i%3].r.Limiter().Allow(ctx, "alice", nil); ok {
			allowed++
		}
	}
	t.Logf("burst: %d of 60 calls allowed (keeper %s)", allowed, keeper)
	if allowed < 18 || allowed > 20 {
		t.Fatalf("burst: %d of 60 calls allowed, want about 20", allowed)
	}
	borrows := int64(0)
	for _, n := range c.nodes {
		borrows += n.caller.count(wire.MethodLimit)
	}
	if borrows == 0 {
		t.Fatal("no node called another's limiter")
	}
	allowed = 0
	for i := range 300 { // 30 s
		c.clk.Advance(100 * time.Millisecond)
		if ok, _ := c.nodes[i%3].r.Limiter().Allow(ctx, "alice", nil); ok {
			allowed++
		}
	}
	t.Logf("sustained: %d calls allowed in 30 s", allowed)
	if allowed < 54 || allowed > 66 {
		t.Fatalf("sustained: %d calls allowed in 30 s, want 60 within 10%%", allowed)
	}
}

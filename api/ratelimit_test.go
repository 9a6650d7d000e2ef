package api

import (
	"strconv"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
)

// A large table is split into shards; it stays bounded in all, each user
// keeps one bucket, and sweeps still drop the buckets that refilled.
func TestRateLimiterShardedTable(t *testing.T) {
	clk := clock.NewFake(testStart)
	const maxUsers = 256 * rateLimiterShards
	l := newRateLimiter(clk, 2, 1, maxUsers)
	if len(l.shards) != rateLimiterShards {
		t.Fatalf("%d shards, want %d", len(l.shards), rateLimiterShards)
	}
	for i := range 4 * maxUsers {
		l.allow("u" + strconv.Itoa(i))
		if n := l.size(); n > maxUsers {
			t.Fatalf("table grew to %d of at most %d", n, maxUsers)
		}
	}
	// One user's calls all meet the same bucket: the burst, then a wait.
	for i := range 2 {
		if ok, _ := l.allow("alice"); !ok {
			t.Fatalf("call %d within the burst refused", i)
		}
	}
	if ok, wait := l.allow("alice"); ok || wait != time.Second {
		t.Fatalf("over the burst: allowed %v, wait %v; want refused, 1s", ok, wait)
	}
	// Every shard sweeps on its next call after a full refill period.
	clk.Advance(3 * time.Second)
	for i := range 64 * rateLimiterShards { // about 64 a shard, none left out
		l.allow("fresh" + strconv.Itoa(i))
	}
	if n := l.size(); n != 64*rateLimiterShards {
		t.Fatalf("after the sweeps %d buckets remain, want the %d fresh ones", n, 64*rateLimiterShards)
	}
}

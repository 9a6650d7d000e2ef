package ratelimit

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestKeeperConcurrentCallsSweepsAndEvictions: calls of one user taking
// tokens of its bucket on the keeper, from many goroutines, while sweeps
// drop full buckets and other users' calls evict buckets from the full
// table, admit exactly Burst calls while the clock stands still: a call
// that found the bucket before it was dropped looks it up again rather
// than spending a token of a bucket no longer counted.
func TestKeeperConcurrentCallsSweepsAndEvictions(t *testing.T) {
	for _, maxUsers := range []int{0, 64} { // default table; one user per shard, evicting
		t.Run("max_users_"+strconv.Itoa(maxUsers), func(t *testing.T) {
			net := newTestNet(t, 1, func(l *Limits) { l.MaxUsers = maxUsers })
			user := net.userKeptBy("n1")
			var allowed atomic.Int64
			var wg sync.WaitGroup
			stop := make(chan struct{})
			var churn sync.WaitGroup
			churn.Go(func() { // sweeps and other users, until the calls are done
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					net.nodes["n1"].l.Sweep()
					net.allow("n1", "other"+strconv.Itoa(i%500))
				}
			})
			for range 8 {
				wg.Go(func() {
					for range 200 {
						if ok, _ := net.allow("n1", user); ok {
							allowed.Add(1)
						}
					}
				})
			}
			wg.Wait()
			close(stop)
			churn.Wait()
			if maxUsers == 0 && allowed.Load() != DefaultBurst {
				t.Fatalf("%d calls allowed, want %d (the bucket, with the clock standing still)", allowed.Load(), DefaultBurst)
			}
			// An evicted bucket is a new, full one: eviction may admit
			// again (the bound on memory wins), but never past one
			// bucket per eviction; here only that nothing raced.
			if allowed.Load() < DefaultBurst {
				t.Fatalf("%d calls allowed, want at least %d", allowed.Load(), DefaultBurst)
			}
		})
	}
}

// TestKeeperPathAllocations: a call of a user kept here whose bucket
// exists allocates nothing in the limiter.
func TestKeeperPathAllocations(t *testing.T) {
	net := newTestNet(t, 1, nil)
	user := net.userKeptBy("n1")
	l := net.nodes["n1"].l
	l.Allow(net.ctx, user)
	allocs := testing.AllocsPerRun(100, func() {
		l.accounts.take(user, net.clk.Now(), l.cfg.View())
		l.held.spendLeftover(user, net.clk.Now())
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per call", allocs)
	}
}

// BenchmarkKeeperAllowParallel: calls of 40,000 users kept here, from
// 64 goroutines, 40,000 calls a second of the fake clock and a sweep every
// second of it: the wrk heartbeat load's shape on one node (each user
// calls about once a second).
func BenchmarkKeeperAllowParallel(b *testing.B) {
	net := newTestNet(&testing.T{}, 1, nil)
	l := net.nodes["n1"].l
	users := make([]string, 40_000)
	for i := range users {
		users[i] = "u" + strconv.Itoa(i)
	}
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(32) // 64 goroutines on 2 cores, as wrk -c64 makes
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			if i%10_000 == 0 {
				net.clk.Advance(250 * time.Millisecond)
				if i%40_000 == 0 {
					l.Sweep()
				}
			}
			l.Allow(net.ctx, users[i%int64(len(users))])
		}
	})
}

// TestSweepKeepsABucketInUse: a full bucket with nothing lent stays while
// its user called here within Idle (it equals a new one, but a user
// calling every second would otherwise lose and remake it at every
// sweep), and goes after.
func TestSweepKeepsABucketInUse(t *testing.T) {
	net := newTestNet(t, 1, nil)
	user := net.userKeptBy("n1")
	l := net.nodes["n1"].l
	net.allow("n1", user)
	net.clk.Advance(DefaultIdle / 2) // full again: one token back in 0.5 s
	l.Sweep()
	if peek(&l.accounts.t, user) == nil {
		t.Fatalf("a full bucket used %v ago was dropped", DefaultIdle/2)
	}
	net.clk.Advance(DefaultIdle / 2)
	l.Sweep()
	if peek(&l.accounts.t, user) != nil {
		t.Fatalf("a full bucket unused for %v stays", DefaultIdle)
	}
}

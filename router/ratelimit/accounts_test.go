package ratelimit

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/tokenbucket"
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
	var memo tokenbucket.Memo
	l.Allow(net.ctx, user, &memo)
	for _, m := range []*tokenbucket.Memo{nil, &memo} {
		allocs := testing.AllocsPerRun(100, func() {
			l.accounts.take(user, net.clk.Now(), l.cfg.View(), m)
			l.held.spendLeftover(user, net.clk.Now())
		})
		if allocs != 0 {
			t.Fatalf("%v allocations per call (memo %p)", allocs, m)
		}
	}
}

// TestMemoFollowsTheAccount: a memo remembers the user's account in the
// table; once the account is dropped (swept, or evicted from a full
// shard) the next call finds the user's new account, remembers it, and
// charges it, never the dropped one.
func TestMemoFollowsTheAccount(t *testing.T) {
	net := newTestNet(t, 1, func(lim *Limits) { lim.MaxUsers = 1 })
	user := net.userKeptBy("n1")
	l := net.nodes["n1"].l
	var memo tokenbucket.Memo
	if ok, _ := l.Allow(net.ctx, user, &memo); !ok {
		t.Fatal("first call refused")
	}
	first := peek(&l.accounts.t, user)
	if first == nil || memo.Load() != first {
		t.Fatalf("memo holds %v, the table %p", memo.Load(), first)
	}
	for _, drop := range []struct {
		name string
		do   func()
	}{
		{"swept", func() { net.clk.Advance(DefaultIdle); l.Sweep() }},
		{"evicted", func() { l.Allow(net.ctx, user+"-other", nil) }}, // MaxUsers 1
	} {
		stale := peek(&l.accounts.t, user)
		drop.do()
		if peek(&l.accounts.t, user) != nil || !stale.dropped {
			t.Fatalf("%s: the account is still in the table", drop.name)
		}
		staleTokens := stale.bucket.Tokens
		if ok, _ := l.Allow(net.ctx, user, &memo); !ok {
			t.Fatalf("%s: call refused", drop.name)
		}
		fresh := peek(&l.accounts.t, user)
		if fresh == nil || fresh == stale || memo.Load() != fresh {
			t.Fatalf("%s: memo holds %v, the table %p (the dropped account %p)", drop.name, memo.Load(), fresh, stale)
		}
		if got, want := fresh.bucket.Tokens, float64(DefaultBurst-1); got != want {
			t.Fatalf("%s: new account has %v tokens, want %v", drop.name, got, want)
		}
		if stale.bucket.Tokens != staleTokens {
			t.Fatalf("%s: the dropped account was charged: %v tokens, %v before", drop.name, stale.bucket.Tokens, staleTokens)
		}
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
	memos := make([]tokenbucket.Memo, len(users)) // one per user's token, as the API keeps them
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
			u := i % int64(len(users))
			l.Allow(net.ctx, users[u], &memos[u])
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

package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
	"github.com/presencehq/presence/tokenbucket"
)

// move is one part of a scenario: advance the clock, then make a call.
type move struct {
	advance time.Duration
	calls   int
}

// singleNodeScenario is the per-node limiter's reference test: a burst,
// refusals that cost nothing, one token after 500 ms, a full bucket
// after 10 s.
var singleNodeScenario = []move{{0, 20}, {0, 5}, {500 * time.Millisecond, 2}, {10 * time.Second, 21}}

// TestOneNodeGetsSingleNodeBehaviour: a user whose calls all reach one
// node, the keeper or another, gets exactly the answers (allowed, wait)
// of a bucket on that node.
func TestOneNodeGetsSingleNodeBehaviour(t *testing.T) {
	for _, at := range []string{"keeper", "another node"} {
		t.Run(at, func(t *testing.T) {
			net := newTestNet(t, 3, nil)
			user := net.userKeptBy("n1")
			node := "n1"
			if at != "keeper" {
				node = "n2"
			}
			ref, err := tokenbucket.NewLimiter(net.clk, tokenbucket.Rate{Burst: DefaultBurst, PerSecond: DefaultPerSecond}, 10)
			if err != nil {
				t.Fatal(err)
			}
			call := 0
			for _, s := range singleNodeScenario {
				net.clk.Advance(s.advance)
				for range s.calls {
					call++
					wantOK, wantWait := ref.Allow(context.Background(), user, nil)
					ok, wait := net.allow(node, user)
					if ok != wantOK || wait != wantWait {
						t.Fatalf("call %d: (%v, %v), a node's own bucket answers (%v, %v)", call, ok, wait, wantOK, wantWait)
					}
				}
			}
			if node == "n2" {
				// The tokens came ahead of the calls: only the first call
				// of each of the three bursts, finding nothing here,
				// waited for a borrow.
				if n := net.decisions(node, pathBorrow, "allowed"); n != 3 {
					t.Errorf("%d allowed calls waited for a borrow, want 3", n)
				}
				if n := net.decisions(node, pathLease, "allowed"); n != 20+1+20-3 {
					t.Errorf("%d allowed calls spent tokens already here, want %d", n, 20+1+20-3)
				}
			}
		})
	}
}

// TestRoundRobinBurstAcrossThreeNodes is the acceptance test of the
// burst: one user spreading calls over three nodes gets about 20, not 60.
func TestRoundRobinBurstAcrossThreeNodes(t *testing.T) {
	for _, keeper := range []string{"n1", "n2", "n3"} {
		t.Run("keeper "+keeper, func(t *testing.T) {
			net := newTestNet(t, 3, nil)
			user := net.userKeptBy(keeper)
			nodes := []string{"n1", "n2", "n3"}
			allowed, firstRefusal := 0, 0
			for i := range 60 {
				ok, wait := net.allow(nodes[i%3], user)
				if ok {
					allowed++
					continue
				}
				if wait <= 0 || wait > time.Second {
					t.Fatalf("call %d refused with a wait of %v", i+1, wait)
				}
				if firstRefusal == 0 {
					firstRefusal = i + 1
				}
			}
			t.Logf("keeper %s: %d of 60 calls allowed, first refusal at call %d", keeper, allowed, firstRefusal)
			if allowed < 18 || allowed > 20 || firstRefusal < 19 {
				t.Fatalf("%d allowed, first refusal at call %d; want 18 to 20 allowed, none refused before call 19",
					allowed, firstRefusal)
			}
		})
	}
}

// TestRoundRobinBurstWithoutPauses: the same burst with every call made as
// soon as the previous one answered, background borrows still running.
func TestRoundRobinBurstWithoutPauses(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n2")
	allowed := 0
	for i := range 90 {
		if ok, _ := net.nodes[[]string{"n1", "n2", "n3"}[i%3]].l.Allow(context.Background(), user, nil); ok {
			allowed++
		}
	}
	net.settle()
	t.Logf("%d of 90 calls allowed", allowed)
	if allowed < 18 || allowed > 20 {
		t.Fatalf("%d calls allowed, want 18 to 20", allowed)
	}
}

// TestRoundRobinSustainedRate is the acceptance test of the refill: after
// the burst, calls every 100 ms spread over three nodes get 2 a second.
func TestRoundRobinSustainedRate(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n3")
	nodes := []string{"n1", "n2", "n3"}
	for i := range 30 { // drain the burst
		net.allow(nodes[i%3], user)
	}
	allowed := 0
	for i := range 300 { // 30 s
		net.clk.Advance(100 * time.Millisecond)
		if i%10 == 0 {
			net.sweep()
		}
		if ok, _ := net.allow(nodes[i%3], user); ok {
			allowed++
		}
	}
	rate := float64(allowed) / 30
	t.Logf("%d calls allowed in 30 s: %.2f/s", allowed, rate)
	if rate < 1.8 || rate > 2.2 {
		t.Fatalf("%.2f calls a second allowed, want 2 within 10%%", rate)
	}
}

// TestNeverOverAdmits: whatever the calls, nodes and pauses, no window of
// time admits more than a bucket would (Burst plus the refill), and the
// cluster admits within 10 % of what one bucket given the same calls does.
func TestNeverOverAdmits(t *testing.T) {
	for seed := range uint64(8) {
		net := newTestNet(t, 3, func(l *Limits) { l.Idle = 300 * time.Millisecond; l.Lease = 5 * time.Second })
		rng := rand.New(rand.NewPCG(seed, 1))
		user := net.userKeptBy("n1")
		ref, err := tokenbucket.NewLimiter(net.clk, tokenbucket.Rate{Burst: DefaultBurst, PerSecond: DefaultPerSecond}, 10)
		if err != nil {
			t.Fatal(err)
		}
		refAllowed := 0
		start := net.clk.Now()
		var times []time.Duration // of the allowed calls, since start
		for range 600 {
			switch r := rng.IntN(10); {
			case r < 3:
				net.clk.Advance(time.Duration(rng.IntN(400)) * time.Millisecond)
			case r == 3:
				net.sweep()
			}
			node := []string{"n1", "n2", "n3"}[rng.IntN(3)]
			if ok, _ := net.allow(node, user); ok {
				times = append(times, net.clk.Now().Sub(start))
			}
			if ok, _ := ref.Allow(context.Background(), user, nil); ok {
				refAllowed++
			}
		}
		for i := range times {
			for j := i; j < len(times); j++ {
				limit := DefaultBurst + int(DefaultPerSecond*(times[j]-times[i]).Seconds())
				if n := j - i + 1; n > limit {
					t.Fatalf("seed %d: %d calls allowed within %v, a bucket allows %d", seed, n, times[j]-times[i], limit)
				}
			}
		}
		t.Logf("seed %d: %d allowed in %.1f s, one bucket: %d", seed, len(times), net.clk.Now().Sub(start).Seconds(), refAllowed)
		if float64(len(times)) < 0.9*float64(refAllowed) {
			t.Fatalf("seed %d: %d calls allowed, one bucket allows %d", seed, len(times), refAllowed)
		}
	}
}

// TestUserMovingNodesGetsTheTokensBack: tokens held on a node the user
// left are recalled when the bucket runs dry, so a burst elsewhere still
// gets the whole bucket.
func TestUserMovingNodesGetsTheTokensBack(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n1")
	for i := range 8 {
		if ok, _ := net.allow("n2", user); !ok {
			t.Fatalf("call %d at n2 refused", i+1)
		}
	}
	if held := peek(&net.nodes["n2"].l.held.t, user).tokens; held == 0 {
		t.Fatal("n2 holds no tokens ahead of the user's calls")
	}
	allowed := 0
	for range 20 {
		if ok, _ := net.allow("n3", user); ok {
			allowed++
		}
	}
	if allowed != 12 {
		t.Fatalf("%d calls allowed at n3 after 8 at n2, want 12", allowed)
	}
	if net.count(wire.LimitRecall) == 0 {
		t.Fatal("the keeper recalled nothing")
	}
}

// TestHeartbeatsNeverWait: a browser heartbeating every 30 s to a node
// that does not keep its bucket waits for a borrow once, on its first
// call; every later heartbeat spends the token borrowed after the one
// before.
func TestHeartbeatsNeverWait(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n1")
	for beat := range 10 {
		if ok, _ := net.allow("n2", user); !ok {
			t.Fatalf("heartbeat %d refused", beat)
		}
		for range 30 {
			net.clk.Advance(time.Second)
			net.sweep()
		}
	}
	if n := net.decisions("n2", pathBorrow, "allowed"); n != 1 {
		t.Fatalf("%d heartbeats waited for a borrow, want only the first", n)
	}
	if n := net.decisions("n2", pathLease, "allowed"); n != 9 {
		t.Fatalf("%d heartbeats spent a token already here, want 9", n)
	}
}

// TestIdleTokensGoBack: a node gives back what it holds of an idle user
// but one token, and that one too before its lease ends; the keeper's
// bucket gets them back.
func TestIdleTokensGoBack(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n1")
	for range 6 {
		net.allow("n2", user)
	}
	n2, keeper := net.nodes["n2"].l, net.nodes["n1"].l
	if held := peek(&n2.held.t, user).tokens; held < 2 {
		t.Fatalf("n2 holds %d tokens after a quick run of calls, want more than one", held)
	}
	net.clk.Advance(DefaultIdle)
	net.sweep()
	if held := peek(&n2.held.t, user).tokens; held != 1 {
		t.Fatalf("n2 kept %d tokens of an idle user, want 1", held)
	}
	acc := peek(&keeper.accounts.t, user)
	if acc.loans[0].tokens != 1 {
		t.Fatalf("the keeper counts %d tokens out, want 1", acc.loans[0].tokens)
	}
	net.clk.Advance(DefaultLease - DefaultIdle - DefaultSweepInterval)
	net.sweep()
	if sl := peek(&n2.held.t, user); sl != nil && sl.tokens != 0 {
		t.Fatalf("n2 kept a token to the end of its lease")
	}
	net.sweep()
	if peek(&n2.held.t, user) != nil {
		t.Fatal("an idle user holding nothing stays in n2's table")
	}
	if peek(&keeper.accounts.t, user) != nil {
		t.Fatal("a full bucket with nothing lent stays in the keeper's table")
	}
}

// TestLeaseEnds: a token a node could not give back (the keeper was cut
// off) is dropped when its lease ends, and the keeper stops counting it
// then.
func TestLeaseEnds(t *testing.T) {
	net := newTestNet(t, 2, nil)
	user := net.userKeptBy("n1")
	for range 5 {
		net.allow("n2", user)
	}
	net.clk.Advance(DefaultIdle)
	net.sweep() // n2 keeps one token for the user's next call
	if held := peek(&net.nodes["n2"].l.held.t, user).tokens; held != 1 {
		t.Fatalf("n2 holds %d tokens of an idle user, want 1", held)
	}
	net.setCut("n1", true)
	net.clk.Advance(DefaultLease)
	net.sweep() // the token cannot go back
	net.setCut("n1", false)
	if sl := peek(&net.nodes["n2"].l.held.t, user); sl != nil && sl.tokens != 0 {
		t.Fatalf("n2 holds %d tokens past their lease", sl.tokens)
	}
	allowed := 0
	for range 25 {
		if ok, _ := net.allow("n1", user); ok {
			allowed++
		}
	}
	if allowed != DefaultBurst {
		t.Fatalf("after the lease ended the keeper allowed %d calls, want %d", allowed, DefaultBurst)
	}
}

// TestKeeperUnreachable: calls of users whose keeper cannot be reached
// are decided by the node alone, never refused for it, and after the
// first failure none waits for the keeper; once it answers again the
// node borrows from it again.
func TestKeeperUnreachable(t *testing.T) {
	for _, mode := range []string{"refused", "blackholed"} {
		t.Run(mode, func(t *testing.T) {
			net := newTestNet(t, 3, func(l *Limits) { l.BorrowTimeout = 20 * time.Millisecond })
			user := net.userKeptBy("n1")
			if mode == "refused" {
				net.setCut("n1", true)
			} else {
				net.setHang("n1", true)
			}
			for i := range 20 {
				if ok, _ := net.allow("n2", user); !ok {
					t.Fatalf("call %d refused with the keeper unreachable, within this node's own bucket", i+1)
				}
			}
			if ok, wait := net.allow("n2", user); ok || wait != 500*time.Millisecond {
				t.Fatalf("past this node's own bucket: (%v, %v), want refused for 500ms", ok, wait)
			}
			if n := net.count(wire.LimitBorrow); n != 1 {
				t.Fatalf("%d borrows sent while the keeper was down, want the first only", n)
			}
			if n := net.decisions("n2", pathFallback, "allowed"); n != 20 {
				t.Fatalf("%d calls decided alone, want 20", n)
			}
			// After OwnerRetry a call probes the keeper in the background.
			net.setCut("n1", false)
			net.setHang("n1", false)
			net.clk.Advance(DefaultOwnerRetry)
			net.allow("n2", user)
			if n := net.count(wire.LimitBorrow); n != 2 {
				t.Fatalf("%d borrows after the retry delay, want a probe", n)
			}
			ok, _ := net.allow("n2", user)
			if !ok || net.decisions("n2", pathLease, "allowed") != 1 {
				t.Fatalf("the keeper answers again, yet the node does not spend its tokens (allowed %v)", ok)
			}
		})
	}
}

// TestKeeperLeavesTheRing: when the keeper dies the ring gives the
// user's bucket to another node, which starts a full one; tokens already
// borrowed are spent first.
func TestKeeperLeavesTheRing(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n1")
	for range 20 {
		net.allow("n2", user)
	}
	if ok, _ := net.allow("n2", user); ok {
		t.Fatal("a 21st call allowed")
	}
	net.setCut("n1", true)
	net.setView("n2", "n3")
	newKeeper := net.view.Load().Owner(KeyPrefix + user)
	allowed := 0
	for i := range 30 {
		if ok, _ := net.allow([]string{"n2", "n3"}[i%2], user); ok {
			allowed++
		}
	}
	if allowed < 18 || allowed > DefaultBurst {
		t.Fatalf("%d calls allowed by the new keeper %s's fresh bucket, want about %d", allowed, newKeeper, DefaultBurst)
	}
	if net.count(wire.LimitBorrow) == 0 || net.decisions("n2", pathFallback, "allowed")+net.decisions("n3", pathFallback, "allowed") != 0 {
		t.Fatal("after the ring moved, calls were not decided with the new keeper")
	}
}

// TestEveryMemberLeaving: with no ring left (the whole cluster stopping)
// a node decides alone.
func TestEveryMemberLeaving(t *testing.T) {
	net := newTestNet(t, 2, nil)
	net.setView()
	if ok, _ := net.allow("n1", "u1"); !ok || net.decisions("n1", pathFallback, "allowed") != 1 {
		t.Fatal("a call without a ring was not decided by the node alone")
	}
}

// TestTablesBounded: every table holds at most MaxUsers users, and sweeps
// drop what a new entry would equal.
func TestTablesBounded(t *testing.T) {
	net := newTestNet(t, 2, func(l *Limits) { l.MaxUsers = 3 })
	for i := range 20 {
		user := "x" + string(rune('a'+i))
		net.allow("n1", user)
		net.allow("n2", user)
	}
	net.setCut("n1", true)
	net.setCut("n2", true)
	for i := range 20 {
		net.allow("n1", "y"+string(rune('a'+i)))
	}
	for _, n := range net.nodes {
		if a, s, f := n.l.accounts.len(), n.l.held.len(), n.l.fallback.Len(); a > 3 || s > 3 || f > 3 {
			t.Fatalf("%s: tables of %d, %d and %d users, want at most 3", n.name, a, s, f)
		}
	}
	net.setCut("n1", false)
	net.setCut("n2", false)
	net.clk.Advance(DefaultLease)
	net.sweep()
	// Tokens unreported when the nodes were cut off are counted until
	// their lease ended; the buckets refill from then.
	net.clk.Advance(10 * time.Second)
	net.sweep()
	for _, n := range net.nodes {
		if a, s := n.l.accounts.len(), n.l.held.len(); a != 0 || s != 0 {
			t.Fatalf("%s: %d buckets and %d borrowers left after a lease of idleness", n.name, a, s)
		}
		users := counterValue(t, n.reg, "presence_ratelimit_users", map[string]string{"table": "buckets"})
		if users != 0 {
			t.Fatalf("%s: presence_ratelimit_users{table=buckets} = %v", n.name, users)
		}
	}
}

// TestRunSweeps: Run gives tokens back on its own as the clock goes.
func TestRunSweeps(t *testing.T) {
	net := newTestNet(t, 2, nil)
	user := net.userKeptBy("n1")
	for range 6 {
		net.allow("n2", user)
	}
	n2 := net.nodes["n2"]
	net.running.Add(1)
	go func() {
		defer net.running.Done()
		n2.l.Run()
	}()
	testkit.WaitFor(t, "Run to give tokens back", func() bool {
		net.clk.Advance(DefaultSweepInterval)
		return counterValue(t, n2.reg, "presence_ratelimit_returned_tokens_total", nil) > 0
	})
}

// TestHandleRefusesBadCalls: malformed frames and calls without a sender
// are invalid, never a panic.
func TestHandleRefusesBadCalls(t *testing.T) {
	net := newTestNet(t, 1, nil)
	l := net.nodes["n1"].l
	anonymous := wire.Marshal((&wire.LimitRequest{Op: wire.LimitBorrow, Users: []wire.LimitEntry{{User: "u", Tokens: 1}}}).Encode)
	for _, body := range [][]byte{nil, {9}, {byte(wire.LimitBorrow)}, anonymous} {
		if _, err := l.Handle(context.Background(), body); !errors.Is(err, presence.ErrInvalid) {
			t.Errorf("%x: %v, want invalid", body, err)
		}
	}
}

// TestConcurrentCallsShareOneBucket: calls of one user racing on every
// node at once (a page load over three nodes) share one bucket.
func TestConcurrentCallsShareOneBucket(t *testing.T) {
	net := newTestNet(t, 3, nil)
	user := net.userKeptBy("n2")
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for _, node := range []string{"n1", "n2", "n3"} {
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					if ok, wait := net.nodes[node].l.Allow(context.Background(), user, nil); ok {
						allowed.Add(1)
					} else if wait <= 0 {
						t.Errorf("refused without a wait")
					}
				}
			}()
		}
	}
	wg.Wait()
	net.settle()
	racing := int(allowed.Load())
	// Whatever the race left on the nodes is spent by the next calls.
	for _, node := range []string{"n1", "n2", "n3", "n1", "n2", "n3"} {
		if ok, _ := net.allow(node, user); ok {
			allowed.Add(1)
		}
	}
	t.Logf("%d of 120 racing calls allowed, %d in all", racing, allowed.Load())
	if racing > DefaultBurst || allowed.Load() != DefaultBurst {
		t.Fatalf("%d racing calls allowed and %d in all, want at most and exactly %d", racing, allowed.Load(), DefaultBurst)
	}
}

// TestViewsDifferDuringAMove: while a joining node reaches the nodes' views
// one at a time, a user's calls may be limited by the old keeper's bucket
// and the new keeper's at once (at most one extra burst per move); once
// every view agrees, by the new keeper's alone.
func TestViewsDifferDuringAMove(t *testing.T) {
	net := newTestNet(t, 4, nil)
	old, joined := newTestView("n1", "n2", "n3"), newTestView("n1", "n2", "n3", "n4")
	net.setView("n1", "n2", "n3")
	user := ""
	for i := range 10_000 {
		if u := "m" + strconv.Itoa(i); old.Owner(KeyPrefix+u) == "n1" && joined.Owner(KeyPrefix+u) == "n4" {
			user = u
			break
		}
	}
	net.setOwnView("n2", "n1", "n2", "n3", "n4") // n2 has seen n4 join, n1 and n3 not yet
	nodes := []string{"n1", "n2", "n3"}
	during := 0
	for i := range 60 {
		if ok, _ := net.allow(nodes[i%3], user); ok {
			during++
		}
	}
	net.setView("n1", "n2", "n3", "n4")
	after := 0
	for i := range 60 {
		if ok, _ := net.allow(nodes[i%3], user); ok {
			after++
		}
	}
	t.Logf("%d calls allowed while the views differ, %d more once they agree", during, after)
	if during < DefaultBurst || during+after > 2*DefaultBurst {
		t.Fatalf("%d calls allowed while the views differ and %d after: want at least one bucket, at most two in all", during, after)
	}
	if net.decisions("n1", pathFallback, "allowed")+net.decisions("n2", pathFallback, "allowed")+net.decisions("n3", pathFallback, "allowed") != 0 {
		t.Fatal("calls were decided alone while every keeper was reachable")
	}
}

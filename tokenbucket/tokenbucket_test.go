package tokenbucket

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
)

var start = time.Unix(1_700_000_000, 0)

func TestBucketArithmetic(t *testing.T) {
	b := Full(20, start)
	if !b.Take(20) || b.Tokens != 0 {
		t.Fatalf("a full bucket of 20 gives 20: %+v", b)
	}
	if b.Take(1) || b.Tokens != 0 {
		t.Fatalf("a refused take changed the bucket: %+v", b)
	}
	b.Advance(start.Add(1500*time.Millisecond), 2, 20)
	if b.Tokens != 3 {
		t.Fatalf("1.5 s at 2/s refilled %v tokens, want 3", b.Tokens)
	}
	b.Advance(start, 2, 20) // backwards: nothing
	if b.Tokens != 3 {
		t.Fatalf("a clock going back refilled: %v", b.Tokens)
	}
	b.Advance(start.Add(time.Hour), 2, 15)
	if b.Tokens != 15 {
		t.Fatalf("refill past a capacity of 15: %v", b.Tokens)
	}
	b.Give(4, 17)
	if b.Tokens != 17 {
		t.Fatalf("tokens given back past a capacity of 17: %v", b.Tokens)
	}
}

func TestRateWait(t *testing.T) {
	r := Rate{Burst: 20, PerSecond: 2}
	for _, tc := range []struct {
		tokens float64
		want   time.Duration
	}{{0, 500 * time.Millisecond}, {0.5, 250 * time.Millisecond}, {1, 0}, {7, 0}} {
		if got := r.Wait(tc.tokens); got != tc.want {
			t.Errorf("Wait(%v) = %v, want %v", tc.tokens, got, tc.want)
		}
	}
	if got := r.RefillTime(); got != 10*time.Second {
		t.Errorf("RefillTime = %v, want 10s", got)
	}
	for _, bad := range []Rate{{}, {Burst: 1}, {PerSecond: 1}, {Burst: -1, PerSecond: 1}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
}

func TestLimiterBurstThenRefill(t *testing.T) {
	clk := clock.NewFake(start)
	l, err := NewLimiter(clk, Rate{Burst: 20, PerSecond: 2}, 100)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 20 {
		if ok, _ := l.Allow(ctx, "alice", nil); !ok {
			t.Fatalf("call %d refused", i)
		}
	}
	for range 5 { // refusals cost nothing: the next token still comes after 500 ms
		if ok, wait := l.Allow(ctx, "alice", nil); ok || wait != 500*time.Millisecond {
			t.Fatalf("over the burst: %v %v", ok, wait)
		}
	}
	if ok, _ := l.Allow(ctx, "bob", nil); !ok {
		t.Fatal("another key is limited too")
	}
	clk.Advance(500 * time.Millisecond)
	if ok, _ := l.Allow(ctx, "alice", nil); !ok {
		t.Fatal("no token after 500 ms")
	}
	if ok, _ := l.Allow(ctx, "alice", nil); ok {
		t.Fatal("two tokens after 500 ms")
	}
}

func TestLimiterTableBounded(t *testing.T) {
	clk := clock.NewFake(start)
	l, err := NewLimiter(clk, Rate{Burst: 20, PerSecond: 2}, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		l.Allow(context.Background(), "u"+strconv.Itoa(i), nil)
		if l.Len() > 3 {
			t.Fatalf("table grew to %d", l.Len())
		}
	}
	// Buckets that refilled completely are swept.
	clk.Advance(11 * time.Second)
	l.Allow(context.Background(), "fresh", nil)
	if l.Len() != 1 {
		t.Fatalf("after the sweep %d buckets remain, want 1", l.Len())
	}
}

func TestNewLimiterRefusesNonsense(t *testing.T) {
	clk := clock.NewFake(start)
	if _, err := NewLimiter(clk, Rate{Burst: 20, PerSecond: 2}, 0); err == nil {
		t.Fatal("a table without room was accepted")
	}
	if _, err := NewLimiter(nil, Rate{Burst: 20, PerSecond: 2}, 10); err == nil {
		t.Fatal("a limiter without a clock was accepted")
	}
	if _, err := NewLimiter(clk, Rate{Burst: 20}, 10); err == nil {
		t.Fatal("a limiter without refill was accepted")
	}
}

package discourse

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// newStore starts a private redis-server, or skips when none is installed.
func newStore(t *testing.T) (*Store, *redis.Client) {
	t.Helper()
	ctx := context.Background()
	srv, err := StartLocal(ctx, 5*time.Second)
	if errors.Is(err, ErrNotInstalled) {
		t.Skipf("skipping the Redis script tests: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := New(ctx, rdb, Config{KeyPrefix: "test:", Timeout: 60 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	return s, rdb
}

func TestPresentAndLeaveCountUsersOnce(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	steps := []struct {
		name          string
		leave         bool
		user, client  string
		wantChanged   bool
		wantUserCount int64
	}{
		{"first client enters the user", false, "7", "a", true, 1},
		{"second client of the same user", false, "7", "b", false, 1},
		{"heartbeat of a present client", false, "7", "a", false, 1},
		{"another user enters", false, "8", "x", true, 2},
		{"one of two clients leaves", true, "7", "a", false, 2},
		{"leaving twice changes nothing", true, "7", "a", false, 2},
		{"last client leaves the user", true, "7", "b", true, 1},
		{"unknown client leaves", true, "9", "z", false, 1},
	}
	for _, st := range steps {
		var changed bool
		var err error
		if st.leave {
			changed, err = s.Leave(ctx, "/c", st.user, st.client)
		} else {
			changed, err = s.Present(ctx, "/c", st.user, st.client, now)
		}
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if changed != st.wantChanged {
			t.Errorf("%s: changed = %v, want %v", st.name, changed, st.wantChanged)
		}
		if n, err := s.Count(ctx, "/c"); err != nil || n != st.wantUserCount {
			t.Errorf("%s: count = %d (%v), want %d", st.name, n, err, st.wantUserCount)
		}
	}
}

func TestExpireRemovesOnlyStaleClients(t *testing.T) {
	s, _ := newStore(t)
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	mustPresent := func(user, client string, at time.Time) {
		t.Helper()
		if _, err := s.Present(ctx, "/e", user, client, at); err != nil {
			t.Fatal(err)
		}
	}
	mustPresent("1", "a", t0)                     // expires t0+60s
	mustPresent("2", "a", t0)                     // expires t0+60s, but...
	mustPresent("2", "b", t0.Add(30*time.Second)) // ...user 2 keeps a fresher client
	mustPresent("3", "a", t0.Add(59*time.Second))

	left, err := s.Expire(ctx, "/e", t0.Add(59*time.Second))
	if err != nil || len(left) != 0 {
		t.Fatalf("nothing is due yet: left %v, err %v", left, err)
	}
	left, err = s.Expire(ctx, "/e", t0.Add(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(left, []string{"1"}) {
		t.Errorf("left %v, want [1] (user 2 still has client b)", left)
	}
	if n, _ := s.Count(ctx, "/e"); n != 2 {
		t.Errorf("count %d after expiry, want 2", n)
	}
	// A client expired by the sweep enters again on its next heartbeat.
	if changed, _ := s.Present(ctx, "/e", "1", "a", t0.Add(61*time.Second)); !changed {
		t.Error("user 1 must enter again after expiring")
	}
}

func TestPipelineMatchesSingleCalls(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	now := time.Unix(1_800_000_000, 0)
	ops := []Op{
		{Channel: "/p", UserID: "1", ClientID: "a"},
		{Channel: "/p", UserID: "1", ClientID: "b"},
		{Channel: "/p", UserID: "2", ClientID: "a"},
		{Leave: true, Channel: "/p", UserID: "1", ClientID: "a"},
		{Leave: true, Channel: "/p", UserID: "1", ClientID: "b"},
	}
	want := []bool{true, false, true, false, true}
	results := make([]Result, len(ops))
	if err := s.Pipeline(ctx, ops, now, results); err != nil {
		t.Fatal(err)
	}
	for i, r := range results {
		if r.Err != nil || r.Changed != want[i] {
			t.Errorf("op %d: %+v, want changed=%v", i, r, want[i])
		}
	}
	// The pipeline survives the server forgetting its scripts.
	if err := rdb.ScriptFlush(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.Pipeline(ctx, ops[:1], now, results[:1]); err != nil || !results[0].Changed {
		t.Errorf("after SCRIPT FLUSH: %+v, %v", results[0], err)
	}
}

func TestNewRejectsZeroTimeout(t *testing.T) {
	if _, err := New(context.Background(), nil, Config{}); !errors.Is(err, ErrBadTimeout) {
		t.Fatalf("err = %v, want ErrBadTimeout", err)
	}
}

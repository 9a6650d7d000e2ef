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

func TestExpireDueSweepsOnlyChannelsWithClientsDue(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	for _, c := range []struct {
		channel, user string
		at            time.Time
	}{
		{"/a", "1", t0},                       // due at t0+60s
		{"/b", "2", t0.Add(30 * time.Second)}, // due at t0+90s
		{"/c", "3", t0},                       // heartbeated below, so nothing due at t0+60s
	} {
		if _, err := s.Present(ctx, c.channel, c.user, "x", c.at); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Present(ctx, "/c", "3", "x", t0.Add(50*time.Second)); err != nil {
		t.Fatal(err)
	}

	channels, left, err := s.ExpireDue(ctx, t0.Add(60*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// /a and /c are listed as due (a heartbeat does not re-score the list);
	// only /a had a client to expire.
	if channels != 2 || left != 1 {
		t.Errorf("first sweep: %d channels, %d left; want 2, 1", channels, left)
	}
	if n, _ := s.Count(ctx, "/c"); n != 1 {
		t.Errorf("/c count %d, want 1: its client was heartbeated", n)
	}
	// The sweep dropped the empty /a from the list and re-scored /c by its
	// oldest client (t0+110s), so only /b is due at t0+90s.
	listed, err := rdb.ZRangeWithScores(ctx, "test:channels", 0, -1).Result()
	if err != nil {
		t.Fatal(err)
	}
	want := []redis.Z{{Score: float64(t0.Add(90 * time.Second).UnixMilli()), Member: "/b"}, {Score: float64(t0.Add(110 * time.Second).UnixMilli()), Member: "/c"}}
	if !slices.Equal(listed, want) {
		t.Errorf("channel list %v, want %v", listed, want)
	}
	channels, left, err = s.ExpireDue(ctx, t0.Add(90*time.Second))
	if err != nil || channels != 1 || left != 1 {
		t.Errorf("second sweep: %d channels, %d left, %v; want 1, 1", channels, left, err)
	}
}

func TestChangesArePublishedInOrder(t *testing.T) {
	s, rdb := newStore(t)
	ctx := context.Background()
	sub := rdb.Subscribe(ctx, s.Topic("/m"))
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctx); err != nil { // the subscription confirmation
		t.Fatal(err)
	}
	now := time.Unix(1_800_000_000, 0)
	steps := []func() error{
		func() error { _, err := s.Present(ctx, "/m", "7", "a", now); return err },
		func() error { _, err := s.Present(ctx, "/m", "7", "b", now); return err }, // no message: 7 is present
		func() error { _, err := s.Present(ctx, "/m", "7", "a", now); return err }, // heartbeat, no message
		func() error { _, err := s.Leave(ctx, "/m", "7", "a"); return err },        // 7 still has b
		func() error { _, err := s.Leave(ctx, "/m", "7", "b"); return err },
		func() error { _, err := s.Present(ctx, "/m", "8", "a", now); return err },
		func() error { _, err := s.Present(ctx, "/m", "9", "a", now); return err },
		func() error { _, err := s.Expire(ctx, "/m", now.Add(time.Minute)); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	want := []string{
		`{"entering_user_ids":["7"]}`,
		`{"leaving_user_ids":["7"]}`,
		`{"entering_user_ids":["8"]}`,
		`{"entering_user_ids":["9"]}`,
		`{"leaving_user_ids":["8","9"]}`,
	}
	for i, w := range want {
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		msg, err := sub.ReceiveMessage(rctx)
		cancel()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if msg.Payload != w {
			t.Errorf("message %d = %s, want %s", i, msg.Payload, w)
		}
	}
}

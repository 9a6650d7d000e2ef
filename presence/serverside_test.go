package presence

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// The server side's operations on one engine (Inspect, Can, Clear) and the
// cap of max_users.

// cappedConfigs: /cap/* public with a cap of 2 users, /capcount/* the same
// count-only, /priv/* visible to user 1 and the group staff, /pub/* public,
// /count/* public and count-only.
func cappedConfigs(channel string) *Config {
	prefix, _ := ChannelPrefix(channel)
	switch prefix {
	case "cap":
		return &Config{Public: true, MaxUsers: 2}
	case "capcount":
		return &Config{Public: true, CountOnly: true, MaxUsers: 2}
	case "priv":
		return &Config{AllowedUserIDs: []string{"1"}, AllowedGroupIDs: []string{"staff"}}
	case "pub":
		return publicCfg
	case "count":
		return countOnlyCfg
	}
	return nil
}

func TestChannelCapRefusesNewUsersOnly(t *testing.T) {
	r := newChannelRig()
	ch := r.channel("/cap/a")
	cfg := &Config{Public: true, MaxUsers: 2}
	for _, u := range []*User{alice, bob} {
		if m, ok := ch.present(u, "tab", cfg, r.now()); !ok || m == nil {
			t.Fatalf("%s refused below the cap: %v %v", u.ID, m, ok)
		}
	}
	if m, ok := ch.present(carol, "tab", cfg, r.now()); ok || m != nil {
		t.Fatalf("third user admitted into a channel of 2: %v %v", m, ok)
	}
	if _, ok := ch.present(alice, "tab", cfg, r.now()); !ok {
		t.Fatal("a present user's heartbeat was refused")
	}
	if m, ok := ch.present(alice, "phone", cfg, r.now()); !ok || m != nil {
		t.Fatalf("a present user's second client: %v %v; want admitted, no message", m, ok)
	}
	if st := ch.state(cfg, false); st.Count != 2 || r.metrics.RefusedFull() != 1 {
		t.Fatalf("count %d, %d refusals; want 2 and 1", st.Count, r.metrics.RefusedFull())
	}
	ch.leave(bob.ID, "tab", r.now())
	if m, ok := ch.present(carol, "tab", cfg, r.now()); !ok || m == nil {
		t.Fatalf("refused below the cap after a leave: %v %v", m, ok)
	}
	// The cap is the config of each present: a raised cap admits at once.
	if _, ok := ch.present(bob, "tab", &Config{Public: true, MaxUsers: 3}, r.now()); !ok {
		t.Fatal("refused under a raised cap")
	}
}

func TestEngineCapAnswersFalseAndPublishesNothing(t *testing.T) {
	for name, tweak := range map[string]func(*EngineConfig){
		"without replicator": func(*EngineConfig) {},
		"with replicator":    withReplicator(&fakeReplicator{}),
	} {
		t.Run(name, func(t *testing.T) {
			r := newEngineRig(t, configFunc(cappedConfigs), tweak)
			if rep, ok := r.e.replicator.(*fakeReplicator); ok {
				rep.pub = r.rec
			}
			users := []*User{{ID: "1"}, {ID: "2"}, {ID: "3"}}
			for _, ch := range []string{"/cap/a", "/capcount/a"} {
				r.present(users[0], "tab", ch)
				r.present(users[1], "tab", ch)
				before := len(r.rec.take(ch))
				if before != 2 {
					t.Fatalf("%s: %d messages for two users entering", ch, before)
				}
				if got := r.update(users[2], "tab", []string{ch}, nil); got[ch] {
					t.Fatalf("%s: third user answered true", ch)
				}
				for i := range 3 {
					r.advance(20 * time.Second)
					got := r.update(users[0], "tab", []string{ch}, nil)
					got2 := r.update(users[1], "phone", []string{ch}, nil)
					if !got[ch] || !got2[ch] {
						t.Fatalf("%s: heartbeat %d of present users: %v %v", ch, i, got, got2)
					}
				}
				if st := r.e.fullState(t, ch); st.Count != 2 || slices.Contains(st.UserIDs(), "3") {
					t.Fatalf("%s: %+v", ch, st)
				}
				if msgs := r.rec.take(ch); len(msgs) != 0 {
					t.Fatalf("%s: the refused user and heartbeats published %d messages", ch, len(msgs))
				}
			}
		})
	}
}

// fullState is FullState failing the test on error.
func (e *Engine) fullState(t testing.TB, channel string) *ChannelState {
	t.Helper()
	st, err := e.FullState(context.Background(), channel)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestMergePastTheCapKeepsEveryoneAndRefusesNewUsers(t *testing.T) {
	ctx := context.Background()
	r := newEngineRig(t, configFunc(cappedConfigs))
	capCfg := &Config{Public: true, MaxUsers: 2}
	exp := r.clk.Now().Add(time.Minute).UnixNano()
	side := func(first int64, users ...string) *ChannelSnapshot {
		s := &ChannelSnapshot{Channel: "/cap/m", Config: capCfg, LastID: first}
		for _, u := range users {
			s.Clients = append(s.Clients, ClientSnapshot{User: UserInfo{ID: u}, ClientID: "tab", ExpiresAtUnixNano: exp})
		}
		return s
	}
	// Each side of a partition admitted two users of a channel of 2.
	merged, diverged := MergeSnapshots(side(100, "a", "b"), side(200, "c", "d"))
	if !diverged || len(merged.Clients) != 4 {
		t.Fatalf("merge: diverged %v, %d clients; want every client kept", diverged, len(merged.Clients))
	}
	if err := r.e.InstallMerged(ctx, merged); err != nil {
		t.Fatal(err)
	}
	if st := r.e.fullState(t, "/cap/m"); st.Count != 4 {
		t.Fatalf("after the merge %d users, want all 4 (nobody is kicked)", st.Count)
	}
	r.rec.take("/cap/m")
	present := func(id, client string) bool {
		got, err := r.e.Update(ctx, &User{ID: id}, client, []string{"/cap/m"}, nil)
		if err != nil {
			t.Fatal(err)
		}
		return got["/cap/m"]
	}
	if present("e", "tab") {
		t.Fatal("a new user entered a channel over its cap")
	}
	if !present("a", "tab") || !present("d", "phone") {
		t.Fatal("users present before the merge were refused")
	}
	// Still at or over the cap after one leaves: still refused.
	r.leave(&User{ID: "a"}, "tab", "/cap/m")
	r.leave(&User{ID: "b"}, "tab", "/cap/m")
	if present("e", "tab") {
		t.Fatal("admitted with 2 users in a channel of 2")
	}
	r.leave(&User{ID: "c"}, "tab", "/cap/m")
	if !present("e", "tab") {
		t.Fatal("refused below the cap")
	}
	msgs := r.rec.take("/cap/m")
	if len(msgs) != 4 || len(msgs[3].EnteringUsers) != 1 || msgs[3].EnteringUsers[0].ID != "e" {
		t.Fatalf("messages %v; want three leaves and e entering", msgs)
	}
}

func TestEngineInspectShowsCountOnlyUsers(t *testing.T) {
	r := newEngineRig(t, configFunc(cappedConfigs))
	ctx := context.Background()
	r.present(&User{ID: "2", Username: "bo"}, "tab", "/capcount/a")
	r.present(&User{ID: "1"}, "tab", "/capcount/a")
	got, err := r.e.Inspect(ctx, []string{"/capcount/a", "/nope/a", "bad", "/capcount/a", "/priv/x"})
	if err != nil {
		t.Fatal(err)
	}
	st := got["/capcount/a"]
	if len(got) != 4 || st == nil || !st.CountOnly || st.Count != 2 || !slices.Equal(st.UserIDs(), []string{"1", "2"}) || st.Users[1].Username != "bo" {
		t.Fatalf("inspect: %v, count-only state %+v", got, st)
	}
	if got["/nope/a"] != nil || got["bad"] != nil || got["/priv/x"] == nil || got["/priv/x"].Users == nil {
		t.Fatalf("inspect of missing, invalid and private channels: %v", got)
	}
	if anon := r.state(nil, "/capcount/a"); anon.Users != nil {
		t.Fatalf("the browsers' read of a count-only channel lists users: %+v", anon)
	}
	many := make([]string, MaxInspectChannels+1)
	for i := range many {
		many[i] = fmt.Sprintf("/pub/%d", i)
	}
	if _, err := r.e.Inspect(ctx, many); !errors.Is(err, ErrInvalid) {
		t.Fatalf("%d channels: %v, want ErrInvalid", len(many), err)
	}
	if _, err := r.e.Inspect(ctx, many[:MaxInspectChannels]); err != nil {
		t.Fatalf("%d channels: %v", MaxInspectChannels, err)
	}
}

func TestEngineCanAgreesWithUpdate(t *testing.T) {
	r := newEngineRig(t, configFunc(cappedConfigs))
	ctx := context.Background()
	users := map[string]*User{
		"anonymous": nil,
		"listed":    {ID: "1"},
		"staff":     {ID: "5", Groups: []string{"staff"}},
		"other":     {ID: "6", Groups: []string{"ops"}},
	}
	for _, ch := range []string{"/pub/a", "/priv/a", "/count/x", "/nope/a", "bad name"} {
		for who, u := range users {
			acc, err := r.e.Can(ctx, u, ch)
			if err != nil {
				t.Fatal(err)
			}
			cfg := cappedConfigs(ch)
			if !ValidChannelName(ch) {
				cfg = nil
			}
			if want := AccessOf(cfg, u); acc != want {
				t.Errorf("Can(%s, %s) = %+v, want %+v", who, ch, acc, want)
			}
			if u.Anonymous() {
				continue
			}
			got, err := r.e.Update(ctx, u, "can-"+who, []string{ch}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got[ch] != acc.CanEnter {
				t.Errorf("%s in %s: update answered %v, can_enter %v", who, ch, got[ch], acc.CanEnter)
			}
		}
	}
	if acc, _ := r.e.Can(ctx, users["listed"], "/capcount/x"); !acc.CountOnly || acc.MaxUsers != 2 {
		t.Fatalf("count-only capped channel: %+v", acc)
	}
}

func TestEngineClearPublishesOneLeave(t *testing.T) {
	for name, tweak := range map[string]func(*EngineConfig){
		"without replicator": func(*EngineConfig) {},
		"with replicator":    withReplicator(&fakeReplicator{}),
	} {
		t.Run(name, func(t *testing.T) {
			r := newEngineRig(t, configFunc(cappedConfigs), tweak)
			rep, _ := r.e.replicator.(*fakeReplicator)
			if rep != nil {
				rep.pub = r.rec
			}
			ctx := context.Background()
			r.present(&User{ID: "2"}, "tab", "/pub/a")
			r.present(&User{ID: "1"}, "tab", "/pub/a")
			r.present(&User{ID: "1"}, "phone", "/pub/a")
			r.present(&User{ID: "1"}, "tab", "/capcount/a")
			r.rec.take("")
			users, err := r.e.ClearAck(ctx, "/pub/a")
			if err != nil || !slices.Equal(users, []string{"1", "2"}) {
				t.Fatalf("clear: %v, %v", users, err)
			}
			r.barrier([]string{"/pub/a"})
			msgs := r.rec.take("/pub/a")
			if len(msgs) != 1 || !slices.Equal(msgs[0].LeavingUserIDs, []string{"1", "2"}) {
				t.Fatalf("clear published %v, want one leave of 1 and 2", msgs)
			}
			if st := r.e.fullState(t, "/pub/a"); st.Count != 0 || st.LastMessageID != msgs[0].ID {
				t.Fatalf("after clear: %+v", st)
			}
			if err := r.e.Clear(ctx, "/capcount/a"); err != nil {
				t.Fatal(err)
			}
			r.barrier([]string{"/capcount/a"})
			if msgs := r.rec.take("/capcount/a"); len(msgs) != 1 || msgs[0].CountDelta != -1 {
				t.Fatalf("clear of a count-only channel published %v", msgs)
			}
			// Nothing to clear: no message, and no error for missing or invalid names.
			for _, ch := range []string{"/pub/a", "/pub/never", "/nope/x", "bad"} {
				if err := r.e.Clear(ctx, ch); err != nil {
					t.Fatalf("clear %q: %v", ch, err)
				}
			}
			r.barrier([]string{"/pub/a"})
			if n := r.rec.count(); n != 0 {
				t.Fatalf("clearing empty channels published %d messages", n)
			}
			if rep != nil && !slices.Contains(rep.kinds("/pub/a"), ChangeLeave) {
				t.Fatalf("the replicator was not told the clients left: %v", rep.kinds("/pub/a"))
			}
			// A cleared client's next heartbeat enters again.
			if got := r.update(&User{ID: "1"}, "tab", []string{"/pub/a"}, nil); !got["/pub/a"] {
				t.Fatal("a cleared client could not enter again")
			}
		})
	}
}

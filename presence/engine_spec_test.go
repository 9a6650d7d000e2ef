package presence

// This file translates every case of Discourse's spec/lib/presence_channel_spec.rb
// to this service: a ConfigSource stands in for register_prefix("test"), a
// recording Publisher for MessageBus.track_publish, the timer wheel on a fake
// clock for Jobs::PresenceChannelAutoLeave and auto_leave_all, and channel
// passivation for the Redis key TTLs.

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

var (
	specUser   = &User{ID: "1", Username: "user", Groups: []string{"g1"}}
	specUser2  = &User{ID: "2", Username: "user2"}
	specSecure = &User{ID: "99", Username: "secure", Groups: []string{"secure"}}
	specPublic = regexp.MustCompile(`\A/test/public\d*\z`)
)

// specConfigs mirrors the register_prefix("test") block of the spec.
func specConfigs(channel string) *Config {
	switch {
	case specPublic.MatchString(channel):
		return &Config{Public: true}
	case channel == "/test/secureuser":
		return &Config{AllowedUserIDs: []string{specSecure.ID}}
	case channel == "/test/securegroup":
		return &Config{AllowedGroupIDs: []string{"secure"}}
	case channel == "/test/alloweduser":
		return &Config{AllowedUserIDs: []string{specUser.ID}}
	case channel == "/test/allowedgroup":
		return &Config{AllowedGroupIDs: []string{"g1"}}
	case channel == "/test/everyonegroup":
		return &Config{AllowedGroupIDs: []string{EveryoneGroup}}
	case channel == "/test/noaccess":
		return &Config{}
	case channel == "/test/countonly":
		return &Config{CountOnly: true, Public: true}
	}
	return nil
}

func newSpecRig(t *testing.T) *engineRig { return newEngineRig(t, configFunc(specConfigs)) }

// "can perform basic channel functionality"
func TestSpecBasicChannelFunctionality(t *testing.T) {
	r := newSpecRig(t)
	if st := r.state(specUser, "/test/public1"); st.Count != 0 || len(st.Users) != 0 {
		t.Fatalf("fresh channel: %+v", st)
	}
	r.present(specUser, "1", "/test/public1")
	r.present(specUser, "2", "/test/public1")
	if st := r.state(specUser, "/test/public1"); !slices.Equal(userIDs(st), []string{"1"}) || st.Count != 1 {
		t.Fatalf("two clients of one user: %+v", st)
	}
	r.leave(specUser, "2", "/test/public1")
	if st := r.state(specUser, "/test/public1"); !slices.Equal(userIDs(st), []string{"1"}) || st.Count != 1 {
		t.Fatalf("one client left: %+v", st)
	}
	r.leave(specUser, "1", "/test/public1")
	if st := r.state(specUser, "/test/public1"); len(st.Users) != 0 || st.Count != 0 {
		t.Fatalf("both clients left: %+v", st)
	}
}

// "can automatically expire users"
func TestSpecAutomaticExpiry(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "76", "/test/public1")
	r.present(specUser, "77", "/test/public1")
	if st := r.state(specUser, "/test/public1"); st.Count != 1 {
		t.Fatalf("count %d, want 1", st.Count)
	}
	r.advance(DefaultTimeoutSeconds*time.Second - time.Millisecond)
	if st := r.state(specUser, "/test/public1"); st.Count != 1 {
		t.Fatal("expired before the timeout")
	}
	r.advance(time.Second + time.Millisecond)
	testkit.WaitFor(t, "expiry", func() bool { return r.state(specUser, "/test/public1").Count == 0 })
}

// "correctly sends messages to message bus"
func TestSpecMessageContents(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/public1")
	r.state(specUser, "/test/public1")
	ms := r.rec.take("/test/public1")
	if len(ms) != 1 || len(ms[0].EnteringUsers) != 1 || ms[0].LeavingUserIDs != nil || ms[0].CountOnly {
		t.Fatalf("enter messages %+v, want one with entering_users only", ms)
	}
	if ms[0].EnteringUsers[0] != specUser.Info() {
		t.Fatalf("entering user %+v, want %+v", ms[0].EnteringUsers[0], specUser.Info())
	}

	r.advance((DefaultTimeoutSeconds + 1) * time.Second)
	testkit.WaitFor(t, "the leave message", func() bool { return r.rec.count() > 0 })
	r.state(specUser, "/test/public1")
	ms = r.rec.take("/test/public1")
	if len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"1"}) || ms[0].EnteringUsers != nil {
		t.Fatalf("expiry messages %+v, want one with leaving_user_ids [1] only", ms)
	}
}

// "can track active channels, and auto_leave_all successfully": one wheel
// tick expires clients across channels.
func TestSpecAutoLeaveAcrossChannels(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/public1", "/test/public2")
	r.advance(DefaultTimeoutSeconds / 2 * time.Second)
	r.present(specUser2, "b", "/test/public2")
	r.state(specUser, "/test/public2")
	r.rec.take("")

	r.advance((DefaultTimeoutSeconds/2 + 1) * time.Second)
	testkit.WaitFor(t, "leave messages of both channels", func() bool { return r.rec.count() >= 2 })
	r.state(specUser, "/test/public1")
	r.state(specUser, "/test/public2")
	got := map[string][]string{}
	for _, m := range r.rec.take("") {
		if _, dup := got[m.Channel]; dup || m.EnteringUsers != nil {
			t.Fatalf("unexpected message %+v", m)
		}
		got[m.Channel] = m.LeavingUserIDs
	}
	want := map[string][]string{"/test/public1": {"1"}, "/test/public2": {"1"}}
	if len(got) != 2 || !slices.Equal(got["/test/public1"], want["/test/public1"]) || !slices.Equal(got["/test/public2"], want["/test/public2"]) {
		t.Fatalf("messages %v, want %v", got, want)
	}
	if st := r.state(specUser, "/test/public1"); len(st.Users) != 0 {
		t.Fatalf("public1 users %v, want none", userIDs(st))
	}
	if st := r.state(specUser, "/test/public2"); !slices.Equal(userIDs(st), []string{"2"}) {
		t.Fatalf("public2 users %v, want [2]", userIDs(st))
	}
}

// "only sends one `enter` and `leave` message"
func TestSpecOneEnterOneLeaveMessage(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/public1")
	r.present(specUser, "a", "/test/public1")
	r.present(specUser, "b", "/test/public1")
	r.state(specUser, "/test/public1")
	ms := r.rec.take("/test/public1")
	if len(ms) != 1 || len(ms[0].EnteringUsers) != 1 || ms[0].EnteringUsers[0].ID != "1" || ms[0].LeavingUserIDs != nil {
		t.Fatalf("enter messages %+v", ms)
	}
	r.leave(specUser, "a", "/test/public1")
	r.leave(specUser, "a", "/test/public1")
	r.leave(specUser, "b", "/test/public1")
	r.state(specUser, "/test/public1")
	ms = r.rec.take("/test/public1")
	if len(ms) != 1 || !slices.Equal(ms[0].LeavingUserIDs, []string{"1"}) || ms[0].EnteringUsers != nil {
		t.Fatalf("leave messages %+v", ms)
	}
}

// "will return the messagebus last_id in the state payload"
func TestSpecLastMessageIDInState(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/public1")
	r.present(specUser2, "a", "/test/public1")
	st := r.state(specUser, "/test/public1")
	ids := userIDs(st)
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"1", "2"}) || st.Count != 2 {
		t.Fatalf("state %+v", st)
	}
	ms := r.rec.take("/test/public1")
	if len(ms) != 2 || st.LastMessageID != ms[1].ID || ms[1].ID != ms[0].ID+1 {
		t.Fatalf("last_message_id %d, messages %+v", st.LastMessageID, ms)
	}
}

// "sets an expiry on all channel-specific keys": Redis TTLs become
// passivation. A channel stays in memory while a client is present (each
// heartbeat keeps it), and for at least 10 minutes after it empties; then it
// is forgotten, and its next incarnation's ids jump past the old ones.
func TestSpecChannelStateLifetime(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/public1")
	for range 30 { // an hour of heartbeats
		r.advance(time.Minute)
		r.present(specUser, "a", "/test/public1")
	}
	if !slices.Contains(r.e.Channels(), "/test/public1") {
		t.Fatal("channel with a present client was forgotten")
	}
	r.leave(specUser, "a", "/test/public1")
	last := r.state(specUser, "/test/public1").LastMessageID
	for range 9 {
		r.advance(time.Minute)
		if r.metrics.Channels() != 1 {
			t.Fatal("channel forgotten less than 10 minutes after it emptied")
		}
	}
	testkit.WaitFor(t, "the idle channel to be forgotten", func() bool {
		r.advance(time.Minute)
		return r.metrics.Channels() == 0
	})
	if st := r.state(specUser, "/test/public1"); st.LastMessageID <= last {
		t.Fatalf("after passivation last id %d, not past %d", st.LastMessageID, last)
	}
}

// "handles security correctly for anon"
func TestSpecSecurityAnonymous(t *testing.T) {
	r := newSpecRig(t)
	channels := []string{"/test/public1", "/test/secureuser", "/test/securegroup", "/test/noaccess", "/test/everyonegroup"}
	for _, anon := range []*User{nil, {}} {
		if _, err := r.e.Update(context.Background(), anon, "a", channels, nil); !errors.Is(err, ErrForbidden) {
			t.Fatalf("anonymous update: %v, want ErrForbidden", err)
		}
		got, err := r.e.Get(context.Background(), anon, channels)
		if err != nil {
			t.Fatal(err)
		}
		for _, ch := range channels {
			if canView := got[ch] != nil; canView != (ch == "/test/public1") {
				t.Errorf("anonymous can view %s: %v", ch, canView)
			}
		}
	}
}

// "handles security correctly for a user"
func TestSpecSecurityUser(t *testing.T) {
	r := newSpecRig(t)
	want := map[string]bool{
		"/test/secureuser":    false,
		"/test/securegroup":   false,
		"/test/alloweduser":   true,
		"/test/allowedgroup":  true,
		"/test/everyonegroup": true,
		"/test/noaccess":      false,
	}
	channels := make([]string, 0, len(want))
	for ch := range want {
		channels = append(channels, ch)
	}
	canEnter := r.update(specUser, "a", channels, nil)
	got, err := r.e.Get(context.Background(), specUser, channels)
	if err != nil {
		t.Fatal(err)
	}
	for ch, w := range want {
		if canEnter[ch] != w {
			t.Errorf("can enter %s: %v, want %v", ch, canEnter[ch], w)
		}
		if canView := got[ch] != nil; canView != w {
			t.Errorf("can view %s: %v, want %v", ch, canView, w)
		}
	}
}

// "publishes messages with appropriate security": the audience of each
// message is the channel's config, and only allowed subscribers receive it.
func TestSpecMessageSecurity(t *testing.T) {
	r := newSpecRig(t)
	// Subscribe as the browser client does: GET, then follow from the last id.
	from := map[string]int64{
		"/test/alloweduser":  r.state(specUser, "/test/alloweduser").LastMessageID,
		"/test/allowedgroup": r.state(specUser, "/test/allowedgroup").LastMessageID,
	}
	allowed := subscribe(t, r.e, specUser, from)
	other := subscribe(t, r.e, specUser2, from)
	anon := subscribe(t, r.e, nil, from)
	for _, s := range []*collector{other, anon} {
		s.await(t, 2)
		for _, ev := range s.events() {
			if ev.Kind != EventUnavailable {
				t.Fatalf("a subscriber who may not view got %+v", ev)
			}
		}
	}

	r.present(specUser, "a", "/test/alloweduser")
	r.present(specUser, "a", "/test/allowedgroup")
	r.state(specUser, "/test/allowedgroup")
	ms := r.rec.take("")
	if len(ms) != 2 {
		t.Fatalf("%d messages, want 2", len(ms))
	}
	if !slices.Equal(ms[0].Audience.AllowedUserIDs, []string{"1"}) || ms[0].Audience.Public {
		t.Fatalf("alloweduser message audience %+v", ms[0].Audience)
	}
	if !slices.Equal(ms[1].Audience.AllowedGroupIDs, []string{"g1"}) || ms[1].Audience.Public {
		t.Fatalf("allowedgroup message audience %+v", ms[1].Audience)
	}
	allowed.await(t, 2)
	for _, ev := range allowed.events() {
		if ev.Kind != EventMessage {
			t.Fatalf("allowed subscriber got %+v", ev)
		}
	}
	if n := len(other.events()) + len(anon.events()); n != 4 {
		t.Fatalf("subscribers who may not view got %d events, want only their 4 unavailable", n)
	}
}

// "publishes messages correctly in count_only mode"
func TestSpecCountOnlyMessages(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/countonly")
	r.state(specUser, "/test/countonly")
	ms := r.rec.take("/test/countonly")
	if len(ms) != 1 || ms[0].CountDelta != 1 || !ms[0].CountOnly || ms[0].EnteringUsers != nil {
		t.Fatalf("enter: %+v, want count_delta 1 only", ms)
	}
	st := r.state(specUser2, "/test/countonly")
	if !st.CountOnly || st.Count != 1 || st.Users != nil {
		t.Fatalf("count-only state %+v must show the count only", st)
	}
	r.leave(specUser, "a", "/test/countonly")
	r.state(specUser, "/test/countonly")
	ms = r.rec.take("/test/countonly")
	if len(ms) != 1 || ms[0].CountDelta != -1 || ms[0].LeavingUserIDs != nil {
		t.Fatalf("leave: %+v, want count_delta -1 only", ms)
	}
}

// "sets a mutex when the change involves publishing messages": state changes
// and their messages are serialized by the channel's actor. Enter, leave,
// enter and auto-leave publish four messages with contiguous ids, in order;
// concurrent updates never interleave a user's enter and leave.
func TestSpecChangesAndMessagesSerialized(t *testing.T) {
	r := newSpecRig(t)
	r.present(specUser, "a", "/test/public1")
	r.leave(specUser, "a", "/test/public1")
	r.present(specUser, "a", "/test/public1")
	r.advance(time.Hour)
	testkit.WaitFor(t, "auto-leave", func() bool { return r.rec.count() == 4 })
	ms := r.rec.take("")
	kinds := ""
	for i, m := range ms {
		if i > 0 && m.ID != ms[i-1].ID+1 {
			t.Fatalf("ids not contiguous: %d after %d", m.ID, ms[i-1].ID)
		}
		if m.EnteringUsers != nil {
			kinds += "E"
		} else {
			kinds += "L"
		}
	}
	if kinds != "ELEL" {
		t.Fatalf("messages %s, want ELEL", kinds)
	}

	const users = 40
	var wg sync.WaitGroup
	for i := range users {
		wg.Go(func() {
			u := &User{ID: fmt.Sprint(100 + i)}
			r.present(u, "a", "/test/public2")
			r.leave(u, "a", "/test/public2")
		})
	}
	wg.Wait()
	r.state(specUser, "/test/public2")
	ms = r.rec.take("/test/public2")
	if len(ms) != 2*users {
		t.Fatalf("%d messages, want %d", len(ms), 2*users)
	}
	entered := map[string]bool{}
	for i, m := range ms {
		if i > 0 && m.ID != ms[i-1].ID+1 {
			t.Fatalf("ids not contiguous: %d after %d", m.ID, ms[i-1].ID)
		}
		switch {
		case m.EnteringUsers != nil:
			entered[m.EnteringUsers[0].ID] = true
		case !entered[m.LeavingUserIDs[0]]:
			t.Fatalf("user %s left before entering", m.LeavingUserIDs[0])
		}
	}
}

// Contract: every user expiring in the same tick of a channel leaves in one
// message; in count-only channels that is one count_delta.
func TestSpecUsersExpiringInOneTickLeaveTogether(t *testing.T) {
	for _, channel := range []string{"/test/public1", "/test/countonly"} {
		t.Run(channel, func(t *testing.T) {
			r := newSpecRig(t)
			r.advance(100 * time.Millisecond) // deadlines 60.1 s to 60.5 s: all in the tick of 61 s
			for i := range 5 {
				r.present(&User{ID: fmt.Sprint(i + 1)}, "a", channel)
				r.advance(100 * time.Millisecond)
			}
			r.state(specUser, channel)
			r.rec.take("")
			r.advance((DefaultTimeoutSeconds + 1) * time.Second)
			testkit.WaitFor(t, "expiry", func() bool { return r.state(specUser, channel).Count == 0 })
			ms := r.rec.take("")
			if len(ms) != 1 {
				t.Fatalf("%d messages, want 1: %+v", len(ms), ms)
			}
			if channel == "/test/countonly" {
				if ms[0].CountDelta != -5 {
					t.Fatalf("count_delta %d, want -5", ms[0].CountDelta)
				}
			} else if !slices.Equal(ms[0].LeavingUserIDs, []string{"1", "2", "3", "4", "5"}) {
				t.Fatalf("leaving %v", ms[0].LeavingUserIDs)
			}
		})
	}
}

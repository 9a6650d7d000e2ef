package api

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
)

// marshalPayload is the reference encoding of a message event's data.
func marshalPayload(t testing.TB, channel string, m *presence.Message) string {
	t.Helper()
	type user = presence.UserInfo
	var data any
	switch {
	case m.CountOnly:
		data = struct {
			CountDelta int `json:"count_delta"`
		}{m.CountDelta}
	case len(m.EnteringUsers) > 0:
		data = struct {
			EnteringUsers []user `json:"entering_users"`
		}{m.EnteringUsers}
	default:
		ids := m.LeavingUserIDs
		if ids == nil {
			ids = []string{}
		}
		data = struct {
			LeavingUserIDs []string `json:"leaving_user_ids"`
		}{ids}
	}
	b, err := json.Marshal(struct {
		Channel   string `json:"channel"`
		MessageID int64  `json:"message_id"`
		Data      any    `json:"data"`
	}{channel, m.ID, data})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMessagePayloadMatchesEncodingJSON(t *testing.T) {
	odd := presence.UserInfo{ID: "<7>", Username: "s\"a\\m", Name: "Zoë & co\u2028", AvatarTemplate: "/t/\x01{size}\xff.png"}
	plain := presence.UserInfo{ID: "8", Username: "kim"}
	msgs := []*presence.Message{
		{Channel: "/a/x", ID: 4, EnteringUsers: []presence.UserInfo{plain}},
		{Channel: "/a/x", ID: 1 << 50, EnteringUsers: []presence.UserInfo{odd, plain}},
		{Channel: "/a/<y>", ID: 5, LeavingUserIDs: []string{"7", "é"}},
		{Channel: "/a/x", ID: 6},
		{Channel: "/a/c", ID: 7, CountOnly: true, CountDelta: -3},
	}
	cache := newPayloadCache()
	for _, m := range msgs {
		want := marshalPayload(t, m.Channel, m)
		if got := string(appendMessagePayload(nil, m.Channel, m)); got != want {
			t.Errorf("payload\n got %s\nwant %s", got, want)
		}
		for range 2 { // the second answer comes from the cache
			if got := string(cache.append(nil, m.Channel, m)); got != want {
				t.Errorf("cached payload\n got %s\nwant %s", got, want)
			}
		}
	}
}

// BenchmarkSSEEncode measures one SSE frame of an enter message for a
// stream of 20 channels: "fresh" encodes every message (a message reaching
// one stream), "fanout" the same message again (every further subscriber of
// a channel, served from the payload cache).
func BenchmarkSSEEncode(b *testing.B) {
	from := map[string]int64{}
	for i := range 20 {
		from[fmt.Sprintf("/demo/load/%d", i)] = 100
	}
	u := &presence.User{ID: "42"}
	audience := &presence.Config{Public: true}
	info := presence.UserInfo{ID: "7", Username: "sam", Name: "Sam Smith", AvatarTemplate: "/load/12/{size}.png"}
	run := func(b *testing.B, fresh bool) {
		cur := newCursor(from)
		enc := eventEncoder{payloads: newPayloadCache()}
		m := &presence.Message{Channel: "/demo/load/3", ID: 101, EnteringUsers: []presence.UserInfo{info}, Audience: audience}
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			if fresh {
				m = &presence.Message{Channel: "/demo/load/3", ID: int64(101 + i), EnteringUsers: m.EnteringUsers, Audience: audience}
			}
			if frame := enc.encode(presence.Event{Kind: presence.EventMessage, Channel: m.Channel, Message: m, LastID: m.ID}, u, cur); frame == nil {
				b.Fatal("no frame")
			}
		}
	}
	b.Run("fresh", func(b *testing.B) { run(b, true) })
	b.Run("fanout", func(b *testing.B) { run(b, false) })
}

func TestEventBatchMatchesFrameByFrame(t *testing.T) {
	from := map[string]int64{"/a/x": 3, "/a/y": -1, "/a/z": 0}
	u := &presence.User{ID: "42"}
	public := &presence.Config{Public: true}
	secret := &presence.Config{AllowedUserIDs: []string{"1"}}
	evs := []presence.Event{
		{Kind: presence.EventMessage, Channel: "/a/x", LastID: 4, Message: &presence.Message{Channel: "/a/x", ID: 4, LeavingUserIDs: []string{"7"}, Audience: public}},
		{Kind: presence.EventMessage, Channel: "/a/x", LastID: 5, Message: &presence.Message{Channel: "/a/x", ID: 5, LeavingUserIDs: []string{"8"}, Audience: secret}},
		{Kind: presence.EventResync, Channel: "/a/y", LastID: 90},
		{Kind: presence.EventUnavailable, Channel: "/a/z"},
		{Kind: presence.EventMessage, Channel: "/a/x", LastID: 6, Message: &presence.Message{Channel: "/a/x", ID: 6, CountOnly: true, CountDelta: 1, Audience: public}},
	}
	// The reference: one frame per event, as the stream wrote them before
	// batching (the hidden message moves the cursor but writes nothing).
	var want []byte
	refCur, ref := newCursor(from), eventEncoder{payloads: newPayloadCache()}
	for _, ev := range evs {
		want = append(want, ref.encode(ev, u, refCur)...)
	}
	cur, enc := newCursor(from), eventEncoder{payloads: newPayloadCache()}
	got := enc.appendEvents(nil, evs, u, cur)
	if string(got) != string(want) {
		t.Fatalf("batch\n got %q\nwant %q", got, want)
	}
	if cur.encode() != refCur.encode() {
		t.Fatalf("cursor %s, want %s", cur.encode(), refCur.encode())
	}
}

// A buffer that a burst grew is dropped after its write; a small one is
// kept for the next batch.
func TestEventBufferDroppedAfterBurst(t *testing.T) {
	u := &presence.User{ID: "42"}
	cur, enc := newCursor(map[string]int64{"/a/x": -1}), eventEncoder{payloads: newPayloadCache()}
	unavailable := presence.Event{Kind: presence.EventUnavailable, Channel: "/a/x"}
	frame := len(enc.encode(unavailable, u, cur))
	burst := make([]presence.Event, 2*sseKeepBuffer/frame)
	for i := range burst {
		burst[i] = unavailable
	}
	enc.buf = enc.appendEvents(enc.buf[:0], burst, u, cur)
	if len(enc.buf) != len(burst)*frame {
		t.Fatalf("burst of %d bytes, want %d", len(enc.buf), len(burst)*frame)
	}
	enc.release()
	if enc.buf != nil {
		t.Fatalf("a %d-byte buffer kept after a burst", cap(enc.buf))
	}
	enc.buf = enc.appendEvents(enc.buf[:0], burst[:1], u, cur)
	enc.release()
	if len(enc.buf) != frame || enc.buf == nil {
		t.Fatalf("small batch of %d bytes, buffer kept %v", len(enc.buf), enc.buf != nil)
	}
}

func TestSSEWriteDeadlineRearm(t *testing.T) {
	var o sseWriter
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, // no deadline yet
		{time.Second, false},
		{sseWriteTimeout / 2, false}, // exactly half left
		{sseWriteTimeout/2 + time.Nanosecond, true},
		{sseWriteTimeout, false},
		{10 * sseWriteTimeout, true}, // long idle: the old deadline passed
	}
	for _, s := range steps {
		now := t0.Add(s.at)
		if got := o.rearm(now); got != s.want {
			t.Fatalf("rearm at %v: %v, want %v", s.at, got, s.want)
		}
		if left := o.deadline.Sub(now); left < sseWriteTimeout/2 || left > sseWriteTimeout {
			t.Fatalf("at %v the deadline is %v away", s.at, left)
		}
	}
}

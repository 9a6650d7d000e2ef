package api

import (
	"encoding/json"
	"fmt"
	"testing"

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

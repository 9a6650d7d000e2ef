package chaos

import (
	"strings"
	"testing"
)

func TestReadEvents(t *testing.T) {
	stream := ": connected\n\n" +
		"id: c1\nevent: message\ndata: {\"channel\": \"/a\", \"message_id\": 5, \"data\": {\"entering_users\": [{\"id\": \"7\"}]}}\n\n" +
		": keepalive\n\n" +
		"id: c2\nevent: resync\ndata: {\"channel\": \"/a\"}\n\n" +
		"id: c3\n\n" + // an id alone: a position
		"data: {\"channel\": \"/b\",\n" + "data:  \"message_id\": 2}\n\n" +
		"event: unavailable\ndata: {\"channel\": \"/c\"}\n\n" +
		"id: partial\nevent: message\n" // no blank line: never dispatched
	var events []Event
	lines := 0
	err := readEvents(strings.NewReader(stream), func() { lines++ }, func(ev Event) { events = append(events, ev) })
	if err != nil {
		t.Fatal(err)
	}
	if lines != 22 {
		t.Errorf("line callbacks: %d, want 22", lines)
	}
	want := []struct {
		id, typ, channel string
		msg              int64
	}{
		{"c1", "message", "/a", 5},
		{"c2", "resync", "/a", 0},
		{"c3", "", "", 0},
		{"", "message", "/b", 2},
		{"", "unavailable", "/c", 0},
	}
	if len(events) != len(want) {
		t.Fatalf("got %d events, want %d: %+v", len(events), len(want), events)
	}
	for i, w := range want {
		ev := events[i]
		if ev.ID != w.id || ev.Type != w.typ || ev.Channel != w.channel || ev.MessageID != w.msg {
			t.Errorf("event %d: %+v, want %+v", i, ev, w)
		}
	}
	if got := string(events[0].Payload); !strings.Contains(got, "entering_users") {
		t.Errorf("payload of the first event: %s", got)
	}
}

package chaos

import (
	"bufio"
	"encoding/json"
	"io"
	"strings"
)

// Event is one Server-Sent Event of a subscription stream, or a frame of
// an id alone (Type ""), which moves the cursor without an event.
type Event struct {
	ID        string // the stream cursor ("id:" field); "" when the event has none
	Type      string // "message", "resync", "unavailable", or "" for an id alone
	Data      string // the raw data
	Channel   string // the channel the event is about
	MessageID int64  // the channel's message id (message events)
	// Payload is the message's data object (message events), e.g.
	// {"entering_users": [...]}.
	Payload json.RawMessage
}

// eventData is the data of every event kind; message events fill all of it.
type eventData struct {
	Channel   string          `json:"channel"`
	MessageID int64           `json:"message_id"`
	Data      json.RawMessage `json:"data"`
}

// Payload kinds of a message event.
type (
	// Entering is the payload of an entering_users message.
	Entering struct {
		EnteringUsers []struct {
			ID string `json:"id"`
		} `json:"entering_users"`
	}
	// Leaving is the payload of a leaving_user_ids message.
	Leaving struct {
		LeavingUserIDs []string `json:"leaving_user_ids"`
	}
)

// readEvents parses an event stream, calling line for every line (comments
// included, so callers can watch liveness) and emit for every event. It
// returns when the stream ends.
func readEvents(r io.Reader, line func(), emit func(Event)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var ev Event
	var data []string
	for sc.Scan() {
		line()
		text := sc.Text()
		field, value, _ := strings.Cut(text, ":")
		value = strings.TrimPrefix(value, " ")
		switch {
		case text == "":
			switch {
			case ev.Type != "" || len(data) > 0:
				ev.Data = strings.Join(data, "\n")
				emit(decodeEvent(ev))
			case ev.ID != "":
				emit(ev) // an id alone: EventSource keeps it as its Last-Event-ID
			}
			ev, data = Event{}, nil
		case field == "": // a comment: keepalive or ": connected"
		case field == "id":
			ev.ID = value
		case field == "event":
			ev.Type = value
		case field == "data":
			data = append(data, value)
		}
	}
	return sc.Err()
}

// decodeEvent fills the decoded fields of ev; the SSE default type is
// "message".
func decodeEvent(ev Event) Event {
	if ev.Type == "" {
		ev.Type = "message"
	}
	var d eventData
	if json.Unmarshal([]byte(ev.Data), &d) == nil {
		ev.Channel, ev.MessageID, ev.Payload = d.Channel, d.MessageID, d.Data
	}
	return ev
}

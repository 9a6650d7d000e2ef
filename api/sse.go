package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/presencehq/presence/presence"
)

// sseWriteTimeout bounds one write to a stream so that a peer that stopped
// reading cannot hold a goroutine forever. It is a socket deadline, so it is
// wall-clock time by nature, not the injected clock.
const sseWriteTimeout = 30 * time.Second

// parseSubscribe reads the channels query ({"<name>": <last id>}) and applies
// a Last-Event-ID header or lastEventId parameter on top of it.
func (s *server) parseSubscribe(r *http.Request) (map[string]int64, error) {
	q := r.URL.Query()
	raw := q.Get("channels")
	if raw == "" {
		return nil, invalid("channels is required")
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &obj); err != nil || obj == nil {
		return nil, invalid(`channels must be a JSON object {"<name>": <last id>}`)
	}
	if len(obj) == 0 {
		return nil, invalid("channels is empty")
	}
	if len(obj) > s.cfg.MaxSubscribeChannels {
		return nil, invalid("too many channels (at most %d)", s.cfg.MaxSubscribeChannels)
	}
	from := make(map[string]int64, len(obj))
	for name, v := range obj {
		// ParseInt on the raw literal rejects strings, fractions and exponents.
		id, err := strconv.ParseInt(string(v), 10, 64)
		if err != nil || id < -1 {
			return nil, invalid("the last id of %q must be an integer >= -1", name)
		}
		from[name] = id
	}
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("lastEventId")
	}
	if last == "" {
		return from, nil
	}
	return applyCursor(from, last)
}

// applyCursor overrides the ids of from with those a cursor records.
func applyCursor(from map[string]int64, last string) (map[string]int64, error) {
	c := newCursor(from)
	ids, applies, ok := decodeCursor(last, c.names)
	if !ok {
		return nil, invalid("malformed Last-Event-ID")
	}
	if applies {
		for i, name := range c.names {
			from[name] = ids[i]
		}
	}
	return from, nil
}

// handleSubscribe streams GET /presence/subscribe as Server-Sent Events.
// Every problem is answered as JSON before the stream starts.
func (s *server) handleSubscribe(w http.ResponseWriter, r *http.Request) {
	u, err := s.auth.identify(r, true)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	from, err := s.parseSubscribe(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	cur := newCursor(from)
	sub, err := s.cfg.Service.Subscribe(r.Context(), u, from)
	if err == nil && sub == nil {
		err = errors.New("service returned no subscription")
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	defer sub.Close()
	s.metrics.streams.Inc()
	defer s.metrics.streams.Dec()
	s.stream(w, r, u, sub, cur)
}

// stream writes events and keepalives until the client leaves, the
// subscription ends, or a write fails.
func (s *server) stream(w http.ResponseWriter, r *http.Request, u *presence.User, sub presence.Subscription, cur *cursor) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	ticker := s.cfg.Clock.NewTicker(s.cfg.KeepAlive)
	defer ticker.Stop()
	// Clear the per-write deadline so it cannot outlive the stream on a
	// kept-alive connection.
	defer func() { _ = rc.SetWriteDeadline(time.Time{}) }()
	w.WriteHeader(http.StatusOK)
	if !s.send(w, rc, []byte(": connected\n\n")) {
		return
	}
	for {
		var frame []byte
		select {
		case <-r.Context().Done():
			return
		case <-ticker.C():
			frame = []byte(": keepalive\n\n")
		case ev, open := <-sub.Events():
			if !open {
				return
			}
			frame = encodeEvent(ev, u, cur)
		}
		if frame != nil && !s.send(w, rc, frame) {
			return
		}
	}
}

// send writes and flushes one frame under a write deadline.
func (s *server) send(w http.ResponseWriter, rc *http.ResponseController, frame []byte) bool {
	// Not every ResponseWriter supports deadlines (httptest's does not); the
	// stream still works without one.
	_ = rc.SetWriteDeadline(time.Now().Add(sseWriteTimeout))
	if _, err := w.Write(frame); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// Wire payloads of the three event kinds.
type (
	messageEvent struct {
		Channel   string `json:"channel"`
		MessageID int64  `json:"message_id"`
		Data      any    `json:"data"`
	}
	enteringData struct {
		EnteringUsers []presence.UserInfo `json:"entering_users"`
	}
	leavingData struct {
		LeavingUserIDs []string `json:"leaving_user_ids"`
	}
	countData struct {
		CountDelta int `json:"count_delta"`
	}
	channelEvent struct {
		Channel string `json:"channel"`
	}
)

// encodeEvent advances the cursor and renders ev as an SSE frame; nil when
// the event must not reach u (a message whose audience excludes u, which the
// Service should already have filtered: this is defence in depth).
func encodeEvent(ev presence.Event, u *presence.User, cur *cursor) []byte {
	var name string
	var payload any
	switch ev.Kind {
	case presence.EventMessage:
		if ev.Message == nil {
			return nil
		}
		cur.set(ev.Channel, ev.Message.ID)
		if a := ev.Message.Audience; a != nil && !a.CanView(u) {
			return nil
		}
		name, payload = "message", messagePayload(ev.Channel, ev.Message)
	case presence.EventResync:
		cur.set(ev.Channel, ev.LastID)
		name, payload = "resync", channelEvent{Channel: ev.Channel}
	case presence.EventUnavailable:
		name, payload = "unavailable", channelEvent{Channel: ev.Channel}
	default:
		return nil
	}
	data, err := json.Marshal(payload)
	if err != nil {
		return nil
	}
	var b bytes.Buffer
	b.WriteString("id: " + cur.encode() + "\n")
	b.WriteString("event: " + name + "\n")
	b.WriteString("data: ")
	b.Write(data) // json.Marshal never emits raw newlines
	b.WriteString("\n\n")
	return b.Bytes()
}

// messagePayload renders a message with exactly one of its payload kinds.
func messagePayload(channel string, m *presence.Message) messageEvent {
	out := messageEvent{Channel: channel, MessageID: m.ID}
	switch {
	case m.CountOnly:
		out.Data = countData{CountDelta: m.CountDelta}
	case len(m.EnteringUsers) > 0:
		out.Data = enteringData{EnteringUsers: m.EnteringUsers}
	default:
		ids := m.LeavingUserIDs
		if ids == nil {
			ids = []string{}
		}
		out.Data = leavingData{LeavingUserIDs: ids}
	}
	return out
}

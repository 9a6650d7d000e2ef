package load

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// EventKind classifies a stream event.
type EventKind uint8

// Stream event kinds.
const (
	EventOther EventKind = iota
	EventEntering
	EventLeaving
	EventCountDelta
	EventResync
	EventUnavailable
)

// Event is one parsed Server-Sent Event of a presence stream.
type Event struct {
	Kind    EventKind
	Channel string
	// Entering lists the entering users (id, avatar_template) of an
	// entering_users message.
	Entering []EnteringUser
	// At is when the event's data line was read.
	At time.Time
}

// EnteringUser is the part of an entering user the tool reads.
type EnteringUser struct {
	ID             string `json:"id"`
	AvatarTemplate string `json:"avatar_template"`
}

type wireMessage struct {
	Channel string `json:"channel"`
	Data    struct {
		Entering   []EnteringUser `json:"entering_users"`
		Leaving    []string       `json:"leaving_user_ids"`
		CountDelta *int           `json:"count_delta"`
	} `json:"data"`
}

// ReadEvents parses an event stream from r and calls handle for each event
// until r ends; it returns the read error (io.EOF at a clean end).
func ReadEvents(r io.Reader, handle func(Event)) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var name string
	var data []byte
	var at time.Time
	for {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			// A line longer than the buffer: keep reading it whole.
			rest, err2 := br.ReadBytes('\n')
			line, err = append(append([]byte(nil), line...), rest...), err2
		}
		if err != nil {
			return err
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
			if data != nil {
				handle(parseEvent(name, data, at))
			}
			name, data = "", nil
		case line[0] == ':':
		case bytes.HasPrefix(line, []byte("event:")):
			name = string(bytes.TrimSpace(line[len("event:"):]))
		case bytes.HasPrefix(line, []byte("data:")):
			at = time.Now()
			data = append(data, bytes.TrimPrefix(line[len("data:"):], []byte(" "))...)
		}
	}
}

func parseEvent(name string, data []byte, at time.Time) Event {
	ev := Event{At: at}
	switch name {
	case "resync", "unavailable":
		var c struct {
			Channel string `json:"channel"`
		}
		_ = json.Unmarshal(data, &c)
		ev.Channel = c.Channel
		ev.Kind = map[string]EventKind{"resync": EventResync, "unavailable": EventUnavailable}[name]
		return ev
	case "message", "":
	default:
		return ev
	}
	var m wireMessage
	if json.Unmarshal(data, &m) != nil {
		return ev
	}
	ev.Channel = m.Channel
	switch {
	case m.Data.Entering != nil:
		ev.Kind, ev.Entering = EventEntering, m.Data.Entering
	case m.Data.Leaving != nil:
		ev.Kind = EventLeaving
	case m.Data.CountDelta != nil:
		ev.Kind = EventCountDelta
	}
	return ev
}

// SubscribeURL is the subscribe endpoint of base for channels, new messages
// only, with token (if any) as query parameter as EventSource sends it.
func SubscribeURL(base string, channels []string, token string) string {
	obj := make(map[string]int, len(channels))
	for _, c := range channels {
		obj[c] = -1
	}
	js, _ := json.Marshal(obj)
	q := url.Values{"channels": {string(js)}}
	if token != "" {
		q.Set("token", token)
	}
	return strings.TrimRight(base, "/") + "/presence/subscribe?" + q.Encode()
}

// Subscriber holds one SSE stream open and feeds its events to handle,
// reconnecting (new messages only) when the stream ends early.
type Subscriber struct {
	client *http.Client
	url    string
	handle func(Event)
	// Drops counts streams that ended or failed before the context did.
	Drops atomic.Uint64
}

// NewSubscriber returns a subscriber for the stream at url.
func NewSubscriber(client *http.Client, url string, handle func(Event)) *Subscriber {
	return &Subscriber{client: client, url: url, handle: handle}
}

// Connect opens the stream and returns once the server answered 200, so
// the subscription exists before any workload starts; the stream is then
// read in the background until ctx ends.
func (s *Subscriber) Connect(ctx context.Context) error {
	body, err := s.open(ctx)
	if err != nil {
		return err
	}
	go s.loop(ctx, body)
	return nil
}

func (s *Subscriber) open(ctx context.Context) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		resp.Body.Close()
		return nil, fmt.Errorf("subscribe: %s: %s", resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp.Body, nil
}

func (s *Subscriber) loop(ctx context.Context, body io.ReadCloser) {
	for {
		_ = ReadEvents(body, s.handle)
		body.Close()
		if ctx.Err() != nil {
			return
		}
		s.Drops.Add(1)
		for {
			var err error
			if body, err = s.open(ctx); err == nil {
				break
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
}

// StampOf extracts the enter stamp the load tool puts into avatar
// templates ("/load/<stamp>/{size}.png"); 0 when there is none.
func StampOf(avatarTemplate string) uint64 {
	rest, ok := strings.CutPrefix(avatarTemplate, "/load/")
	if !ok {
		return 0
	}
	digits, _, _ := strings.Cut(rest, "/")
	n, err := strconv.ParseUint(digits, 10, 64)
	if err != nil {
		return 0
	}
	return n
}

// AvatarWithStamp is the avatar_template carrying stamp.
func AvatarWithStamp(stamp uint64) string {
	return "/load/" + strconv.FormatUint(stamp, 10) + "/{size}.png"
}

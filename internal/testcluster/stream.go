package testcluster

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// streamClient has no overall timeout, as streams last as long as the
// test, but a server must answer the request within requestTimeout.
var streamClient = &http.Client{Transport: &http.Transport{ResponseHeaderTimeout: requestTimeout}}

// Event is one Server-Sent Event of a subscription.
type Event struct {
	ID    string // the stream cursor of the event
	Event string // "message", "resync" or "unavailable"
	Data  string
}

// Message decodes a "message" event's data.
func (e Event) Message() (Message, error) {
	var m Message
	err := json.Unmarshal([]byte(e.Data), &m)
	return m, err
}

// Channel returns the channel an event is about.
func (e Event) Channel() string {
	var v struct {
		Channel string `json:"channel"`
	}
	_ = json.Unmarshal([]byte(e.Data), &v)
	return v.Channel
}

// Message is the data of a "message" event.
type Message struct {
	Channel   string `json:"channel"`
	MessageID int64  `json:"message_id"`
	Data      struct {
		EnteringUsers  []struct{ ID string } `json:"entering_users"`
		LeavingUserIDs []string              `json:"leaving_user_ids"`
		CountDelta     int                   `json:"count_delta"`
	} `json:"data"`
}

// Stream is a live subscription over HTTP. It records every event; read
// them with Events or wait with WaitEvents.
type Stream struct {
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	events []Event
	err    error // why the stream ended
	notify chan struct{}
}

// Subscribe opens GET /presence/subscribe for from (channel -> last seen
// id, -1 for new messages only), resuming after lastEventID when it is not
// empty. It returns once the server accepted the stream.
func (cl *Client) Subscribe(from map[string]int64, lastEventID string) (*Stream, error) {
	enc, err := json.Marshal(from)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		cl.Base+"/presence/subscribe?channels="+url.QueryEscape(string(enc)), nil)
	if err != nil {
		cancel()
		return nil, err
	}
	if cl.Token != "" {
		req.Header.Set("Authorization", "Bearer "+cl.Token)
	}
	if lastEventID != "" {
		req.Header.Set("Last-Event-ID", lastEventID)
	}
	resp, err := streamClient.Do(req)
	if err != nil {
		cancel()
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		return nil, fmt.Errorf("subscribe on %s: %d %s", cl.Base, resp.StatusCode, body)
	}
	s := &Stream{cancel: cancel, done: make(chan struct{}), notify: make(chan struct{})}
	go s.read(resp.Body)
	return s, nil
}

// read parses the stream until it ends.
func (s *Stream) read(body io.ReadCloser) {
	defer close(s.done)
	defer body.Close()
	sc := bufio.NewScanner(body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var ev Event
	var data []string
	for sc.Scan() {
		line := sc.Text()
		field, value, _ := strings.Cut(line, ":")
		value = strings.TrimPrefix(value, " ")
		switch {
		case line == "":
			if ev.Event != "" || len(data) > 0 {
				ev.Data = strings.Join(data, "\n")
				s.add(ev)
			}
			ev, data = Event{}, nil
		case field == "": // a comment (keepalive)
		case field == "id":
			ev.ID = value
		case field == "event":
			ev.Event = value
		case field == "data":
			data = append(data, value)
		}
	}
	s.finish(sc.Err())
}

func (s *Stream) add(ev Event) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.events = append(s.events, ev)
	close(s.notify)
	s.notify = make(chan struct{})
}

func (s *Stream) finish(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		err = io.EOF
	}
	s.err = err
	close(s.notify)
	s.notify = make(chan struct{})
}

// Events returns a copy of the events received so far.
func (s *Stream) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Event(nil), s.events...)
}

// Err reports why the stream ended, nil while it runs.
func (s *Stream) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// WaitEvents waits until cond accepts the events received so far; it
// returns cond's last error after timeout, or when the stream ends first.
func (s *Stream) WaitEvents(timeout time.Duration, cond func([]Event) error) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		events, ended, notify := append([]Event(nil), s.events...), s.err, s.notify
		s.mu.Unlock()
		err := cond(events)
		switch {
		case err == nil:
			return nil
		case ended != nil:
			return fmt.Errorf("stream ended (%v): %w", ended, err)
		}
		select {
		case <-notify:
		case <-timer.C:
			return fmt.Errorf("after %v: %w", timeout, err)
		}
	}
}

// Close ends the stream and waits for its reader.
func (s *Stream) Close() {
	s.cancel()
	<-s.done
}

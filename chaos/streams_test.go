package chaos

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// sseScript serves subscribe requests: the n-th connection gets frames[n]
// (nil: 503); "HOLD" as last frame keeps the connection open, otherwise it
// closes. It records each connection's Last-Event-ID.
type sseScript struct {
	srv *httptest.Server

	mu     sync.Mutex
	frames [][]string
	lastID []string
}

func newSSEScript(t *testing.T, frames ...[]string) *sseScript {
	t.Helper()
	s := &sseScript{frames: frames}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *sseScript) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	n := len(s.lastID)
	s.lastID = append(s.lastID, r.Header.Get("Last-Event-ID"))
	var frames []string
	if n < len(s.frames) {
		frames = s.frames[n]
	}
	s.mu.Unlock()
	if frames == nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(": connected\n\n"))
	for _, f := range frames {
		if f == "HOLD" {
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		_, _ = w.Write([]byte(f))
	}
}

func (s *sseScript) lastIDs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.lastID...)
}

func msg(id, channel string, n int64) string {
	return fmt.Sprintf("id: %s\nevent: message\ndata: {\"channel\": %q, \"message_id\": %d, \"data\": {\"leaving_user_ids\": []}}\n\n", id, channel, n)
}

func chanEvent(id, kind, channel string) string {
	return fmt.Sprintf("id: %s\nevent: %s\ndata: {\"channel\": %q}\n\n", id, kind, channel)
}

// waitStats polls until cond accepts the checker's stats.
func waitStats(t *testing.T, s *StreamChecker, what string, cond func(StreamStats) bool) {
	t.Helper()
	testkit.WaitForErr(t, 10*time.Second, func() error {
		if st := s.Stats(); !cond(st) {
			return fmt.Errorf("%s: stats %+v", what, st)
		}
		return nil
	})
}

func TestStreamCheckerReconnectsElsewhereAndChecksIDs(t *testing.T) {
	home := newSSEScript(t,
		[]string{msg("c1", "/a", 1), msg("c2", "/a", 2)}, // then the connection drops
		nil, // home refuses the reconnection: the stream goes away
		[]string{"HOLD"},
	)
	away := newSSEScript(t, []string{
		msg("c3", "/a", 3),
		msg("c4", "/a", 5), // a gap without a resync
		chanEvent("c5", "resync", "/a"),
		msg("c6", "/a", 9), // covered by the resync
		msg("c7", "/b", 1),
		chanEvent("c7", "unavailable", "/c"),
		"HOLD",
	})
	var mu sync.Mutex
	var seen []string
	s, err := StartStreams(context.Background(), StreamConfig{
		URLs: []string{home.srv.URL}, Fallback: []string{away.srv.URL},
		Channels: []string{"/a", "/b", "/c"}, Backoff: time.Millisecond,
		OnEvent: func(stream string, ev Event) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, fmt.Sprintf("%s %s %d", ev.Type, ev.Channel, ev.MessageID))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	waitStats(t, s, "after the failover", func(st StreamStats) bool { return st.Messages == 6 && st.Violations == 2 })
	st := s.Stats()
	if st.Resyncs != 1 || st.Violations != 2 || st.Connected != 1 || st.Away != 1 {
		t.Errorf("stats %+v: want 1 resync, 2 violations (a gap, an unavailable), connected away", st)
	}
	if got := away.lastIDs(); len(got) != 1 || got[0] != "c2" {
		t.Errorf("Last-Event-ID sent to the other node: %v, want [c2]", got)
	}
	if !strings.Contains(strings.Join(st.Examples, "\n"), "/a: id 5 after 3") {
		t.Errorf("examples: %v", st.Examples)
	}

	s.Rehome()
	waitStats(t, s, "after Rehome", func(st StreamStats) bool { return st.Connected == 1 && st.Away == 0 })
	if got := home.lastIDs(); len(got) < 3 || got[len(got)-1] != "c7" {
		t.Errorf("Last-Event-IDs sent home: %v, want the last one c7", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 8 || seen[0] != "message /a 1" || seen[4] != "resync /a 0" {
		t.Errorf("events seen: %v", seen)
	}
}

func TestStreamCheckerWaitConnected(t *testing.T) {
	a := newSSEScript(t, []string{"HOLD"})
	b := newSSEScript(t, []string{"HOLD"}, []string{"HOLD"})
	s, err := StartStreams(context.Background(), StreamConfig{
		URLs: []string{a.srv.URL, b.srv.URL}, Channels: []string{"/a"}, PerNode: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Streams != 2 || st.Connected != 2 || st.Away != 0 || st.Connections != 2 || st.Refused != 0 {
		t.Errorf("stats %+v", st)
	}
}

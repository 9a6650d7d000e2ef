package api

import (
	"bytes"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
)

// lockedBuffer is a log destination safe for concurrent writes.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) lines(msg string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, msg) {
			out = append(out, line)
		}
	}
	return out
}

// TestUnavailableAnswersAreLoggedAtABoundedRate: a burst of 503 answers
// (a partition, the cluster stopping) logs at most the burst; a line logged
// later says how many were left out. Every request is still answered 503.
func TestUnavailableAnswersAreLoggedAtABoundedRate(t *testing.T) {
	var out lockedBuffer
	e := newEnv(t, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(&out, nil)) })
	e.svc.err = fmt.Errorf("no owner: %w", presence.ErrUnavailable)
	const requests = 200
	for range requests {
		if rec := e.do("GET", getQuery([]string{"/a/b"}), nil); rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", rec.Code)
		}
	}
	lines := out.lines("request unavailable")
	if len(lines) != unavailableLogBurst {
		t.Fatalf("%d lines for %d refused requests, want the burst of %d", len(lines), requests, unavailableLogBurst)
	}
	e.clock.Advance(time.Second)
	e.do("GET", getQuery([]string{"/a/b"}), nil)
	lines = out.lines("request unavailable")
	last := lines[len(lines)-1]
	if want := fmt.Sprintf("not_logged_before=%d", requests-unavailableLogBurst); !strings.Contains(last, want) {
		t.Fatalf("line after the pause: %s; want %s", last, want)
	}
}

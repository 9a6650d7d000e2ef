package api

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
	"github.com/presencehq/presence/presence"
)

// linesWith returns the lines of out that contain msg.
func linesWith(out *testkit.LogBuffer, msg string) []string {
	var lines []string
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.Contains(line, msg) {
			lines = append(lines, line)
		}
	}
	return lines
}

// TestUnavailableAnswersAreLoggedAtABoundedRate: a burst of 503 answers
// (a partition, the cluster stopping) logs at most the burst; a line logged
// later says how many were left out. Every request is still answered 503.
func TestUnavailableAnswersAreLoggedAtABoundedRate(t *testing.T) {
	log, out := testkit.CapturedLogger()
	e := newEnv(t, func(c *Config) { c.Logger = log })
	e.svc.err = fmt.Errorf("no owner: %w", presence.ErrUnavailable)
	const requests = 200
	for range requests {
		if rec := e.do("GET", getQuery([]string{"/a/b"}), nil); rec.Code != http.StatusServiceUnavailable {
			t.Fatalf("status %d, want 503", rec.Code)
		}
	}
	lines := linesWith(out, "request unavailable")
	if len(lines) != unavailableLogBurst {
		t.Fatalf("%d lines for %d refused requests, want the burst of %d", len(lines), requests, unavailableLogBurst)
	}
	e.clock.Advance(time.Second)
	e.do("GET", getQuery([]string{"/a/b"}), nil)
	lines = linesWith(out, "request unavailable")
	last := lines[len(lines)-1]
	if want := fmt.Sprintf("not_logged_before=%d", requests-unavailableLogBurst); !strings.Contains(last, want) {
		t.Fatalf("line after the pause: %s; want %s", last, want)
	}
}

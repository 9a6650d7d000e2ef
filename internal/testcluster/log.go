package testcluster

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// testLogger sends the nodes' logs to the test log when PRESENCE_TEST_LOG
// names a level (debug, info, warn, error); by default they are discarded,
// as Raft reports every refused connection of a killed node as an error.
// Records arriving after the test ended are dropped (t.Log would panic).
func testLogger(t testing.TB) *slog.Logger {
	v := os.Getenv("PRESENCE_TEST_LOG")
	if v == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(v)); err != nil {
		t.Fatalf("testcluster: PRESENCE_TEST_LOG=%q: %v", v, err)
	}
	w := &testWriter{t: t}
	t.Cleanup(w.close)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter hands each record (slog's text handler writes one per call)
// to t.Log until close.
type testWriter struct {
	t      testing.TB
	mu     sync.Mutex
	closed bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		w.t.Log(string(bytes.TrimRight(p, "\n")))
	}
	return len(p), nil
}

func (w *testWriter) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
}

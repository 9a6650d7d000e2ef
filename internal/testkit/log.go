package testkit

import (
	"bytes"
	"log/slog"
	"os"
	"sync"
	"testing"
)

// LogEnv names the environment variable that turns test logs on: a slog
// level (debug, info, warn, error). Unset, Logger discards everything, as
// a cluster's logs under fault injection are mostly expected errors.
const LogEnv = "PRESENCE_TEST_LOG"

// Logger returns a logger writing to t's log at the level PRESENCE_TEST_LOG
// names, or discarding when it is unset. Records that arrive after the test
// ended are dropped (t.Log would panic).
func Logger(t testing.TB) *slog.Logger {
	v := os.Getenv(LogEnv)
	if v == "" {
		return slog.New(slog.DiscardHandler)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(v)); err != nil {
		t.Fatalf("testkit: %s=%q: %v", LogEnv, v, err)
	}
	return LoggerAt(t, level)
}

// LoggerAt returns a logger writing records of level and above to t's log.
func LoggerAt(t testing.TB, level slog.Level) *slog.Logger {
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

// LogBuffer collects log output for tests that assert on it; it is safe
// for the concurrent writes of the goroutines under test.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// String returns everything written so far.
func (b *LogBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// CapturedLogger returns a text logger at debug level and the buffer it
// writes to.
func CapturedLogger() (*slog.Logger, *LogBuffer) {
	b := &LogBuffer{}
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// FailureLogger returns a debug logger whose records are kept and printed
// to t's log only if t failed: the full story of a failed run, and silence
// for a passing one.
func FailureLogger(t testing.TB) *slog.Logger {
	log, buf := CapturedLogger()
	t.Cleanup(func() {
		if t.Failed() {
			t.Log(buf.String())
		}
	})
	return log
}

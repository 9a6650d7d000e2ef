package redispresence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"
)

// Errors of a request, mapped to statuses by statusOf only.
var (
	ErrInvalid      = errors.New("invalid input")
	ErrUnauthorized = errors.New("not authenticated")
	ErrForbidden    = errors.New("forbidden")
	ErrNotFound     = errors.New("not found")
	ErrMethod       = errors.New("method not allowed")
	ErrTooLarge     = errors.New("request too large")
	// ErrUnavailable wraps a Redis failure: the client should try again.
	ErrUnavailable = errors.New("service temporarily unavailable")
)

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// statusOf maps an error to its HTTP status, and says whether it is known;
// an unknown error is a bug, answered 500 without its text.
func statusOf(err error) (int, bool) {
	switch {
	case errors.Is(err, ErrInvalid):
		return http.StatusBadRequest, true
	case errors.Is(err, ErrUnauthorized):
		return http.StatusUnauthorized, true
	case errors.Is(err, ErrForbidden):
		return http.StatusForbidden, true
	case errors.Is(err, ErrNotFound):
		return http.StatusNotFound, true
	case errors.Is(err, ErrMethod):
		return http.StatusMethodNotAllowed, true
	case errors.Is(err, ErrTooLarge):
		return http.StatusRequestEntityTooLarge, true
	case errors.Is(err, ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return http.StatusServiceUnavailable, true
	}
	return http.StatusInternalServerError, false
}

// writeError answers {"errors":[message]} with err's status, as the node
// does: client errors show their text, server errors a generic one.
func (s *Server) writeError(w http.ResponseWriter, err error) {
	status, known := statusOf(err)
	msg := err.Error()
	switch {
	case !known:
		s.failures.log(s.cfg.Logger, "request failed", err)
		msg = "internal error"
	case status >= 500:
		s.failures.log(s.cfg.Logger, "redis unavailable", err)
		msg = ErrUnavailable.Error()
		w.Header().Set("Retry-After", "1")
	case status == http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="presence"`)
	}
	body, _ := json.Marshal(struct {
		Errors []string `json:"errors"`
	}{[]string{msg}})
	writeJSON(w, status, body)
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// failureLog logs at most one failure a second, saying how many it left
// out, so that a Redis outage under load does not flood the log.
type failureLog struct {
	mu      sync.Mutex
	last    time.Time
	skipped int
}

func (f *failureLog) log(l *slog.Logger, msg string, err error) {
	f.mu.Lock()
	now := time.Now()
	if now.Sub(f.last) < time.Second {
		f.skipped++
		f.mu.Unlock()
		return
	}
	skipped := f.skipped
	f.last, f.skipped = now, 0
	f.mu.Unlock()
	l.Warn(msg, "err", err, "left_out", skipped)
}

package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/presencehq/presence/presence"
)

// errMethodNotAllowed answers a known path called with the wrong method.
var errMethodNotAllowed = errors.New("method not allowed")

// rateLimitError is a presence.ErrRateLimited that knows when to come back.
type rateLimitError struct{ retryAfter time.Duration }

func (e *rateLimitError) Error() string { return presence.ErrRateLimited.Error() }
func (e *rateLimitError) Unwrap() error { return presence.ErrRateLimited }

// invalid returns an error wrapping presence.ErrInvalid with a client-facing reason.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", presence.ErrInvalid, fmt.Sprintf(format, args...))
}

// statusOf maps an error to its HTTP status. It is the only place where
// errors become statuses. The boolean reports whether the status is known;
// unknown errors are 500s whose cause must be logged, not shown.
func statusOf(err error) (int, bool) {
	var tooLarge *http.MaxBytesError
	switch {
	case errors.Is(err, presence.ErrInvalid):
		return http.StatusBadRequest, true
	case errors.Is(err, presence.ErrUnauthorized):
		return http.StatusUnauthorized, true
	case errors.Is(err, presence.ErrForbidden):
		return http.StatusForbidden, true
	case errors.Is(err, presence.ErrNotFound):
		return http.StatusNotFound, true
	case errors.Is(err, errMethodNotAllowed):
		return http.StatusMethodNotAllowed, true
	case errors.Is(err, presence.ErrTooLarge), errors.As(err, &tooLarge):
		return http.StatusRequestEntityTooLarge, true
	case errors.Is(err, presence.ErrRateLimited):
		return http.StatusTooManyRequests, true
	case errors.Is(err, presence.ErrOverloaded), errors.Is(err, presence.ErrUnavailable),
		errors.Is(err, presence.ErrMoved), errors.Is(err, context.DeadlineExceeded),
		errors.Is(err, context.Canceled):
		// Canceled usually means the client left; nobody reads the answer,
		// but if someone does, "try again" is the truthful one.
		return http.StatusServiceUnavailable, true
	}
	return http.StatusInternalServerError, false
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Errors []string `json:"errors"`
}

// writeError answers err as {"errors": [...]} with its mapped status. Client
// errors show their message; server errors show only a generic one, and
// unknown errors are logged with their cause.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, known := statusOf(err)
	msg := err.Error()
	switch {
	case !known:
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		msg = "internal error"
	case status >= 500:
		s.unavailable.log(s.log, r, err)
		msg = "service temporarily unavailable"
	}
	switch status {
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds(err)))
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="presence"`)
	}
	writeJSON(w, status, errorBody{Errors: []string{msg}})
}

// RetryAfter is when a rate-limited caller may try again.
func (e *rateLimitError) RetryAfter() time.Duration { return e.retryAfter }

// retryAfterSeconds is the whole number of seconds (at least 1) a rate-limited
// caller should wait.
func retryAfterSeconds(err error) int {
	var rl interface{ RetryAfter() time.Duration }
	if !errors.As(err, &rl) {
		return 1
	}
	return max(1, int(math.Ceil(rl.RetryAfter().Seconds())))
}

// writeJSON answers v as JSON with status. A failure to write means the
// client is gone, so it is not reported.
func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		// Only values built by this package are marshalled; failing here is a bug.
		body = []byte(`{"errors":["internal error"]}`)
		status = http.StatusInternalServerError
	}
	writeJSONBytes(w, status, body)
}

// headerJSON is the Content-Type of JSON answers, shared by every response
// (see headerNoStore).
var headerJSON = []string{"application/json; charset=utf-8"}

// writeJSONBytes answers body, a JSON document, with status and a newline
// (appended to body, whose spare capacity it may use).
func writeJSONBytes(w http.ResponseWriter, status int, body []byte) {
	h := w.Header()
	h["Content-Type"] = headerJSON
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

package api

import (
	"net/http"
	"runtime/debug"
)

// recoverer turns a panicking handler into a logged 500 JSON answer (when
// nothing was written yet) instead of a dropped connection.
func (s *server) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw, ok := w.(*statusWriter) // instrument's, when it wraps us
		if !ok {
			sw = &statusWriter{ResponseWriter: w}
		}
		defer func() {
			rec := recover()
			if rec == nil {
				return
			}
			if rec == http.ErrAbortHandler {
				// The documented way to abort a response; let net/http handle it.
				panic(rec)
			}
			s.log.Error("panic in handler", "method", r.Method, "path", r.URL.Path,
				"panic", rec, "stack", string(debug.Stack()))
			if !sw.wroteHeader() {
				writeJSON(sw, http.StatusInternalServerError, errorBody{Errors: []string{"internal error"}})
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

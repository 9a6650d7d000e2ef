package api

import "net/http"

// Header values of the cache policy, shared by every response: net/http
// only reads them, and Header.Set would allocate a one-element slice.
var (
	headerNoStore    = []string{"no-store"}
	headerVaryOrigin = []string{"Origin"}
)

// cachePolicy keeps browsers and proxies from storing the API's answers to
// GET and HEAD, the only methods whose answers HTTP caches store by
// default (RFC 9111 §3): presence, configuration and health change from
// one call to the next, and an answer with CORS headers depends on the
// request's Origin. Answers to POST, PUT and DELETE are never reused by a
// cache without explicit freshness, which the API never gives, so they go
// without both headers: on the heartbeat path, two headers fewer for the
// node to write and every client to parse, on every call. A handler that
// sets its own Cache-Control (streams, the OpenAPI document) replaces it.
func cachePolicy(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			h := w.Header()
			h["Cache-Control"] = headerNoStore
			h["Vary"] = headerVaryOrigin
		}
		next.ServeHTTP(w, r)
	})
}

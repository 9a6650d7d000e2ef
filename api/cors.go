package api

import (
	"net/http"
	"slices"
)

// CORS settings of the API. Credentials are bearer tokens, never cookies, so
// Access-Control-Allow-Credentials is not needed.
const (
	corsAllowMethods  = "GET, POST, PUT, DELETE, OPTIONS"
	corsAllowHeaders  = "Authorization, Content-Type, Last-Event-ID"
	corsExposeHeaders = "Retry-After"
	corsMaxAge        = "600"
)

// cors answers preflights and marks responses for allowed browser origins.
type cors struct {
	any     bool
	origins []string
}

func newCORS(origins []string) *cors {
	return &cors{any: slices.Contains(origins, "*"), origins: origins}
}

func (c *cors) allowed(origin string) bool {
	return origin != "" && (c.any || slices.Contains(c.origins, origin))
}

// wrap handles CORS in front of the router, because a preflight OPTIONS
// matches no route there.
func (c *cors) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		preflight := r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
		if !c.allowed(origin) {
			if preflight {
				// No CORS headers: the browser refuses the actual request.
				w.WriteHeader(http.StatusNoContent)
				return
			}
			next.ServeHTTP(w, r)
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		if preflight {
			h.Set("Access-Control-Allow-Methods", corsAllowMethods)
			h.Set("Access-Control-Allow-Headers", corsAllowHeaders)
			h.Set("Access-Control-Max-Age", corsMaxAge)
			w.WriteHeader(http.StatusNoContent)
			return
		}
		h.Set("Access-Control-Expose-Headers", corsExposeHeaders)
		next.ServeHTTP(w, r)
	})
}

package api

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/gorilla/mux"

	"github.com/presencehq/presence/presence"
)

// devRoutes registers the development helpers: token minting, the cluster
// views of the demo's side panel without the admin token, and the demo app.
func (s *server) devRoutes(r *mux.Router) {
	r.HandleFunc("/dev/token", s.handleDevToken).Methods(http.MethodGet)
	r.HandleFunc("/dev/cluster", s.handleCluster).Methods(http.MethodGet)
	r.HandleFunc("/dev/owner", s.handleOwner).Methods(http.MethodGet)
	if s.cfg.Demo != nil {
		// Registered last: every other GET path the API does not know is the
		// demo's (its pages and assets).
		r.PathPrefix("/").Handler(s.demo()).Methods(http.MethodGet, http.MethodHead)
	}
}

// devTokenJSON is the answer of /dev/token.
type devTokenJSON struct {
	Token string         `json:"token"`
	User  *presence.User `json:"user"`
}

// handleDevToken mints a user token:
// GET /dev/token?user=ID&username=NAME&name=...&avatar_template=...&groups=a,b
func (s *server) handleDevToken(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	u := &presence.User{
		ID:             q.Get("user"),
		Username:       q.Get("username"),
		Name:           q.Get("name"),
		AvatarTemplate: q.Get("avatar_template"),
		Groups:         splitGroups(q.Get("groups")),
	}
	if u.ID == "" || len(u.ID) > presence.MaxUserIDBytes {
		s.writeError(w, r, invalid("user must be 1..%d bytes", presence.MaxUserIDBytes))
		return
	}
	token, err := s.auth.mint(u, s.cfg.DevTokenTTL)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, devTokenJSON{Token: token, User: u})
}

// splitGroups parses "a,b" into group ids, dropping empty entries.
func splitGroups(s string) []string {
	var groups []string
	for g := range strings.SplitSeq(s, ",") {
		if g = strings.TrimSpace(g); g != "" {
			groups = append(groups, g)
		}
	}
	return groups
}

// demo serves the demo app, answering its 404s with the API's JSON 404 so
// that unknown paths look the same with and without the demo.
func (s *server) demo() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		nf := &notFoundCatcher{ResponseWriter: w}
		s.cfg.Demo.ServeHTTP(nf, r)
		if nf.notFound {
			s.writeError(w, r, fmt.Errorf("%w: no such endpoint", presence.ErrNotFound))
		}
	})
}

// notFoundCatcher passes a response through unless its status is 404, in
// which case it swallows the status and body.
type notFoundCatcher struct {
	http.ResponseWriter
	notFound bool
	wrote    bool
}

func (w *notFoundCatcher) WriteHeader(code int) {
	if !w.wrote && code == http.StatusNotFound {
		w.notFound = true
	}
	w.wrote = true
	if !w.notFound {
		w.ResponseWriter.WriteHeader(code)
	}
}

func (w *notFoundCatcher) Write(b []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.notFound {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

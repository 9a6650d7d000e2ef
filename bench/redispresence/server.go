package redispresence

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/presencehq/presence/bench/discourse"
)

// UpdatePath is the one presence endpoint the service serves.
const UpdatePath = "/presence/update"

// Server is the HTTP handler of the service.
type Server struct {
	cfg      Config
	store    *discourse.Store
	auth     *authenticator
	prefixes map[string]struct{}
	failures failureLog
}

// New returns a Server keeping presence in store.
func New(cfg Config, store *discourse.Store) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil {
		return nil, fmt.Errorf("%w: a store is required", ErrConfig)
	}
	s := &Server{cfg: cfg, store: store, auth: newAuthenticator(&cfg), prefixes: map[string]struct{}{}}
	for _, p := range cfg.Prefixes {
		s.prefixes[p] = struct{}{}
	}
	return s, nil
}

// ServeHTTP routes POST /presence/update and GET /healthz; every other path
// is a JSON 404, a wrong method a JSON 405. As the node does, only answers
// to GET and HEAD say Cache-Control: no-store (no cache stores the others).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet || r.Method == http.MethodHead {
		w.Header().Set("Cache-Control", "no-store")
	}
	switch r.URL.Path {
	case UpdatePath:
		if r.Method != http.MethodPost {
			s.writeError(w, ErrMethod)
			return
		}
		s.handleUpdate(w, r)
	case "/healthz":
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			s.writeError(w, ErrMethod)
			return
		}
		writeJSON(w, http.StatusOK, []byte(`{"status":"ok"}`))
	default:
		s.writeError(w, fmt.Errorf("%w: no such endpoint", ErrNotFound))
	}
}

// Sweep expires the clients due in every channel each period (Discourse's
// auto_leave_all, run by a scheduled job there) until ctx ends. Errors are
// logged; the next sweep tries again.
func (s *Server) Sweep(ctx context.Context, period time.Duration) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if _, _, err := s.store.ExpireDue(ctx, s.cfg.Now()); err != nil && ctx.Err() == nil {
				s.failures.log(s.cfg.Logger, "expiry sweep failed", err)
			}
		}
	}
}

package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/router/wire"
)

// A node whose process was frozen (SIGSTOP, a paused VM, a stalled host)
// for longer than the failure detector's suspicion comes back with a stale
// view: the others declared it dead and took its channels over, and the
// requests that waited in its sockets meanwhile (a browser gives a request
// 20 s) all arrive at once. Served from the state it still holds, they
// would be applied to channels it no longer owns, each waiting for a
// replica that refuses it, and hold the hand-offs that bring the channels
// back (measured: a 15 s SIGSTOP left the node unable to take installs for
// 40 s, users lost and ghosts). So a node that finds it was frozen answers
// presence requests with 503 at once for a short while (the clients retry a
// second later or elsewhere) and reports not ready, while the others fence
// it and hand it the merged channels.
const (
	// freezeTick is how often the watch looks at the clock.
	freezeTick = 250 * time.Millisecond
	// freezeThreshold is the gap between two looks that counts as a freeze:
	// beyond the LAN suspicion timeout (1.5 s with a confirmation), so the
	// others may have declared the node dead.
	freezeThreshold = 2 * time.Second
	// resumeQuiet is how long a node that was frozen refuses requests.
	resumeQuiet = time.Second
)

// freezeWatch detects that the process was frozen from the gaps between
// the times it is shown (monotonic readings of the wall clock: a frozen
// process sees the clock jump). Every presence request asks it whether
// the node is resuming, so that answer takes no lock (under the heartbeat
// load a shared mutex here showed in the mutex profile) and reads no
// clock unless the node was frozen lately.
type freezeWatch struct {
	threshold, quiet time.Duration

	mu   sync.Mutex // observe's, which one goroutine calls
	last time.Time
	// freeze is the last freeze, while its quiet period may last; nil
	// before the first and once its quiet period is over.
	freeze atomic.Pointer[freeze]
}

// freeze is a freeze that was detected.
type freeze struct {
	resumedAt time.Time     // when it was detected
	lasted    time.Duration // how long it lasted
}

// observe records a look at the clock at now; it reports the freeze that
// ended at now, if any.
func (w *freezeWatch) observe(now time.Time) (frozen time.Duration, detected bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	gap := now.Sub(w.last)
	first := w.last.IsZero()
	w.last = now
	if first || gap <= w.threshold {
		if f := w.freeze.Load(); f != nil && now.Sub(f.resumedAt) >= w.quiet {
			w.freeze.Store(nil) // spares the requests their clock reading
		}
		return 0, false
	}
	w.freeze.Store(&freeze{resumedAt: now, lasted: gap})
	return gap, true
}

// resuming reports whether now falls within the quiet period after a
// freeze, and how long that freeze was.
func (w *freezeWatch) resuming(now time.Time) (bool, time.Duration) {
	f := w.freeze.Load()
	if f == nil || now.Sub(f.resumedAt) >= w.quiet {
		return false, 0
	}
	return true, f.lasted
}

// resumingNow is resuming at the current time; it reads the clock only
// after a freeze.
func (w *freezeWatch) resumingNow() (bool, time.Duration) {
	if w.freeze.Load() == nil {
		return false, 0
	}
	return w.resuming(time.Now())
}

// watchFreezes looks at the clock every freezeTick until the server stops.
func (s *Server) watchFreezes() {
	defer s.wg.Done()
	t := time.NewTicker(freezeTick)
	defer t.Stop()
	s.freeze.observe(time.Now())
	for {
		select {
		case <-t.C:
			// The tick's own time may be one the ticker took before the
			// freeze; the clock read now is after it.
			if frozen, ok := s.freeze.observe(time.Now()); ok {
				s.log.Warn("this process was frozen: refusing presence requests while the cluster catches up",
					"frozen", frozen.Round(time.Millisecond), "refusing_for", s.freeze.quiet)
			}
		case <-s.ctx.Done():
			return
		}
	}
}

// guardResume answers presence requests 503 with Retry-After while the
// node resumes from a freeze (see freezeWatch).
func (s *Server) guardResume(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !presencePath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		if resuming, frozen := s.freeze.resumingNow(); resuming {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			w.Header().Set("Cache-Control", "no-store")
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = fmt.Fprintf(w, `{"errors":["service temporarily unavailable: this node is resuming after being frozen for %v"]}`+"\n",
				frozen.Round(time.Second))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// refuseWhileResuming refuses the presence requests other nodes forward
// here while the node resumes from a freeze, as guardResume refuses its
// own clients': the state it holds is stale until the others have fenced
// it and handed it the merged channels. wire.ErrBusy makes the node the
// request entered hold it and try again. The hand-offs themselves, and
// the other methods, go on.
func (s *Server) refuseWhileResuming(method uint16) error {
	switch method {
	case wire.MethodUpdate, wire.MethodGet, wire.MethodSince:
	default:
		return nil
	}
	if resuming, frozen := s.freeze.resumingNow(); resuming {
		return fmt.Errorf("%w: resuming after being frozen for %v", wire.ErrBusy, frozen.Round(time.Second))
	}
	return nil
}

// presencePath reports whether path is a presence endpoint (a browser's
// or the app backend's), whose requests a frozen node must not apply.
func presencePath(path string) bool {
	return strings.HasPrefix(path, "/presence/") || strings.HasPrefix(path, "/server/presence/")
}

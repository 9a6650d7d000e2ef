package api

import (
	"fmt"
	"mime"
	"net/http"
	"slices"

	"github.com/presencehq/presence/presence"
)

// stateJSON is the wire form of one channel of /presence/get. Unlike
// presence.ChannelState it keeps "users": [] for an empty normal channel (as
// Discourse does) and omits users only for count-only channels.
type stateJSON struct {
	Count         int                  `json:"count"`
	LastMessageID int64                `json:"last_message_id"`
	Users         *[]presence.UserInfo `json:"users,omitempty"`
}

// hasRepeats reports whether a short list holds a name twice.
func hasRepeats(names []string) bool {
	for i := 1; i < len(names); i++ {
		if slices.Contains(names[:i], names[i]) {
			return true
		}
	}
	return false
}

func toStateJSON(st *presence.ChannelState) *stateJSON {
	if st == nil {
		return nil
	}
	out := &stateJSON{Count: st.Count, LastMessageID: st.LastMessageID}
	if !st.CountOnly {
		users := st.Users
		if users == nil {
			users = []presence.UserInfo{}
		}
		out.Users = &users
	}
	return out
}

// handleGet answers GET /presence/get?channels[]=/a&channels[]=/b.
func (s *server) handleGet(w http.ResponseWriter, r *http.Request) {
	u, err := s.auth.identify(r, false)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	q := r.URL.Query()
	names := dedupe(append(q["channels[]"], q["channels"]...))
	switch {
	case len(names) == 0:
		s.writeError(w, r, invalid("channels is required"))
		return
	case len(names) > presence.MaxChannelsPerCall:
		s.writeError(w, r, invalid("too many channels (at most %d)", presence.MaxChannelsPerCall))
		return
	}
	states, err := s.cfg.Service.Get(r.Context(), u, names)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make(map[string]*stateJSON, len(names))
	for _, name := range names {
		out[name] = toStateJSON(states[name])
	}
	writeJSON(w, http.StatusOK, out)
}

// handleUpdate answers POST /presence/update.
func (s *server) handleUpdate(w http.ResponseWriter, r *http.Request) {
	contentType := r.Header.Get("Content-Type")
	authorization := r.Header.Get("Authorization")
	var caller *cachedToken
	if authorization != "" {
		var err error
		if caller, err = s.auth.verifiedHeader(authorization); err != nil {
			s.writeError(w, r, err)
			return
		}
	} else if isJSONContentType(contentType) {
		// A JSON body cannot carry the token: refuse before reading it.
		s.writeError(w, r, errSignInToUpdate)
		return
	}
	body := r.Body
	if r.ContentLength < 0 || r.ContentLength > s.cfg.MaxBodyBytes {
		// A body of a declared length within the limit cannot outgrow
		// it (net/http reads no further), so only the others need the
		// limit that also closes the connection after a body too large.
		body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
	}
	req, err := parseUpdate(contentType, body, s.cfg.MaxBodyBytes)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if caller == nil {
		caller, err = s.beaconCaller(req.Token)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
	}
	u := &caller.user
	if ok, wait := s.limiter.Allow(r.Context(), u.ID, &caller.limit); !ok {
		s.writeError(w, r, &rateLimitError{retryAfter: wait})
		return
	}
	present := dedupe(req.Present)
	result, err := s.cfg.Service.Update(r.Context(), u, req.ClientID, present, dedupe(req.Leave))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	buf := bodyBuffers.Get().(*[]byte)
	*buf = appendUpdateResult((*buf)[:0], present, result)
	writeJSONBytes(w, http.StatusOK, *buf)
	releaseBody(buf)
}

// errSignInToUpdate answers an update without credentials.
var errSignInToUpdate = fmt.Errorf("%w: sign in to update presence", presence.ErrForbidden)

// beaconCaller verifies the token field of a form or multipart body, with
// the same checks as the Authorization header; none is a 403, as for a
// request without the header.
func (s *server) beaconCaller(token string) (*cachedToken, error) {
	if token == "" {
		return nil, errSignInToUpdate
	}
	return s.auth.verified(token)
}

// isJSONContentType reports whether a request declares a JSON body.
func isJSONContentType(ct string) bool {
	if ct == "application/json" {
		return true
	}
	mediaType, _, err := mime.ParseMediaType(ct)
	return err == nil && mediaType == "application/json"
}

// dedupeScanMax is the list length up to which dedupe compares pairs
// instead of building a set.
const dedupeScanMax = 16

// dedupe removes repeated names, keeping the first occurrence's order. A
// list without repeats is returned as it is.
func dedupe(names []string) []string {
	if len(names) == 0 {
		return nil
	}
	if len(names) <= dedupeScanMax && !hasRepeats(names) {
		return names
	}
	seen := make(map[string]struct{}, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if _, dup := seen[n]; !dup {
			seen[n] = struct{}{}
			out = append(out, n)
		}
	}
	return out
}

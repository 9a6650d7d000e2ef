package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"net/http"

	"github.com/gorilla/mux"

	"github.com/presencehq/presence/presence"
)

// The /server/ endpoints serve the application's backend, as Discourse's
// Ruby PresenceChannel serves its server code: present and leave on behalf
// of a named user, read the whole state of any channel, ask what a user
// may do, and clear a channel. The backend is trusted: it authenticates
// with the admin token or a service token, is not rate limited per user,
// and sees who is present in count-only channels. A service token never
// opens /admin/, and a user token never opens /server/.

// Paths of the server-side endpoints, also their route templates.
const (
	pathServerUpdate = "/server/presence/update"
	pathServerGet    = "/server/presence/get"
	pathServerCan    = "/server/presence/can"
	pathServerClear  = "/server/presence/channel"
)

// serverRoutes registers the /server/ endpoints.
func (s *server) serverRoutes(r *mux.Router) {
	r.Handle(pathServerUpdate, s.backend(s.handleServerUpdate)).Methods(http.MethodPost)
	r.Handle(pathServerGet, s.backend(s.handleServerGet)).Methods(http.MethodGet)
	r.Handle(pathServerCan, s.backend(s.handleServerCan)).Methods(http.MethodGet)
	r.Handle(pathServerClear, s.backend(s.handleServerClear)).Methods(http.MethodDelete)
}

// serviceTokens holds the digests of the tokens that open /server/: the
// admin token and every service token.
type serviceTokens [][sha256.Size]byte

func newServiceTokens(admin string, service []string) serviceTokens {
	out := serviceTokens{sha256.Sum256([]byte(admin))}
	for _, t := range service {
		out = append(out, sha256.Sum256([]byte(t)))
	}
	return out
}

// authorized reports whether r carries one of the tokens. Every token is
// compared, in constant time, whichever matches: the time taken says
// nothing about which token, or how much of one, was right.
func (ts serviceTokens) authorized(r *http.Request) bool {
	token, ok := bearer(r.Header.Get("Authorization"))
	if !ok {
		return false
	}
	got := sha256.Sum256([]byte(token))
	match := 0
	for _, want := range ts {
		match |= subtle.ConstantTimeCompare(got[:], want[:])
	}
	return match == 1
}

// errServiceToken answers a /server/ call without a service token.
var errServiceToken = fmt.Errorf("%w: service token required", presence.ErrUnauthorized)

// backend guards a /server/ handler with the service tokens.
func (s *server) backend(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.serviceTokens.authorized(r) {
			s.writeError(w, r, errServiceToken)
			return
		}
		next(w, r)
	})
}

// handleServerUpdate answers POST /server/presence/update: the update of
// /presence/update for the user the body names, without the per-user rate
// limit.
func (s *server) handleServerUpdate(w http.ResponseWriter, r *http.Request) {
	body, err := readLimited(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes), s.cfg.MaxBodyBytes)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	req, err := parseServerUpdate(body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	present := dedupe(req.Present)
	result, err := s.cfg.Service.Update(r.Context(), req.User, req.ClientID, present, dedupe(req.Leave))
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSONBytes(w, http.StatusOK, appendUpdateResult(nil, present, result))
}

// serverStateJSON is one channel of /server/presence/get: the whole state,
// users listed in count-only channels too.
type serverStateJSON struct {
	Count         int                 `json:"count"`
	LastMessageID int64               `json:"last_message_id"`
	CountOnly     bool                `json:"count_only"`
	UserIDs       []string            `json:"user_ids"`
	Users         []presence.UserInfo `json:"users"`
}

func toServerStateJSON(st *presence.ChannelState) *serverStateJSON {
	if st == nil {
		return nil
	}
	out := &serverStateJSON{Count: st.Count, LastMessageID: st.LastMessageID, CountOnly: st.CountOnly,
		UserIDs: st.UserIDs(), Users: st.Users}
	if out.Users == nil {
		out.Users = []presence.UserInfo{}
	}
	return out
}

// handleServerGet answers GET /server/presence/get?channels[]=...: the
// whole state of up to presence.MaxInspectChannels channels; null only for
// a channel that does not exist or an invalid name.
func (s *server) handleServerGet(w http.ResponseWriter, r *http.Request) {
	names, err := parseServerChannels(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	states, err := s.cfg.Service.Inspect(r.Context(), names)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	out := make(map[string]*serverStateJSON, len(names))
	for _, name := range names {
		out[name] = toServerStateJSON(states[name])
	}
	writeJSON(w, http.StatusOK, out)
}

// handleServerCan answers GET /server/presence/can?channel=&user_id=&groups[]=.
func (s *server) handleServerCan(w http.ResponseWriter, r *http.Request) {
	channel, u, err := parseCanQuery(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	acc, err := s.cfg.Service.Can(r.Context(), u, channel)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, acc)
}

// handleServerClear answers DELETE /server/presence/channel?channel=: every
// client leaves at once; 204 whether or not anyone was present.
func (s *server) handleServerClear(w http.ResponseWriter, r *http.Request) {
	channel, err := oneChannel(r.URL.Query())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if err := s.cfg.Service.Clear(r.Context(), channel); err != nil {
		s.writeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

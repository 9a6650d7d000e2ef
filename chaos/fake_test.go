package chaos

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/golang-jwt/jwt/v5"
)

const testSecret = "unit-test-secret"

// fakeNode is a presence node reduced to what the toolkit calls: updates
// and reads over one in-memory map (no expiry), with switches to break it.
type fakeNode struct {
	srv *httptest.Server

	mu       sync.Mutex
	present  map[string]map[string]string // channel -> client -> user
	unavail  bool                         // answer 503 to everything
	maxBatch int                          // largest GET seen
	forget   string                       // a channel whose users reads omit
	ghost    string                       // a user reads add to every channel
	updates  int
	// maxUsers caps the distinct users of each channel (0: none): a user
	// not present yet is answered false when the channel holds that many.
	maxUsers int
}

func newFakeNode(t *testing.T) *fakeNode {
	t.Helper()
	f := &fakeNode{present: map[string]map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /presence/update", f.update)
	mux.HandleFunc("GET /presence/get", f.get)
	f.srv = httptest.NewServer(f.guard(mux))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeNode) URL() string { return f.srv.URL }

func (f *fakeNode) set(fn func(f *fakeNode)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeNode) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		down := f.unavail
		f.mu.Unlock()
		if down {
			http.Error(w, `{"errors": ["unavailable"]}`, http.StatusServiceUnavailable)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (f *fakeNode) update(w http.ResponseWriter, r *http.Request) {
	user, err := subject(r.Header.Get("Authorization"))
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var req struct {
		ClientID string   `json:"client_id"`
		Present  []string `json:"present_channels"`
		Leave    []string `json:"leave_channels"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.ClientID == "" {
		http.Error(w, "bad body", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates++
	answer := map[string]bool{}
	for _, ch := range req.Present {
		if f.present[ch] == nil {
			f.present[ch] = map[string]string{}
		}
		if f.full(ch, user) {
			answer[ch] = false
			continue
		}
		f.present[ch][req.ClientID] = user
		answer[ch] = true
	}
	for _, ch := range req.Leave {
		delete(f.present[ch], req.ClientID)
	}
	_ = json.NewEncoder(w).Encode(answer)
}

// full reports whether the cap keeps user out of ch; f.mu is held.
func (f *fakeNode) full(ch, user string) bool {
	if f.maxUsers == 0 {
		return false
	}
	users := map[string]bool{}
	for _, u := range f.present[ch] {
		users[u] = true
	}
	return !users[user] && len(users) >= f.maxUsers
}

// subject verifies a bearer token signed with testSecret and returns sub.
func subject(header string) (string, error) {
	raw, ok := strings.CutPrefix(header, "Bearer ")
	if !ok {
		return "", fmt.Errorf("no token")
	}
	tok, err := jwt.Parse(raw, func(*jwt.Token) (any, error) { return []byte(testSecret), nil },
		jwt.WithValidMethods([]string{"HS256"}))
	if err != nil {
		return "", err
	}
	return tok.Claims.GetSubject()
}

func (f *fakeNode) get(w http.ResponseWriter, r *http.Request) {
	channels := r.URL.Query()["channels[]"]
	f.mu.Lock()
	defer f.mu.Unlock()
	f.maxBatch = max(f.maxBatch, len(channels))
	out := map[string]any{}
	for _, ch := range channels {
		users := map[string]bool{}
		if ch != f.forget {
			for _, u := range f.present[ch] {
				users[u] = true
			}
		}
		if f.ghost != "" {
			users[f.ghost] = true
		}
		list := []map[string]string{}
		for u := range users {
			list = append(list, map[string]string{"id": u})
		}
		sort.Slice(list, func(i, j int) bool { return list[i]["id"] < list[j]["id"] })
		out[ch] = map[string]any{"count": len(list), "users": list}
	}
	_ = json.NewEncoder(w).Encode(out)
}

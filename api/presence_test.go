package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/tokenbucket"
)

func TestGetResponseShape(t *testing.T) {
	e := newEnv(t, nil)
	e.svc.getFn = func(names []string) map[string]*presence.ChannelState {
		return map[string]*presence.ChannelState{
			"/a/full":  {Count: 1, LastMessageID: 17, Users: []presence.UserInfo{{ID: "7", Username: "sam"}}},
			"/a/empty": {Count: 0, LastMessageID: -1},
			"/a/count": {CountOnly: true, Count: 3, LastMessageID: 2},
		}
	}
	target := "/presence/get?channels[]=/a/full&channels[]=/a/empty&channels=/a/count&channels[]=/a/none&channels[]=/a/full"
	rec := e.do("GET", target, nil)
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	want := `{"/a/count":{"count":3,"last_message_id":2},` +
		`"/a/empty":{"count":0,"last_message_id":-1,"users":[]},` +
		`"/a/full":{"count":1,"last_message_id":17,"users":[{"id":"7","username":"sam","name":"","avatar_template":""}]},` +
		`"/a/none":null}` + "\n"
	if got := rec.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	if got := e.svc.getCalls()[0].Channels; !reflect.DeepEqual(got, []string{"/a/full", "/a/empty", "/a/none", "/a/count"}) {
		t.Fatalf("service asked for %v (duplicates must be removed)", got)
	}
}

func TestGetFiftyDistinctAfterDedupe(t *testing.T) {
	e := newEnv(t, nil)
	names := channelList(50)
	names = append(names, names[:10]...)
	if rec := e.do("GET", getQuery(names), nil); rec.Code != http.StatusOK {
		t.Fatalf("60 names of which 50 distinct: status %d", rec.Code)
	}
}

func TestUpdateEncodings(t *testing.T) {
	user := bearerHeader(userToken(t, "7"))
	multi, multiCT := multipartBody(t, map[string][]string{
		"client_id": {"c1"}, "present_channels[]": {"/a/1", "/a/2"}, "leave_channels[]": {"/a/3"},
	})
	cases := []struct {
		name, ct, body string
	}{
		{"json", "application/json", `{"client_id":"c1","present_channels":["/a/1","/a/2"],"leave_channels":["/a/3"],"extra":1}`},
		{"json charset", "application/json; charset=utf-8", `{"client_id":"c1","present_channels":["/a/1","/a/2"],"leave_channels":["/a/3"]}`},
		{"json text/plain blob", "text/plain;charset=UTF-8", `{"client_id":"c1","present_channels":["/a/1","/a/2"],"leave_channels":["/a/3"]}`},
		{"form brackets", "application/x-www-form-urlencoded", "client_id=c1&present_channels%5B%5D=%2Fa%2F1&present_channels%5B%5D=%2Fa%2F2&leave_channels%5B%5D=%2Fa%2F3"},
		{"form plain names", "application/x-www-form-urlencoded", "client_id=c1&present_channels=/a/1&present_channels=/a/2&leave_channels=/a/3"},
		{"form no content type", "", "client_id=c1&present_channels[]=/a/1&present_channels[]=/a/2&leave_channels[]=/a/3"},
		{"multipart", multiCT, multi.String()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, nil)
			e.svc.updateFn = func(present []string) map[string]bool {
				return map[string]bool{"/a/1": true, "/a/2": false, "/a/3": true}
			}
			rec := e.do("POST", "/presence/update", strings.NewReader(tc.body), "Content-Type", tc.ct, "Authorization", user)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}
			if got, want := rec.Body.String(), `{"/a/1":true,"/a/2":false}`+"\n"; got != want {
				t.Fatalf("body %s, want %s (present channels only)", got, want)
			}
			calls := e.svc.updateCalls()
			want := fakeCall{User: calls[0].User, ClientID: "c1", Channels: []string{"/a/1", "/a/2"}, Leave: []string{"/a/3"}}
			if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) || calls[0].User.ID != "7" {
				t.Fatalf("calls %+v", calls)
			}
		})
	}
}

func TestUpdateListsOptional(t *testing.T) {
	e := newEnv(t, nil)
	user := bearerHeader(userToken(t, "7"))
	for _, body := range []string{`{"client_id":"c"}`, `{"client_id":"c","present_channels":null,"leave_channels":[]}`} {
		rec := e.do("POST", "/presence/update", strings.NewReader(body), "Content-Type", "application/json", "Authorization", user)
		if rec.Code != http.StatusOK || rec.Body.String() != "{}\n" {
			t.Fatalf("%s: status %d body %q", body, rec.Code, rec.Body.String())
		}
	}
}

func TestRateLimit(t *testing.T) {
	e := newEnv(t, nil)
	alice := bearerHeader(userToken(t, "alice"))
	bob := bearerHeader(userToken(t, "bob"))
	update := func(auth string) int {
		rec := e.do("POST", "/presence/update", strings.NewReader(`{"client_id":"c"}`),
			"Content-Type", "application/json", "Authorization", auth)
		if rec.Code == http.StatusTooManyRequests {
			errorsOf(t, rec)
			secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
			if err != nil || secs < 1 {
				t.Fatalf("Retry-After %q", rec.Header().Get("Retry-After"))
			}
		}
		return rec.Code
	}
	for i := range DefaultRateBurst {
		if code := update(alice); code != http.StatusOK {
			t.Fatalf("call %d: status %d", i, code)
		}
	}
	// Rejected calls cost nothing: however many, the next token comes after 500 ms.
	for range 5 {
		if code := update(alice); code != http.StatusTooManyRequests {
			t.Fatalf("over the burst: status %d", code)
		}
	}
	if code := update(bob); code != http.StatusOK {
		t.Fatalf("another user is limited too: %d", code)
	}
	e.clock.Advance(500 * time.Millisecond)
	if code := update(alice); code != http.StatusOK {
		t.Fatalf("after refill of one token: status %d", code)
	}
	if code := update(alice); code != http.StatusTooManyRequests {
		t.Fatalf("second call after one token: status %d", code)
	}
	e.clock.Advance(10 * time.Second)
	for i := range DefaultRateBurst {
		if code := update(alice); code != http.StatusOK {
			t.Fatalf("after full refill, call %d: status %d", i, code)
		}
	}
	if n := len(e.svc.updateCalls()); n != 2*DefaultRateBurst+2 {
		t.Fatalf("%d calls reached the service, want %d", n, 2*DefaultRateBurst+2)
	}
}

func TestRateLimitRetryAfterRoundsUp(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.RateBurst = 1; c.RateRefillPerSecond = 0.25 })
	auth := bearerHeader(userToken(t, "u"))
	post := func() *http.Response {
		rec := e.do("POST", "/presence/update", strings.NewReader(`{"client_id":"c"}`), "Content-Type", "application/json", "Authorization", auth)
		return rec.Result()
	}
	post()
	e.clock.Advance(time.Second) // 0.25 of a token back; 3 s to go
	if r := post(); r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") != "3" {
		t.Fatalf("status %d Retry-After %q, want 429 and 3", r.StatusCode, r.Header.Get("Retry-After"))
	}
}

// recordingLimiter is a RateLimiter that refuses the users listed and
// records whom it was asked about.
type recordingLimiter struct {
	mu      sync.Mutex
	asked   []string
	memos   []*tokenbucket.Memo
	refuse  map[string]time.Duration
	ctxSeen bool
}

func (l *recordingLimiter) Allow(ctx context.Context, user string, memo *tokenbucket.Memo) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.asked = append(l.asked, user)
	l.memos = append(l.memos, memo)
	l.ctxSeen = l.ctxSeen || ctx != nil
	if wait, ok := l.refuse[user]; ok {
		return false, wait
	}
	return true, 0
}

// TestUpdateUsesGivenRateLimiter: a cluster's limiter replaces the node's
// buckets; its refusal is a 429 whose Retry-After is its wait rounded up,
// and the refused update never reaches the service. The limiter gets the
// memo of the caller's token.
func TestUpdateUsesGivenRateLimiter(t *testing.T) {
	lim := &recordingLimiter{refuse: map[string]time.Duration{"bob": 2100 * time.Millisecond}}
	e := newEnv(t, func(c *Config) { c.RateLimiter = lim; c.RateBurst = 1 })
	post := func(user string) *httptest.ResponseRecorder {
		return e.do("POST", "/presence/update", strings.NewReader(`{"client_id":"c"}`),
			"Content-Type", "application/json", "Authorization", bearerHeader(userToken(t, user)))
	}
	for i := range 3 { // RateBurst 1 belongs to the node's own buckets, not used here
		if rec := post("alice"); rec.Code != http.StatusOK {
			t.Fatalf("alice's call %d: status %d", i, rec.Code)
		}
	}
	rec := post("bob")
	if rec.Code != http.StatusTooManyRequests || rec.Header().Get("Retry-After") != "3" {
		t.Fatalf("bob: status %d Retry-After %q, want 429 and 3", rec.Code, rec.Header().Get("Retry-After"))
	}
	errorsOf(t, rec)
	if n := len(e.svc.updateCalls()); n != 3 {
		t.Fatalf("%d updates reached the service, want alice's 3", n)
	}
	lim.mu.Lock()
	defer lim.mu.Unlock()
	if !slices.Equal(lim.asked, []string{"alice", "alice", "alice", "bob"}) || !lim.ctxSeen {
		t.Fatalf("limiter asked about %v (context given: %v)", lim.asked, lim.ctxSeen)
	}
	// Each call of one token brings that token's memo; another user's token
	// brings another.
	if m := lim.memos; m[0] == nil || m[1] != m[0] || m[2] != m[0] || m[3] == nil || m[3] == m[0] {
		t.Fatalf("memos %p: want alice's three the same, bob's another", m)
	}
}

func TestUpdateBodyLimit(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxBodyBytes = 32 })
	auth := bearerHeader(userToken(t, "u"))
	body := url.Values{"client_id": {strings.Repeat("c", 40)}}.Encode()
	rec := e.do("POST", "/presence/update", strings.NewReader(body), "Content-Type", "application/x-www-form-urlencoded", "Authorization", auth)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("status %d", rec.Code)
	}
	errorsOf(t, rec)
}

func TestUpdateResponseIsJSONMap(t *testing.T) {
	e := newEnv(t, nil)
	rec := e.do("POST", "/presence/update", strings.NewReader(`{"client_id":"c","present_channels":["/a/1","/a/1"]}`),
		"Content-Type", "application/json", "Authorization", bearerHeader(userToken(t, "u")))
	var got map[string]bool
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil || !reflect.DeepEqual(got, map[string]bool{"/a/1": true}) {
		t.Fatalf("body %s", rec.Body.String())
	}
	if calls := e.svc.updateCalls(); !reflect.DeepEqual(calls[0].Channels, []string{"/a/1"}) {
		t.Fatalf("service got %v", calls[0].Channels)
	}
}

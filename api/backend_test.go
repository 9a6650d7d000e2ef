package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/presencehq/presence/presence"
)

const (
	testServiceToken    = "service-token-0123456789"
	testServiceTokenOld = "service-token-old-0123456"
)

// newBackendEnv is an env whose node has two service tokens (a rotation).
func newBackendEnv(t *testing.T) *env {
	t.Helper()
	return newEnv(t, func(c *Config) { c.ServiceTokens = []string{testServiceToken, testServiceTokenOld} })
}

// backend sends a request with the service token.
func (e *env) backend(method, target, body string) *httpResult {
	e.t.Helper()
	rec := e.do(method, target, strings.NewReader(body), "Authorization", bearerHeader(testServiceToken), "Content-Type", "application/json")
	return &httpResult{status: rec.Code, body: rec.Body.Bytes(), header: rec.Header()}
}

// httpResult is a recorded answer.
type httpResult struct {
	status int
	body   []byte
	header http.Header
}

func TestServerEndpointsNeedAServiceToken(t *testing.T) {
	e := newBackendEnv(t)
	calls := []struct{ method, target, body string }{
		{"POST", pathServerUpdate, `{"user": {"id": "7"}, "client_id": "c", "present_channels": ["/a/b"]}`},
		{"GET", pathServerGet + "?channels[]=/a/b", ""},
		{"GET", pathServerCan + "?channel=/a/b&user_id=7", ""},
		{"DELETE", pathServerClear + "?channel=/a/b", ""},
	}
	refused := map[string]string{
		"no header":       "",
		"a user token":    bearerHeader(userToken(t, "7")),
		"a wrong token":   bearerHeader("service-token-0123456788"),
		"a token prefix":  bearerHeader(testServiceToken[:10]),
		"basic auth":      "Basic " + testServiceToken,
		"an empty bearer": "Bearer ",
	}
	for _, c := range calls {
		for name, auth := range refused {
			rec := e.do(c.method, c.target, strings.NewReader(c.body), "Authorization", auth)
			if rec.Code != http.StatusUnauthorized || !slices.Equal(errorsOf(t, rec), []string{"not authenticated: service token required"}) {
				t.Errorf("%s %s with %s: %d %s", c.method, c.target, name, rec.Code, rec.Body)
			}
			if rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s with %s: no WWW-Authenticate", c.method, c.target, name)
			}
		}
	}
	inspects, cans, clears := e.svc.serverCalls()
	if len(inspects)+len(cans)+len(clears)+len(e.svc.updateCalls()) != 0 {
		t.Fatal("a refused call reached the service")
	}
	for _, token := range []string{testServiceToken, testServiceTokenOld, testAdminToken} {
		for _, c := range calls {
			rec := e.do(c.method, c.target, strings.NewReader(c.body), "Authorization", bearerHeader(token))
			if rec.Code >= 300 {
				t.Errorf("%s %s with %q: %d %s", c.method, c.target, token, rec.Code, rec.Body)
			}
		}
	}
	// A service token never opens /admin/.
	for _, token := range []string{testServiceToken, testServiceTokenOld} {
		for _, target := range []string{"/admin/prefixes", "/admin/prefixes/demo", "/admin/cluster", "/admin/owner?channel=/a/b"} {
			rec := e.do("GET", target, nil, "Authorization", bearerHeader(token))
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("GET %s with a service token: %d", target, rec.Code)
			}
		}
		rec := e.do("PUT", "/admin/prefixes/x", strings.NewReader(`{}`), "Authorization", bearerHeader(token))
		if rec.Code != http.StatusUnauthorized || len(e.prefixes.List()) != 0 {
			t.Errorf("PUT with a service token: %d, stored %v", rec.Code, e.prefixes.List())
		}
	}
}

func TestServiceTokensAreValidated(t *testing.T) {
	base := Config{Service: &fakeService{}, Prefixes: newFakePrefixes(), Cluster: &fakeCluster{},
		JWTSecrets: [][]byte{[]byte("s")}, AdminToken: "admin"}
	for name, tokens := range map[string][]string{"empty": {"ok", ""}, "the admin token": {"admin"}} {
		cfg := base
		cfg.ServiceTokens = tokens
		if _, err := New(cfg); err == nil {
			t.Errorf("service tokens with %s accepted", name)
		}
	}
}

func TestServerUpdateActsForTheNamedUser(t *testing.T) {
	e := newBackendEnv(t)
	e.svc.updateFn = func(present []string) map[string]bool {
		out := map[string]bool{}
		for _, ch := range present {
			out[ch] = ch != "/no/x"
		}
		return out
	}
	res := e.backend("POST", pathServerUpdate, `{"user": {"id": "42", "username": "sam", "name": "Sam", "avatar_template": "/a/{size}.png", "groups": ["staff", "mods"]},
		"client_id": "replying-9", "present_channels": ["/chat/9/replying", "/no/x", "/chat/9/replying"], "leave_channels": ["/chat/8/replying"]}`)
	if res.status != http.StatusOK || string(res.body) != `{"/chat/9/replying":true,"/no/x":false}`+"\n" {
		t.Fatalf("update: %d %s", res.status, res.body)
	}
	calls := e.svc.updateCalls()
	want := fakeCall{User: &presence.User{ID: "42", Username: "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png", Groups: []string{"staff", "mods"}},
		ClientID: "replying-9", Channels: []string{"/chat/9/replying", "/no/x"}, Leave: []string{"/chat/8/replying"}}
	if len(calls) != 1 || !reflect.DeepEqual(calls[0], want) {
		t.Fatalf("service got %+v, want %+v", calls, want)
	}
	// Not rate limited per user: a backend marks one user in many channels.
	for i := range 3 * DefaultRateBurst {
		if res := e.backend("POST", pathServerUpdate, fmt.Sprintf(`{"user": {"id": "42"}, "client_id": "c", "present_channels": ["/a/%d"]}`, i)); res.status != http.StatusOK {
			t.Fatalf("update %d: %d %s", i, res.status, res.body)
		}
	}
	// 500 leaves go to the Service with the present, in one call.
	leaves := channelList(500)
	before := len(e.svc.updateCalls())
	if res := e.backend("POST", pathServerUpdate, `{"user": {"id": "42"}, "client_id": "c", "present_channels": ["/p/q"], "leave_channels": `+jsonList(leaves)+`}`); res.status != http.StatusOK {
		t.Fatalf("500 leaves: %d %s", res.status, res.body)
	}
	calls = e.svc.updateCalls()[before:]
	if len(calls) != 1 || !slices.Equal(calls[0].Leave, leaves) || !slices.Equal(calls[0].Channels, []string{"/p/q"}) {
		t.Fatalf("500 leaves handed over in %d calls", len(calls))
	}
}

func TestServerUpdateBadInput(t *testing.T) {
	e := newBackendEnv(t)
	long := strings.Repeat("x", presence.MaxUserIDBytes+1)
	cases := map[string]string{
		``:                                       "body is not a JSON object",
		`null`:                                   "body is not a JSON object",
		`[]`:                                     "body is not a JSON object",
		`"x"`:                                    "body is not a JSON object",
		`{"user":`:                               "body is not a JSON object",
		`{} {}`:                                  "unexpected data after the object",
		`{"usr":1}`:                              `unknown field "usr"`,
		`{"client_id": "c"}`:                     "user is required",
		`{"user": null, "client_id": "c"}`:       "user is required",
		`{"user": "42", "client_id": "c"}`:       "user must be a JSON object",
		`{"user": [], "client_id": "c"}`:         "user must be a JSON object",
		`{"user": {}, "client_id": "c"}`:         "user.id must be a string of 1..128 bytes",
		`{"user": {"id": ""}, "client_id": "c"}`: "user.id must be a string of 1..128 bytes",
		`{"user": {"id": 42}, "client_id": "c"}`: "user.id must be a string of 1..128 bytes",
		`{"user": {"id": null}, "client_id": "c"}`:                                                       "user.id must be a string of 1..128 bytes",
		`{"user": {"id": "` + long + `"}, "client_id": "c"}`:                                             "user.id must be a string of 1..128 bytes",
		`{"user": {"id": "1", "sub": "2"}, "client_id": "c"}`:                                            `user: unknown field "sub"`,
		`{"user": {"id": "1", "username": 5}, "client_id": "c"}`:                                         "user.username must be a string",
		`{"user": {"id": "1", "name": null}, "client_id": "c"}`:                                          "user.name must be a string",
		`{"user": {"id": "1", "avatar_template": []}, "client_id": "c"}`:                                 "user.avatar_template must be a string",
		`{"user": {"id": "1", "groups": "staff"}, "client_id": "c"}`:                                     "user.groups must be an array of strings",
		`{"user": {"id": "1", "groups": ["a", null]}, "client_id": "c"}`:                                 "user.groups must be an array of strings (entry 1 is null)",
		`{"user": {"id": "1", "groups": ["a", ""]}, "client_id": "c"}`:                                   "user.groups[1] must be a non-empty string of at most 128 bytes",
		`{"user": {"id": "1"} }`:                                                                         "client_id must be a non-empty string",
		`{"user": {"id": "1"}, "client_id": 3}`:                                                          "client_id must be a non-empty string",
		`{"user": {"id": "1"}, "client_id": null}`:                                                       "client_id must be a non-empty string",
		`{"user": {"id": "1"}, "client_id": ""}`:                                                         "client_id must be a non-empty string of at most 128 bytes",
		`{"user": {"id": "1"}, "client_id": "c", "present_channels": 1}`:                                 "present_channels must be an array of strings",
		`{"user": {"id": "1"}, "client_id": "c", "leave_channels": [1]}`:                                 "leave_channels must be an array of strings",
		`{"user": {"id": "1"}, "client_id": "c", "present_channels": ` + jsonList(channelList(51)) + `}`: "too many present_channels (at most 50)",
		`{"user": {"id": "1"}, "client_id": "c", "leave_channels": ` + jsonList(channelList(501)) + `}`:  "too many leave_channels (at most 500)",
	}
	for body, msg := range cases {
		res := e.backend("POST", pathServerUpdate, body)
		var got errorBody
		if res.status != http.StatusBadRequest || json.Unmarshal(res.body, &got) != nil || len(got.Errors) != 1 || got.Errors[0] != "invalid input: "+msg {
			t.Errorf("body %.80q: %d %s, want 400 %q", body, res.status, res.body, msg)
		}
	}
	huge := `{"user": {"id": "1", "name": "` + strings.Repeat("n", int(DefaultMaxBodyBytes)) + `"}, "client_id": "c"}`
	if res := e.backend("POST", pathServerUpdate, huge); res.status != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d %s", res.status, res.body)
	}
	if n := len(e.svc.updateCalls()); n != 0 {
		t.Fatalf("%d bad updates reached the service", n)
	}
}

func TestServerGetShowsEverything(t *testing.T) {
	e := newBackendEnv(t)
	e.svc.inspectFn = func(names []string) map[string]*presence.ChannelState {
		return map[string]*presence.ChannelState{
			"/count/a": {CountOnly: true, Count: 2, LastMessageID: 17, Users: []presence.UserInfo{{ID: "7", Username: "sam"}, {ID: "9"}}},
			"/pub/b":   {Count: 0, LastMessageID: 3},
		}
	}
	res := e.backend("GET", pathServerGet+"?channels[]=/count/a&channels=/pub/b&channels[]=/nope/c&channels[]=/count/a", "")
	const want = `{"/count/a":{"count":2,"last_message_id":17,"count_only":true,"user_ids":["7","9"],"users":[{"id":"7","username":"sam","name":"","avatar_template":""},{"id":"9","username":"","name":"","avatar_template":""}]},` +
		`"/nope/c":null,"/pub/b":{"count":0,"last_message_id":3,"count_only":false,"user_ids":[],"users":[]}}` + "\n"
	if res.status != http.StatusOK || string(res.body) != want {
		t.Fatalf("get: %d %s\nwant %s", res.status, res.body, want)
	}
	inspects, _, _ := e.svc.serverCalls()
	if len(inspects) != 1 || !slices.Equal(inspects[0].Channels, []string{"/count/a", "/nope/c", "/pub/b"}) {
		t.Fatalf("inspect calls %+v, want one of the 3 distinct channels", inspects)
	}
	for target, status := range map[string]int{
		pathServerGet:                  400,
		pathServerGet + "?x=1":         400,
		getServerQuery(501):            400,
		getServerQuery(500):            200,
		pathServerGet + "?channels[]=": 200, // a channel named "": null, not an error
	} {
		if res := e.backend("GET", target, ""); res.status != status {
			t.Errorf("GET %.60s: %d %s, want %d", target, res.status, res.body, status)
		}
	}
}

func getServerQuery(n int) string {
	return pathServerGet + "?" + url.Values{"channels[]": channelList(n)}.Encode()
}

func TestServerCanAsksTheService(t *testing.T) {
	e := newBackendEnv(t)
	e.svc.canFn = func(u *presence.User, channel string) presence.Access {
		cfg := &presence.Config{AllowedGroupIDs: []string{"staff"}, CountOnly: true, MaxUsers: 10}
		return presence.AccessOf(cfg, u)
	}
	cases := map[string]struct {
		user *presence.User
		body string
	}{
		"?channel=/s/a":           {nil, `{"exists":true,"can_view":false,"can_enter":false,"count_only":true,"max_users":10}`},
		"?channel=/s/a&user_id=7": {&presence.User{ID: "7"}, `{"exists":true,"can_view":false,"can_enter":false,"count_only":true,"max_users":10}`},
		"?channel=/s/a&user_id=7&groups[]=staff&groups=mods": {&presence.User{ID: "7", Groups: []string{"staff", "mods"}}, `{"exists":true,"can_view":true,"can_enter":true,"count_only":true,"max_users":10}`},
		"?channel=bad+name&user_id=7":                        {&presence.User{ID: "7"}, ""},
	}
	for query, c := range cases {
		res := e.backend("GET", pathServerCan+query, "")
		if res.status != http.StatusOK || c.body != "" && strings.TrimSpace(string(res.body)) != c.body {
			t.Errorf("can%s: %d %s, want %s", query, res.status, res.body, c.body)
		}
		_, cans, _ := e.svc.serverCalls()
		last := cans[len(cans)-1]
		if !reflect.DeepEqual(last.User, c.user) {
			t.Errorf("can%s: the service was asked for %+v, want %+v", query, last.User, c.user)
		}
	}
	long := strings.Repeat("x", presence.MaxUserIDBytes+1)
	for query, msg := range map[string]string{
		"":                                  "channel must be given exactly once",
		"?channel=":                         "channel must be given exactly once",
		"?channel=/a/b&channel=/a/c":        "channel must be given exactly once",
		"?channel=/a/b&user_id=":            "user_id must be given once, 1..128 bytes",
		"?channel=/a/b&user_id=" + long:     "user_id must be given once, 1..128 bytes",
		"?channel=/a/b&user_id=1&user_id=2": "user_id must be given once, 1..128 bytes",
		"?channel=/a/b&groups[]=staff":      "groups need a user_id (an anonymous visitor has no groups)",
		"?channel=/a/b&user_id=1&groups[]=": "groups[0] must be a non-empty string of at most 128 bytes",
	} {
		res := e.backend("GET", pathServerCan+query, "")
		var got errorBody
		if res.status != http.StatusBadRequest || json.Unmarshal(res.body, &got) != nil || got.Errors[0] != "invalid input: "+msg {
			t.Errorf("can%s: %d %s, want 400 %q", query, res.status, res.body, msg)
		}
	}
}

func TestServerClearAnswers204(t *testing.T) {
	e := newBackendEnv(t)
	for _, ch := range []string{"/pub/a", "bad name"} {
		res := e.backend("DELETE", pathServerClear+"?channel="+url.QueryEscape(ch), "")
		if res.status != http.StatusNoContent || len(res.body) != 0 {
			t.Fatalf("clear %q: %d %s", ch, res.status, res.body)
		}
	}
	for _, query := range []string{"", "?channel=", "?channel=/a/b&channel=/a/c"} {
		if res := e.backend("DELETE", pathServerClear+query, ""); res.status != http.StatusBadRequest {
			t.Errorf("clear%s: %d %s", query, res.status, res.body)
		}
	}
	_, _, clears := e.svc.serverCalls()
	if len(clears) != 2 || clears[0].Channels[0] != "/pub/a" || clears[1].Channels[0] != "bad name" {
		t.Fatalf("clears %+v", clears)
	}
	e.svc.err = presence.ErrOverloaded
	if res := e.backend("DELETE", pathServerClear+"?channel=/pub/a", ""); res.status != http.StatusServiceUnavailable || res.header.Get("Retry-After") == "" {
		t.Fatalf("overloaded clear: %d %s", res.status, res.body)
	}
	if res := e.backend("GET", pathServerClear+"?channel=/pub/a", ""); res.status != http.StatusMethodNotAllowed {
		t.Fatalf("GET on the clear path: %d", res.status)
	}
}

// FuzzParseServerUpdate: parsing never panics, fails only with ErrInvalid,
// and what it accepts honours the contract's limits and decodes by
// encoding/json to the same user.
func FuzzParseServerUpdate(f *testing.F) {
	f.Add([]byte(`{"user": {"id": "42", "username": "sam", "groups": ["staff"]}, "client_id": "c", "present_channels": ["/a/b"], "leave_channels": []}`))
	f.Add([]byte(`{"user": {"id": 42}, "client_id": "c"}`))
	f.Add([]byte(`{"user": {"id": "1", "groups": [null]}, "client_id": "c"}`))
	f.Add([]byte(`{"user": {"id": "1"}, "client_id": "c"} x`))
	f.Add([]byte(`null`))
	for _, body := range typedUpdateBodies() {
		f.Add([]byte(body))
		f.Add(bytes.Replace([]byte(body), []byte("{"), []byte(`{"user": {"id": "1"}, `), 1))
	}
	for _, v := range []string{`null`, `1`, `""`, `"x"`, `[]`, `[null]`, `["a"]`, `{}`, `{"a": 1}`} {
		for _, field := range []string{"id", "username", "name", "avatar_template", "groups"} {
			f.Add([]byte(fmt.Sprintf(`{"user": {"id": "1", %q: %s}, "client_id": "c"}`, field, v)))
		}
		f.Add([]byte(fmt.Sprintf(`{"user": %s, "client_id": "c"}`, v)))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := parseServerUpdate(body)
		if err != nil {
			if !errors.Is(err, presence.ErrInvalid) {
				t.Fatalf("unexpected error kind: %v", err)
			}
			return
		}
		u := req.User
		if u == nil || u.ID == "" || len(u.ID) > presence.MaxUserIDBytes || req.ClientID == "" || len(req.ClientID) > presence.MaxClientIDBytes ||
			len(req.Present) > presence.MaxChannelsPerCall || len(req.Leave) > presence.MaxLeaveChannels {
			t.Fatalf("accepted out-of-contract request %+v (user %+v)", req, u)
		}
		for _, g := range u.Groups {
			if g == "" || len(g) > presence.MaxIDBytes {
				t.Fatalf("accepted group %q", g)
			}
		}
		var std struct {
			User presence.User `json:"user"`
		}
		if err := json.Unmarshal(body, &std); err != nil || std.User.ID != u.ID || std.User.Username != u.Username ||
			std.User.Name != u.Name || std.User.AvatarTemplate != u.AvatarTemplate || !slices.Equal(std.User.Groups, u.Groups) {
			t.Fatalf("accepted %q as %+v; encoding/json reads %+v, %v", body, u, std.User, err)
		}
	})
}

// FuzzParseServerQuery feeds arbitrary query strings to the parsers of the
// get, can and clear endpoints: never a panic, only ErrInvalid, and what
// they accept is within the contract.
func FuzzParseServerQuery(f *testing.F) {
	for _, q := range []string{
		"channels[]=/a/b&channels=/a/c",
		"channel=/a/b&user_id=7&groups[]=staff&groups=mods",
		"channel=/a/b&groups[]=x",
		"channel=%zz&user_id=",
		"channel=/a/b&channel=/a/c",
		"user_id=1&user_id=2&channel=x",
		"",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, _ := url.ParseQuery(raw) // the request keeps what parses, as r.URL.Query does
		if names, err := parseServerChannels(q); err != nil {
			if !errors.Is(err, presence.ErrInvalid) {
				t.Fatalf("channels: %v", err)
			}
		} else if len(names) == 0 || len(names) > presence.MaxInspectChannels || len(slices.Compact(slices.Sorted(slices.Values(names)))) != len(names) {
			t.Fatalf("channels %q from %q", names, raw)
		}
		channel, u, err := parseCanQuery(q)
		switch {
		case err != nil:
			if !errors.Is(err, presence.ErrInvalid) {
				t.Fatalf("can: %v", err)
			}
		case channel == "", u != nil && (u.ID == "" || len(u.ID) > presence.MaxUserIDBytes), u == nil && len(q["groups"])+len(q["groups[]"]) > 0:
			t.Fatalf("can accepted %q: %q %+v", raw, channel, u)
		}
		if ch, err := oneChannel(q); err == nil && (ch == "" || len(q["channel"]) != 1) {
			t.Fatalf("clear accepted %q", raw)
		} else if err != nil && !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("clear: %v", err)
		}
	})
}

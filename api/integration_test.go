package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/web"
)

// These tests run the HTTP layer over the real presence engine and resolver.
// The first group translates every case of Discourse's
// spec/requests/presence_controller_spec.rb; the rest covers the live stream.

// resolverStore is an in-memory PrefixStore that installs every document in
// the resolver, as the Raft FSM does in production.
type resolverStore struct {
	mu   sync.Mutex
	docs map[string][]byte
	res  *presence.Resolver
}

func (s *resolverStore) Put(_ context.Context, prefix string, doc []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.res.SetDocument(prefix, doc); err != nil {
		return err
	}
	s.docs[prefix] = doc
	return nil
}

func (s *resolverStore) Delete(_ context.Context, prefix string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.docs[prefix]; !ok {
		return fmt.Errorf("prefix %q: %w", prefix, presence.ErrNotFound)
	}
	delete(s.docs, prefix)
	return s.res.SetDocument(prefix, nil)
}

func (s *resolverStore) Get(prefix string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, ok := s.docs[prefix]
	return d, ok
}

func (s *resolverStore) List() map[string][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string][]byte, len(s.docs))
	for k, v := range s.docs {
		out[k] = v
	}
	return out
}

// The users of the spec: user is in group g1; secureUser and group g2 are
// the ones the secure channels allow.
var (
	specUser   = &presence.User{ID: "1", Username: "user1", Name: "User One", AvatarTemplate: "/a/1/{size}.png", Groups: []string{"g1"}}
	secureUser = &presence.User{ID: "2", Username: "secure", Name: "Secure", AvatarTemplate: "/a/2/{size}.png", Groups: []string{"g2"}}
	specUser2  = &presence.User{ID: "3", Username: "user2", Name: "User Two", AvatarTemplate: "/a/3/{size}.png"}
	specUser3  = &presence.User{ID: "4", Username: "user3", Name: "User Three", AvatarTemplate: "/a/4/{size}.png"}
)

// specDocument is the spec's register_prefix("test") block as a prefix document.
const specDocument = `{"rules": [
	{"match": "/test/public\\d*", "config": {"public": true}},
	{"match": "/test/secureuser", "config": {"allowed_user_ids": ["2"]}},
	{"match": "/test/securegroup", "config": {"allowed_group_ids": ["g2"]}},
	{"match": "/test/alloweduser", "config": {"allowed_user_ids": ["1"]}},
	{"match": "/test/allowedgroup", "config": {"allowed_group_ids": ["g1"]}},
	{"match": "/test/countonly", "config": {"public": true, "count_only": true}},
	{"match": "/test/longlived", "config": {"public": true, "timeout": 3600}},
	{"match": "/test/flip", "config": {"public": true}}
]}`

const (
	ch1               = "/test/public1"
	ch2               = "/test/public2"
	secureUserChannel = "/test/secureuser"
	secureGroupChan   = "/test/securegroup"
	allowedUserChan   = "/test/alloweduser"
	allowedGroupChan  = "/test/allowedgroup"
	countOnlyChannel  = "/test/countonly"
)

// live is a node's HTTP layer over a real engine and resolver.
type live struct {
	t        *testing.T
	clock    *clock.Fake
	engine   *presence.Engine
	registry *prometheus.Registry
	h        http.Handler
	srv      *streamServer
	closed   sync.Once
}

// closeEngine stops the engine once (Engine.Close is not idempotent).
func (l *live) closeEngine() {
	l.closed.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := l.engine.Close(ctx); err != nil {
			l.t.Errorf("engine close: %v", err)
		}
	})
}

func newLive(t *testing.T, mutate func(*Config)) *live {
	t.Helper()
	l := &live{t: t, clock: clock.NewFake(testStart), registry: prometheus.NewRegistry()}
	res := presence.NewResolver(presence.ResolverConfig{Clock: l.clock})
	eng, err := presence.NewEngine(presence.EngineConfig{Clock: l.clock, Configs: res, Metrics: presence.NewMetrics(l.registry)})
	if err != nil {
		t.Fatal(err)
	}
	l.engine = eng
	t.Cleanup(l.closeEngine)
	cfg := Config{
		Service:    eng,
		Prefixes:   &resolverStore{docs: map[string][]byte{}, res: res},
		Cluster:    &fakeCluster{ready: true},
		JWTSecrets: [][]byte{[]byte(testSecret)},
		AdminToken: testAdminToken,
		Clock:      l.clock,
		Registry:   l.registry,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	if l.h, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	l.srv = newStreamServer(t, &env{h: l.h})
	if code, body := l.do("PUT", "/admin/prefixes/test", specDocument, "Bearer "+testAdminToken); code != http.StatusOK {
		t.Fatalf("PUT document: %d %s", code, body)
	}
	return l
}

// do sends a request through real HTTP and returns status and body.
func (l *live) do(method, target, body, auth string, headers ...string) (int, string) {
	l.t.Helper()
	req, err := http.NewRequest(method, l.srv.srv.URL+target, strings.NewReader(body))
	if err != nil {
		l.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := l.srv.srv.Client().Do(req)
	if err != nil {
		l.t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(resp.Body)
	if err != nil {
		l.t.Fatal(err)
	}
	return resp.StatusCode, string(answer)
}

// as returns the Authorization header of u's token.
func as(t *testing.T, u *presence.User) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": u.ID, "username": u.Username, "name": u.Name,
		"avatar_template": u.AvatarTemplate, "exp": testStart.Add(24 * time.Hour).Unix()}
	if len(u.Groups) > 0 {
		claims["groups"] = u.Groups
	}
	return "Bearer " + token(t, claims)
}

// update posts an update as u and returns the decoded answer.
func (l *live) update(u *presence.User, body string) (int, map[string]bool) {
	l.t.Helper()
	code, raw := l.do("POST", "/presence/update", body, as(l.t, u))
	var out map[string]bool
	if code == http.StatusOK {
		if err := json.Unmarshal([]byte(raw), &out); err != nil {
			l.t.Fatalf("update answer %q: %v", raw, err)
		}
	}
	return code, out
}

// userIDs returns the ids present in channel, read by a user allowed to see
// it (like the spec's channel.user_ids).
func (l *live) userIDs(channel string) []string {
	l.t.Helper()
	for _, viewer := range []*presence.User{specUser, secureUser} {
		st, err := l.engine.State(context.Background(), viewer, channel)
		if err != nil {
			l.t.Fatal(err)
		}
		if st != nil {
			ids := []string{}
			for _, u := range st.Users {
				ids = append(ids, u.ID)
			}
			slices.Sort(ids)
			return ids
		}
	}
	l.t.Fatalf("nobody may view %s", channel)
	return nil
}

func (l *live) wantIDs(channel string, want ...string) {
	l.t.Helper()
	if want == nil {
		want = []string{}
	}
	if got := l.userIDs(channel); !slices.Equal(got, want) {
		l.t.Fatalf("%s: users %v, want %v", channel, got, want)
	}
}

// get fetches channels (optionally signed in) and decodes the raw states.
func (l *live) get(auth string, channels ...string) map[string]json.RawMessage {
	l.t.Helper()
	code, body := l.do("GET", getQuery(channels), "", auth)
	if code != http.StatusOK {
		l.t.Fatalf("get: %d %s", code, body)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal([]byte(body), &out); err != nil {
		l.t.Fatal(err)
	}
	return out
}

// present marks u present directly on the engine (the spec's ch.present).
func (l *live) present(u *presence.User, clientID, channel string) {
	l.t.Helper()
	ok, err := l.engine.Present(context.Background(), u, clientID, channel)
	if err != nil || !ok {
		l.t.Fatalf("present %s in %s: %v %v", u.ID, channel, ok, err)
	}
}

func (l *live) lastID(channel string) int64 {
	l.t.Helper()
	st, err := l.engine.State(context.Background(), specUser, channel)
	if err != nil || st == nil {
		l.t.Fatalf("state of %s: %v", channel, err)
	}
	return st.LastMessageID
}

// --- Discourse spec: #update ---

func TestSpecUpdateWorks(t *testing.T) {
	l := newLive(t, nil)
	l.wantIDs(ch1)
	l.wantIDs(ch2)

	code, _ := l.update(specUser, `{"client_id":"c1","present_channels":["/test/public1","/test/public2"]}`)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	l.wantIDs(ch1, "1")
	l.wantIDs(ch2, "1")

	code, _ = l.update(specUser, `{"client_id":"c1","present_channels":["/test/public1"],"leave_channels":["/test/public2"]}`)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	l.wantIDs(ch1, "1")
	l.wantIDs(ch2)

	code, _ = l.update(specUser, `{"client_id":"c1","present_channels":[],"leave_channels":["/test/public1"]}`)
	if code != http.StatusOK {
		t.Fatalf("status %d", code)
	}
	l.wantIDs(ch1)
	l.wantIDs(ch2)
}

func TestSpecUpdateWorksFormEncoded(t *testing.T) {
	l := newLive(t, nil)
	form := url.Values{"client_id": {"c1"}, "present_channels[]": {ch1, ch2}}.Encode()
	code, body := l.do("POST", "/presence/update", form, as(t, specUser), "Content-Type", "application/x-www-form-urlencoded")
	if code != http.StatusOK || strings.TrimSpace(body) != `{"/test/public1":true,"/test/public2":true}` {
		t.Fatalf("%d %s", code, body)
	}
	l.wantIDs(ch1, "1")
	// The beacon of a closing page: multipart FormData leaving both channels.
	multi, ct := multipartBody(t, map[string][]string{"client_id": {"c1"}, "leave_channels[]": {ch1, ch2}})
	code, body = l.do("POST", "/presence/update", multi.String(), as(t, specUser), "Content-Type", ct)
	if code != http.StatusOK || strings.TrimSpace(body) != `{}` {
		t.Fatalf("%d %s", code, body)
	}
	l.wantIDs(ch1)
	l.wantIDs(ch2)
}

func TestSpecUpdateTrueFalseByExistenceAndSecurity(t *testing.T) {
	l := newLive(t, nil)
	l.wantIDs(ch1)
	l.wantIDs(secureUserChannel)
	l.wantIDs(secureGroupChan)

	code, got := l.update(specUser, `{"client_id":"c1","present_channels":[`+
		`"/test/public1","/test/secureuser","/test/securegroup","/test/alloweduser","/test/allowedgroup","/test/nonexistent"]}`)
	want := map[string]bool{ch1: true, secureUserChannel: false, secureGroupChan: false,
		allowedUserChan: true, allowedGroupChan: true, "/test/nonexistent": false}
	if code != http.StatusOK || !maps.Equal(got, want) {
		t.Fatalf("%d %v, want %v", code, got, want)
	}
	l.wantIDs(ch1, "1")
	l.wantIDs(secureUserChannel)
	l.wantIDs(secureGroupChan)
	l.wantIDs(allowedUserChan, "1")
	l.wantIDs(allowedGroupChan, "1")
}

func TestSpecUpdateDoesNotSetCookies(t *testing.T) {
	l := newLive(t, nil)
	req, _ := http.NewRequest("POST", l.srv.srv.URL+"/presence/update", strings.NewReader(`{"client_id":"c","present_channels":["/test/public1"]}`))
	req.Header.Set("Authorization", as(t, specUser))
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.srv.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || len(resp.Cookies()) != 0 {
		t.Fatalf("status %d cookies %v", resp.StatusCode, resp.Cookies())
	}
}

// Discourse answers 503 in read-only mode; here the analogue is a node whose
// engine has stopped.
func TestSpecUpdateUnavailableIs503(t *testing.T) {
	l := newLive(t, nil)
	l.closeEngine()
	code, body := l.do("POST", "/presence/update", `{"client_id":"c","present_channels":["/test/public1"]}`, as(t, specUser))
	if code != http.StatusServiceUnavailable || !strings.Contains(body, `"errors"`) {
		t.Fatalf("%d %s", code, body)
	}
}

func TestSpecUpdateRejections(t *testing.T) {
	l := newLive(t, nil)
	fiftyOne := jsonList(channelList(51))
	fiveHundredOne := jsonList(channelList(501))
	for _, tc := range []struct {
		auth, body string
		status     int
	}{
		{"", `{"client_id":"c","present_channels":["/test/public1"]}`, http.StatusForbidden},
		{as(t, specUser), `{"client_id":"c","present_channels":` + fiftyOne + `}`, http.StatusBadRequest},
		{as(t, specUser), `{"client_id":"c","leave_channels":` + fiveHundredOne + `}`, http.StatusBadRequest},
		{as(t, specUser), `{"client_id":"c","present_channels":["/test/public1",null]}`, http.StatusBadRequest},
		{as(t, specUser), `{"present_channels":["/test/public1"]}`, http.StatusBadRequest},
		{as(t, specUser), `{"client_id":"","present_channels":["/test/public1"]}`, http.StatusBadRequest},
		{as(t, specUser), `{"client_id":7,"present_channels":["/test/public1"]}`, http.StatusBadRequest},
		{as(t, specUser), `{"client_id":"c","present_channels":"/test/public1"}`, http.StatusBadRequest},
		{as(t, specUser), `{"client_id":"c","present_channels":[7]}`, http.StatusBadRequest},
	} {
		code, body := l.do("POST", "/presence/update", tc.body, tc.auth)
		if code != tc.status || !strings.Contains(body, `"errors"`) {
			t.Fatalf("%s: %d %s, want %d", tc.body, code, body, tc.status)
		}
	}
	l.wantIDs(ch1)
}

// --- Discourse spec: #get ---

func TestSpecGetWorks(t *testing.T) {
	l := newLive(t, nil)
	got := l.get("", ch1)
	want := fmt.Sprintf(`{"count":0,"last_message_id":%d,"users":[]}`, l.lastID(ch1))
	if len(got) != 1 || string(got[ch1]) != want {
		t.Fatalf("got %s, want {%q: %s}", got, ch1, want)
	}

	l.present(specUser, "a", ch1)
	l.present(specUser2, "b", ch1)
	l.present(specUser3, "c", ch1)
	var st struct {
		Count         int              `json:"count"`
		LastMessageID int64            `json:"last_message_id"`
		Users         []map[string]any `json:"users"`
	}
	if err := json.Unmarshal(l.get("", ch1)[ch1], &st); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range st.Users {
		ids = append(ids, u["id"].(string))
	}
	slices.Sort(ids)
	if !slices.Equal(ids, []string{"1", "3", "4"}) || st.Count != 3 || st.LastMessageID != l.lastID(ch1) {
		t.Fatalf("state %+v", st)
	}
	keys := slices.Sorted(maps.Keys(st.Users[0]))
	if !slices.Equal(keys, []string{"avatar_template", "id", "name", "username"}) {
		t.Fatalf("user keys %v", keys)
	}
}

func TestSpecGetRespectsExistenceAndSecurity(t *testing.T) {
	l := newLive(t, nil)
	got := l.get(as(t, specUser), ch1, allowedUserChan, allowedGroupChan, secureUserChannel, secureGroupChan, "/test/nonexistent")
	for _, name := range []string{ch1, allowedUserChan, allowedGroupChan} {
		if string(got[name]) == "null" || got[name] == nil {
			t.Fatalf("%s: %s, want a state", name, got[name])
		}
	}
	for _, name := range []string{secureUserChannel, secureGroupChan, "/test/nonexistent"} {
		if raw, ok := got[name]; !ok || string(raw) != "null" {
			t.Fatalf("%s: %s, want null", name, raw)
		}
	}
	// Anonymous callers see only public channels; invalid names are null too.
	got = l.get("", ch1, allowedUserChan, "/bad", "nope", "/test/\x01x")
	if string(got[ch1]) == "null" || string(got[allowedUserChan]) != "null" || string(got["/bad"]) != "null" ||
		string(got["nope"]) != "null" || string(got["/test/\x01x"]) != "null" {
		t.Fatalf("anonymous get %s", got)
	}
}

func TestSpecGetCountOnly(t *testing.T) {
	l := newLive(t, nil)
	var st map[string]any
	if err := json.Unmarshal(l.get("", countOnlyChannel)[countOnlyChannel], &st); err != nil {
		t.Fatal(err)
	}
	if keys := slices.Sorted(maps.Keys(st)); !slices.Equal(keys, []string{"count", "last_message_id"}) || st["count"] != 0.0 {
		t.Fatalf("count-only state %v", st)
	}
	l.present(specUser, "a", countOnlyChannel)
	if err := json.Unmarshal(l.get("", countOnlyChannel)[countOnlyChannel], &st); err != nil {
		t.Fatal(err)
	}
	if st["count"] != 1.0 || st["users"] != nil {
		t.Fatalf("count-only state %v", st)
	}
}

func TestSpecGetTooManyChannels(t *testing.T) {
	l := newLive(t, nil)
	code, body := l.do("GET", getQuery(channelList(51)), "", "")
	if code != http.StatusBadRequest || !strings.Contains(body, `"errors"`) {
		t.Fatalf("%d %s", code, body)
	}
	if code, _ = l.do("GET", "/presence/get", "", ""); code != http.StatusBadRequest {
		t.Fatalf("no channels: %d", code)
	}
}

// --- live stream over the real engine ---

// sseEvent is one decoded SSE frame.
type sseEvent struct {
	id, name string
	data     map[string]any
}

func parseEvent(t *testing.T, frame string) sseEvent {
	t.Helper()
	var ev sseEvent
	for line := range strings.SplitSeq(strings.TrimSpace(frame), "\n") {
		key, val, _ := strings.Cut(line, ": ")
		switch key {
		case "id":
			ev.id = val
		case "event":
			ev.name = val
		case "data":
			if err := json.Unmarshal([]byte(val), &ev.data); err != nil {
				t.Fatalf("data %q: %v", val, err)
			}
		}
	}
	return ev
}

// nextEvent skips comments and returns the next event of st.
func nextEvent(t *testing.T, st *stream) sseEvent {
	t.Helper()
	for {
		f := st.next()
		if !strings.HasPrefix(f, ":") {
			return parseEvent(t, f)
		}
	}
}

func subscribeTarget(from map[string]int64) string {
	b, _ := json.Marshal(from)
	return subscribeQuery(string(b))
}

func TestLiveStreamResumesWithLastEventID(t *testing.T) {
	l := newLive(t, nil)
	start := l.lastID(ch1)
	target := subscribeTarget(map[string]int64{ch1: start, ch2: l.lastID(ch2)})
	st := l.srv.open(target, nil)

	if code, _ := l.update(specUser2, `{"client_id":"b","present_channels":["/test/public1"]}`); code != http.StatusOK {
		t.Fatalf("update %d", code)
	}
	ev := nextEvent(t, st)
	want := map[string]any{"channel": ch1, "message_id": float64(start + 1), "data": map[string]any{
		"entering_users": []any{map[string]any{"id": "3", "username": "user2", "name": "User Two", "avatar_template": "/a/3/{size}.png"}}}}
	if ev.name != "message" || !jsonEqual(ev.data, want) {
		t.Fatalf("event %s %v, want %v", ev.name, ev.data, want)
	}
	st.close()

	// Published while the client is away.
	if code, _ := l.update(specUser2, `{"client_id":"b","leave_channels":["/test/public1"]}`); code != http.StatusOK {
		t.Fatalf("update %d", code)
	}
	// EventSource reconnects to the same URL with Last-Event-ID: the missed
	// message comes first, the one already seen is not repeated.
	st = l.srv.open(target, map[string]string{"Last-Event-ID": ev.id})
	ev = nextEvent(t, st)
	want = map[string]any{"channel": ch1, "message_id": float64(start + 2), "data": map[string]any{"leaving_user_ids": []any{"3"}}}
	if ev.name != "message" || !jsonEqual(ev.data, want) {
		t.Fatalf("after resume: %s %v, want %v", ev.name, ev.data, want)
	}
}

func TestLiveStreamExpiryPublishesLeave(t *testing.T) {
	l := newLive(t, nil)
	// From the current id, not -1: a message published while the stream
	// starts could otherwise count as "before the subscription".
	st := l.srv.open(subscribeTarget(map[string]int64{ch1: l.lastID(ch1)}), nil)
	l.update(specUser, `{"client_id":"a","present_channels":["/test/public1"]}`)
	if ev := nextEvent(t, st); ev.name != "message" || ev.data["data"].(map[string]any)["entering_users"] == nil {
		t.Fatalf("event %v", ev)
	}
	l.clock.Advance(time.Duration(presence.DefaultTimeoutSeconds+2) * time.Second)
	ev := nextEvent(t, st)
	if ev.name != "message" || !jsonEqual(ev.data["data"], map[string]any{"leaving_user_ids": []any{"1"}}) {
		t.Fatalf("event %v", ev)
	}
}

// nextFrameIsComment consumes the opening comment of a stream, which is
// written once the subscription exists.
func nextFrameIsComment(t *testing.T, st *stream) {
	t.Helper()
	if f := st.next(); !strings.HasPrefix(f, ":") {
		t.Fatalf("first frame %q", f)
	}
}

func TestLiveStreamResyncWhenOlderThanBacklog(t *testing.T) {
	l := newLive(t, nil)
	const channel = "/test/longlived"
	// A present client keeps the channel (and its backlog) in memory.
	l.present(specUser, "keeper", channel)
	first := l.lastID(channel)
	ctx := context.Background()
	for i := range presence.BacklogMinMessages/2 + 10 {
		u := &presence.User{ID: fmt.Sprintf("u%d", i)}
		if _, err := l.engine.Update(ctx, u, "c", []string{channel}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := l.engine.Update(ctx, u, "c", nil, []string{channel}); err != nil {
			t.Fatal(err)
		}
		if i%100 == 0 {
			l.lastID(channel) // let the actor drain its mailbox
		}
	}
	// Old enough to be pruned by the next message.
	l.clock.Advance((presence.BacklogMinAgeSeconds + 60) * time.Second)
	l.present(specUser2, "late", channel)
	last := l.lastID(channel)
	// The keeper is still there: the channel kept its state, so what follows
	// is the backlog's pruning, not a new incarnation of the channel.
	l.wantIDs(channel, "1", "3")

	// Within the backlog, the missed messages are replayed.
	st := l.srv.open(subscribeTarget(map[string]int64{channel: last - 3}), nil)
	if ev := nextEvent(t, st); ev.name != "message" || ev.data["message_id"] != float64(last-2) {
		t.Fatalf("within the backlog: %s %v, want message %d", ev.name, ev.data, last-2)
	}
	st.close()

	target := subscribeTarget(map[string]int64{channel: first})
	st = l.srv.open(target, nil)
	ev := nextEvent(t, st)
	if ev.name != "resync" || !jsonEqual(ev.data, map[string]any{"channel": channel}) {
		t.Fatalf("event %s %v, want resync", ev.name, ev.data)
	}
	st.close()

	// The resync's cursor points at the channel's last id: resuming with it
	// continues without another resync.
	st = l.srv.open(target, map[string]string{"Last-Event-ID": ev.id})
	nextFrameIsComment(t, st)
	l.present(specUser3, "next", channel)
	ev = nextEvent(t, st)
	if ev.name != "message" || ev.data["message_id"] != float64(last+1) {
		t.Fatalf("after resync: %s %v, want message %d", ev.name, ev.data, last+1)
	}
}

func TestLiveStreamRestrictedChannels(t *testing.T) {
	l := newLive(t, nil)
	// Channels the subscriber may not view are unavailable from the start.
	anon := l.srv.open(subscribeTarget(map[string]int64{allowedUserChan: -1, "/test/nonexistent": -1, "/flat": -1}), nil)
	seen := map[string]string{}
	for range 3 {
		ev := nextEvent(t, anon)
		seen[ev.data["channel"].(string)] = ev.name
	}
	for _, name := range []string{allowedUserChan, "/test/nonexistent", "/flat"} {
		if seen[name] != "unavailable" {
			t.Fatalf("%s: %q, want unavailable (all: %v)", name, seen[name], seen)
		}
	}

	// Messages reach only users allowed at publish time.
	flip := "/test/flip"
	outsider := l.srv.open(subscribeTarget(map[string]int64{flip: l.lastID(flip)}), map[string]string{"Authorization": as(t, specUser2)})
	insider := l.srv.open(subscribeTarget(map[string]int64{flip: l.lastID(flip)}), map[string]string{"Authorization": as(t, specUser)})
	nextFrameIsComment(t, outsider)
	nextFrameIsComment(t, insider)
	restricted := strings.Replace(specDocument, `"/test/flip", "config": {"public": true}`, `"/test/flip", "config": {"allowed_user_ids": ["1"]}`, 1)
	if code, body := l.do("PUT", "/admin/prefixes/test", restricted, "Bearer "+testAdminToken); code != http.StatusOK {
		t.Fatalf("PUT: %d %s", code, body)
	}
	l.update(specUser, `{"client_id":"a","present_channels":["/test/flip"]}`)
	if ev := nextEvent(t, insider); ev.name != "message" {
		t.Fatalf("insider got %s %v", ev.name, ev.data)
	}
	if ev := nextEvent(t, outsider); ev.name != "unavailable" || ev.data["channel"] != flip {
		t.Fatalf("outsider got %s %v", ev.name, ev.data)
	}
}

func TestLiveAdminDocumentDecidesExistence(t *testing.T) {
	l := newLive(t, nil)
	admin := "Bearer " + testAdminToken
	if code, _ := l.do("DELETE", "/admin/prefixes/test", "", admin); code != http.StatusNoContent {
		t.Fatalf("delete %d", code)
	}
	if _, got := l.update(specUser, `{"client_id":"a","present_channels":["/test/public1"]}`); got[ch1] {
		t.Fatal("channel exists without its document")
	}
	if code, _ := l.do("PUT", "/admin/prefixes/test", `{"rules":[{"match":"/test/public1","config":{"public":true}}]}`, admin); code != http.StatusOK {
		t.Fatalf("put %d", code)
	}
	if _, got := l.update(specUser, `{"client_id":"a","present_channels":["/test/public1","/test/public2"]}`); !got[ch1] || got[ch2] {
		t.Fatalf("answer %v", got)
	}
}

func TestLiveMetricsAndWebAssets(t *testing.T) {
	l := newLive(t, func(c *Config) { c.Dev = true; c.Client = web.ClientHandler(); c.Demo = web.DemoHandler() })
	l.update(specUser, `{"client_id":"a","present_channels":["/test/public1"]}`)
	code, body := l.do("GET", "/metrics", "", "")
	for _, name := range []string{"presence_http_requests_total", "presence_http_request_duration_seconds", "presence_clients"} {
		if code != http.StatusOK || !strings.Contains(body, name) {
			t.Fatalf("metrics lack %s", name)
		}
	}
	for target, want := range map[string]string{"/": "<html", "/presence-client.js": "PresenceClient", "/presence-client.d.ts": "PresenceClient"} {
		code, body := l.do("GET", target, "", "")
		if code != http.StatusOK || !strings.Contains(strings.ToLower(body), strings.ToLower(want)) {
			t.Fatalf("%s: %d %.80q", target, code, body)
		}
	}
	if code, body := l.do("GET", "/definitely-not-here", "", ""); code != http.StatusNotFound || !strings.Contains(body, `"errors"`) {
		t.Fatalf("unknown path in dev mode: %d %s", code, body)
	}
}

func jsonEqual(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && string(ja) == string(jb)
}

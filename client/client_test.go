package client

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// fakeNode is an HTTP endpoint that records requests and answers from a
// script: the i-th request gets answers[i] (the last one repeats).
type fakeNode struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	bodies   []string
	answers  []answer
}

type answer struct {
	status     int
	body       string
	retryAfter string
}

func newFakeNode(t *testing.T, answers ...answer) *fakeNode {
	t.Helper()
	n := &fakeNode{answers: answers}
	n.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		n.mu.Lock()
		a := n.answers[min(len(n.requests), len(n.answers)-1)]
		n.requests = append(n.requests, r)
		n.bodies = append(n.bodies, string(body))
		n.mu.Unlock()
		if a.retryAfter != "" {
			w.Header().Set("Retry-After", a.retryAfter)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
	}))
	t.Cleanup(n.Close)
	return n
}

func (n *fakeNode) setAnswers(answers ...answer) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.answers = answers
}

func (n *fakeNode) calls() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.requests)
}

func (n *fakeNode) request(i int) (*http.Request, string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.requests[i], n.bodies[i]
}

func newClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	if cfg.Token == "" {
		cfg.Token = "svc"
	}
	if cfg.RetryBackoff == 0 {
		cfg.RetryBackoff = time.Millisecond
	}
	if cfg.MaxRetryWait == 0 {
		cfg.MaxRetryWait = 5 * time.Millisecond
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// deadURL is the URL of a port nothing listens on.
func deadURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestNewChecksItsConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no URL":         {Token: "t"},
		"no token":       {URLs: []string{"http://a"}},
		"not http":       {URLs: []string{"ftp://a"}, Token: "t"},
		"no host":        {URLs: []string{"http://"}, Token: "t"},
		"negative pause": {URLs: []string{"http://a"}, Token: "t", RetryBackoff: -1},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestUpdateSendsTheUserAndDecodesTheAnswer(t *testing.T) {
	n := newFakeNode(t, answer{200, `{"/chat/1/replying":true,"/nope/x":false}`, ""})
	c := newClient(t, Config{URLs: []string{n.URL + "/"}})
	u := User{ID: "42", Username: "sam", Groups: []string{"staff"}}
	got, err := c.Update(context.Background(), u, "server", []string{"/chat/1/replying", "/nope/x"}, []string{"/chat/2/replying"})
	if err != nil || !got["/chat/1/replying"] || got["/nope/x"] {
		t.Fatalf("update: %v %v", got, err)
	}
	req, body := n.request(0)
	if req.Method != "POST" || req.URL.Path != "/server/presence/update" || req.Header.Get("Authorization") != "Bearer svc" ||
		req.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("request %s %s %v", req.Method, req.URL, req.Header)
	}
	const want = `{"user":{"id":"42","username":"sam","groups":["staff"]},"client_id":"server","present_channels":["/chat/1/replying","/nope/x"],"leave_channels":["/chat/2/replying"]}`
	if body != want {
		t.Fatalf("body %s\nwant %s", body, want)
	}
}

func TestCallsFailOverToTheNextNode(t *testing.T) {
	busy := newFakeNode(t, answer{503, `{"errors":["service temporarily unavailable"]}`, "1"})
	ok := newFakeNode(t, answer{200, `{"/a/b":{"count":1,"last_message_id":5,"count_only":true,"user_ids":["7"],"users":[{"id":"7","username":"sam","name":"","avatar_template":""}]},"/nope/x":null}`, ""})
	c := newClient(t, Config{URLs: []string{deadURL(t), busy.URL, ok.URL}})
	got, err := c.Get(context.Background(), "/a/b", "/nope/x")
	if err != nil {
		t.Fatal(err)
	}
	if st := got["/a/b"]; st == nil || !st.CountOnly || !slices.Equal(st.UserIDs, []string{"7"}) || st.Users[0].Username != "sam" || got["/nope/x"] != nil {
		t.Fatalf("get: %+v", got)
	}
	if busy.calls() != 1 || ok.calls() != 1 {
		t.Fatalf("calls: busy %d, ok %d", busy.calls(), ok.calls())
	}
	req, _ := ok.request(0)
	if q := req.URL.Query()["channels[]"]; !slices.Equal(q, []string{"/a/b", "/nope/x"}) {
		t.Fatalf("query %v", req.URL.RawQuery)
	}
	// Calls start at each node in turn.
	for range 3 {
		if _, err := c.Get(context.Background(), "/a/b"); err != nil {
			t.Fatal(err)
		}
	}
	if busy.calls() < 2 {
		t.Fatalf("the busy node was asked %d times: calls do not spread over the nodes", busy.calls())
	}
}

func TestRetriesEndWithTheLastError(t *testing.T) {
	busy := newFakeNode(t, answer{503, `{"errors":["service temporarily unavailable"]}`, "1"})
	c := newClient(t, Config{URLs: []string{busy.URL}, Retries: 2})
	err := c.Clear(context.Background(), "/a/b")
	var e *Error
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &e) || e.Status != 503 || e.RetryAfter != time.Second {
		t.Fatalf("clear against a busy node: %#v", err)
	}
	if busy.calls() != 3 {
		t.Fatalf("%d attempts, want 3", busy.calls())
	}
	// A node nobody can reach: ErrUnavailable with the cause.
	c = newClient(t, Config{URLs: []string{deadURL(t)}, Retries: -1})
	if _, err := c.Present(context.Background(), User{ID: "1"}, "c", "/a/b"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("no node reachable: %v", err)
	}
}

func TestFinalAnswersAreNotRetried(t *testing.T) {
	cases := map[int]error{400: ErrBadRequest, 401: ErrUnauthorized, 403: ErrForbidden, 404: ErrNotFound, 413: ErrTooLarge, 500: ErrServer}
	for status, sentinel := range cases {
		n := newFakeNode(t, answer{status, `{"errors":["invalid input: user is required"]}`, ""})
		c := newClient(t, Config{URLs: []string{n.URL, n.URL}})
		_, err := c.Update(context.Background(), User{}, "c", nil, nil)
		var e *Error
		if !errors.Is(err, sentinel) || !errors.As(err, &e) || e.Status != status || e.Messages[0] != "invalid input: user is required" {
			t.Errorf("%d: %v", status, err)
		}
		if !strings.Contains(err.Error(), "invalid input: user is required") {
			t.Errorf("%d: the message is lost: %v", status, err)
		}
		if n.calls() != 1 {
			t.Errorf("%d was tried %d times", status, n.calls())
		}
	}
	n := newFakeNode(t, answer{502, `<html>bad gateway</html>`, ""})
	c := newClient(t, Config{URLs: []string{n.URL}, Retries: -1})
	var e *Error
	if err := c.Clear(context.Background(), "/a/b"); !errors.As(err, &e) || e.Messages[0] != "<html>bad gateway</html>" {
		t.Fatalf("a proxy's page: %v", err)
	}
}

func TestContextEndsTheRetries(t *testing.T) {
	busy := newFakeNode(t, answer{503, `{"errors":["x"]}`, "60"})
	c := newClient(t, Config{URLs: []string{busy.URL}, Retries: 100, MaxRetryWait: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Clear(ctx, "/a/b") }()
	testkit.WaitFor(t, "the first attempt", func() bool { return busy.calls() == 1 })
	cancel()
	select {
	case err := <-done:
		// Cancelled in the pause after the 503, or while reading it.
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("cancelled: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the client waited out Retry-After after its context ended")
	}
	if busy.calls() != 1 {
		t.Fatalf("%d attempts after the context ended", busy.calls())
	}
}

func TestStateOfAMissingChannelIsNotFound(t *testing.T) {
	n := newFakeNode(t, answer{200, `{"/nope/x":null}`, ""})
	c := newClient(t, Config{URLs: []string{n.URL}})
	if _, err := c.State(context.Background(), "/nope/x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("state of a missing channel: %v", err)
	}
}

func TestGetAsksInChunks(t *testing.T) {
	n := newFakeNode(t, answer{200, `{}`, ""})
	c := newClient(t, Config{URLs: []string{n.URL}})
	names := make([]string, 2*MaxChannelsPerGet+1)
	for i := range names {
		names[i] = "/a/" + strings.Repeat("x", i%7) + string(rune('a'+i%26))
	}
	got, err := c.Get(context.Background(), names...)
	if err != nil || len(got) == 0 {
		t.Fatal(err)
	}
	if n.calls() != 3 {
		t.Fatalf("%d calls for %d channels, want 3", n.calls(), len(names))
	}
}

func TestCanAndAdminRequests(t *testing.T) {
	n := newFakeNode(t, answer{200, `{"exists":true,"can_view":true,"can_enter":false,"count_only":true,"max_users":10}`, ""})
	c := newClient(t, Config{URLs: []string{n.URL}, Token: "svc", AdminToken: "adm"})
	acc, err := c.Can(context.Background(), "/a/b", &User{ID: "7", Groups: []string{"staff", "mods"}})
	if err != nil || acc != (Access{Exists: true, CanView: true, CountOnly: true, MaxUsers: 10}) {
		t.Fatalf("can: %+v %v", acc, err)
	}
	req, _ := n.request(0)
	q := req.URL.Query()
	if q.Get("channel") != "/a/b" || q.Get("user_id") != "7" || !slices.Equal(q["groups[]"], []string{"staff", "mods"}) || req.Header.Get("Authorization") != "Bearer svc" {
		t.Fatalf("can request %s %v", req.URL, req.Header)
	}
	if _, err := c.Can(context.Background(), "/a/b", nil); err != nil {
		t.Fatal(err)
	}
	if req, _ := n.request(1); req.URL.Query().Has("user_id") {
		t.Fatalf("anonymous can sent %s", req.URL)
	}
	ten := 10
	doc := PrefixDocument{Rules: []Rule{{Match: "/room/.+", Config: ChannelConfig{Public: true, MaxUsers: 25}}},
		Callback: &Callback{URL: "http://app/cfg", CacheSeconds: &ten}}
	n.setAnswers(answer{200, `{"rules":[],"callback":{"url":"http://app/cfg","cache_seconds":10}}`, ""})
	if _, err := c.PutPrefix(context.Background(), "room", doc); err != nil {
		t.Fatal(err)
	}
	req, body := n.request(2)
	const want = `{"rules":[{"match":"/room/.+","config":{"public":true,"max_users":25}}],"callback":{"url":"http://app/cfg","cache_seconds":10}}`
	if req.Method != "PUT" || req.URL.Path != "/admin/prefixes/room" || req.Header.Get("Authorization") != "Bearer adm" || body != want {
		t.Fatalf("put %s %s %v %s", req.Method, req.URL, req.Header, body)
	}
	if _, err := c.PutPrefix(context.Background(), "empty", PrefixDocument{}); err != nil {
		t.Fatal(err)
	}
	if _, body := n.request(3); body != `{"rules":[]}` {
		t.Fatalf("an empty document is sent as %s", body)
	}
	raw, err := c.PutPrefixJSON(context.Background(), "raw", json.RawMessage(`{"rules": []}`))
	if err != nil || !strings.Contains(string(raw), "cache_seconds") {
		t.Fatalf("put JSON: %s %v", raw, err)
	}
}

package api

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

const (
	testSecret     = "test-secret-0123456789"
	testAdminToken = "admin-token-0123456789"
)

// testStart is the fake clock's start; tokens are minted relative to it.
var testStart = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeService records calls and answers from configurable functions.
type fakeService struct {
	mu      sync.Mutex
	gets    []fakeCall
	updates []fakeCall
	subs    []*fakeSub
	froms   []map[string]int64
	users   []*presence.User

	getFn    func(names []string) map[string]*presence.ChannelState
	updateFn func(present []string) map[string]bool
	err      error

	// The server side's calls: inspects, cans (User and Channels[0]) and
	// clears (Channels[0]).
	inspects  []fakeCall
	cans      []fakeCall
	clears    []fakeCall
	inspectFn func(names []string) map[string]*presence.ChannelState
	canFn     func(u *presence.User, channel string) presence.Access
}

// fakeCall is one recorded Get or Update.
type fakeCall struct {
	User     *presence.User
	ClientID string
	Channels []string
	Leave    []string
}

func (f *fakeService) Get(_ context.Context, u *presence.User, channels []string) (map[string]*presence.ChannelState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.gets = append(f.gets, fakeCall{User: u, Channels: slices.Clone(channels)})
	if f.err != nil {
		return nil, f.err
	}
	if f.getFn != nil {
		return f.getFn(channels), nil
	}
	return map[string]*presence.ChannelState{}, nil
}

func (f *fakeService) Update(_ context.Context, u *presence.User, clientID string, present, leave []string) (map[string]bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.updates = append(f.updates, fakeCall{User: u, ClientID: clientID, Channels: slices.Clone(present), Leave: slices.Clone(leave)})
	if f.err != nil {
		return nil, f.err
	}
	if f.updateFn != nil {
		return f.updateFn(present), nil
	}
	out := map[string]bool{}
	for _, p := range present {
		out[p] = true
	}
	return out, nil
}

func (f *fakeService) Subscribe(_ context.Context, u *presence.User, from map[string]int64) (presence.Subscription, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	s := &fakeSub{events: make(chan presence.Event, 16), closed: make(chan struct{})}
	f.subs = append(f.subs, s)
	f.froms = append(f.froms, from)
	f.users = append(f.users, u)
	return s, nil
}

func (f *fakeService) Inspect(_ context.Context, channels []string) (map[string]*presence.ChannelState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.inspects = append(f.inspects, fakeCall{Channels: slices.Clone(channels)})
	if f.err != nil {
		return nil, f.err
	}
	if f.inspectFn != nil {
		return f.inspectFn(channels), nil
	}
	return map[string]*presence.ChannelState{}, nil
}

func (f *fakeService) Can(_ context.Context, u *presence.User, channel string) (presence.Access, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cans = append(f.cans, fakeCall{User: u, Channels: []string{channel}})
	if f.err != nil {
		return presence.Access{}, f.err
	}
	if f.canFn != nil {
		return f.canFn(u, channel), nil
	}
	return presence.Access{}, nil
}

func (f *fakeService) Clear(_ context.Context, channel string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.clears = append(f.clears, fakeCall{Channels: []string{channel}})
	return f.err
}

// serverCalls returns the inspects, cans and clears so far.
func (f *fakeService) serverCalls() (inspects, cans, clears []fakeCall) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.inspects), slices.Clone(f.cans), slices.Clone(f.clears)
}

func (f *fakeService) updateCalls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.updates)
}

func (f *fakeService) getCalls() []fakeCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.gets)
}

// subscription returns the i-th subscription, its starting ids and its user.
func (f *fakeService) subscription(i int) (*fakeSub, map[string]int64, *presence.User) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if i >= len(f.subs) {
		return nil, nil, nil
	}
	return f.subs[i], f.froms[i], f.users[i]
}

// fakeSub is a Subscription fed by the test.
type fakeSub struct {
	events chan presence.Event
	closed chan struct{}
	once   sync.Once
}

func (s *fakeSub) Events() <-chan presence.Event { return s.events }
func (s *fakeSub) Close()                        { s.once.Do(func() { close(s.closed) }) }

// fakePrefixes is an in-memory PrefixStore; err, when set, fails writes.
type fakePrefixes struct {
	mu   sync.Mutex
	docs map[string][]byte
	err  error
}

func newFakePrefixes() *fakePrefixes { return &fakePrefixes{docs: map[string][]byte{}} }

func (p *fakePrefixes) Put(_ context.Context, prefix string, doc []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	p.docs[prefix] = slices.Clone(doc)
	return nil
}

func (p *fakePrefixes) Delete(_ context.Context, prefix string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if _, ok := p.docs[prefix]; !ok {
		return fmt.Errorf("prefix %q: %w", prefix, presence.ErrNotFound)
	}
	delete(p.docs, prefix)
	return nil
}

func (p *fakePrefixes) Get(prefix string) ([]byte, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	d, ok := p.docs[prefix]
	return d, ok
}

func (p *fakePrefixes) List() map[string][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make(map[string][]byte, len(p.docs))
	for k, v := range p.docs {
		out[k] = v
	}
	return out
}

// fakeCluster is a static ClusterInfo.
type fakeCluster struct {
	ready  bool
	reason string
}

func (c *fakeCluster) Members() []Member {
	return []Member{{Name: "n1", HTTP: "127.0.0.1:8080", State: "alive"}}
}
func (c *fakeCluster) Raft() RaftInfo {
	return RaftInfo{Leader: "n1", Servers: []string{"n1", "n2"}, Voters: []string{"n1"}}
}
func (c *fakeCluster) Owner(channel string) (string, []string) {
	return "n1", []string{"n2"}
}
func (c *fakeCluster) Ready() (bool, string) { return c.ready, c.reason }

// env is a handler under test with its fakes.
type env struct {
	t        *testing.T
	h        http.Handler
	api      *Handler // h, with its Close and internals
	svc      *fakeService
	prefixes *fakePrefixes
	cluster  *fakeCluster
	clock    *clock.Fake
	registry *prometheus.Registry
}

// newEnv builds a handler over fakes; mutate tweaks the config first.
func newEnv(t *testing.T, mutate func(*Config)) *env {
	t.Helper()
	e := &env{
		t:        t,
		svc:      &fakeService{},
		prefixes: newFakePrefixes(),
		cluster:  &fakeCluster{ready: true},
		clock:    clock.NewFake(testStart),
		registry: prometheus.NewRegistry(),
	}
	cfg := Config{
		Service:    e.svc,
		Prefixes:   e.prefixes,
		Cluster:    e.cluster,
		JWTSecrets: [][]byte{[]byte(testSecret)},
		AdminToken: testAdminToken,
		Clock:      e.clock,
		Registry:   e.registry,
	}
	if mutate != nil {
		mutate(&cfg)
	}
	h, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(h.Close)
	e.h, e.api = h, h
	return e
}

// do serves one request and returns the recorded response.
func (e *env) do(method, target string, body io.Reader, headers ...string) *httptest.ResponseRecorder {
	e.t.Helper()
	req := httptest.NewRequest(method, target, body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return rec
}

// token signs claims with the test secret.
func token(t *testing.T, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, claims).SignedString([]byte(testSecret))
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return s
}

// userToken is a valid token for user id with optional groups.
func userToken(t *testing.T, id string, groups ...string) string {
	t.Helper()
	claims := jwt.MapClaims{"sub": id, "username": "u" + id, "exp": testStart.Add(time.Hour).Unix()}
	if len(groups) > 0 {
		claims["groups"] = groups
	}
	return token(t, claims)
}

func bearerHeader(tok string) string { return "Bearer " + tok }

// errorsOf decodes an {"errors": [...]} body, failing the test otherwise.
func errorsOf(t *testing.T, rec *httptest.ResponseRecorder) []string {
	t.Helper()
	var body errorBody
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Errors) == 0 {
		t.Fatalf("status %d: body %q is not an errors document", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error content type %q", ct)
	}
	return body.Errors
}

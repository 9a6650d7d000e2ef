package redispresence

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/presencehq/presence/bench/discourse"
	"github.com/presencehq/presence/bench/token"
)

const testSecret = "test-secret"

// testClock is a settable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func newTestClock() *testClock { return &testClock{now: time.Unix(1_800_000_000, 0)} }

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// fixture is a service over a private redis-server, served over HTTP.
type fixture struct {
	srv   *Server
	store *discourse.Store
	rdb   *redis.Client
	redis *discourse.LocalServer
	http  *httptest.Server
	clock *testClock
}

// newFixture starts redis-server and the service, or skips the test when
// redis-server is not installed.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	rs, err := discourse.StartLocal(ctx, 5*time.Second)
	if errors.Is(err, discourse.ErrNotInstalled) {
		t.Skipf("skipping the Redis service tests: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(rs.Stop)
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr, MaxRetries: -1})
	t.Cleanup(func() { _ = rdb.Close() })
	clock := newTestClock()
	store, err := discourse.New(ctx, rdb, discourse.Config{KeyPrefix: "t:", Timeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(Config{
		JWTSecret: []byte(testSecret), Prefixes: []string{"demo", "other"}, Now: clock.Now,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, store)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv)
	t.Cleanup(hs.Close)
	return &fixture{srv: srv, store: store, rdb: rdb, redis: rs, http: hs, clock: clock}
}

// mint signs a token for user with the test secret, valid for an hour of
// the clock.
func mint(t *testing.T, clock func() time.Time, user string) string {
	t.Helper()
	m, err := token.NewMinter(testSecret, time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := m.Mint(token.User{ID: user, Username: "u" + user})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// signClaims signs arbitrary claims with secret and method.
func signClaims(t *testing.T, method jwt.SigningMethod, secret string, claims jwt.MapClaims) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(method, claims).SignedString([]byte(secret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// post sends an update with the Authorization header auth (none when
// empty) and returns the status, headers and body.
func (f *fixture) post(t *testing.T, auth, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.http.URL+UpdatePath, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := f.http.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(data)
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

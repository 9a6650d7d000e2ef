package redispresence

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestUpdateKeepsPresenceInRedis(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	auth := "Bearer " + mint(t, f.clock.Now, "7")
	sub := f.rdb.Subscribe(ctx, f.store.Topic("/demo/a"))
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	count := func(ch string) int64 {
		t.Helper()
		n, err := f.store.Count(ctx, ch)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	// Enter: existing channels answer true, others false and stay out of Redis.
	status, h, body := f.post(t, auth, `{"client_id":"tab-1","present_channels":["/demo/a","/nope/x","bad","/demo/a"]}`)
	if status != http.StatusOK || body != `{"/demo/a":true,"/nope/x":false,"bad":false}`+"\n" {
		t.Fatalf("enter: %d %q", status, body)
	}
	if ct := h.Get("Content-Type"); ct != "application/json; charset=utf-8" || h.Get("Cache-Control") != "" {
		t.Errorf("headers: Content-Type %q, Cache-Control %q", ct, h.Get("Cache-Control"))
	}
	if count("/demo/a") != 1 || count("/nope/x") != 0 {
		t.Errorf("counts after the enter: /demo/a %d, /nope/x %d", count("/demo/a"), count("/nope/x"))
	}
	msg, err := sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != `{"entering_user_ids":["7"]}` {
		t.Fatalf("enter message %v, %v", msg, err)
	}

	// A heartbeat answers the same and changes nothing.
	if status, _, body := f.post(t, auth, `{"client_id":"tab-1","present_channels":["/demo/a"]}`); status != http.StatusOK || body != "{\"/demo/a\":true}\n" {
		t.Fatalf("heartbeat: %d %q", status, body)
	}
	// Several channels in one call go through one pipeline: present in
	// /other/b, leave /demo/a; leaves are not listed in the answer.
	status, _, body = f.post(t, auth, `{"client_id":"tab-1","present_channels":["/other/b"],"leave_channels":["/demo/a","/nope/y"],"extra":1}`)
	if status != http.StatusOK || body != "{\"/other/b\":true}\n" {
		t.Fatalf("present and leave: %d %q", status, body)
	}
	if count("/demo/a") != 0 || count("/other/b") != 1 {
		t.Errorf("counts after the leave: /demo/a %d, /other/b %d", count("/demo/a"), count("/other/b"))
	}
	msg, err = sub.ReceiveMessage(ctx)
	if err != nil || msg.Payload != `{"leaving_user_ids":["7"]}` {
		t.Fatalf("leave message %v, %v (the heartbeat must not publish)", msg, err)
	}
	if status, _, body := f.post(t, auth, `{"client_id":"tab-1","present_channels":null}`); status != http.StatusOK || body != "{}\n" {
		t.Errorf("empty update: %d %q", status, body)
	}
}

func TestSweepExpiresSilentClients(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { f.srv.Sweep(ctx, 5*time.Millisecond); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	for _, user := range []string{"1", "2"} {
		if status, _, body := f.post(t, "Bearer "+mint(t, f.clock.Now, user), `{"client_id":"c","present_channels":["/demo/e"]}`); status != http.StatusOK {
			t.Fatalf("enter %s: %d %s", user, status, body)
		}
	}
	f.clock.Advance(59 * time.Second)
	// User 2 heartbeats; user 1 stays silent past the minute.
	if status, _, _ := f.post(t, "Bearer "+mint(t, f.clock.Now, "2"), `{"client_id":"c","present_channels":["/demo/e"]}`); status != http.StatusOK {
		t.Fatalf("heartbeat: %d", status)
	}
	f.clock.Advance(time.Second)
	waitFor(t, "user 1 to expire", 10*time.Second, func() bool {
		users, err := f.rdb.HKeys(ctx, "t:/demo/e:hash").Result()
		return err == nil && len(users) == 1 && users[0] == "2"
	})
}

func TestUpdateErrors(t *testing.T) {
	f := newFixture(t)
	now := f.clock.Now()
	good := "Bearer " + mint(t, f.clock.Now, "7")
	body := `{"client_id":"c","present_channels":["/demo/a"]}`
	cases := []struct {
		name, method, path, auth, body string
		status                         int
		message                        string
	}{
		{"anonymous", "POST", UpdatePath, "", body, 403, "forbidden: sign in to update presence"},
		{"basic auth", "POST", UpdatePath, "Basic eDp5", body, 401, "not authenticated: expected a Bearer token"},
		{"empty bearer", "POST", UpdatePath, "Bearer ", body, 401, "not authenticated: expected a Bearer token"},
		{"not a JWT", "POST", UpdatePath, "Bearer abc", body, 401, "not authenticated: invalid token: token is malformed"},
		{"wrong secret", "POST", UpdatePath, "Bearer " + signClaims(t, jwt.SigningMethodHS256, "other", jwt.MapClaims{"sub": "7"}), body, 401, "not authenticated: invalid token: token signature is invalid"},
		{"HS512", "POST", UpdatePath, "Bearer " + signClaims(t, jwt.SigningMethodHS512, testSecret, jwt.MapClaims{"sub": "7"}), body, 401, "not authenticated: invalid token: token signature is invalid: signing method HS512 is invalid"},
		{"expired", "POST", UpdatePath, "Bearer " + signClaims(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "7", "exp": now.Unix()}), body, 401, "not authenticated: invalid token: token has invalid claims: token is expired"},
		{"no sub", "POST", UpdatePath, "Bearer " + signClaims(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"name": "x"}), body, 401, "not authenticated: invalid token: token has invalid claims: sub must be a string of 1..128 bytes"},
		{"numeric sub", "POST", UpdatePath, "Bearer " + signClaims(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": 7}), body, 401, "not authenticated: invalid token: token is malformed"},
		{"sub with a space", "POST", UpdatePath, "Bearer " + signClaims(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "a b"}), body, 401, "not authenticated: invalid token: token has invalid claims: sub must not contain a space"},
		{"GET", "GET", UpdatePath, good, "", 405, "method not allowed"},
		{"not JSON", "POST", UpdatePath, good, "client_id=c", 400, "invalid input: body is not a JSON object"},
		{"array", "POST", UpdatePath, good, `["c"]`, 400, "invalid input: body is not a JSON object"},
		{"trailing data", "POST", UpdatePath, good, body + "x", 400, "invalid input: body is not a JSON object"},
		{"no client_id", "POST", UpdatePath, good, `{"present_channels":["/demo/a"]}`, 400, "invalid input: client_id must be a non-empty string"},
		{"numeric client_id", "POST", UpdatePath, good, `{"client_id":1}`, 400, "invalid input: client_id must be a non-empty string"},
		{"empty client_id", "POST", UpdatePath, good, `{"client_id":""}`, 400, "invalid input: client_id must be a non-empty string of at most 128 bytes"},
		{"long client_id", "POST", UpdatePath, good, `{"client_id":"` + strings.Repeat("c", 129) + `"}`, 400, "invalid input: client_id must be a non-empty string of at most 128 bytes"},
		{"list of numbers", "POST", UpdatePath, good, `{"client_id":"c","present_channels":[1]}`, 400, "invalid input: present_channels must be an array of strings"},
		{"leave not a list", "POST", UpdatePath, good, `{"client_id":"c","leave_channels":"/demo/a"}`, 400, "invalid input: leave_channels must be an array of strings"},
		{"51 channels", "POST", UpdatePath, good, `{"client_id":"c","present_channels":[` + strings.Repeat(`"/demo/a",`, 50) + `"/demo/a"]}`, 400, "invalid input: too many present_channels (at most 50)"},
		{"body too large", "POST", UpdatePath, good, `{"client_id":"` + strings.Repeat("c", DefaultMaxBody) + `"}`, 413, "request too large: body over 65536 bytes"},
		{"unknown path", "POST", "/presence/nope", good, body, 404, "not found: no such endpoint"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req, err := http.NewRequest(c.method, f.http.URL+c.path, strings.NewReader(c.body))
			if err != nil {
				t.Fatal(err)
			}
			if c.auth != "" {
				req.Header.Set("Authorization", c.auth)
			}
			resp, err := f.http.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got struct{ Errors []string }
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("body is not a JSON error: %v", err)
			}
			if resp.StatusCode != c.status || len(got.Errors) != 1 || !strings.HasPrefix(got.Errors[0], c.message) {
				t.Errorf("got %d %q, want %d %q...", resp.StatusCode, got.Errors, c.status, c.message)
			}
			if c.status == 401 && resp.Header.Get("WWW-Authenticate") != `Bearer realm="presence"` {
				t.Errorf("401 without WWW-Authenticate")
			}
		})
	}
	// Nothing above reached Redis.
	if n, err := f.store.Count(context.Background(), "/demo/a"); err != nil || n != 0 {
		t.Errorf("count %d, %v after rejected calls", n, err)
	}
}

func TestRedisDownAnswers503(t *testing.T) {
	f := newFixture(t)
	auth := "Bearer " + mint(t, f.clock.Now, "7")
	f.redis.Stop()
	status, h, body := f.post(t, auth, `{"client_id":"c","present_channels":["/demo/a"]}`)
	if status != http.StatusServiceUnavailable || h.Get("Retry-After") != "1" || body != `{"errors":["service temporarily unavailable"]}`+"\n" {
		t.Errorf("got %d (Retry-After %q) %q", status, h.Get("Retry-After"), body)
	}
	// A call without a Redis operation still answers.
	if status, _, body := f.post(t, auth, `{"client_id":"c","present_channels":["/nope/a"]}`); status != http.StatusOK || body != "{\"/nope/a\":false}\n" {
		t.Errorf("call without Redis work: %d %q", status, body)
	}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t)
	resp, err := f.http.Client().Get(f.http.URL + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Cache-Control") != "no-store" {
		t.Errorf("GET /healthz: %d, Cache-Control %q", resp.StatusCode, resp.Header.Get("Cache-Control"))
	}
}

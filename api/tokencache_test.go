package api

import (
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/presence"
)

func TestTokenCacheHonoursExpiry(t *testing.T) {
	clk := clock.NewFake(testStart)
	a := newAuthenticator(Config{JWTSecrets: [][]byte{[]byte(testSecret)}, Clock: clk})
	tok := token(t, jwt.MapClaims{"sub": "7", "exp": testStart.Add(time.Minute).Unix()})
	first, err := a.verify(tok)
	if err != nil {
		t.Fatal(err)
	}
	again, err := a.verify(tok)
	if err != nil || again != first {
		t.Fatalf("second verify: %p %v, want the cached identity %p", again, err, first)
	}
	if a.cache.len() != 1 {
		t.Fatalf("%d cached tokens, want 1", a.cache.len())
	}
	clk.Advance(time.Minute) // exactly at exp: no longer valid
	if _, err := a.verify(tok); !errors.Is(err, presence.ErrUnauthorized) {
		t.Fatalf("verify at exp: %v, want ErrUnauthorized", err)
	}
	if a.cache.len() != 0 {
		t.Fatal("an expired token stayed cached")
	}
}

func TestTokenCacheHonoursNotBefore(t *testing.T) {
	clk := clock.NewFake(testStart)
	a := newAuthenticator(Config{JWTSecrets: [][]byte{[]byte(testSecret)}, Clock: clk})
	tok := token(t, jwt.MapClaims{"sub": "7", "nbf": testStart.Add(time.Minute).Unix()})
	if _, err := a.verify(tok); !errors.Is(err, presence.ErrUnauthorized) {
		t.Fatalf("verify before nbf: %v, want ErrUnauthorized", err)
	}
	if a.cache.len() != 0 {
		t.Fatal("a token that failed verification was cached")
	}
	clk.Advance(time.Minute)
	if _, err := a.verify(tok); err != nil {
		t.Fatalf("verify at nbf: %v", err)
	}
	if _, err := a.verify(tok); err != nil || a.cache.len() != 1 {
		t.Fatalf("cached verify: %v, %d cached", err, a.cache.len())
	}
}

func TestTokenCacheNeverCachesFailures(t *testing.T) {
	a := newAuthenticator(Config{JWTSecrets: [][]byte{[]byte(testSecret)}, Clock: clock.NewFake(testStart)})
	bad, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "7"}).SignedString([]byte("other secret"))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := a.verify(bad); !errors.Is(err, presence.ErrUnauthorized) {
			t.Fatalf("verify with the wrong secret: %v", err)
		}
	}
	if a.cache.len() != 0 {
		t.Fatalf("%d failed tokens cached", a.cache.len())
	}
	// A valid token's cache entry is keyed by its exact text: a tampered
	// copy is verified on its own and fails.
	good := token(t, jwt.MapClaims{"sub": "7"})
	if _, err := a.verify(good); err != nil {
		t.Fatal(err)
	}
	tampered := good[:len(good)-2] + "xx"
	if tampered == good {
		tampered = good[:len(good)-2] + "yy"
	}
	if _, err := a.verify(tampered); !errors.Is(err, presence.ErrUnauthorized) {
		t.Fatalf("tampered token: %v, want ErrUnauthorized", err)
	}
}

func TestTokenCacheIsBounded(t *testing.T) {
	clk := clock.NewFake(testStart)
	c := newTokenCache(64)
	for i := range 1000 {
		c.put(fmt.Sprint("token-", i), &cachedToken{user: presence.User{ID: "x"}}, clk.Now())
	}
	if n := c.len(); n > 64 {
		t.Fatalf("%d cached tokens, want at most 64", n)
	}
	// Expired entries go first when a shard is full.
	c = newTokenCache(tokenCacheShards) // one per shard
	old := &cachedToken{user: presence.User{ID: "old"}, expiresAt: testStart.Add(time.Second)}
	c.put("old", old, clk.Now())
	clk.Advance(time.Hour)
	for i := range 200 {
		c.put(fmt.Sprint("t", i), &cachedToken{user: presence.User{ID: "new"}}, clk.Now())
	}
	if _, ok := c.get("old", clk.Now(), 0); ok {
		t.Fatal("an expired token was answered")
	}
}

// A full shard evicts tokens that are not being used before those that
// are: a node's active users keep their entries while one-off tokens
// churn through the cache.
func TestTokenCacheKeepsTokensInUse(t *testing.T) {
	now := testStart
	c := newTokenCache(8 * tokenCacheShards)
	hot := make([]string, tokenCacheShards)
	for i := range hot {
		hot[i] = fmt.Sprintf("hot-token-%04d", i)
		c.put(hot[i], &cachedToken{user: presence.User{ID: hot[i]}}, now)
	}
	for i := range 10_000 {
		c.put(fmt.Sprintf("cold-token-%06d", i), &cachedToken{user: presence.User{ID: "cold"}}, now)
		for _, tok := range hot {
			if _, ok := c.get(tok, now, 0); !ok {
				t.Fatalf("token in use %s evicted after %d one-off tokens", tok, i+1)
			}
		}
	}
	if n := c.len(); n > 8*tokenCacheShards {
		t.Fatalf("%d cached tokens, want at most %d", n, 8*tokenCacheShards)
	}
}

// A cached token is a few objects whatever its claims: the garbage
// collector marks each object of every cached token on every cycle.
func TestCachedTokenIsFewObjects(t *testing.T) {
	claims := &userClaims{
		RegisteredClaims: jwt.RegisteredClaims{Subject: "42", ExpiresAt: jwt.NewNumericDate(testStart)},
		Username:         "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png", Groups: []string{"staff", "mods", "ops"},
	}
	tok := "header.payload.signature"
	var e *cachedToken
	// The entry, the strings' one allocation, the groups' slice, and the
	// parts joined (dropped at once).
	if n := testing.AllocsPerRun(50, func() { e = newCachedToken(tok, claims, 3) }); n > 4 {
		t.Errorf("%v allocations per cached token, want at most 4", n)
	}
	want := presence.User{ID: "42", Username: "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png", Groups: []string{"staff", "mods", "ops"}}
	if !reflect.DeepEqual(e.user, want) || e.token != tok || e.generation != 3 || !e.expiresAt.Equal(testStart) {
		t.Fatalf("entry %+v, want user %+v of token %q, generation 3, exp %v", e, want, tok, testStart)
	}
}

package redispresence

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func newTestAuth(t *testing.T, clock *testClock, cacheSize int) *authenticator {
	t.Helper()
	cfg := Config{JWTSecret: []byte(testSecret), Prefixes: []string{"demo"}, Now: clock.Now, TokenCacheSize: cacheSize}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return newAuthenticator(&cfg)
}

func TestCachedTokenIsRejectedAfterItsExpiry(t *testing.T) {
	clock := newTestClock()
	a := newTestAuth(t, clock, 0)
	tok := signClaims(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "7", "exp": clock.Now().Add(time.Minute).Unix()})
	for range 2 {
		if id, err := a.verify(tok); err != nil || id != "7" {
			t.Fatalf("verify = %q, %v", id, err)
		}
	}
	if a.cache.len() != 1 {
		t.Fatalf("cache holds %d tokens, want 1", a.cache.len())
	}
	clock.Advance(time.Minute)
	if _, err := a.verify(tok); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("expired cached token: err = %v, want ErrUnauthorized", err)
	}
	if a.cache.len() != 0 {
		t.Errorf("the expired entry was kept")
	}
}

func TestCachedTokenIsNotServedBeforeItsNotBefore(t *testing.T) {
	clock := newTestClock()
	c := newTokenCache(16)
	c.put("tok", cachedToken{userID: "7", notBefore: clock.Now().Add(time.Second)})
	if _, ok := c.get("tok", clock.Now()); ok {
		t.Error("served before nbf")
	}
	clock.Advance(time.Second)
	if id, ok := c.get("tok", clock.Now()); !ok || id != "7" {
		t.Errorf("get at nbf = %q, %v", id, ok)
	}
}

func TestFailedVerificationsAreNotCached(t *testing.T) {
	clock := newTestClock()
	a := newTestAuth(t, clock, 0)
	bad := signClaims(t, jwt.SigningMethodHS256, "wrong", jwt.MapClaims{"sub": "7"})
	for range 2 {
		if _, err := a.verify(bad); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("err = %v, want ErrUnauthorized", err)
		}
	}
	if a.cache.len() != 0 {
		t.Errorf("cache holds %d tokens after failures", a.cache.len())
	}
}

func TestTokenCacheIsBounded(t *testing.T) {
	c := newTokenCache(64) // 4 per shard
	for i := range 1000 {
		c.put(fmt.Sprintf("token-%d", i), cachedToken{userID: "u"})
	}
	if n := c.len(); n > 64 {
		t.Errorf("cache holds %d tokens, capacity 64", n)
	}
}

func TestNoCacheVerifiesEveryCall(t *testing.T) {
	clock := newTestClock()
	a := newTestAuth(t, clock, -1)
	if a.cache != nil {
		t.Fatal("a negative size must disable the cache")
	}
	tok := signClaims(t, jwt.SigningMethodHS256, testSecret, jwt.MapClaims{"sub": "7"})
	if id, err := a.verify(tok); err != nil || id != "7" {
		t.Fatalf("verify = %q, %v", id, err)
	}
}

func TestChannelNames(t *testing.T) {
	cases := map[string]string{
		"/demo/a":       "demo",
		"/a-b_C9/x/y":   "a-b_C9",
		"/demo/é":       "demo",
		"/demo/":        "",
		"demo/a":        "",
		"//a":           "",
		"/de mo/a":      "",
		"/demo/a\x00":   "",
		"/demo/a\u0085": "",
		"/demo/\xff":    "",
		"/demo/" + strings.Repeat("a", MaxChannelNameBytes-6): "demo",
		"/demo/" + strings.Repeat("a", MaxChannelNameBytes-5): "",
	}
	for name, want := range cases {
		got, ok := channelPrefix(name)
		if got != want || ok != (want != "") {
			t.Errorf("channelPrefix(%q) = %q, %v; want %q", name, got, ok, want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{
		{Prefixes: []string{"demo"}},
		{JWTSecret: []byte("s")},
		{JWTSecret: []byte("s"), Prefixes: []string{"de/mo"}},
		{JWTSecret: []byte("s"), Prefixes: []string{"demo"}, MaxBody: -1},
	} {
		if err := c.Validate(); !errors.Is(err, ErrConfig) {
			t.Errorf("Validate(%+v) = %v, want ErrConfig", c, err)
		}
	}
	c := Config{JWTSecret: []byte("s"), Prefixes: []string{"demo"}}
	if err := c.Validate(); err != nil || c.MaxBody != DefaultMaxBody || c.TokenCacheSize != DefaultTokenCacheSize || c.Now == nil || c.Logger == nil {
		t.Errorf("defaults not filled: %+v, %v", c, err)
	}
}

package jwtkeys

import (
	"errors"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

func newTestRemote(t *testing.T, s *testkit.Endpoint, clk clock.Clock) *Remote {
	t.Helper()
	r, err := NewRemote(RemoteConfig{URL: s.URL, Clock: clk, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func ids(keys []Key) string {
	var out string
	for _, k := range keys {
		out += k.ID + ","
	}
	return out
}

func TestRemoteRefreshesOnUnknownKidAtMostEvery10s(t *testing.T) {
	k := testKeys()
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := testkit.NewEndpoint(t, http.StatusOK, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey, nil)))
	r := newTestRemote(t, s, clk)

	if got := ids(r.Lookup("k1", ES256)); got != "k1," {
		t.Fatalf("first lookup: %q", got)
	}
	if r.Fetches() != 1 {
		t.Fatalf("%d fetches for the first lookup, want 1", r.Fetches())
	}
	// k1 for another algorithm is an unknown key, but the set was fetched
	// less than 10 s ago: no fetch.
	if got := r.Lookup("k1", RS256); got != nil {
		t.Fatalf("k1 answered for another algorithm: %v", got)
	}
	if r.Lookup("k1", ES256); r.Fetches() != 1 {
		t.Fatalf("%d fetches, want 1", r.Fetches())
	}

	// The provider adds k2; a token naming it triggers one fetch, but only
	// once 10 s passed since the last.
	s.Answer(http.StatusOK, nil, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey, nil), jwkOf(t, "k2", k.ed.Public(), nil)))
	if got := r.Lookup("k2", EdDSA); got != nil || r.Fetches() != 1 {
		t.Fatalf("within 10 s: keys %v after %d fetches, want none after 1", got, r.Fetches())
	}
	clk.Advance(DefaultMinRefreshInterval)
	if got := ids(r.Lookup("k2", EdDSA)); got != "k2," || r.Fetches() != 2 {
		t.Fatalf("after 10 s: keys %q after %d fetches, want k2 after 2", got, r.Fetches())
	}
	// Made-up kids cost one fetch per 10 s, however many arrive.
	for range 50 {
		if r.Lookup("made-up", ES256) != nil {
			t.Fatal("an unknown kid found a key")
		}
	}
	clk.Advance(DefaultMinRefreshInterval - time.Nanosecond)
	r.Lookup("made-up", ES256)
	if r.Fetches() != 2 {
		t.Fatalf("%d fetches, want 2 (the last was less than 10 s ago)", r.Fetches())
	}
	clk.Advance(time.Nanosecond)
	r.Lookup("made-up", ES256)
	if r.Fetches() != 3 || s.Requests() != 3 {
		t.Fatalf("%d fetches, %d requests; want 3", r.Fetches(), s.Requests())
	}
	// A kid-less token matches every key of its algorithm, without a fetch.
	if got := ids(r.Lookup("", ES256)); got != "k1," || r.Fetches() != 3 {
		t.Fatalf("kid-less lookup: %q after %d fetches", got, r.Fetches())
	}
}

// TestRemoteConcurrentLookupsShareOneFetch: requests arriving while the
// set is being fetched wait for that fetch instead of starting others.
func TestRemoteConcurrentLookupsShareOneFetch(t *testing.T) {
	k := testKeys()
	s := testkit.NewEndpoint(t, http.StatusOK, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey, nil)))
	release := s.Hold()
	r := newTestRemote(t, s, clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)))
	const callers = 20
	var wg sync.WaitGroup
	found := make(chan string, callers)
	for range callers {
		wg.Go(func() { found <- ids(r.Lookup("k1", ES256)) })
	}
	testkit.WaitFor(t, "the fetch to reach the server", func() bool { return s.Requests() == 1 })
	release()
	wg.Wait()
	close(found)
	for got := range found {
		if got != "k1," {
			t.Fatalf("a caller got %q", got)
		}
	}
	if r.Fetches() != 1 || s.Requests() != 1 {
		t.Fatalf("%d fetches, %d requests; want 1", r.Fetches(), s.Requests())
	}
}

// TestRemoteKeepsKeysWhenAFetchFails and withdraws them when the provider
// does: a withdrawal moves to a new generation, an addition does not.
func TestRemoteKeepsKeysWhenAFetchFailsAndWithdrawsThem(t *testing.T) {
	k := testKeys()
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := testkit.NewEndpoint(t, http.StatusOK, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey, nil)))
	r := newTestRemote(t, s, clk)
	if err := r.Refresh(); err != nil {
		t.Fatal(err)
	}
	s.Answer(http.StatusInternalServerError, nil, []byte("oops"))
	clk.Advance(DefaultMinRefreshInterval)
	if err := r.Refresh(); err == nil {
		t.Fatal("a failed fetch reported no error")
	}
	if got := ids(r.Lookup("k1", ES256)); got != "k1," {
		t.Fatalf("after a failed fetch: %q", got)
	}
	s.Answer(http.StatusOK, nil, []byte(`{"keys": 7}`))
	clk.Advance(DefaultMinRefreshInterval)
	if err := r.Refresh(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("an invalid document: %v", err)
	}
	if r.Generation() != 0 || ids(r.Lookup("k1", ES256)) != "k1," {
		t.Fatal("failed fetches changed the keys")
	}

	s.Answer(http.StatusOK, nil, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey, nil), jwkOf(t, "k2", k.ed.Public(), nil)))
	clk.Advance(DefaultMinRefreshInterval)
	if err := r.Refresh(); err != nil || r.Generation() != 0 {
		t.Fatalf("adding a key: %v, generation %d", err, r.Generation())
	}
	s.Answer(http.StatusOK, nil, jwksDoc(t, jwkOf(t, "k2", k.ed.Public(), nil)))
	clk.Advance(DefaultMinRefreshInterval)
	if err := r.Refresh(); err != nil || r.Generation() != 1 {
		t.Fatalf("withdrawing a key: %v, generation %d", err, r.Generation())
	}
	if r.Lookup("k1", ES256) != nil {
		t.Fatal("a withdrawn key still verifies")
	}
	// The same kid with another key is a replacement, hence a withdrawal.
	s.Answer(http.StatusOK, nil, jwksDoc(t, jwkOf(t, "k2", &k.ec.PublicKey, nil)))
	clk.Advance(DefaultMinRefreshInterval)
	if err := r.Refresh(); err != nil || r.Generation() != 2 {
		t.Fatalf("replacing a key: %v, generation %d", err, r.Generation())
	}
}

// TestRemoteRefetchesAnOldSetInTheBackground: without unknown kids a set
// is still fetched again once it is MaxAge old, while lookups go on with
// the keys at hand.
func TestRemoteRefetchesAnOldSetInTheBackground(t *testing.T) {
	k := testKeys()
	clk := clock.NewFake(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	s := testkit.NewEndpoint(t, http.StatusOK, jwksDoc(t, jwkOf(t, "k1", &k.ec.PublicKey, nil)))
	r := newTestRemote(t, s, clk)
	r.Lookup("k1", ES256)
	clk.Advance(DefaultMaxAge - time.Second)
	r.Lookup("k1", ES256)
	if r.Fetches() != 1 {
		t.Fatalf("%d fetches before the set is old", r.Fetches())
	}
	s.Answer(http.StatusOK, nil, jwksDoc(t, jwkOf(t, "k2", &k.ec.PublicKey, nil)))
	clk.Advance(time.Second)
	if got := ids(r.Lookup("k1", ES256)); got != "k1," {
		t.Fatalf("the lookup that found the set old: %q (it must not wait)", got)
	}
	testkit.WaitFor(t, "the background fetch to install the new set", func() bool {
		return r.Generation() == 1
	})
	if r.Lookup("k1", ES256) != nil || r.Fetches() != 2 {
		t.Fatalf("after the background fetch: %d fetches", r.Fetches())
	}
}

func TestNewRemoteRejects(t *testing.T) {
	for _, u := range []string{"", "jwks.json", "ftp://idp/jwks", "https://", "://x"} {
		if _, err := NewRemote(RemoteConfig{URL: u}); err == nil {
			t.Fatalf("URL %q accepted", u)
		}
	}
	if _, err := NewRemote(RemoteConfig{URL: "https://idp.example/jwks", MaxAge: -1}); err == nil {
		t.Fatal("negative MaxAge accepted")
	}
}

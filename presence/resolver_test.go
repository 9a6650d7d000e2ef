package presence

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/internal/testkit"
)

// resServer is a callback endpoint whose answer the test sets and whose
// requests it counts; it records requests not shaped as the contract says.
type resServer struct {
	*testkit.Endpoint
	mu      sync.Mutex
	badReqs []string
}

func newResServer(t *testing.T) *resServer {
	s := &resServer{Endpoint: testkit.NewEndpoint(t, http.StatusOK, []byte(`{"public": true}`))}
	s.Inspect(func(r *http.Request) {
		var req map[string]string
		err := json.NewDecoder(r.Body).Decode(&req)
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" || err != nil || len(req) != 1 || req["channel"] == "" {
			s.mu.Lock()
			s.badReqs = append(s.badReqs, fmt.Sprintf("%s %v %v", r.Method, req, err))
			s.mu.Unlock()
		}
	})
	return s
}

// answer sets the callback's answer; a redirect points elsewhere, which
// the resolver must not follow.
func (s *resServer) answer(status int, body string) {
	var header http.Header
	if status/100 == 3 {
		header = http.Header{"Location": {"/elsewhere"}}
	}
	s.Answer(status, header, []byte(body))
}

func (s *resServer) checkRequests(t *testing.T) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.badReqs) > 0 {
		t.Errorf("malformed callback requests: %v", s.badReqs)
	}
}

var resStart = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

func newResResolver(t *testing.T) (*Resolver, *clock.Fake) {
	fake := clock.NewFake(resStart)
	return NewResolver(ResolverConfig{Clock: fake}), fake
}

func setDoc(t *testing.T, r *Resolver, prefix, doc string) {
	t.Helper()
	if err := r.SetDocument(prefix, []byte(doc)); err != nil {
		t.Fatalf("SetDocument(%s): %v", prefix, err)
	}
}

func callbackDoc(url string, cacheSeconds int) string {
	return fmt.Sprintf(`{"rules": [{"match": "/cb/rule", "config": {"timeout": 5}}],
		"callback": {"url": %q, "cache_seconds": %d}}`, url, cacheSeconds)
}

// resolve fails the test on an error: only a cancelled context may give one.
func resolve(t *testing.T, r *Resolver, channel string) *Config {
	t.Helper()
	cfg, err := r.Resolve(context.Background(), channel)
	if err != nil {
		t.Fatalf("Resolve(%q): %v", channel, err)
	}
	return cfg
}

func TestResolveRules(t *testing.T) {
	r, _ := newResResolver(t)
	setDoc(t, r, "topic", `{"rules": [
		{"match": "/topic/1", "config": {"timeout": 1}},
		{"match": "/topic/[0-9]+", "config": {"timeout": 2}},
		{"match": "/topic/a|/topic/b", "config": {"timeout": 3}}
	]}`)
	cases := map[string]int{ // channel -> timeout of the winning rule, 0 = none
		"/topic/1": 1, "/topic/12": 2, "/topic/a": 3, "/topic/b": 3,
		"/topic/ab": 0, "/topic/1x": 0, "/topic/": 0, "/other/1": 0, "/topic/\x00": 0, "topic/1": 0,
	}
	for round := range 2 { // the second round answers from the cache
		for channel, want := range cases {
			cfg := resolve(t, r, channel)
			if got := timeoutOf(cfg); got != want {
				t.Errorf("round %d: Resolve(%q) timeout %d, want %d", round, channel, got, want)
			}
		}
	}
}

func timeoutOf(cfg *Config) int {
	if cfg == nil {
		return 0
	}
	return cfg.Timeout
}

func TestResolveCallbackAnswers(t *testing.T) {
	srv := newResServer(t)
	r, _ := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 10))

	if cfg := resolve(t, r, "/cb/rule"); timeoutOf(cfg) != 5 || srv.Requests() != 0 {
		t.Fatalf("a matching rule must win without a request: %+v, %d hits", cfg, srv.Requests())
	}
	srv.answer(http.StatusOK, `{"allowed_user_ids": ["7"], "count_only": true, "timeout": 42}`)
	want := &Config{AllowedUserIDs: []string{"7"}, CountOnly: true, Timeout: 42}
	if cfg := resolve(t, r, "/cb/a"); !reflect.DeepEqual(cfg, want) {
		t.Fatalf("200: got %+v, want %+v", cfg, want)
	}
	srv.answer(http.StatusNotFound, `not here`)
	if cfg := resolve(t, r, "/cb/b"); cfg != nil {
		t.Fatalf("404: got %+v, want does not exist", cfg)
	}
	srv.checkRequests(t)
}

func TestResolveCallbackFailuresAreNotCached(t *testing.T) {
	failures := map[string]func(*resServer){
		"500":            func(s *resServer) { s.answer(http.StatusInternalServerError, `{"public": true}`) },
		"204":            func(s *resServer) { s.answer(http.StatusNoContent, ``) },
		"302":            func(s *resServer) { s.answer(http.StatusFound, ``) },
		"bad JSON":       func(s *resServer) { s.answer(http.StatusOK, `{"public": tru`) },
		"unknown field":  func(s *resServer) { s.answer(http.StatusOK, `{"public": true, "admin": true}`) },
		"bad timeout":    func(s *resServer) { s.answer(http.StatusOK, `{"timeout": 7200}`) },
		"bad max_users":  func(s *resServer) { s.answer(http.StatusOK, `{"public": true, "max_users": 0}`) },
		"trailing data":  func(s *resServer) { s.answer(http.StatusOK, `{"public": true} []`) },
		"not an object":  func(s *resServer) { s.answer(http.StatusOK, `null`) },
		"closed":         func(s *resServer) { s.Close() }, // nothing listens: a network error
		"empty 200 body": func(s *resServer) { s.answer(http.StatusOK, ``) },
	}
	for name, fail := range failures {
		t.Run(name, func(t *testing.T) {
			srv := newResServer(t)
			r, _ := newResResolver(t)
			setDoc(t, r, "cb", callbackDoc(srv.URL, 600))
			fail(srv)
			if cfg := resolve(t, r, "/cb/x"); cfg != nil {
				t.Fatalf("failure gave %+v, want does not exist", cfg)
			}
			if name == "closed" {
				return
			}
			// The clock has not moved: only an uncached failure lets the
			// good answer through.
			srv.answer(http.StatusOK, `{"public": true}`)
			if cfg := resolve(t, r, "/cb/x"); cfg == nil || !cfg.Public {
				t.Fatalf("after a failure the next request must ask again, got %+v", cfg)
			}
			if got := srv.Requests(); got != 2 {
				t.Fatalf("%d requests, want 2", got)
			}
		})
	}
}

func TestResolveCallbackTimeout(t *testing.T) {
	srv := newResServer(t)
	release := srv.Hold()
	defer release()
	fake := clock.NewFake(resStart)
	r := NewResolver(ResolverConfig{Clock: fake, CallbackTimeout: 50 * time.Millisecond})
	setDoc(t, r, "cb", callbackDoc(srv.URL, 600))
	if cfg := resolve(t, r, "/cb/slow"); cfg != nil {
		t.Fatalf("timed-out callback gave %+v", cfg)
	}
	release()
	// The outcome of the second call depends on how fast the machine
	// answers within the timeout; that it asks the server again does not.
	// A request the client gave up on may still reach the server late.
	resolve(t, r, "/cb/slow")
	testkit.WaitFor(t, "a second callback request", func() bool { return srv.Requests() >= 2 })
	if got := srv.Requests(); got != 2 {
		t.Fatalf("%d callback requests, want 2: a timeout must not be cached", got)
	}
}

func TestResolveCacheExpiry(t *testing.T) {
	srv := newResServer(t)
	r, fake := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 10))
	for _, status := range []int{http.StatusOK, http.StatusNotFound} {
		before := srv.Requests()
		srv.answer(status, `{"public": true}`)
		channel := fmt.Sprintf("/cb/%d", status)
		exists := status == http.StatusOK
		check := func(when string, wantHits int64) {
			t.Helper()
			if cfg := resolve(t, r, channel); (cfg != nil) != exists {
				t.Fatalf("%d %s: got %+v", status, when, cfg)
			}
			if got := srv.Requests() - before; got != wantHits {
				t.Fatalf("%d %s: %d requests, want %d", status, when, got, wantHits)
			}
		}
		check("first", 1)
		check("cached", 1)
		fake.Advance(9*time.Second + 999*time.Millisecond)
		check("just before expiry", 1)
		fake.Advance(time.Millisecond)
		check("at expiry", 2)
		check("cached again", 2)
	}
}

func TestResolveCacheSecondsZero(t *testing.T) {
	srv := newResServer(t)
	r, _ := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 0))
	for range 3 {
		if cfg := resolve(t, r, "/cb/x"); cfg == nil {
			t.Fatal("does not exist")
		}
	}
	if got := srv.Requests(); got != 3 {
		t.Fatalf("cache_seconds 0: %d requests, want 3", got)
	}
}

func TestResolveDocumentChangeInvalidates(t *testing.T) {
	srv := newResServer(t)
	r, _ := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 600))
	resolve(t, r, "/cb/x")
	resolve(t, r, "/cb/x")
	if got := srv.Requests(); got != 1 {
		t.Fatalf("%d requests before the change, want 1", got)
	}
	// Same callback, new rules: both the callback answer and the rule
	// answers cached under the old document must go.
	setDoc(t, r, "cb", fmt.Sprintf(`{"rules": [{"match": "/cb/rule", "config": {"timeout": 9}}],
		"callback": {"url": %q, "cache_seconds": 600}}`, srv.URL))
	resolve(t, r, "/cb/x")
	if got := srv.Requests(); got != 2 {
		t.Fatalf("%d requests after the change, want 2", got)
	}
	if cfg := resolve(t, r, "/cb/rule"); timeoutOf(cfg) != 9 {
		t.Fatalf("rule answer after the change: %+v", cfg)
	}

	if err := r.SetDocument("cb", nil); err != nil {
		t.Fatal(err)
	}
	if cfg := resolve(t, r, "/cb/rule"); cfg != nil {
		t.Fatalf("deleted document still answers %+v", cfg)
	}

	setDoc(t, r, "cb", `{"rules": [{"match": "/cb/.*", "config": {"public": true}}]}`)
	err := r.SetDocument("cb", []byte(`{"rules": [{"match": "(", "config": {}}]}`))
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid document: err = %v, want ErrInvalid", err)
	}
	if cfg := resolve(t, r, "/cb/x"); cfg != nil {
		t.Fatalf("after an invalid document the prefix must have none, got %+v", cfg)
	}
	if err := r.SetDocument("bad prefix", []byte(`{}`)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("invalid prefix: err = %v", err)
	}
}

func TestResolveRegisteredFunction(t *testing.T) {
	r, _ := newResResolver(t)
	setDoc(t, r, "fn", `{"rules": [{"match": "/fn/.*", "config": {"timeout": 1}}]}`)
	setDoc(t, r, "doc", `{"rules": [{"match": "/doc/.*", "config": {"timeout": 1}}]}`)
	var calls atomic.Int64
	fn := func(channel string) (*Config, error) {
		calls.Add(1)
		switch channel {
		case "/fn/ok":
			return &Config{Timeout: 2}, nil
		case "/fn/err":
			return &Config{Timeout: 2}, errors.New("boom")
		case "/fn/panic":
			panic("boom")
		case "/fn/badtimeout":
			return &Config{Timeout: MaxTimeoutSeconds + 1}, nil
		case "/fn/negativecap":
			return &Config{Timeout: 2, MaxUsers: -1}, nil
		case "/fn/hugecap":
			return &Config{Timeout: 2, MaxUsers: MaxUsersLimit + 1}, nil
		case "/fn/cap":
			return &Config{Timeout: 3, MaxUsers: MaxUsersLimit}, nil
		}
		return nil, nil
	}
	if err := r.Register("fn", fn); err != nil {
		t.Fatal(err)
	}
	cases := map[string]int{"/fn/ok": 2, "/fn/err": 0, "/fn/panic": 0, "/fn/badtimeout": 0, "/fn/none": 0, "/doc/x": 1,
		"/fn/negativecap": 0, "/fn/hugecap": 0, "/fn/cap": 3}
	for channel, want := range cases {
		if got := timeoutOf(resolve(t, r, channel)); got != want {
			t.Errorf("Resolve(%q) timeout %d, want %d", channel, got, want)
		}
	}
	if got := calls.Load(); got != 8 {
		t.Errorf("function called %d times, want 8 (never for other prefixes)", got)
	}
	// A function outlives document changes of its prefix.
	setDoc(t, r, "fn", `{"rules": [{"match": "/fn/.*", "config": {"timeout": 3}}]}`)
	if got := timeoutOf(resolve(t, r, "/fn/ok")); got != 2 {
		t.Errorf("after a document change the function must still win, timeout %d", got)
	}
	for _, bad := range []struct {
		prefix string
		fn     ConfigFunc
	}{{"fn", fn}, {"a/b", fn}, {"", fn}, {"new", nil}} {
		if err := r.Register(bad.prefix, bad.fn); !errors.Is(err, ErrInvalid) {
			t.Errorf("Register(%q): err = %v, want ErrInvalid", bad.prefix, err)
		}
	}
	// Registering over an existing document keeps the document for later.
	if err := r.Register("doc", func(string) (*Config, error) { return &Config{Timeout: 4}, nil }); err != nil {
		t.Fatal(err)
	}
	if got := timeoutOf(resolve(t, r, "/doc/x")); got != 4 {
		t.Errorf("registered function must win over the document, timeout %d", got)
	}
}

// flightWaiters reports how many callers wait on the request in flight for
// channel, or -1 when none is in flight.
func flightWaiters(r *Resolver, channel string) int {
	prefix, _ := ChannelPrefix(channel)
	e := (*r.entries.Load())[prefix]
	s := e.cache.shard(r.seed, channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	if f := s.flights[channel]; f != nil {
		return f.waiters
	}
	return -1
}

func TestResolveSingleFlight(t *testing.T) {
	srv := newResServer(t)
	release := srv.Hold()
	r, _ := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 10))
	const callers = 20
	results := make(chan *Config, callers)
	for range callers {
		go func() {
			cfg, _ := r.Resolve(context.Background(), "/cb/hot")
			results <- cfg
		}()
	}
	testkit.WaitFor(t, "every caller to join the flight", func() bool { return flightWaiters(r, "/cb/hot") == callers-1 })
	release()
	for range callers {
		if cfg := <-results; cfg == nil || !cfg.Public {
			t.Fatalf("caller got %+v", cfg)
		}
	}
	if got := srv.Requests(); got != 1 {
		t.Fatalf("%d callback requests for %d concurrent callers, want 1", got, callers)
	}
	if flightWaiters(r, "/cb/hot") != -1 {
		t.Fatal("flight not cleared")
	}
}

func TestResolveWaiterContextEnds(t *testing.T) {
	srv := newResServer(t)
	release := srv.Hold()
	r, _ := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 10))
	first := make(chan *Config, 1)
	go func() {
		cfg, _ := r.Resolve(context.Background(), "/cb/x")
		first <- cfg
	}()
	testkit.WaitFor(t, "the first request", func() bool { return flightWaiters(r, "/cb/x") == 0 })
	ctx, cancel := context.WithCancel(context.Background())
	waiter := make(chan error, 1)
	go func() {
		_, err := r.Resolve(ctx, "/cb/x")
		waiter <- err
	}()
	testkit.WaitFor(t, "the waiter", func() bool { return flightWaiters(r, "/cb/x") == 1 })
	cancel()
	if err := <-waiter; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled waiter: err = %v", err)
	}
	release()
	if cfg := <-first; cfg == nil {
		t.Fatal("a waiter's cancellation must not fail the request it shares")
	}
}

func TestResolveCacheIsBounded(t *testing.T) {
	fake := clock.NewFake(resStart)
	r := NewResolver(ResolverConfig{Clock: fake, MaxCachedChannels: 64})
	setDoc(t, r, "b", `{"rules": [{"match": "/b/[0-9]+", "config": {"public": true}}]}`)
	for i := range 5000 {
		if cfg := resolve(t, r, fmt.Sprintf("/b/%d", i)); cfg == nil {
			t.Fatalf("/b/%d does not exist", i)
		}
		resolve(t, r, fmt.Sprintf("/b/x%d", i))
	}
	e := (*r.entries.Load())["b"]
	total := 0
	for i := range e.cache.shards {
		total += len(e.cache.shards[i].answers)
	}
	if total > 64 {
		t.Fatalf("%d cached answers, want at most 64", total)
	}
}

func TestResolveConcurrentWithChanges(t *testing.T) {
	srv := newResServer(t)
	r, fake := newResResolver(t)
	docs := []string{
		callbackDoc(srv.URL, 1),
		`{"rules": [{"match": "/cb/.*", "config": {"public": true}}]}`,
		`{"rules": [{"match": "/cb/rule", "config": {"timeout": 5}}]}`,
	}
	setDoc(t, r, "cb", docs[0])
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	for g := range 8 {
		wg.Go(func() {
			for i := 0; ctx.Err() == nil; i++ {
				channel := fmt.Sprintf("/cb/%d", (g+i)%5)
				if i%3 == 0 {
					channel = "/cb/rule"
				}
				cfg, err := r.Resolve(context.Background(), channel)
				if err != nil || cfg != nil && !cfg.Public && cfg.Timeout != 5 {
					t.Errorf("Resolve(%q) = %+v, %v", channel, cfg, err)
					return
				}
			}
		})
	}
	for i := range 200 {
		setDoc(t, r, "cb", docs[i%len(docs)])
		fake.Advance(300 * time.Millisecond)
	}
	cancel()
	wg.Wait()
}

func TestResolverConfigValidate(t *testing.T) {
	if err := (ResolverConfig{}).Validate(); err != nil {
		t.Fatalf("zero config: %v", err)
	}
	for _, c := range []ResolverConfig{{CallbackTimeout: -1}, {MaxCachedChannels: -1}} {
		if err := c.Validate(); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: err = %v, want ErrInvalid", c, err)
		}
	}
}

func TestResolveCachedDoesNotAllocate(t *testing.T) {
	srv := newResServer(t)
	r, _ := newResResolver(t)
	setDoc(t, r, "cb", callbackDoc(srv.URL, 600))
	setDoc(t, r, "topic", `{"rules": [{"match": "/topic/[0-9]+", "config": {"public": true}}]}`)
	static := &Config{Public: true}
	if err := r.Register("fn", func(string) (*Config, error) { return static, nil }); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	channels := []string{"/topic/1", "/topic/x", "/cb/x", "/fn/x", "/nobody/x", "/bad name/x"}
	for _, c := range channels {
		resolve(t, r, c) // warm the caches
	}
	allocs := testing.AllocsPerRun(100, func() {
		for _, c := range channels {
			_, _ = r.Resolve(ctx, c)
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per run of cached answers, want 0", allocs)
	}
}

func BenchmarkResolveCached(b *testing.B) {
	r := NewResolver(ResolverConfig{})
	rules := `{"match": "/topic/[a-z]+", "config": {}},`
	doc := `{"rules": [`
	for range 49 {
		doc += rules
	}
	doc += `{"match": "/topic/[0-9]+", "config": {"public": true}}]}`
	if err := r.SetDocument("topic", []byte(doc)); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const channel = "/topic/123456"
	if cfg, _ := r.Resolve(ctx, channel); cfg == nil {
		b.Fatal("does not exist")
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if cfg, _ := r.Resolve(ctx, channel); cfg == nil {
				b.Fatal("does not exist")
			}
		}
	})
}

func BenchmarkResolveRuleMiss(b *testing.B) {
	r := NewResolver(ResolverConfig{MaxCachedChannels: 1})
	doc := `{"rules": [{"match": "/topic/[a-z]+", "config": {}}, {"match": "/topic/[0-9]+", "config": {"public": true}}]}`
	if err := r.SetDocument("topic", []byte(doc)); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	names := make([]string, 1024)
	for i := range names {
		names[i] = fmt.Sprintf("/topic/%d", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		_, _ = r.Resolve(ctx, names[i%len(names)])
		i++
	}
}

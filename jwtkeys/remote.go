package jwtkeys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/clock"
)

// Defaults of RemoteConfig.
const (
	// DefaultMinRefreshInterval spaces fetches caused by unknown key ids:
	// tokens naming made-up kids must not make the node hammer the
	// identity provider.
	DefaultMinRefreshInterval = 10 * time.Second
	// DefaultMaxAge is how long a fetched set is used before it is fetched
	// again (in the background) even if no unknown kid came up, so that a
	// key the provider withdrew stops verifying within this time.
	DefaultMaxAge = time.Hour
	// DefaultFetchTimeout bounds one fetch of the set.
	DefaultFetchTimeout = 5 * time.Second
)

// RemoteConfig configures a Remote. URL is required; zero values of the
// other fields take the documented defaults.
type RemoteConfig struct {
	// URL serves the JWK Set (an identity provider's jwks_uri).
	URL string
	// Client fetches the set. Nil: a client with no other settings; the
	// fetch is bounded by FetchTimeout.
	Client *http.Client
	// Clock times refreshes. Nil: the wall clock.
	Clock clock.Clock
	// Logger receives failed fetches and key changes. Nil: discarded.
	Logger *slog.Logger
	// MinRefreshInterval: DefaultMinRefreshInterval when 0.
	MinRefreshInterval time.Duration
	// MaxAge: DefaultMaxAge when 0.
	MaxAge time.Duration
	// FetchTimeout: DefaultFetchTimeout when 0.
	FetchTimeout time.Duration
}

// Remote is a JWK Set fetched from a URL and cached. Lookup of a key id the
// set does not hold fetches the set again, at most once per
// MinRefreshInterval (callers arriving during a fetch wait for it); a set
// older than MaxAge is fetched again in the background. A failed fetch
// keeps the keys of the last good one. Safe for concurrent use.
type Remote struct {
	cfg RemoteConfig

	set        atomic.Pointer[keySet]
	generation atomic.Uint64
	fetches    atomic.Int64

	mu        sync.Mutex
	lastTry   time.Time     // start of the last fetch (zero: never)
	inFlight  chan struct{} // closed when the running fetch ends; nil when none runs
	lastError error
}

// keySet is one fetched document.
type keySet struct {
	keys    []Key
	fetched time.Time
}

// NewRemote checks cfg and returns a Remote that has fetched nothing yet:
// the first Lookup fetches, or call Refresh to fetch at start.
func NewRemote(cfg RemoteConfig) (*Remote, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("jwtkeys: JWKS URL %q is not an absolute http(s) URL", cfg.URL)
	}
	if cfg.MinRefreshInterval < 0 || cfg.MaxAge < 0 || cfg.FetchTimeout < 0 {
		return nil, errors.New("jwtkeys: negative interval")
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{}
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = DefaultMinRefreshInterval
	}
	if cfg.MaxAge == 0 {
		cfg.MaxAge = DefaultMaxAge
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = DefaultFetchTimeout
	}
	return &Remote{cfg: cfg}, nil
}

// Lookup returns the keys for a token's key id and algorithm. An empty kid
// matches every key of alg. A kid the set does not hold makes Lookup fetch
// the set again when MinRefreshInterval allows it (or wait for a fetch
// already running) and look once more; nil means no key.
func (r *Remote) Lookup(kid, alg string) []Key {
	set := r.set.Load()
	if set != nil && r.cfg.Clock.Now().Sub(set.fetched) >= r.cfg.MaxAge {
		r.refreshInBackground()
	}
	if keys := set.match(kid, alg); len(keys) > 0 || kid == "" && set != nil {
		return keys
	}
	if !r.awaitRefresh() {
		return nil
	}
	return r.set.Load().match(kid, alg)
}

// Refresh fetches the set now, unless a fetch ran less than
// MinRefreshInterval ago; it returns the error of the fetch it ran or
// waited for.
func (r *Remote) Refresh() error {
	r.awaitRefresh()
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastError
}

// Generation counts the fetches that withdrew or replaced a key. A cache
// of tokens verified with this set must drop what it verified under an
// earlier generation: the key may have been withdrawn.
func (r *Remote) Generation() uint64 { return r.generation.Load() }

// Fetches counts the fetches attempted.
func (r *Remote) Fetches() int64 { return r.fetches.Load() }

// awaitRefresh runs a fetch, or waits for the one running, and reports
// whether one ran or was awaited; false when MinRefreshInterval forbids it.
func (r *Remote) awaitRefresh() bool {
	done, started := r.startFetch()
	if done == nil {
		return false
	}
	if started {
		r.fetch(done)
	} else {
		<-done
	}
	return true
}

// refreshInBackground starts a fetch in its own goroutine, unless one runs
// or ran too recently; callers keep using the current set meanwhile.
func (r *Remote) refreshInBackground() {
	if done, started := r.startFetch(); started {
		go r.fetch(done)
	}
}

// startFetch decides whether a fetch may start now. started: the caller
// must run it and close done. Otherwise done is the running fetch's
// channel to wait on, or nil when no fetch may start yet.
func (r *Remote) startFetch() (done chan struct{}, started bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inFlight != nil {
		return r.inFlight, false
	}
	now := r.cfg.Clock.Now()
	if !r.lastTry.IsZero() && now.Sub(r.lastTry) < r.cfg.MinRefreshInterval {
		return nil, false
	}
	r.lastTry = now
	r.inFlight = make(chan struct{})
	return r.inFlight, true
}

// fetch downloads and installs the set, then releases its waiters.
func (r *Remote) fetch(done chan struct{}) {
	r.fetches.Add(1)
	keys, err := r.download()
	if err == nil {
		r.install(keys)
	} else {
		r.cfg.Logger.Error("JWKS fetch failed; the keys fetched before stay in use", "url", r.cfg.URL, "err", err)
	}
	r.mu.Lock()
	r.lastError = err
	r.inFlight = nil
	r.mu.Unlock()
	close(done)
}

// download GETs and parses the set. It is not tied to the request that
// caused it: other requests wait for the same fetch.
func (r *Remote) download() ([]Key, error) {
	ctx, cancel := context.WithTimeout(context.Background(), r.cfg.FetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.cfg.URL, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := r.cfg.Client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	return ParseJWKS(body)
}

// install makes keys the current set, moving to a new generation when a
// key of the previous set is gone or changed.
func (r *Remote) install(keys []Key) {
	prev := r.set.Load()
	r.set.Store(&keySet{keys: keys, fetched: r.cfg.Clock.Now()})
	if prev == nil {
		r.cfg.Logger.Info("JWKS fetched", "url", r.cfg.URL, "keys", len(keys))
		return
	}
	for _, old := range prev.keys {
		if !containsKey(keys, old) {
			r.generation.Add(1)
			r.cfg.Logger.Info("JWKS changed: a key was withdrawn or replaced", "url", r.cfg.URL, "keys", len(keys))
			return
		}
	}
}

func containsKey(keys []Key, k Key) bool {
	for _, o := range keys {
		if o.equal(k) {
			return true
		}
	}
	return false
}

// match returns the keys of alg with id kid ("" matches every id).
func (s *keySet) match(kid, alg string) []Key {
	if s == nil {
		return nil
	}
	var out []Key
	for _, k := range s.keys {
		if k.Alg == alg && (kid == "" || k.ID == kid) {
			out = append(out, k)
		}
	}
	return out
}

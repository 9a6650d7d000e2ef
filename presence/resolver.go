package presence

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"hash/maphash"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/clock"
)

// Resolver defaults.
const (
	DefaultCallbackTimeout   = 2 * time.Second
	DefaultMaxCachedChannels = 65536 // per prefix document
)

// resolverShards splits each prefix's cache so that heartbeats of different
// channels rarely contend on one lock.
const resolverShards = 16

// ConfigFunc decides the config of a channel of a registered prefix; a nil
// config means the channel does not exist. It is the analogue of Discourse's
// register_presence_channel_prefix. It is called on every Resolve of its
// prefix (nothing is cached), possibly concurrently, so it must be fast and
// safe for concurrent use; the config it returns must not be modified later.
type ConfigFunc func(channel string) (*Config, error)

// ResolverConfig configures a Resolver.
type ResolverConfig struct {
	// Clock drives cache expiry; nil means clock.Real.
	Clock clock.Clock
	// Logger receives callback and function failures; nil discards them.
	Logger *slog.Logger
	// HTTPClient makes callback requests; nil means a client that does not
	// follow redirects, with a CallbackTimeout timeout.
	HTTPClient *http.Client
	// CallbackTimeout bounds each callback request; 0 means
	// DefaultCallbackTimeout.
	CallbackTimeout time.Duration
	// MaxCachedChannels bounds the answers (rule matches and callback answers)
	// cached per prefix document, to within the rounding of its 16 shards;
	// past it a random entry is evicted. 0 means DefaultMaxCachedChannels.
	MaxCachedChannels int
}

// Validate reports a configuration NewResolver cannot honour.
func (c ResolverConfig) Validate() error {
	if c.CallbackTimeout < 0 {
		return fmt.Errorf("%w: resolver callback timeout %v is negative", ErrInvalid, c.CallbackTimeout)
	}
	if c.MaxCachedChannels < 0 {
		return fmt.Errorf("%w: resolver cache size %d is negative", ErrInvalid, c.MaxCachedChannels)
	}
	return nil
}

// Resolver decides a channel's config just in time: a registered Go function
// for its prefix, else the prefix's document (rules, then callback). It is
// safe for concurrent use.
type Resolver struct {
	clock    clock.Clock
	log      *slog.Logger
	client   *http.Client
	timeout  time.Duration
	perShard int
	seed     maphash.Seed
	mu       sync.Mutex // serialises writers of entries
	entries  atomic.Pointer[map[string]*prefixEntry]
}

// prefixEntry is the immutable state of one prefix. A new document brings a
// new cache, which is how a change invalidates every cached answer at once.
type prefixEntry struct {
	fn    ConfigFunc
	doc   *PrefixDocument
	cache *answerCache
}

// NewResolver returns a resolver with no prefixes. Zero fields of cfg take
// their defaults (negative ones too; see ResolverConfig.Validate).
func NewResolver(cfg ResolverConfig) *Resolver {
	r := &Resolver{
		clock:   cfg.Clock,
		log:     cfg.Logger,
		client:  cfg.HTTPClient,
		timeout: cfg.CallbackTimeout,
		seed:    maphash.MakeSeed(),
	}
	if r.clock == nil {
		r.clock = clock.Real{}
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	if r.timeout <= 0 {
		r.timeout = DefaultCallbackTimeout
	}
	if r.client == nil {
		r.client = &http.Client{
			Timeout:       r.timeout,
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
	}
	limit := cfg.MaxCachedChannels
	if limit <= 0 {
		limit = DefaultMaxCachedChannels
	}
	r.perShard = max(1, limit/resolverShards)
	r.entries.Store(&map[string]*prefixEntry{})
	return r
}

// Register makes fn decide the channels of prefix, ahead of any document
// stored for it. It fails with ErrInvalid for an invalid prefix, a nil fn, or
// a prefix already registered.
func (r *Resolver) Register(prefix string, fn ConfigFunc) error {
	if !ValidPrefix(prefix) {
		return fmt.Errorf("%w: invalid channel prefix %q", ErrInvalid, prefix)
	}
	if fn == nil {
		return fmt.Errorf("%w: nil config function for prefix %q", ErrInvalid, prefix)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	old := (*r.entries.Load())[prefix]
	if old != nil && old.fn != nil {
		return fmt.Errorf("%w: prefix %q is already registered", ErrInvalid, prefix)
	}
	e := &prefixEntry{fn: fn}
	if old != nil {
		e.doc, e.cache = old.doc, old.cache
	}
	r.swap(prefix, e)
	return nil
}

// SetDocument installs the document raw for prefix, or removes it when raw is
// nil; Raft's apply calls it, so it only parses and swaps. Answers cached
// under the previous document are dropped. A document that fails to parse
// (an error wrapping ErrInvalid) also leaves the prefix without a document,
// so every node treats the same Raft entry the same way.
func (r *Resolver) SetDocument(prefix string, raw []byte) error {
	if !ValidPrefix(prefix) {
		return fmt.Errorf("%w: invalid channel prefix %q", ErrInvalid, prefix)
	}
	var doc *PrefixDocument
	var err error
	if raw != nil {
		doc, err = ParsePrefixDocument(raw)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	e := &prefixEntry{doc: doc}
	if old := (*r.entries.Load())[prefix]; old != nil {
		e.fn = old.fn
	}
	if doc != nil {
		e.cache = newAnswerCache(r.perShard)
	}
	if e.fn == nil && e.doc == nil {
		e = nil
	}
	r.swap(prefix, e)
	if err != nil {
		return fmt.Errorf("prefix %q: %w", prefix, err)
	}
	return nil
}

// swap publishes a copy of the entries with prefix set to e (removed when
// nil). Callers hold r.mu; readers never lock.
func (r *Resolver) swap(prefix string, e *prefixEntry) {
	next := maps.Clone(*r.entries.Load())
	if e == nil {
		delete(next, prefix)
	} else {
		next[prefix] = e
	}
	r.entries.Store(&next)
}

// Resolve returns channel's config, or nil when the channel does not exist:
// an invalid name, no function or document for its prefix, no rule matching
// and no callback, a callback answering 404, or any failure (logged, not
// cached). The error is non-nil only when ctx ends while waiting for another
// caller's callback request; callers treat that as "does not exist" too.
//
// The returned config is shared with other callers and must not be modified.
// An answer already cached (rule matches are cached too, per channel) is
// found without allocating.
func (r *Resolver) Resolve(ctx context.Context, channel string) (*Config, error) {
	prefix, ok := ChannelPrefix(channel)
	if !ok {
		return nil, nil
	}
	e := (*r.entries.Load())[prefix]
	switch {
	case e == nil:
		return nil, nil
	case e.fn != nil:
		return r.callFunc(e.fn, channel), nil
	}
	shard := e.cache.shard(r.seed, channel)
	if cfg, ok := shard.lookup(channel, r.clock); ok {
		return cfg, nil
	}
	if cfg, ok := e.doc.match(channel); ok {
		shard.store(strings.Clone(channel), cachedAnswer{cfg: cfg})
		return cfg, nil
	}
	if e.doc.Callback == nil {
		shard.store(strings.Clone(channel), cachedAnswer{})
		return nil, nil
	}
	return r.askCallback(ctx, e.doc.Callback, shard, channel)
}

// Webhook returns the webhook of channel's prefix document, or nil when
// the prefix has none (or no document, or channel's name is invalid). A
// prefix decided by a registered function gets the webhook of a document
// stored for the same prefix. The result is shared and must not be
// modified. It does not allocate.
func (r *Resolver) Webhook(channel string) *Webhook {
	prefix, ok := ChannelPrefix(channel)
	if !ok {
		return nil
	}
	e := (*r.entries.Load())[prefix]
	if e == nil || e.doc == nil {
		return nil
	}
	return e.doc.Webhook
}

// callFunc runs a registered function, turning its errors, panics and
// out-of-range values (timeout, max_users) into "does not exist" for this
// call.
func (r *Resolver) callFunc(fn ConfigFunc, channel string) (cfg *Config) {
	defer func() {
		if p := recover(); p != nil {
			r.log.Error("channel config function panicked", "channel", channel, "panic", p)
			cfg = nil
		}
	}()
	cfg, err := fn(channel)
	if err != nil {
		r.log.Warn("channel config function failed", "channel", channel, "err", err)
		return nil
	}
	if cfg != nil {
		if err := checkGoConfig(cfg); err != nil {
			r.log.Warn("channel config function returned an invalid config", "channel", channel, "err", err)
			return nil
		}
	}
	return cfg
}

// askCallback asks the callback about channel, making one request however
// many callers ask about the same uncached channel at once.
func (r *Resolver) askCallback(ctx context.Context, cb *Callback, shard *answerShard, channel string) (*Config, error) {
	shard.mu.Lock()
	if a, ok := shard.answers[channel]; ok && a.fresh(r.clock) {
		shard.mu.Unlock()
		return a.cfg, nil
	}
	f := shard.flights[channel]
	if f == nil {
		key := strings.Clone(channel)
		f = &callbackFlight{done: make(chan struct{})}
		shard.flights[key] = f
		shard.mu.Unlock()
		// Other callers share this request, so the caller's cancellation must
		// not fail it for them; the callback timeout still bounds it.
		r.fly(context.WithoutCancel(ctx), cb, shard, key, f)
		return f.cfg, nil
	}
	f.waiters++
	shard.mu.Unlock()
	select {
	case <-f.done:
		return f.cfg, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fly makes the request of flight f and publishes its answer.
func (r *Resolver) fly(ctx context.Context, cb *Callback, shard *answerShard, key string, f *callbackFlight) {
	cfg, err := r.requestConfig(ctx, cb.URL, key)
	shard.mu.Lock()
	delete(shard.flights, key)
	if err == nil && cb.CacheSeconds > 0 {
		expires := r.clock.Now().Add(time.Duration(cb.CacheSeconds) * time.Second)
		shard.storeLocked(key, cachedAnswer{cfg: cfg, expires: expires})
	}
	shard.mu.Unlock()
	if err != nil {
		r.log.Warn("channel config callback failed", "channel", key, "url", cb.URL, "err", err)
	}
	f.cfg = cfg
	close(f.done)
}

// callbackRequest is the body POSTed to a callback.
type callbackRequest struct {
	Channel string `json:"channel"`
}

// requestConfig POSTs {"channel": channel} to url: 200 with a config object
// gives the config, 404 gives (nil, nil), anything else an error.
func (r *Resolver) requestConfig(ctx context.Context, url, channel string) (*Config, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	body, err := json.Marshal(callbackRequest{Channel: channel})
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
		data, err := io.ReadAll(io.LimitReader(resp.Body, MaxConfigBytes+1))
		if err != nil {
			return nil, fmt.Errorf("%w: reading answer: %w", ErrUnavailable, err)
		}
		cfg, err := ParseConfig(data)
		if err != nil {
			return nil, fmt.Errorf("%w: bad answer: %w", ErrUnavailable, err)
		}
		return cfg, nil
	case http.StatusNotFound:
		// Drain a little so the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4096))
		return nil, nil
	}
	return nil, fmt.Errorf("%w: status %d", ErrUnavailable, resp.StatusCode)
}

// answerCache holds the answers known under one prefix document.
type answerCache struct {
	shards [resolverShards]answerShard
}

type answerShard struct {
	mu      sync.RWMutex
	limit   int // answers kept at most
	answers map[string]cachedAnswer
	flights map[string]*callbackFlight
}

// cachedAnswer is a known config; a nil cfg means "does not exist".
type cachedAnswer struct {
	cfg *Config
	// expires is zero for rule answers, valid as long as their document.
	expires time.Time
}

func (a cachedAnswer) fresh(c clock.Clock) bool {
	return a.expires.IsZero() || c.Now().Before(a.expires)
}

// callbackFlight is one callback request shared by concurrent callers.
type callbackFlight struct {
	done    chan struct{}
	cfg     *Config // set before done is closed
	waiters int     // callers besides the first; guarded by the shard lock
}

func newAnswerCache(perShard int) *answerCache {
	c := &answerCache{}
	for i := range c.shards {
		c.shards[i] = answerShard{
			limit:   perShard,
			answers: make(map[string]cachedAnswer),
			flights: make(map[string]*callbackFlight),
		}
	}
	return c
}

func (c *answerCache) shard(seed maphash.Seed, channel string) *answerShard {
	return &c.shards[maphash.String(seed, channel)%resolverShards]
}

func (s *answerShard) lookup(channel string, c clock.Clock) (*Config, bool) {
	s.mu.RLock()
	a, ok := s.answers[channel]
	s.mu.RUnlock()
	if !ok || !a.fresh(c) {
		return nil, false
	}
	return a.cfg, true
}

func (s *answerShard) store(key string, a cachedAnswer) {
	s.mu.Lock()
	s.storeLocked(key, a)
	s.mu.Unlock()
}

// storeLocked adds an answer, evicting an arbitrary one (map iteration order
// is random) when the shard is full: cheap, and good enough to bound memory.
func (s *answerShard) storeLocked(key string, a cachedAnswer) {
	if _, ok := s.answers[key]; !ok && len(s.answers) >= s.limit {
		for k := range s.answers {
			delete(s.answers, k)
			break
		}
	}
	s.answers[key] = a
}

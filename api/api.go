// Package api is the public HTTP layer of a presence node: the Discourse-style
// presence endpoints (get, update, Server-Sent Events subscribe), the
// server-side endpoints of the application's backend (/server/), the admin
// endpoints for prefix documents and cluster state, health, metrics and the
// development helpers. It authenticates callers, validates and bounds every
// input, rate-limits updates, and maps errors to HTTP statuses in one place;
// presence logic itself lives behind presence.Service.
package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"runtime"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/jwtkeys"
	"github.com/presencehq/presence/presence"
)

// Defaults applied by New to zero-valued limits.
const (
	DefaultMaxBodyBytes         = 64 << 10
	DefaultMaxAdminBodyBytes    = presence.MaxPrefixDocumentBytes
	DefaultRateBurst            = 20
	DefaultRateRefillPerSecond  = 2.0
	DefaultRateLimitMaxUsers    = 100_000
	DefaultKeepAlive            = 25 * time.Second
	DefaultMaxSubscribeChannels = presence.MaxSubscribeChannels
	DefaultDevTokenTTL          = 24 * time.Hour
	// Open SSE streams of a node (contract: 20 per signed-in user, 100
	// anonymous ones per client address, 100,000 in all).
	DefaultMaxStreamsPerUser = 20
	DefaultMaxStreamsPerIP   = 100
	DefaultMaxStreams        = 100_000
	// DefaultTokenCacheSize is as many verified tokens as the rate
	// limiter tracks users: a node serving that many active users (each
	// with one token) answers their calls without verifying again.
	DefaultTokenCacheSize = DefaultRateLimitMaxUsers
)

// Rates of the log lines of refused streams (see refusedStreamLog).
const (
	refusedStreamLogPerSecond = 1
	refusedStreamLogBurst     = 10
)

// PrefixStore holds the admin prefix documents (Raft-backed in production).
type PrefixStore interface {
	// Put stores doc (canonical JSON) under prefix once it is committed.
	Put(ctx context.Context, prefix string, doc []byte) error
	// Delete removes prefix; an error wrapping presence.ErrNotFound when absent.
	Delete(ctx context.Context, prefix string) error
	// Get returns the document stored under prefix.
	Get(prefix string) ([]byte, bool)
	// List returns every stored document by prefix.
	List() map[string][]byte
}

// Member is one node of the cluster as /admin/cluster shows it.
type Member struct {
	Name  string `json:"name"`
	HTTP  string `json:"http"`
	State string `json:"state"`
}

// RaftInfo is the Raft view of /admin/cluster.
type RaftInfo struct {
	Leader  string   `json:"leader"`
	Servers []string `json:"servers"`
	// Voters are the servers with a vote; the others are non-voters.
	Voters []string `json:"voters"`
}

// ClusterInfo answers the cluster questions of the admin and health endpoints.
type ClusterInfo interface {
	// Members lists the known nodes.
	Members() []Member
	// Raft describes the Raft configuration and leader.
	Raft() RaftInfo
	// Owner returns the node owning channel and the nodes holding its replicas.
	Owner(channel string) (owner string, replicas []string)
	// Ready reports whether the node may serve traffic, with a reason when not.
	Ready() (bool, string)
}

// Config configures the HTTP layer. Service, Prefixes, Cluster, AdminToken
// and at least one way to verify user tokens (JWTSecrets, JWTPublicKeys or
// JWKS) are required; every other zero value takes the documented default.
type Config struct {
	// Service answers the presence endpoints.
	Service presence.Service
	// Prefixes stores the admin prefix documents.
	Prefixes PrefixStore
	// Cluster answers /admin/cluster, /admin/owner and /readyz.
	Cluster ClusterInfo
	// JWTSecrets verify HS256 user tokens: any of them may have signed a
	// token, so a new secret is added before the signer switches to it and
	// the old one removed after its tokens expired. In Dev mode the first
	// signs the tokens of /dev/token (Dev needs one).
	JWTSecrets [][]byte
	// JWTPublicKeys verify RS256, ES256 and EdDSA user tokens, whatever
	// their kid (see jwtkeys.ParsePEM).
	JWTPublicKeys []jwtkeys.Key
	// JWKS verifies RS256, ES256 and EdDSA user tokens with the key their
	// kid names in an identity provider's key set. Nil: none.
	JWKS *jwtkeys.Remote
	// JWTIssuer, when set, must equal a token's iss claim.
	JWTIssuer string
	// JWTAudience, when set, must be one of a token's aud values.
	JWTAudience string
	// AdminToken is the bearer token of /admin/*; it opens /server/* too.
	AdminToken string
	// ServiceTokens open /server/* (the application's backend), never
	// /admin/*: several during a rotation. Each must be non-empty and
	// differ from AdminToken. Empty: only the admin token opens /server/.
	ServiceTokens []string
	// CORSOrigins lists the browser origins allowed to call the API; "*"
	// allows any. Empty: no cross-origin access.
	CORSOrigins []string
	// Dev enables /dev/token, /dev/cluster, /dev/owner and the demo at "/".
	Dev bool
	// Clock tells time for tokens, rate limits, keepalives and latency.
	// Nil: the wall clock.
	Clock clock.Clock
	// Logger receives request failures. Nil: logs are discarded.
	Logger *slog.Logger
	// Registry is served at /metrics and receives the HTTP metrics. Nil: a
	// private registry holding only the HTTP metrics.
	Registry *prometheus.Registry
	// Client serves /presence-client.js and /presence-client.d.ts. Nil: 404.
	Client http.Handler
	// Demo serves the development demo app at "/" (Dev only). Nil: none.
	Demo http.Handler

	// MaxBodyBytes bounds every request body. Zero: DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxAdminBodyBytes bounds admin request bodies (prefix documents). Zero:
	// DefaultMaxAdminBodyBytes.
	MaxAdminBodyBytes int64
	// RateLimiter limits each user's /presence/update calls. Nil: a bucket
	// per user on this node, sized by the three fields below (a cluster
	// passes its cluster-wide limit, and they are not used).
	RateLimiter RateLimiter
	// RateBurst is the per-user bucket size of /presence/update. Zero: DefaultRateBurst.
	RateBurst int
	// RateRefillPerSecond refills the bucket. Zero: DefaultRateRefillPerSecond.
	RateRefillPerSecond float64
	// RateLimitMaxUsers bounds the limiter table. Zero: DefaultRateLimitMaxUsers.
	RateLimitMaxUsers int
	// KeepAlive is the period of SSE comment lines. Zero: DefaultKeepAlive.
	KeepAlive time.Duration
	// MaxSubscribeChannels bounds the channels of one stream. Zero:
	// DefaultMaxSubscribeChannels.
	MaxSubscribeChannels int
	// DevTokenTTL is the lifetime of /dev/token tokens. Zero: DefaultDevTokenTTL.
	DevTokenTTL time.Duration
	// TokenCacheSize bounds the verified user tokens remembered (about
	// 560 bytes each for a 250-byte token); a token missing from the cache
	// is verified again.
	// Zero: DefaultTokenCacheSize.
	TokenCacheSize int

	// MaxStreamsPerUser bounds the open SSE streams of one signed-in user
	// on this node. Zero: DefaultMaxStreamsPerUser.
	MaxStreamsPerUser int
	// MaxStreamsPerIP bounds the open anonymous SSE streams of one client
	// address (an IPv4 address or an IPv6 /64) on this node. Zero:
	// DefaultMaxStreamsPerIP.
	MaxStreamsPerIP int
	// MaxStreams bounds the open SSE streams of this node. Zero:
	// DefaultMaxStreams.
	MaxStreams int
	// TrustedProxies are the proxies and load balancers in front of the
	// node: a request from one of them is counted under the client address
	// its X-Forwarded-For header names. Empty: the peer is the client.
	TrustedProxies []netip.Prefix

	// StreamWriters is how many goroutines write the pooled SSE streams
	// (plain HTTP/1.1 on Linux; see ssepool.go). Zero: GOMAXPROCS.
	StreamWriters int
	// StreamPerRequest serves every SSE stream on its request's
	// goroutine, as over HTTP/2 and TLS, instead of pooling those of plain
	// HTTP/1.1 connections.
	StreamPerRequest bool
}

// withDefaults returns c with every zero optional field set to its default.
func (c Config) withDefaults() Config {
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	setDefault(&c.MaxBodyBytes, DefaultMaxBodyBytes)
	setDefault(&c.MaxAdminBodyBytes, DefaultMaxAdminBodyBytes)
	setDefault(&c.RateBurst, DefaultRateBurst)
	setDefault(&c.RateRefillPerSecond, DefaultRateRefillPerSecond)
	setDefault(&c.RateLimitMaxUsers, DefaultRateLimitMaxUsers)
	setDefault(&c.KeepAlive, DefaultKeepAlive)
	setDefault(&c.MaxSubscribeChannels, DefaultMaxSubscribeChannels)
	setDefault(&c.DevTokenTTL, DefaultDevTokenTTL)
	setDefault(&c.TokenCacheSize, DefaultTokenCacheSize)
	setDefault(&c.StreamWriters, runtime.GOMAXPROCS(0))
	setDefault(&c.MaxStreamsPerUser, DefaultMaxStreamsPerUser)
	setDefault(&c.MaxStreamsPerIP, DefaultMaxStreamsPerIP)
	setDefault(&c.MaxStreams, DefaultMaxStreams)
	return c
}

func setDefault[T int | int64 | float64 | time.Duration](v *T, def T) {
	if *v == 0 {
		*v = def
	}
}

// Validate reports the first missing dependency or out-of-range limit. Zero
// limits are valid (they mean the default).
func (c Config) Validate() error {
	switch {
	case c.Service == nil:
		return errors.New("api: Service is required")
	case c.Prefixes == nil:
		return errors.New("api: Prefixes is required")
	case c.Cluster == nil:
		return errors.New("api: Cluster is required")
	case len(c.JWTSecrets) == 0 && len(c.JWTPublicKeys) == 0 && c.JWKS == nil:
		return errors.New("api: JWTSecrets, JWTPublicKeys or JWKS is required")
	case c.Dev && len(c.JWTSecrets) == 0:
		return errors.New("api: Dev needs a JWT secret to sign its tokens")
	case c.AdminToken == "":
		return errors.New("api: AdminToken is required")
	case c.MaxBodyBytes < 0, c.MaxAdminBodyBytes < 0, c.RateBurst < 0, c.RateRefillPerSecond < 0, c.RateLimitMaxUsers < 0,
		c.KeepAlive < 0, c.MaxSubscribeChannels < 0, c.DevTokenTTL < 0, c.TokenCacheSize < 0,
		c.MaxStreamsPerUser < 0, c.MaxStreamsPerIP < 0, c.MaxStreams < 0, c.StreamWriters < 0:
		return errors.New("api: limits must not be negative")
	}
	for _, secret := range c.JWTSecrets {
		if len(secret) == 0 {
			return errors.New("api: empty JWT secret")
		}
	}
	for _, token := range c.ServiceTokens {
		switch token {
		case "":
			return errors.New("api: empty service token")
		case c.AdminToken:
			return errors.New("api: a service token equals the admin token (a service token must never open /admin/)")
		}
	}
	for _, o := range c.CORSOrigins {
		if o == "" {
			return errors.New("api: empty CORS origin")
		}
	}
	for _, p := range c.TrustedProxies {
		if !p.IsValid() {
			return errors.New("api: invalid trusted proxy prefix")
		}
	}
	return nil
}

// server holds the dependencies shared by the handlers.
type server struct {
	cfg     Config
	auth    *authenticator
	limiter RateLimiter
	metrics *httpMetrics
	log     *slog.Logger
	router  *mux.Router
	// payloads shares encoded messages between SSE streams.
	payloads *payloadCache
	// unavailable logs 503 answers at a bounded rate.
	unavailable *unavailableLog
	// streams counts open SSE streams against their limits.
	streams *streamLimiter
	// refusedStreams logs streams over a limit at a bounded rate.
	refusedStreams *refusedStreamLog
	// serviceTokens open /server/*.
	serviceTokens serviceTokens
	// pool serves the streams of plain HTTP/1.1 connections; nil where
	// the platform has no poller (every stream keeps its goroutine).
	pool *streamPool
	// closing is closed by Handler.Close: streams served on their
	// request's goroutine end.
	closing   chan struct{}
	closeOnce sync.Once
}

// Handler is the node's HTTP API. Close ends its streams.
type Handler struct {
	http.Handler
	s *server
}

// Close ends every open SSE stream, refuses new ones from then on and stops
// the goroutines that serve streams. Streams of hijacked connections are
// not known to http.Server, whose Shutdown does not wait for them: call
// Close with it. Safe to call more than once.
func (h *Handler) Close() {
	h.s.closeOnce.Do(func() { close(h.s.closing) })
	if h.s.pool != nil {
		h.s.pool.close()
	}
}

// New validates cfg and returns the node's HTTP handler.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	m, err := newHTTPMetrics(cfg.Registry)
	if err != nil {
		return nil, fmt.Errorf("api: metrics: %w", err)
	}
	limiter := cfg.RateLimiter
	if limiter == nil {
		if limiter, err = newNodeRateLimiter(cfg); err != nil {
			return nil, fmt.Errorf("api: rate limit: %w", err)
		}
	}
	s := &server{
		cfg:      cfg,
		auth:     newAuthenticator(cfg),
		limiter:  limiter,
		metrics:  m,
		log:      cfg.Logger,
		payloads: newPayloadCache(),

		unavailable: newUnavailableLog(cfg.Clock),
		streams:     newStreamLimiter(cfg.MaxStreamsPerUser, cfg.MaxStreamsPerIP, cfg.MaxStreams),
		refusedStreams: &refusedStreamLog{
			throttle: newLogThrottle(cfg.Clock, refusedStreamLogPerSecond, refusedStreamLogBurst),
		},
		serviceTokens: newServiceTokens(cfg.AdminToken, cfg.ServiceTokens),
		closing:       make(chan struct{}),
	}
	if !cfg.StreamPerRequest && pollerAvailable {
		s.pool = newStreamPool(cfg.Clock, cfg.KeepAlive, cfg.Logger, s.payloads, cfg.StreamWriters)
	}
	s.router = s.routes()
	var h http.Handler = http.HandlerFunc(s.dispatch)
	h = newCORS(cfg.CORSOrigins).wrap(h)
	h = cachePolicy(h)
	h = s.recoverer(h)
	h = s.metrics.instrument(h, cfg.Clock)
	return &Handler{Handler: h, s: s}, nil
}

// Paths of the presence endpoints, also their route templates.
const (
	pathGet       = "/presence/get"
	pathUpdate    = "/presence/update"
	pathSubscribe = "/presence/subscribe"
)

// dispatch serves the presence endpoints directly and everything else
// through the router. The presence endpoints carry nearly all the traffic;
// gorilla/mux would match them with regular expressions and copy the
// request twice to store route data they never read. A request the switch
// does not take (another path or method, a path needing cleaning) gets the
// router's answer, so behaviour is the same.
func (s *server) dispatch(w http.ResponseWriter, r *http.Request) {
	var h http.HandlerFunc
	switch r.URL.Path {
	case pathUpdate:
		if r.Method == http.MethodPost {
			h = s.handleUpdate
		}
	case pathGet:
		if r.Method == http.MethodGet {
			h = s.handleGet
		}
	case pathSubscribe:
		if r.Method == http.MethodGet {
			h = s.handleSubscribe
		}
	}
	if h == nil {
		s.router.ServeHTTP(w, r)
		return
	}
	if sw, ok := w.(*statusWriter); ok {
		sw.route = r.URL.Path
	}
	h(w, r)
}

// routes registers every endpoint on a gorilla/mux router.
func (s *server) routes() *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, fmt.Errorf("%w: no such endpoint", presence.ErrNotFound))
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		s.writeError(w, req, errMethodNotAllowed)
	})
	r.Use(labelRoute)

	r.HandleFunc(pathGet, s.handleGet).Methods(http.MethodGet)
	r.HandleFunc(pathUpdate, s.handleUpdate).Methods(http.MethodPost)
	r.HandleFunc(pathSubscribe, s.handleSubscribe).Methods(http.MethodGet)

	r.Handle("/admin/prefixes", s.admin(s.handleListPrefixes)).Methods(http.MethodGet)
	r.Handle("/admin/prefixes/{prefix}", s.admin(s.handlePutPrefix)).Methods(http.MethodPut)
	r.Handle("/admin/prefixes/{prefix}", s.admin(s.handleGetPrefix)).Methods(http.MethodGet)
	r.Handle("/admin/prefixes/{prefix}", s.admin(s.handleDeletePrefix)).Methods(http.MethodDelete)
	r.Handle("/admin/cluster", s.admin(s.handleCluster)).Methods(http.MethodGet)
	r.Handle("/admin/owner", s.admin(s.handleOwner)).Methods(http.MethodGet)

	s.serverRoutes(r)

	r.HandleFunc("/healthz", s.handleHealthz).Methods(http.MethodGet, http.MethodHead)
	r.HandleFunc("/readyz", s.handleReadyz).Methods(http.MethodGet, http.MethodHead)
	r.Handle("/metrics", promhttp.HandlerFor(s.cfg.Registry, promhttp.HandlerOpts{})).Methods(http.MethodGet)
	r.Handle("/openapi.json", openAPIHandler()).Methods(http.MethodGet, http.MethodHead)

	if s.cfg.Client != nil {
		r.Handle("/presence-client.js", s.cfg.Client).Methods(http.MethodGet, http.MethodHead)
		r.Handle("/presence-client.d.ts", s.cfg.Client).Methods(http.MethodGet, http.MethodHead)
	}
	if s.cfg.Dev {
		s.devRoutes(r)
	}
	return r
}

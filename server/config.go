package server

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"strings"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/cluster/autopilot"
	"github.com/presencehq/presence/cluster/membership"
)

// Defaults of the contract (CONTRACT.md section 1).
const (
	DefaultHTTPAddr        = "127.0.0.1:8080"
	DefaultGossipAddr      = "127.0.0.1:7946"
	DefaultRPCAddr         = "127.0.0.1:7947"
	DefaultBootstrapExpect = 1
	// DefaultShutdownTimeout bounds a graceful leave (the contract promises exit within 10 s).
	DefaultShutdownTimeout = 9 * time.Second
	// DefaultReapAfter is how long a dead member stays a Raft server before
	// the leader removes it: long enough for a crashed node to come back
	// without a configuration change.
	DefaultReapAfter = autopilot.DefaultReapAfter
	// DefaultMaxVoters caps the Raft voters (odd); further servers are
	// non-voters.
	DefaultMaxVoters = autopilot.DefaultMaxVoters
	// DefaultLeaderHold is how long an admin write waits for a Raft leader
	// (an election, a leader's departure) before answering 503.
	DefaultLeaderHold = 5 * time.Second
)

// Well-known secrets of --dev mode, printed at start. Never use them in production.
const (
	DevJWTSecret    = "dev-jwt-secret-not-for-production"
	DevAdminToken   = "dev-admin-token"
	DevServiceToken = "dev-service-token"
)

// ErrConfig marks an unusable configuration (the node exits with code 2).
var ErrConfig = errors.New("invalid configuration")

// Config is everything a node needs. Zero values are documented per field;
// Validate fills defaults and rejects what cannot work.
type Config struct {
	Name            string   // unique node name; required
	HTTPAddr        string   // public API bind; "" = DefaultHTTPAddr
	GossipAddr      string   // memberlist bind; "" = DefaultGossipAddr
	RPCAddr         string   // node-to-node bind (calls and Raft); "" = DefaultRPCAddr
	Advertise       string   // host others use to reach us; "" = the bind host
	Join            []string // gossip addresses or DNS names of existing members
	BootstrapExpect int      // servers to see before bootstrapping Raft; 0 = 1
	DataDir         string   // Raft data; required
	JWTSecrets      []string // HS256 secrets (rotation: any verifies); see Validate
	AdminToken      string   // bearer token for /admin (and /server); required unless Dev
	ServiceTokens   []string // bearer tokens for /server only (rotation: several); Dev adds DevServiceToken
	ClusterKey      string   // base64 keys of 16, 24 or 32 bytes, comma-separated, the first primary; "" = none
	CORSOrigins     []string // origins allowed to call the API; Dev adds "*"
	Dev             bool     // development mode (demo prefix, /dev/token, demo page)

	// JWTPublicKeyFiles are PEM files of public keys that verify RS256,
	// ES256 and EdDSA user tokens (see jwtkeys.ParsePEM).
	JWTPublicKeyFiles []string
	// JWKSURL serves an identity provider's JWK Set, whose keys verify
	// RS256, ES256 and EdDSA user tokens by kid. https, or http to a
	// loopback host or in Dev mode. "" = none.
	JWKSURL string
	// JWTIssuer and JWTAudience, when set, must match a token's iss and aud.
	JWTIssuer   string
	JWTAudience string

	// HTTPTLSCert and HTTPTLSKey are PEM files of the public API's
	// certificate (chain) and key: set both to serve HTTPS, neither for
	// plain HTTP. ReloadTLS reads them again.
	HTTPTLSCert string
	HTTPTLSKey  string

	// TLSCert, TLSKey and TLSCA are PEM files (the node's certificate, its
	// key, the cluster's CA certificates): set all three to make every
	// node-to-node connection mutual TLS 1.3, none for no TLS. TLS does not
	// cover gossip (UDP), so it needs ClusterKey too. ReloadTLS reads them
	// again.
	TLSCert, TLSKey, TLSCA string

	// Open SSE streams on this node: per signed-in user, per anonymous
	// client address, and in all. 0 = the api.DefaultMaxStreams* value.
	MaxStreamsPerUser int
	MaxStreamsPerIP   int
	MaxStreams        int
	// TrustedProxies lists the addresses or CIDR prefixes of the proxies
	// and load balancers in front of the node, whose X-Forwarded-For
	// header names the client of an anonymous stream. Empty: none.
	TrustedProxies []string

	// ReapAfter is how long a dead member stays a Raft server before the
	// leader removes it (one that left is removed at once); 0 =
	// DefaultReapAfter.
	ReapAfter time.Duration
	// MaxVoters caps the Raft voters; it must be odd. Servers beyond it are
	// non-voters, promoted when a voter goes. 0 = DefaultMaxVoters.
	MaxVoters int
	// LeaderHold bounds how long an admin write waits for a Raft leader
	// before failing with 503; 0 = DefaultLeaderHold.
	LeaderHold time.Duration
	// HoldTimeout bounds how long a presence request entering this node
	// waits for its channels' new owner during a view change (a node
	// killed, paused, joining or leaving) before failing with 503; 0 =
	// router.DefaultHoldTimeout (10 s), negative = no wait.
	HoldTimeout time.Duration
	// MaxHeldRequests bounds the requests waiting so at once; beyond it a
	// request that meets a view change fails at once with 503. 0 =
	// router.DefaultMaxHeld.
	MaxHeldRequests int

	// DisableReplication turns off the copy of every channel on its ring
	// replica (router.Config.Replication), which is what lets a channel
	// survive its owner's crash. For benchmarks and tests of the bare path.
	DisableReplication bool

	// Resolver looks the --join host names up; nil = net.DefaultResolver.
	Resolver membership.Resolver

	// FastTimings tightens Raft and the node's own retry timings for tests.
	FastTimings bool
	// FastGossip selects memberlist timings that declare a stopped node dead
	// within about two seconds, for tests that kill nodes. They suit an idle
	// machine: under heavy load (the race detector on two cores) members
	// falsely suspect each other and channels move for nothing. False: LAN
	// timings, a dead node detected in about five seconds.
	FastGossip bool
	Clock      clock.Clock  // nil = clock.Real
	Logger     *slog.Logger // nil = slog.Default()
}

// Validate fills defaults and checks the configuration.
func (c *Config) Validate() error {
	if c.Name == "" {
		return fmt.Errorf("%w: --name is required", ErrConfig)
	}
	if c.Dev {
		if len(c.JWTSecrets) == 0 {
			c.JWTSecrets = []string{DevJWTSecret}
		}
		if c.AdminToken == "" {
			c.AdminToken = DevAdminToken
		}
		if len(c.ServiceTokens) == 0 && c.AdminToken != DevServiceToken {
			c.ServiceTokens = []string{DevServiceToken}
		}
		if len(c.CORSOrigins) == 0 {
			c.CORSOrigins = []string{"*"}
		}
	}
	if err := c.validateTokens(); err != nil {
		return err
	}
	if c.AdminToken == "" {
		return fmt.Errorf("%w: --admin-token (or PRESENCE_ADMIN_TOKEN) is required unless --dev", ErrConfig)
	}
	for _, t := range c.ServiceTokens {
		switch t {
		case "":
			return fmt.Errorf("%w: --service-tokens: empty token", ErrConfig)
		case c.AdminToken:
			return fmt.Errorf("%w: --service-tokens: a service token equals --admin-token (a service token must never open /admin/)", ErrConfig)
		}
	}
	if _, _, err := c.ClusterKeys(); err != nil {
		return err
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	defaults := []struct {
		field *string
		def   string
	}{{&c.HTTPAddr, DefaultHTTPAddr}, {&c.GossipAddr, DefaultGossipAddr}, {&c.RPCAddr, DefaultRPCAddr}}
	for _, d := range defaults {
		if *d.field == "" {
			*d.field = d.def
		}
		if _, _, err := net.SplitHostPort(*d.field); err != nil {
			return fmt.Errorf("%w: address %q: %v", ErrConfig, *d.field, err)
		}
	}
	if c.BootstrapExpect == 0 {
		c.BootstrapExpect = DefaultBootstrapExpect
	}
	if c.BootstrapExpect < 1 {
		return fmt.Errorf("%w: --bootstrap-expect must be at least 1", ErrConfig)
	}
	if c.DataDir == "" {
		return fmt.Errorf("%w: --data-dir is required", ErrConfig)
	}
	if (c.HTTPTLSCert == "") != (c.HTTPTLSKey == "") {
		return fmt.Errorf("%w: --http-tls-cert and --http-tls-key go together", ErrConfig)
	}
	if c.MaxStreamsPerUser < 0 || c.MaxStreamsPerIP < 0 || c.MaxStreams < 0 {
		return fmt.Errorf("%w: stream limits must not be negative", ErrConfig)
	}
	if c.MaxHeldRequests < 0 {
		return fmt.Errorf("%w: --max-held-requests must not be negative", ErrConfig)
	}
	if _, err := c.trustedProxyPrefixes(); err != nil {
		return err
	}
	if c.ReapAfter < 0 || c.LeaderHold < 0 {
		return fmt.Errorf("%w: negative reap or leader hold time", ErrConfig)
	}
	if c.ReapAfter == 0 {
		c.ReapAfter = DefaultReapAfter
	}
	if c.MaxVoters == 0 {
		c.MaxVoters = DefaultMaxVoters
	}
	if c.MaxVoters < 1 || c.MaxVoters%2 == 0 {
		return fmt.Errorf("%w: --max-voters must be odd (1, 3, 5, 7...), got %d", ErrConfig, c.MaxVoters)
	}
	if c.LeaderHold == 0 {
		c.LeaderHold = DefaultLeaderHold
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// ClusterKeys decodes the cluster keys: the primary key, which encrypts
// and proves, then the keys also accepted from other nodes while the key
// is rotated. Both are empty when no key is set.
func (c *Config) ClusterKeys() (primary []byte, accepted [][]byte, err error) {
	if c.ClusterKey == "" {
		return nil, nil, nil
	}
	for i, s := range strings.Split(c.ClusterKey, ",") {
		key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
		if err != nil {
			return nil, nil, fmt.Errorf("%w: --cluster-key: key %d is not base64: %v", ErrConfig, i+1, err)
		}
		if n := len(key); n != 16 && n != 24 && n != 32 {
			return nil, nil, fmt.Errorf("%w: --cluster-key: key %d must decode to 16, 24 or 32 bytes, got %d", ErrConfig, i+1, n)
		}
		if i == 0 {
			primary = key
		} else {
			accepted = append(accepted, key)
		}
	}
	return primary, accepted, nil
}

// validateTokens checks the ways user tokens are verified: at least one,
// no empty secret, a JWKS URL fetched over https (plain http would let
// anyone on the path substitute keys, and so sign in as anyone) unless it
// is on this host or the node is a dev node.
func (c *Config) validateTokens() error {
	if len(c.JWTSecrets) == 0 && len(c.JWTPublicKeyFiles) == 0 && c.JWKSURL == "" {
		return fmt.Errorf("%w: --jwt-secret, --jwt-public-keys or --jwks-url (or PRESENCE_JWT_SECRET, ...) is required unless --dev", ErrConfig)
	}
	for _, s := range c.JWTSecrets {
		if s == "" {
			return fmt.Errorf("%w: --jwt-secret: empty secret", ErrConfig)
		}
	}
	if c.JWKSURL == "" {
		return nil
	}
	u, err := url.Parse(c.JWKSURL)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return fmt.Errorf("%w: --jwks-url %q is not an absolute https URL", ErrConfig, c.JWKSURL)
	}
	if u.Scheme == "http" && !c.Dev && !loopbackHost(u.Hostname()) {
		return fmt.Errorf("%w: --jwks-url must use https (http only to a loopback host, or with --dev)", ErrConfig)
	}
	return nil
}

// validateTLS checks that the TLS files come together, and with a cluster
// key: memberlist's gossip (UDP) cannot run over TLS, and without the key
// anyone reaching the gossip port could join and be given channels.
func (c *Config) validateTLS() error {
	set := 0
	for _, f := range []string{c.TLSCert, c.TLSKey, c.TLSCA} {
		if f != "" {
			set++
		}
	}
	switch {
	case set == 0:
		return nil
	case set < 3:
		return fmt.Errorf("%w: --tls-cert, --tls-key and --tls-ca go together", ErrConfig)
	case c.ClusterKey == "":
		return fmt.Errorf("%w: --tls-* needs --cluster-key too: TLS covers the node-to-node TCP connections, "+
			"the cluster key encrypts and authenticates gossip (UDP), which TLS cannot", ErrConfig)
	}
	return nil
}

// loopbackHost reports whether host names this machine.
func loopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	addr, err := netip.ParseAddr(host)
	return err == nil && addr.Unmap().IsLoopback()
}

// trustedProxyPrefixes parses TrustedProxies: each an address (a prefix of
// its full length) or a CIDR prefix.
func (c *Config) trustedProxyPrefixes() ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(c.TrustedProxies))
	for _, s := range c.TrustedProxies {
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		addr, err := netip.ParseAddr(s)
		if err != nil {
			return nil, fmt.Errorf("%w: --trusted-proxies: %q is neither an IP address nor a CIDR prefix", ErrConfig, s)
		}
		addr = addr.Unmap()
		out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
	}
	return out, nil
}

// PeerTLS reports whether node-to-node connections use TLS.
func (c *Config) PeerTLS() bool { return c.TLSCert != "" }

// advertised returns the address others use for a bind address: the bind
// port on the Advertise host when set.
func (c *Config) advertised(bind string) string {
	if c.Advertise == "" {
		return bind
	}
	_, port, _ := net.SplitHostPort(bind)
	return net.JoinHostPort(c.Advertise, port)
}

// timings are the node's own periods and bounds; FastTimings shrinks them
// for in-process tests, along with Raft's.
type timings struct {
	joinMin, joinMax time.Duration // backoff between join attempts
	tick             time.Duration // loop period: bootstrap retries, reaping
	statusCall       time.Duration // bounds one bootstrap status query
	leave            time.Duration // bounds the gossip of a graceful leave
	retryMin         time.Duration // first pause of a held admin write
}

func newTimings(fast bool) timings {
	if fast {
		return timings{
			joinMin: 50 * time.Millisecond, joinMax: time.Second,
			tick: 200 * time.Millisecond, statusCall: time.Second, leave: time.Second, retryMin: 20 * time.Millisecond,
		}
	}
	return timings{
		joinMin: 200 * time.Millisecond, joinMax: 5 * time.Second,
		tick: time.Second, statusCall: 2 * time.Second, leave: 2 * time.Second, retryMin: 50 * time.Millisecond,
	}
}

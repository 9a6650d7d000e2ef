// Package server assembles a cluster node: the node-to-node transport,
// memberlist membership, the Raft store of prefix documents, the config
// resolver, the presence engine behind the router, and the HTTP API.
// cmd/node parses flags into a Config and runs a Server; tests start
// several in one process (internal/testcluster).
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/cluster/autopilot"
	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/cluster/peertls"
	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/jwtkeys"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router"
	"github.com/presencehq/presence/tlscert"
	"github.com/presencehq/presence/web"
	"github.com/presencehq/presence/webhook"
)

// DemoPrefixDocument is the configuration of the "demo" prefix in --dev mode:
// counters are count-only, everything else is public.
const DemoPrefixDocument = `{"rules": [
  {"match": "/demo/count/.+", "config": {"public": true, "count_only": true}},
  {"match": "/demo/.+", "config": {"public": true}}
]}`

// Server is one running node.
type Server struct {
	cfg      Config
	log      *slog.Logger
	timings  timings
	registry *prometheus.Registry
	resolver *presence.Resolver
	store    *raftstore.Store
	pilot    *autopilot.Autopilot // the Raft configuration, from membership
	engine   *presence.Engine
	webhooks *webhook.Dispatcher

	transport *transport.Transport
	peerTLS   *peertls.Material // node-to-node TLS files; nil without TLS
	opened    atomic.Bool       // every backend built: transport handlers may use them
	rpcAddr   string            // advertised transport address, also Raft's
	self      router.Member
	router    *router.Router
	routerRef atomic.Pointer[router.Router] // read by transport handlers, which may run before New returns
	presence  *presence.Backend             // the server side's API over the router (Presence)
	mlMu      sync.Mutex
	ml        *membership.Membership // set once gossip starts; see membership()
	members   *memberTable
	handler   http.Handler
	api       *api.Handler // handler's API, whose Close ends the streams http.Server does not track

	// Lifetime: ctx ends the background loops and held writes; streams ends
	// the SSE streams at shutdown.
	ctx        context.Context
	cancel     context.CancelFunc
	streams    context.Context
	endStreams context.CancelFunc
	wg         sync.WaitGroup
	started    atomic.Bool // membership running
	joined     atomic.Bool // another member seen
	draining   atomic.Bool // shutting down: no new streams, not ready

	startedAt    time.Time       // this run's incarnation, announced once serving
	meta         membership.Meta // gossiped metadata, without the incarnation
	configLoaded atomic.Bool     // the prefix documents caught up with the leader's
	freeze       freezeWatch     // detects that the process was frozen (resume.go)

	httpSrv   *http.Server
	httpTLS   *tlscert.KeyPair // the public API's certificate; nil: plain HTTP
	jwtKeys   []jwtkeys.Key    // public keys of user tokens, from files
	jwks      *jwtkeys.Remote  // the remote key set of user tokens; nil: none
	listener  net.Listener
	serveDone chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// New builds a node from cfg: it listens on the node-to-node transport
// address, which also carries Raft, and opens the Raft store, but neither
// serves HTTP nor gossips until Start.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{
		cfg:       cfg,
		log:       cfg.Logger.With("node", cfg.Name),
		timings:   newTimings(cfg.FastTimings),
		registry:  prometheus.NewRegistry(),
		members:   newMemberTable(cfg.Name),
		freeze:    freezeWatch{threshold: freezeThreshold, quiet: resumeQuiet},
		startedAt: time.Now(),
	}
	if cfg.HTTPTLSCert != "" {
		kp, err := tlscert.LoadKeyPair(cfg.HTTPTLSCert, cfg.HTTPTLSKey)
		if err != nil {
			return nil, fmt.Errorf("%w: --http-tls-cert/--http-tls-key: %v", ErrConfig, err)
		}
		s.httpTLS = kp
	}
	if err := s.loadTokenKeys(); err != nil {
		return nil, err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.streams, s.endStreams = context.WithCancel(context.Background())
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.resolver = presence.NewResolver(presence.ResolverConfig{Clock: cfg.Clock, Logger: s.log})
	if err := s.open(); err != nil {
		s.cancel()
		s.endStreams()
		return nil, errors.Join(err, s.closeBackends(context.Background()))
	}
	return s, nil
}

// open builds the components in dependency order; on error, closeBackends
// releases whatever was built.
func (s *Server) open() error {
	if err := claimDataDir(s.cfg.DataDir, s.cfg.Name); err != nil {
		return err
	}
	if err := s.openTransport(); err != nil {
		return err
	}
	if err := s.openStore(); err != nil {
		return err
	}
	s.registry.MustRegister(newRaftCollector(s.store))
	if err := s.newAutopilot(); err != nil {
		return err
	}
	s.self = router.Member{Name: s.cfg.Name, RPCAddr: s.rpcAddr}
	metrics := presence.NewMetrics(s.registry)
	pub := router.NewPublisher()
	var err error
	if s.webhooks, err = webhook.New(webhook.Config{
		Webhooks: s.resolver.Webhook,
		// The engine is made next; a channel acknowledges only once it
		// has published, so after that.
		Acknowledge: func(channel string, id int64) error { return s.engine.Acknowledge(channel, id) },
		Clock:       s.cfg.Clock,
		Logger:      s.log,
		Registry:    s.registry,
	}); err != nil {
		return err
	}
	if s.engine, err = presence.NewEngine(presence.EngineConfig{
		Clock:      s.cfg.Clock,
		Logger:     s.log,
		Configs:    configGate{resolver: s.resolver, loaded: &s.configLoaded},
		Metrics:    metrics,
		Publisher:  pub,
		Replicator: pub,
		Deliveries: s.webhooks,
	}); err != nil {
		return err
	}
	if s.router, err = router.New(router.Config{
		Self:      s.self,
		Engine:    s.engine,
		Publisher: pub,
		Transport: s.transport,
		Webhooks:  s.webhooks,
		Clock:     s.cfg.Clock,
		Logger:    s.log,
		Registry:  s.registry,
		Metrics:   metrics,

		Replication: !s.cfg.DisableReplication,
		HoldTimeout: s.cfg.HoldTimeout,
		MaxHeld:     s.cfg.MaxHeldRequests,
		Serving:     s.serving,
	}); err != nil {
		return err
	}
	s.routerRef.Store(s.router)
	s.presence = presence.NewBackend(s.router)
	if err := s.buildHandler(); err != nil {
		return err
	}
	s.opened.Store(true)
	return nil
}

// serving reports whether a presence request that meets a view change may
// wait here for the channel's new owner: the node joined, its prefix
// documents are loaded and it is not shutting down. A known Raft leader is
// not required: losing the leader (it may be the node that just died) is
// part of the view change, and presence never goes through Raft.
func (s *Server) serving() bool {
	resuming, _ := s.freeze.resumingNow()
	return s.configLoaded.Load() && !s.draining.Load() && !resuming && (len(s.cfg.Join) == 0 || s.joined.Load())
}

// openTransport listens for node-to-node connections: calls and Raft,
// with TLS and the cluster key as configured.
func (s *Server) openTransport() error {
	key, accepted, _ := s.cfg.ClusterKeys() // checked by Validate
	cfg := transport.Config{
		BindAddr:   s.cfg.RPCAddr,
		Key:        key,
		AcceptKeys: accepted,
		Handler:    s.handleRPC,
		Errors:     transportErrors(),
		Logger:     s.log,
	}
	if s.cfg.PeerTLS() {
		m, err := peertls.Load(peertls.Files{Cert: s.cfg.TLSCert, Key: s.cfg.TLSKey, CA: s.cfg.TLSCA})
		if err != nil {
			return fmt.Errorf("%w: --tls-cert, --tls-key, --tls-ca: %v", ErrConfig, err)
		}
		s.peerTLS = m
		cfg.ServerTLS, cfg.ClientTLS = m.ServerConfig(), m.ClientConfig()
	}
	tr, err := transport.Listen(cfg)
	if err != nil {
		return fmt.Errorf("rpc transport: %w", err)
	}
	s.transport = tr
	s.rpcAddr = s.cfg.advertised(tr.Addr())
	if host, _, _ := net.SplitHostPort(s.rpcAddr); net.ParseIP(host) != nil && net.ParseIP(host).IsUnspecified() {
		return fmt.Errorf("%w: --rpc %s listens on every interface: set --advertise to the host or IP "+
			"the other nodes reach this one at", ErrConfig, s.cfg.RPCAddr)
	}
	s.logNodeSecurity(key != nil)
	return nil
}

// logNodeSecurity says at start how node-to-node traffic is protected.
func (s *Server) logNodeSecurity(keyed bool) {
	switch {
	case s.peerTLS != nil:
		leaf := s.peerTLS.Certificate()
		s.log.Info("node-to-node traffic: mutual TLS 1.3 and the cluster key; gossip encrypted with the cluster key",
			"certificate", leaf.Subject.CommonName, "issuer", leaf.Issuer.CommonName,
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	case keyed:
		s.log.Info("node-to-node traffic and gossip: encrypted and authenticated with the cluster key")
	case !s.cfg.Dev:
		s.log.Warn("node-to-node traffic and gossip are neither authenticated nor encrypted: " +
			"anyone who reaches the rpc and gossip ports can join and read or change presence; set --cluster-key")
	}
}

// openStore opens the Raft store over the transport's streams; a lone
// server (--bootstrap-expect 1, no --join) bootstraps itself on its first
// start.
func (s *Server) openStore() error {
	store, err := raftstore.Open(raftstore.Config{
		NodeID:        s.cfg.Name,
		Streams:       s.transport.Streams(),
		Addr:          s.rpcAddr,
		ServerAddress: s.raftAddress,
		DataDir:       s.cfg.DataDir,
		Bootstrap:     s.cfg.BootstrapExpect == 1 && len(s.cfg.Join) == 0,
		Logger:        s.log,
		Fast:          s.cfg.FastTimings,
		OnChange:      s.applyDocument,
	})
	if err != nil {
		return fmt.Errorf("raft store: %w", err)
	}
	s.store = store
	return nil
}

// ReloadTLS reads every TLS file of the node again (cmd/node calls it on
// SIGHUP): the public API's certificate and the node-to-node certificate
// and CAs. New connections use the new files, established ones keep
// theirs. Files that do not load leave the previous ones in use, and the
// error is returned.
func (s *Server) ReloadTLS() error {
	if s.httpTLS == nil && s.peerTLS == nil {
		s.log.Info("no TLS files to reload (neither --http-tls-* nor --tls-* is set)")
		return nil
	}
	return errors.Join(s.reloadHTTPTLS(), s.reloadPeerTLS())
}

// reloadPeerTLS reads the node-to-node TLS files again. Without TLS it does
// nothing.
func (s *Server) reloadPeerTLS() error {
	if s.peerTLS == nil {
		return nil
	}
	if err := s.peerTLS.Reload(); err != nil {
		s.log.Error("node-to-node TLS files not reloaded; the previous ones stay in use", "err", err)
		return err
	}
	leaf := s.peerTLS.Certificate()
	s.log.Info("node-to-node TLS files reloaded", "certificate", leaf.Subject.CommonName,
		"issuer", leaf.Issuer.CommonName, "not_after", leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// buildHandler builds the HTTP API over the router, the prefix store and
// the cluster view.
func (s *Server) buildHandler() error {
	proxies, _ := s.cfg.trustedProxyPrefixes() // checked by Validate
	secrets := make([][]byte, len(s.cfg.JWTSecrets))
	for i, secret := range s.cfg.JWTSecrets {
		secrets[i] = []byte(secret)
	}
	apiCfg := api.Config{
		Service:       s.router,
		RateLimiter:   s.router.Limiter(),
		Prefixes:      prefixStore{s},
		Cluster:       clusterInfo{s},
		JWTSecrets:    secrets,
		JWTPublicKeys: s.jwtKeys,
		JWTIssuer:     s.cfg.JWTIssuer,
		JWTAudience:   s.cfg.JWTAudience,
		AdminToken:    s.cfg.AdminToken,
		ServiceTokens: s.cfg.ServiceTokens,
		CORSOrigins:   s.cfg.CORSOrigins,
		Dev:           s.cfg.Dev,
		Clock:         s.cfg.Clock,
		Logger:        s.log,
		Registry:      s.registry,
		Client:        web.ClientHandler(),

		MaxStreamsPerUser: s.cfg.MaxStreamsPerUser,
		MaxStreamsPerIP:   s.cfg.MaxStreamsPerIP,
		MaxStreams:        s.cfg.MaxStreams,
		TrustedProxies:    proxies,
	}
	if s.jwks != nil {
		apiCfg.JWKS = s.jwks // a typed nil would read as "configured"
	}
	if s.cfg.Dev {
		apiCfg.Demo = web.DemoHandler()
	}
	h, err := api.New(apiCfg)
	if err != nil {
		return err
	}
	s.api = h
	s.handler = s.guardResume(s.guardStreams(h))
	return nil
}

// applyDocument runs inside Raft's FSM apply: it only parses and swaps.
func (s *Server) applyDocument(prefix string, raw []byte) {
	if err := s.resolver.SetDocument(prefix, raw); err != nil {
		s.log.Error("stored prefix document rejected", "prefix", prefix, "err", err)
	}
}

// RegisterPrefix lets a Go program embedding the node decide the
// configuration of a prefix's channels with a function (nil = no channel).
// Every node of the cluster must register it: the owner of a channel
// resolves its config.
func (s *Server) RegisterPrefix(prefix string, fn presence.ConfigFunc) error {
	return s.resolver.Register(prefix, fn)
}

// Presence returns the server side's presence API for the Go program
// embedding the node: Present, Leave, State, UserIDs, Count, Can and Clear
// as Discourse's Ruby PresenceChannel names them, for any channel of the
// cluster (forwarded to its owner like every call of the HTTP API, which
// /server/ serves over the same operations). The caller is trusted: it
// acts for the user it names, reads who is present in count-only channels
// and is not rate limited. Calls made before the node is Ready may fail
// with presence.ErrUnavailable; retry them.
func (s *Server) Presence() *presence.Backend { return s.presence }

// Ready reports whether the node may serve traffic, with the reason when
// not (what GET /readyz answers): joined, a Raft leader known, its prefix
// documents loaded and no hand-off pending.
func (s *Server) Ready() (bool, string) { return clusterInfo{s}.Ready() }

// Start serves HTTP, starts gossiping, joins the --join addresses in the
// background and runs the membership and Raft loops until Shutdown or Kill.
// The node takes channels once its prefix documents caught up (awaitConfig).
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	s.listener = ln
	s.httpSrv = s.newHTTPServer()
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		var err error
		if s.httpTLS != nil {
			err = s.httpSrv.ServeTLS(ln, "", "") // the certificate comes from TLSConfig
		} else {
			err = s.httpSrv.Serve(ln)
		}
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	if err := s.startGossip(); err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	s.wg.Add(3)
	go s.awaitConfig()
	go func() {
		defer s.wg.Done()
		s.pilot.Run(s.ctx)
	}()
	go s.watchFreezes()
	if s.jwks != nil {
		go s.prefetchJWKS()
	}
	s.log.Info("serving", "http", ln.Addr().String(), "https", s.httpTLS != nil, "rpc", s.rpcAddr, "peer_tls", s.peerTLS != nil,
		"bootstrap_expect", s.cfg.BootstrapExpect, "data_dir", s.cfg.DataDir)
	if s.cfg.Dev {
		s.wg.Add(1)
		go s.seedDemoPrefix(ctx)
	}
	return nil
}

// seedDemoPrefix stores the demo prefix once a leader exists, unless an
// operator already configured "demo". Only the leader writes it.
func (s *Server) seedDemoPrefix(ctx context.Context) {
	defer s.wg.Done()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	if err := s.store.WaitForLeader(ctx); err != nil {
		s.log.Warn("demo prefix not seeded: no leader", "err", err)
		return
	}
	if _, ok := s.store.Get("demo"); ok || !s.store.IsLeader() {
		return
	}
	doc, err := presence.ParsePrefixDocument([]byte(DemoPrefixDocument))
	if err != nil {
		s.log.Error("demo prefix document invalid", "err", err)
		return
	}
	if err := s.store.Put(ctx, "demo", doc.Bytes()); err != nil {
		s.log.Warn("demo prefix not seeded", "err", err)
	}
}

// Name is the node's name.
func (s *Server) Name() string { return s.cfg.Name }

// HTTPAddr is the address the API listens on (useful with port 0).
func (s *Server) HTTPAddr() string {
	if s.listener == nil {
		return s.cfg.HTTPAddr
	}
	return s.listener.Addr().String()
}

// RPCAddr is the node-to-node transport address, which also carries Raft
// (useful with port 0).
func (s *Server) RPCAddr() string { return s.transport.Addr() }

// Handler returns the HTTP API handler (for in-process tests).
func (s *Server) Handler() http.Handler { return s.handler }

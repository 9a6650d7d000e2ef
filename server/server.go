// Package server assembles a node: the Raft store of prefix documents, the
// config resolver, the presence engine and the HTTP API. cmd/node parses
// flags into a Config and runs a Server; tests start several in one process.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/cluster"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/web"
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
	registry *prometheus.Registry
	resolver *presence.Resolver
	store    *cluster.Store
	engine   *presence.Engine
	handler  http.Handler

	httpSrv    *http.Server
	listener   net.Listener
	cancelBase context.CancelFunc
	serveDone  chan struct{}
	closeOnce  sync.Once
	closeErr   error
}

// New builds a node from cfg without starting to serve.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger.With("node", cfg.Name), registry: prometheus.NewRegistry()}
	s.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.resolver = presence.NewResolver(presence.ResolverConfig{Clock: cfg.Clock, Logger: s.log})
	store, err := cluster.OpenStore(cluster.StoreConfig{
		NodeID:        cfg.Name,
		BindAddr:      cfg.RaftAddr,
		AdvertiseAddr: cfg.advertised(cfg.RaftAddr),
		DataDir:       cfg.DataDir,
		Bootstrap:     cfg.BootstrapExpect == 1 && len(cfg.Join) == 0,
		Logger:        s.log,
		Fast:          cfg.FastTimings,
		OnChange:      s.applyDocument,
	})
	if err != nil {
		return nil, fmt.Errorf("raft store: %w", err)
	}
	s.store = store
	engine, err := presence.NewEngine(presence.EngineConfig{
		Clock:   cfg.Clock,
		Logger:  s.log,
		Configs: s.resolver,
		Metrics: presence.NewMetrics(s.registry),
	})
	if err != nil {
		_ = store.Close()
		return nil, err
	}
	s.engine = engine
	apiCfg := api.Config{
		Service:     engine,
		Prefixes:    prefixStore{store},
		Cluster:     localCluster{s},
		JWTSecret:   []byte(cfg.JWTSecret),
		AdminToken:  cfg.AdminToken,
		CORSOrigins: cfg.CORSOrigins,
		Dev:         cfg.Dev,
		Clock:       cfg.Clock,
		Logger:      s.log,
		Registry:    s.registry,
		Client:      web.ClientHandler(),
	}
	if cfg.Dev {
		apiCfg.Demo = web.DemoHandler()
	}
	if s.handler, err = api.New(apiCfg); err != nil {
		s.closeBackends(context.Background())
		return nil, err
	}
	return s, nil
}

// applyDocument runs inside Raft's FSM apply: it only parses and swaps.
func (s *Server) applyDocument(prefix string, raw []byte) {
	if err := s.resolver.SetDocument(prefix, raw); err != nil {
		s.log.Error("stored prefix document rejected", "prefix", prefix, "err", err)
	}
}

// RegisterPrefix lets a Go program embedding the node decide the
// configuration of a prefix's channels with a function (nil = no channel).
func (s *Server) RegisterPrefix(prefix string, fn presence.ConfigFunc) error {
	return s.resolver.Register(prefix, fn)
}

// Start listens on the HTTP address and serves until Shutdown.
func (s *Server) Start(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("http listen: %w", err)
	}
	s.listener = ln
	baseCtx, cancel := context.WithCancel(context.Background())
	s.cancelBase = cancel
	s.httpSrv = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.serveDone = make(chan struct{})
	go func() {
		defer close(s.serveDone)
		if err := s.httpSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "err", err)
		}
	}()
	s.log.Info("serving", "http", ln.Addr().String(), "raft", s.cfg.RaftAddr, "data_dir", s.cfg.DataDir)
	if s.cfg.Dev {
		go s.seedDemoPrefix(ctx)
	}
	return nil
}

// seedDemoPrefix stores the demo prefix once a leader exists, unless an
// operator already configured "demo".
func (s *Server) seedDemoPrefix(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
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
	raw, _ := doc.MarshalJSON()
	if err := s.store.Put(ctx, "demo", raw); err != nil {
		s.log.Warn("demo prefix not seeded", "err", err)
	}
}

// HTTPAddr is the address the API listens on (useful with port 0).
func (s *Server) HTTPAddr() string {
	if s.listener == nil {
		return s.cfg.HTTPAddr
	}
	return s.listener.Addr().String()
}

// Handler returns the HTTP API handler (for in-process tests).
func (s *Server) Handler() http.Handler { return s.handler }

// Shutdown stops serving, ends streams, closes the engine and Raft. Safe to
// call more than once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closeOnce.Do(func() {
		if s.httpSrv != nil {
			s.cancelBase() // ends SSE streams so Shutdown does not wait for them
			if err := s.httpSrv.Shutdown(ctx); err != nil {
				s.closeErr = errors.Join(s.closeErr, fmt.Errorf("http: %w", err))
			}
			<-s.serveDone
		}
		s.closeErr = errors.Join(s.closeErr, s.closeBackends(ctx))
	})
	return s.closeErr
}

func (s *Server) closeBackends(ctx context.Context) error {
	var errs []error
	if err := s.engine.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("engine: %w", err))
	}
	if s.store.IsLeader() {
		if err := s.store.TransferLeadership(); err != nil && !errors.Is(err, cluster.ErrNotLeader) {
			s.log.Debug("leadership not transferred", "err", err)
		}
	}
	if err := s.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("raft: %w", err))
	}
	return errors.Join(errs...)
}

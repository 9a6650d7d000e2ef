// Command redis-presence is the presence service a user would otherwise
// build: a small Go HTTP server whose POST /presence/update takes the
// node's JSON body and user tokens (HS256, verified tokens cached like the
// node) and keeps presence in Redis with Discourse's algorithm (package
// discourse), sweeping expired clients every second. See package
// redispresence.
//
//	redis-presence --dev --http 127.0.0.1:28192 --redis 127.0.0.1:6379
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/presencehq/presence/bench/discourse"
	"github.com/presencehq/presence/bench/redispresence"
)

// devJWTSecret is the secret of a node started with --dev.
const devJWTSecret = "dev-jwt-secret-not-for-production"

type options struct {
	http, redis, jwtSecret, keyPrefix, logLevel string
	dev                                         bool
	prefixes                                    []string
	timeout, sweep                              time.Duration
	pool, tokenCache                            int
}

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func parse(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("redis-presence", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var prefixes string
	fs.StringVar(&o.http, "http", "127.0.0.1:8092", "HTTP bind address")
	fs.StringVar(&o.redis, "redis", "127.0.0.1:6379", "Redis address (host:port)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", "", "HS256 secret that signs user tokens (required unless --dev)")
	fs.BoolVar(&o.dev, "dev", false, "use the node's --dev secret (dev-jwt-secret-not-for-production)")
	fs.StringVar(&prefixes, "prefixes", "demo", "comma-separated channel prefixes that exist (all public, like the node's demo prefix)")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "how long a client stays present without a heartbeat (the node's default channel timeout)")
	fs.DurationVar(&o.sweep, "sweep-period", time.Second, "how often expired clients are removed")
	fs.StringVar(&o.keyPrefix, "key-prefix", "presence:", "prefix of every Redis key")
	fs.IntVar(&o.pool, "redis-pool", 0, "Redis connections at most (0: go-redis's default, 10 per CPU)")
	fs.IntVar(&o.tokenCache, "token-cache", redispresence.DefaultTokenCacheSize, "verified tokens remembered (the node's size; -1: none)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	for p := range strings.SplitSeq(prefixes, ",") {
		if p = strings.TrimSpace(p); p != "" {
			o.prefixes = append(o.prefixes, p)
		}
	}
	switch {
	case o.jwtSecret == "" && !o.dev:
		return nil, errors.New("--jwt-secret is required unless --dev")
	case o.jwtSecret == "":
		o.jwtSecret = devJWTSecret
	}
	if o.timeout <= 0 || o.sweep <= 0 {
		return nil, errors.New("--timeout and --sweep-period must be positive")
	}
	if o.tokenCache == 0 {
		return nil, errors.New("--token-cache must be positive, or -1 for no cache")
	}
	return o, nil
}

func run(args []string, stderr io.Writer) int {
	o, err := parse(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "redis-presence:", err)
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(stderr, "redis-presence: --log-level:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := serve(ctx, o, log); err != nil {
		log.Error("redis-presence stopped", "err", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, o *options, log *slog.Logger) error {
	rdb := redis.NewClient(&redis.Options{Addr: o.redis, PoolSize: o.pool})
	defer rdb.Close()
	store, err := discourse.New(ctx, rdb, discourse.Config{KeyPrefix: o.keyPrefix, Timeout: o.timeout})
	if err != nil {
		return fmt.Errorf("redis at %s: %w", o.redis, err)
	}
	srv, err := redispresence.New(redispresence.Config{
		JWTSecret: []byte(o.jwtSecret), Prefixes: o.prefixes, TokenCacheSize: o.tokenCache, Logger: log,
	}, store)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.http)
	if err != nil {
		return err
	}
	// The node's server timeouts.
	hs := &http.Server{Handler: srv, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sweepDone := make(chan struct{})
	go func() { srv.Sweep(ctx, o.sweep); close(sweepDone) }()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = hs.Shutdown(sctx)
	}()
	log.Info("redis-presence listening", "http", "http://"+ln.Addr().String(), "redis", o.redis, "prefixes", o.prefixes)
	err = hs.Serve(ln)
	cancel()
	<-sweepDone
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Command presence-node runs one node of the presence cluster.
//
// Every flag also reads PRESENCE_<FLAG> from the environment (upper case, "-"
// becomes "_"); a flag given on the command line beats its variable.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/presencehq/presence/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stderr))
}

// run parses arguments and runs the node; it returns the process exit code.
func run(args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "health" {
		return health(args[1:], getenv, stderr)
	}
	cfg, logLevel, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "presence-node:", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: logLevel}))
	cfg.Logger = logger
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "presence-node:", err)
		return 2
	}
	if cfg.Dev {
		logger.Warn("development mode: well-known secrets, do not expose this node",
			"jwt_secret", cfg.JWTSecret, "admin_token", cfg.AdminToken,
			"demo", "http://"+cfg.HTTPAddr+"/", "token_url", "http://"+cfg.HTTPAddr+"/dev/token?user=1&username=sam")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	srv, err := server.New(cfg)
	if err != nil {
		logger.Error("cannot start", "err", err)
		if errors.Is(err, server.ErrConfig) {
			return 2
		}
		return 1
	}
	if err := srv.Start(ctx); err != nil {
		logger.Error("cannot start", "err", err)
		shutdownCtx, cancel := context.WithTimeout(context.Background(), server.DefaultShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(shutdownCtx)
		return 1
	}
	<-ctx.Done()
	logger.Info("signal received, leaving the cluster")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), server.DefaultShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		logger.Error("unclean shutdown", "err", err)
		return 1
	}
	logger.Info("stopped")
	return 0
}

// parseFlags reads flags, falling back to PRESENCE_* variables for flags not
// given on the command line.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (server.Config, slog.Level, error) {
	var cfg server.Config
	var join, cors, logLevel string
	fs := flag.NewFlagSet("presence-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	fs.StringVar(&cfg.Name, "name", host, "unique node name in the cluster")
	fs.StringVar(&cfg.HTTPAddr, "http", server.DefaultHTTPAddr, "public HTTP API bind address")
	fs.StringVar(&cfg.GossipAddr, "gossip", server.DefaultGossipAddr, "memberlist bind address (TCP and UDP)")
	fs.StringVar(&cfg.RaftAddr, "raft", server.DefaultRaftAddr, "Raft transport bind address")
	fs.StringVar(&cfg.RPCAddr, "rpc", server.DefaultRPCAddr, "node-to-node forwarding and replication bind address")
	fs.StringVar(&cfg.Advertise, "advertise", "", "host/IP other nodes use to reach this one (default: the bind host)")
	fs.StringVar(&join, "join", "", "comma-separated gossip addresses of existing members")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", server.DefaultBootstrapExpect, "servers to see before bootstrapping Raft")
	fs.IntVar(&cfg.MaxVoters, "max-voters", server.DefaultMaxVoters, "most Raft voters (odd); further servers are non-voters, promoted when a voter goes")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "Raft data directory (default ./data/<name>)")
	fs.StringVar(&cfg.JWTSecret, "jwt-secret", "", "HS256 secret that signs user tokens (required unless --dev)")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token for /admin/* (required unless --dev)")
	fs.StringVar(&cfg.ClusterKey, "cluster-key", "", "base64 key of 16, 24 or 32 bytes: encrypts gossip, authenticates node-to-node calls")
	fs.StringVar(&cors, "cors-origins", "", "comma-separated origins allowed to call the API from browsers")
	fs.BoolVar(&cfg.Dev, "dev", false, "development mode: well-known secrets, demo prefix, /dev/token, demo page")
	replication := fs.Bool("replication", true, "keep a copy of every channel on the next ring node and promote it when the owner dies (--replication=false turns it off)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return cfg, 0, err
	}
	if fs.NArg() > 0 {
		return cfg, 0, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return cfg, 0, err
	}
	cfg.Join = splitList(join)
	cfg.DisableReplication = !*replication
	cfg.CORSOrigins = splitList(cors)
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join("data", cfg.Name)
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(logLevel)); err != nil {
		return cfg, 0, fmt.Errorf("--log-level: %v", err)
	}
	return cfg, level, nil
}

// applyEnv sets every flag not given on the command line from its
// PRESENCE_<FLAG> variable, when that variable is non-empty.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if given[f.Name] || err != nil {
			return
		}
		name := "PRESENCE_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v := getenv(name); v != "" {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("%s: %v", name, setErr)
			}
		}
	})
	return err
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// health is the image's HEALTHCHECK: a scratch image has no shell or curl.
func health(args []string, getenv func(string) string, stderr io.Writer) int {
	fs := flag.NewFlagSet("presence-node health", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", server.DefaultHTTPAddr, "HTTP address of the node to check")
	path := fs.String("path", "/healthz", "path to check (/healthz or /readyz)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := applyEnv(fs, getenv); err != nil {
		fmt.Fprintln(stderr, "health:", err)
		return 2
	}
	target := *addr
	if strings.HasPrefix(target, "0.0.0.0:") {
		target = "127.0.0.1:" + strings.TrimPrefix(target, "0.0.0.0:")
	}
	client := &http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get("http://" + target + *path)
	if err != nil {
		fmt.Fprintln(stderr, "health:", err)
		return 1
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintln(stderr, "health: status", resp.StatusCode)
		return 1
	}
	return 0
}

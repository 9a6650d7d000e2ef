// Command presence-node runs one node of the presence cluster.
//
// Every flag also reads PRESENCE_<FLAG> from the environment (upper case, "-"
// becomes "_"); a flag given on the command line beats its variable.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/presencehq/presence/api"
	"github.com/presencehq/presence/internal/gcpace"
	"github.com/presencehq/presence/router"
	"github.com/presencehq/presence/server"
)

func main() {
	os.Exit(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// run parses arguments and runs the node, or one of the subcommands; it
// returns the process exit code.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "health":
			return health(args[1:], getenv, stderr)
		case "tls":
			return tlsCommand(args[1:], stdout, stderr)
		}
	}
	cfg, opts, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "presence-node:", err)
		return 2
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: opts.level}))
	for _, w := range opts.deprecated {
		logger.Warn(w)
	}
	cfg.Logger = logger
	if err := cfg.Validate(); err != nil {
		fmt.Fprintln(stderr, "presence-node:", err)
		return 2
	}
	host, _ := os.Hostname()
	if err := defaultAdvertise(&cfg, host, net.DefaultResolver.LookupIPAddr); err != nil {
		fmt.Fprintln(stderr, "presence-node:", err)
		return 2
	}
	if cfg.Dev {
		base := "http://" + cfg.HTTPAddr
		if cfg.HTTPTLSCert != "" {
			base = "https://" + cfg.HTTPAddr
		}
		logger.Warn("development mode: well-known secrets, do not expose this node",
			"jwt_secret", cfg.JWTSecrets[0], "admin_token", cfg.AdminToken, "service_tokens", strings.Join(cfg.ServiceTokens, ","),
			"demo", base+"/", "token_url", base+"/dev/token?user=1&username=sam")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if !startPacer(ctx, opts.gcHeadroomMiB, getenv("GOGC"), logger) {
		return 2
	}
	// SIGHUP reloads the certificate files instead of killing the node.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
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
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			waiting = false
		case <-hup:
			logger.Info("SIGHUP received, reloading the TLS files")
			_ = srv.ReloadTLS() // it logs the outcome; a failure keeps the previous certificate
		}
	}
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

// runOptions are what the flags set besides the server's configuration.
type runOptions struct {
	level         slog.Level
	gcHeadroomMiB int
	deprecated    []string // warnings about deprecated flags in use, logged at start
}

// flagValues holds the flags that are not fields of server.Config as such.
type flagValues struct {
	join, cors, proxies, secrets, publicKeys, logLevel, serviceTokens, raftAddr string
	replication                                                                 bool
	gcHeadroomMiB                                                               int
}

// newFlagSet defines every flag of the node, storing into cfg and v.
func newFlagSet(cfg *server.Config, v *flagValues, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("presence-node", flag.ContinueOnError)
	fs.SetOutput(stderr)
	host, _ := os.Hostname()
	fs.StringVar(&cfg.Name, "name", host, "unique node name in the cluster (default: the name recorded in --data-dir, else the host name)")
	fs.StringVar(&cfg.HTTPAddr, "http", server.DefaultHTTPAddr, "public HTTP API bind address")
	fs.StringVar(&cfg.GossipAddr, "gossip", server.DefaultGossipAddr, "memberlist bind address (TCP and UDP)")
	fs.StringVar(&v.raftAddr, "raft", "", "deprecated and ignored: Raft runs over the --rpc port")
	fs.StringVar(&cfg.RPCAddr, "rpc", server.DefaultRPCAddr, "node-to-node bind address: forwarding, replication and Raft")
	fs.StringVar(&cfg.Advertise, "advertise", "", "host/IP other nodes use to reach this one (default: the bind host; binding 0.0.0.0 or ::, the address the host name resolves to)")
	fs.StringVar(&v.join, "join", "", "comma-separated gossip addresses or DNS names of existing members (every address of a name is joined)")
	fs.IntVar(&cfg.BootstrapExpect, "bootstrap-expect", server.DefaultBootstrapExpect, "servers to see before bootstrapping Raft")
	fs.IntVar(&cfg.MaxVoters, "max-voters", server.DefaultMaxVoters, "most Raft voters (odd); further servers are non-voters, promoted when a voter goes")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "Raft data directory (default ./data/<name>)")
	fs.StringVar(&v.secrets, "jwt-secret", "", "comma-separated HS256 secrets, any of which may sign user tokens (rotation); a secret, public keys or a JWKS URL is required unless --dev")
	fs.StringVar(&v.publicKeys, "jwt-public-keys", "", "comma-separated PEM files of public keys verifying RS256, ES256 and EdDSA user tokens")
	fs.StringVar(&cfg.JWKSURL, "jwks-url", "", "https URL of a JWK Set verifying RS256, ES256 and EdDSA user tokens by kid (cached; fetched again for an unknown kid, at most every 10 s)")
	fs.StringVar(&cfg.JWTIssuer, "jwt-issuer", "", "when set, user tokens must carry this iss")
	fs.StringVar(&cfg.JWTAudience, "jwt-audience", "", "when set, user tokens must carry this aud")
	fs.StringVar(&cfg.AdminToken, "admin-token", "", "bearer token for /admin/* and /server/* (required unless --dev)")
	fs.StringVar(&v.serviceTokens, "service-tokens", "", "comma-separated bearer tokens of the application's backend for /server/* (never /admin/*); several during a rotation")
	fs.StringVar(&cfg.ClusterKey, "cluster-key", "", "base64 key of 16, 24 or 32 bytes: encrypts and authenticates gossip and node-to-node traffic; while rotating, comma-separated keys, the first used and all accepted")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "PEM certificate of this node, signed by --tls-ca: node-to-node traffic is mutual TLS 1.3 (needs --cluster-key too); reloaded on SIGHUP")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "PEM private key of --tls-cert; reloaded on SIGHUP")
	fs.StringVar(&cfg.TLSCA, "tls-ca", "", "PEM certificates of the CAs whose node certificates are trusted (the cluster's own CA); reloaded on SIGHUP")
	fs.StringVar(&v.cors, "cors-origins", "", "comma-separated origins allowed to call the API from browsers")
	fs.StringVar(&cfg.HTTPTLSCert, "http-tls-cert", "", "PEM certificate (chain) of the public API: serve HTTPS; reloaded on SIGHUP")
	fs.StringVar(&cfg.HTTPTLSKey, "http-tls-key", "", "PEM private key of --http-tls-cert; reloaded on SIGHUP")
	fs.IntVar(&cfg.MaxStreamsPerUser, "max-streams-per-user", api.DefaultMaxStreamsPerUser, "open SSE streams per signed-in user on this node; beyond: 429")
	fs.IntVar(&cfg.MaxStreamsPerIP, "max-streams-per-ip", api.DefaultMaxStreamsPerIP, "open anonymous SSE streams per client address (IPv6: per /64) on this node; beyond: 429")
	fs.IntVar(&cfg.MaxStreams, "max-streams", api.DefaultMaxStreams, "open SSE streams on this node; beyond: 429")
	fs.StringVar(&v.proxies, "trusted-proxies", "", "comma-separated addresses or CIDR prefixes of proxies whose X-Forwarded-For names the client")
	fs.DurationVar(&cfg.HoldTimeout, "hold-timeout", router.DefaultHoldTimeout, "how long a request waits for its channel's new owner while ownership moves (a node killed, paused, joining or leaving) before 503; 0s: no wait")
	fs.IntVar(&cfg.MaxHeldRequests, "max-held-requests", router.DefaultMaxHeld, "requests waiting so at once on this node; beyond: 503 at once")
	fs.BoolVar(&cfg.Dev, "dev", false, "development mode: well-known secrets, demo prefix, /dev/token, demo page")
	fs.BoolVar(&v.replication, "replication", true, "keep a copy of every channel on the next ring node and promote it when the owner dies (--replication=false turns it off)")
	fs.StringVar(&v.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.IntVar(&v.gcHeadroomMiB, "gc-headroom", gcpace.DefaultMaxHeadroom>>20, "most MiB of garbage the heap may hold between two garbage collections: while the node allocates fast, "+
		"the collector runs about every 4 s instead of whenever the heap doubles; 0: Go's own pacing (so does setting GOGC)")
	return fs
}

// parseFlags reads flags, falling back to PRESENCE_* variables for flags not
// given on the command line.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (server.Config, runOptions, error) {
	var cfg server.Config
	var opts runOptions
	var v flagValues
	fs := newFlagSet(&cfg, &v, stderr)
	if err := fs.Parse(args); err != nil {
		return cfg, opts, err
	}
	if fs.NArg() > 0 {
		return cfg, opts, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return cfg, opts, err
	}
	for name, n := range map[string]int{"max-streams-per-user": cfg.MaxStreamsPerUser,
		"max-streams-per-ip": cfg.MaxStreamsPerIP, "max-streams": cfg.MaxStreams, "max-held-requests": cfg.MaxHeldRequests} {
		if n < 1 {
			return cfg, opts, fmt.Errorf("--%s must be at least 1", name)
		}
	}
	switch {
	case cfg.HoldTimeout < 0:
		return cfg, opts, errors.New("--hold-timeout must not be negative")
	case cfg.HoldTimeout == 0:
		cfg.HoldTimeout = -1 // no wait: the server's zero would mean its default
	}
	if v.raftAddr != "" {
		// Kept so that existing deployments start: Raft moved onto the
		// authenticated rpc port, and nothing listens on this one any more.
		opts.deprecated = append(opts.deprecated, fmt.Sprintf("--raft (PRESENCE_RAFT) %s is deprecated and ignored: "+
			"Raft runs over the --rpc port with the node-to-node authentication and encryption; "+
			"drop the flag and close the old Raft port", v.raftAddr))
	}
	cfg.Join = splitList(v.join)
	cfg.DisableReplication = !v.replication
	cfg.CORSOrigins = splitList(v.cors)
	cfg.TrustedProxies = splitList(v.proxies)
	cfg.JWTSecrets = splitList(v.secrets)
	cfg.ServiceTokens = splitList(v.serviceTokens)
	cfg.JWTPublicKeyFiles = splitList(v.publicKeys)
	if cfg.DataDir == "" {
		cfg.DataDir = filepath.Join("data", cfg.Name)
	}
	if !given(fs, "name") {
		// A container recreated with a new host name keeps its identity
		// through its volume.
		stored, err := server.StoredName(cfg.DataDir)
		if err != nil {
			return cfg, opts, err
		}
		cfg.Name = cmp.Or(stored, cfg.Name)
	}
	if v.gcHeadroomMiB < 0 || v.gcHeadroomMiB > maxGCHeadroomMiB {
		return cfg, opts, fmt.Errorf("--gc-headroom must be between 0 and %d (MiB)", maxGCHeadroomMiB)
	}
	opts.gcHeadroomMiB = v.gcHeadroomMiB
	if err := opts.level.UnmarshalText([]byte(v.logLevel)); err != nil {
		return cfg, opts, fmt.Errorf("--log-level: %v", err)
	}
	return cfg, opts, nil
}

// given reports whether flag name was set, on the command line or from
// its environment variable (applyEnv sets it).
func given(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// advertiseTimeout bounds looking the host name up for defaultAdvertise.
const advertiseTimeout = 5 * time.Second

// defaultAdvertise fills cfg.Advertise when it is empty and a node-to-node
// listener binds every interface (0.0.0.0 or ::), as in the container
// image: with the address the host name resolves to (a container's or a
// pod's host name maps to its own address), IPv4 first. Resolved once, at
// start: a node restarted elsewhere resolves again. A host name that
// resolves to loopback only (as on many desktops) is an error.
func defaultAdvertise(cfg *server.Config, host string, lookup func(ctx context.Context, host string) ([]net.IPAddr, error)) error {
	if cfg.Advertise != "" || !bindsEveryInterface(cfg.GossipAddr, cfg.RPCAddr) {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), advertiseTimeout)
	defer cancel()
	addrs, err := lookup(ctx, host)
	if err != nil {
		return fmt.Errorf("binding every interface without --advertise: host name %q: %v; set --advertise", host, err)
	}
	var v6 string
	for _, a := range addrs {
		switch {
		case a.IP.IsLoopback() || a.IP.IsUnspecified():
		case a.IP.To4() != nil:
			cfg.Advertise = a.IP.String()
			return nil
		case v6 == "":
			v6 = a.String()
		}
	}
	if v6 == "" {
		return fmt.Errorf("binding every interface without --advertise: host name %q resolves to %v, no address other nodes can reach; set --advertise", host, addrs)
	}
	cfg.Advertise = v6
	return nil
}

// bindsEveryInterface reports whether one of the bind addresses has an
// unspecified host (0.0.0.0, ::, or none).
func bindsEveryInterface(binds ...string) bool {
	for _, b := range binds {
		host, _, err := net.SplitHostPort(b)
		if err != nil {
			continue // Validate reports it
		}
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			return true
		}
	}
	return false
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
	tlsCert := fs.String("http-tls-cert", "", "set when the node serves HTTPS (as the node's flag): probe over HTTPS")
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
	scheme := "http://"
	if *tlsCert != "" {
		scheme = "https://"
		// The probe dials the node's own address, which its certificate
		// need not name, sends no credential and reads only a status: the
		// certificate is not verified.
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}
	}
	resp, err := client.Get(scheme + target + *path)
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

// maxGCHeadroomMiB bounds --gc-headroom: 1 TiB.
const maxGCHeadroomMiB = 1 << 20

// startPacer paces the garbage collector with at most headroomMiB of
// garbage (see package gcpace) until ctx ends; not at all with 0, or when
// GOGC is set (gogc): the operator chose the collector's pacing. It
// reports false when the pacer cannot start.
func startPacer(ctx context.Context, headroomMiB int, gogc string, logger *slog.Logger) bool {
	if headroomMiB == 0 {
		return true
	}
	if gogc != "" {
		logger.Info("GOGC is set: the garbage collector keeps its pacing, --gc-headroom is not applied", "gogc", gogc)
		return true
	}
	p, err := gcpace.New(gcpace.Config{MaxHeadroom: int64(headroomMiB) << 20, Logger: logger})
	if err != nil {
		logger.Error("cannot pace the garbage collector", "err", err)
		return false
	}
	go p.Run(ctx)
	return true
}

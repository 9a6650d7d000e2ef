package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/presencehq/presence/bench/load"
)

// The secrets of a node started with --dev.
const (
	devJWTSecret  = "dev-jwt-secret-not-for-production"
	devAdminToken = "dev-admin-token"
)

// options are the command-line flags, parsed and checked.
type options struct {
	urls              []string
	jwtSecret         string
	groups            []string
	users             int
	clientsPerUser    int
	channels          int
	prefix            string
	channelsPerUser   int
	channelsPerCall   int
	subscribers       int
	subscriberChans   int
	duration          time.Duration
	rate              float64
	concurrency       int
	mix               load.Mix
	connections       int
	timeout           time.Duration
	json              bool
	sweep             []float64
	plot              string
	baseline          bool
	warmup            bool
	cleanup           bool
	deliveryGrace     time.Duration
	redis             string
	redisPipeline     int
	redisExpiryPeriod time.Duration
	runID             string
	seed              uint64
	cpuProfile        string
	routes            []load.Route
	rounds            int
	adminToken        string
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("presence-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var urls, groups, mix, sweep, routes string
	fs.StringVar(&urls, "urls", "http://127.0.0.1:8080", "comma-separated node base URLs; clients and subscribers are spread over them (empty: no presence run)")
	fs.StringVar(&o.jwtSecret, "jwt-secret", devJWTSecret, "HS256 secret the nodes verify tokens with; the default is the one of --dev")
	fs.StringVar(&groups, "groups", "", "comma-separated groups put into every token (for prefixes restricted to groups)")
	fs.IntVar(&o.users, "users", 20000, "simulated signed-in users (the server allows each 2 updates/s, burst 20)")
	fs.IntVar(&o.clientsPerUser, "clients-per-user", 1, "clients (browser tabs) per user, at most 64; with more, a user enters or leaves only with its first or last client, so subscribers see fewer messages")
	fs.IntVar(&o.channels, "channels", 1000, "channels in the pool, named <prefix><i>")
	fs.StringVar(&o.prefix, "prefix", "/demo/load/", "channel name prefix")
	fs.IntVar(&o.channelsPerUser, "channels-per-user", 2, "channels each user's clients are in")
	fs.IntVar(&o.channelsPerCall, "channels-per-call", 1, "channels per heartbeat call (batching, at most --channels-per-user)")
	fs.IntVar(&o.subscribers, "subscribers", 50, "SSE subscriber streams")
	fs.IntVar(&o.subscriberChans, "subscriber-channels", 20, "channels each subscriber follows")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "length of each measured run")
	fs.Float64Var(&o.rate, "rate", 0, "offered updates/s (open loop); 0: closed loop, --concurrency workers as fast as they can")
	fs.IntVar(&o.concurrency, "concurrency", 64, "workers (concurrent requests in flight at most)")
	fs.StringVar(&mix, "mix", "0.8,0.1,0.1", "fractions of heartbeats, enters and leaves")
	fs.IntVar(&o.connections, "connections", 64, "keep-alive HTTP connections per node (and Redis pool size)")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Second, "per-request timeout")
	fs.BoolVar(&o.json, "json", false, "print the result as JSON")
	fs.StringVar(&sweep, "sweep", "", "comma-separated offered rates: one measured run per rate (overrides --rate)")
	fs.StringVar(&o.plot, "plot", "", "write a PNG of throughput and latency against offered load (needs --sweep)")
	fs.BoolVar(&o.baseline, "baseline", true, "first measure an in-process trivial handler with the same client")
	fs.BoolVar(&o.warmup, "warmup", true, "before measuring, enter every client into its channels")
	fs.BoolVar(&o.cleanup, "cleanup", true, "after measuring, make every client leave")
	fs.DurationVar(&o.deliveryGrace, "delivery-grace", 3*time.Second, "how long to wait after a run for outstanding enter messages")
	fs.StringVar(&o.redis, "redis", "", `Redis address for the Discourse-algorithm comparison; "auto" starts a private redis-server`)
	fs.IntVar(&o.redisPipeline, "redis-pipeline", 1, "also run Redis with this many operations per pipeline (1: no pipelining only)")
	fs.DurationVar(&o.redisExpiryPeriod, "redis-expiry-period", time.Second, "how often the Redis run sweeps the channels with clients due (0: never)")
	fs.StringVar(&o.runID, "run-id", "", "prefix of user and client ids (default: random per run)")
	fs.Uint64Var(&o.seed, "seed", 1, "random seed of the operation sequence")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the load tool itself to this file")
	fs.StringVar(&routes, "route", "client", "comma-separated routes, one measured run each: client (client i to node i mod n), owner (each call to its channel's owner), other (to a node that does not own it), random")
	fs.IntVar(&o.rounds, "rounds", 1, "repeat the measured runs (every rate, every route) this many times, alternating")
	fs.StringVar(&o.adminToken, "admin-token", devAdminToken, "admin token for GET /admin/cluster and /admin/owner (routes owner and other); the default is the one of --dev")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: presence-load [flags]\n\nDrives presence nodes over HTTP like browsers do and reports throughput,\nlatency and enter-to-subscriber delivery. Flags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	o.urls = splitList(urls)
	for i, u := range o.urls {
		o.urls[i] = strings.TrimRight(u, "/")
	}
	o.groups = splitList(groups)
	var err error
	if o.mix, err = load.ParseMix(mix); err != nil {
		return nil, err
	}
	if o.sweep, err = parseRates(sweep); err != nil {
		return nil, err
	}
	if o.routes, err = parseRoutes(routes); err != nil {
		return nil, err
	}
	return o, o.validate()
}

func (o *options) validate() error {
	switch {
	case len(o.urls) == 0 && o.redis == "" && !o.baseline:
		return errors.New("nothing to do: give --urls, --redis or --baseline")
	case o.duration <= 0, o.timeout <= 0:
		return errors.New("--duration and --timeout must be positive")
	case o.rate < 0:
		return errors.New("--rate must be >= 0")
	case o.concurrency < 1, o.connections < 1, o.redisPipeline < 1:
		return errors.New("--concurrency, --connections and --redis-pipeline must be >= 1")
	case o.subscribers < 0, o.subscriberChans < 1:
		return errors.New("--subscribers must be >= 0 and --subscriber-channels >= 1")
	case o.plot != "" && len(o.sweep) == 0:
		return errors.New("--plot needs --sweep")
	case o.rounds < 1:
		return errors.New("--rounds must be >= 1")
	case len(o.urls) < 2 && slices.Contains(o.routes, load.RouteOther):
		return errors.New("--route other needs at least two --urls")
	}
	return o.population("check").Validate()
}

// population is the shape of the simulated browsers for runID.
func (o *options) population(runID string) load.PopulationConfig {
	return load.PopulationConfig{
		RunID: runID, Users: o.users, ClientsPerUser: o.clientsPerUser,
		Channels: o.channels, Prefix: o.prefix, ChannelsPerUser: o.channelsPerUser,
		ChannelsPerCall: o.channelsPerCall, Mix: o.mix,
	}
}

// rates are the offered rates of the measured runs (0: closed loop).
func (o *options) rates() []float64 {
	if len(o.sweep) > 0 {
		return o.sweep
	}
	return []float64{o.rate}
}

func splitList(s string) []string {
	var out []string
	for p := range strings.SplitSeq(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseRoutes reads --route: distinct routes, in the order given.
func parseRoutes(s string) ([]load.Route, error) {
	var out []load.Route
	for _, p := range splitList(s) {
		r, err := load.ParseRoute(p)
		if err != nil {
			return nil, fmt.Errorf("--route: %w", err)
		}
		if slices.Contains(out, r) {
			return nil, fmt.Errorf("--route: %s given twice", r)
		}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("--route: empty")
	}
	return out, nil
}

// needsOwners reports whether a route must know the channels' owners.
func (o *options) needsOwners() bool {
	return slices.ContainsFunc(o.routes, load.Route.NeedsOwners)
}

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, p := range splitList(s) {
		v, err := strconv.ParseFloat(p, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--sweep: %q is not a positive rate", p)
		}
		out = append(out, v)
	}
	return out, nil
}

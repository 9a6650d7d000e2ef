package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/redis/go-redis/v9/maintnotifications"

	"github.com/presencehq/presence/bench/discourse"
	"github.com/presencehq/presence/bench/load"
	"github.com/presencehq/presence/bench/token"
)

// Limits of the phases that are not timed by --duration.
const (
	warmupLimit    = 10 * time.Minute
	cleanupLimit   = 30 * time.Second
	redisStartWait = 5 * time.Second
	// clientTimeout is the contract's default presence timeout: a client
	// not heartbeated for this long expires on the server.
	clientTimeout = 60 * time.Second
	// serverRefillPerUser is the contract's per-user update rate.
	serverRefillPerUser = 2.0
)

// bench runs the phases of one invocation and fills the report.
type bench struct {
	o      *options
	minter *token.Minter
	log    io.Writer
	rep    *report
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "presence-load: "+format+"\n", args...)
}

func (b *bench) all(ctx context.Context) error {
	b.warnRateLimit()
	if b.o.baseline {
		if err := b.baseline(ctx); err != nil {
			return fmt.Errorf("baseline: %w", err)
		}
	}
	if len(b.o.urls) > 0 && ctx.Err() == nil {
		if err := b.presence(ctx); err != nil {
			return err
		}
	}
	if b.o.redis != "" && ctx.Err() == nil {
		if err := b.redisRuns(ctx); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
	}
	return nil
}

func (b *bench) runConfig(rate float64) load.RunConfig {
	return load.RunConfig{Duration: b.o.duration, Rate: rate, Concurrency: b.o.concurrency, Seed: b.o.seed}
}

// warnRateLimit notes offered rates the server's per-user limit cannot take.
func (b *bench) warnRateLimit() {
	limit := serverRefillPerUser * float64(b.o.users)
	for _, r := range b.o.rates() {
		if r > 0.8*limit {
			b.rep.note("offered %s/s is close to or above what the per-user rate limit allows (%s users x 2/s = %s/s): expect 429s, raise --users",
				commas(r), commas(float64(b.o.users)), commas(limit))
			return
		}
	}
}

// baseline drives the trivial handler closed-loop with the same client.
func (b *bench) baseline(ctx context.Context) error {
	srv, err := load.StartTrivial()
	if err != nil {
		return err
	}
	defer srv.Close()
	pop, err := load.NewPopulation(b.o.population(b.o.runID + "-base"))
	if err != nil {
		return err
	}
	pop.MarkAllPresent() // the handler keeps no state: act as after warmup
	target, err := load.NewHTTPTarget(load.HTTPConfig{
		URLs: []string{srv.URL}, Client: load.NewHTTPClient(b.o.connections, b.o.timeout),
		Pop: pop, Minter: b.minter, Groups: b.o.groups,
	})
	if err != nil {
		return err
	}
	b.logf("baseline: trivial handler at %s, closed loop, %d workers, %s", srv.URL, b.o.concurrency, b.o.duration)
	res := load.Run(ctx, load.Workload{Pop: pop}, target, b.runConfig(0))
	b.rep.Baseline = newPhase("trivial net/http handler (in-process)", 0, res, nil)
	return nil
}

// presence runs warmup, the measured runs and cleanup against the nodes.
func (b *bench) presence(ctx context.Context) error {
	o := b.o
	client := load.NewHTTPClient(o.connections, o.timeout)
	if err := checkNodes(ctx, client, o.urls); err != nil {
		return err
	}
	pop, err := load.NewPopulation(o.population(o.runID))
	if err != nil {
		return err
	}
	subsPer, subChannels := subscriberPlan(o.subscribers, o.subscriberChans, o.channels)
	tracker := load.NewTracker(subsPer)
	owners, err := b.lookupOwners(ctx, client, pop)
	if err != nil {
		return err
	}
	target, err := load.NewHTTPTarget(load.HTTPConfig{URLs: o.urls, Client: client, Pop: pop,
		Minter: b.minter, Groups: o.groups, Tracker: tracker, Route: o.routes[0], Owners: owners})
	if err != nil {
		return err
	}
	b.rep.Memory = scrapeAll(ctx, client, o.urls, nil)
	subCtx, cancelSubs := context.WithCancel(ctx)
	defer cancelSubs()
	subs, err := b.connectSubscribers(subCtx, pop, tracker, subChannels)
	if err != nil {
		return err
	}
	b.rep.WatchedChannels = countWatched(subsPer)
	if o.warmup {
		b.logf("warmup: %s clients enter %d channels each", commas(float64(o.users*o.clientsPerUser)), o.channelsPerUser)
		res := load.Run(ctx, load.Warmup{Pop: pop}, target, load.RunConfig{Duration: warmupLimit, Concurrency: o.concurrency})
		b.waitDeliveries(ctx, tracker, 0)
		st := tracker.Stats(0)
		b.rep.Warmup = newPhase("presence /presence/update (enter all)", 0, res, &st)
	}
	if err := b.measuredRuns(ctx, client, pop, tracker, target, owners); err != nil {
		return err
	}
	b.checkOwnersKept(ctx, client, pop, owners)
	b.rep.Memory = scrapeAll(ctx, client, o.urls, b.rep.Memory)
	for _, s := range subs {
		b.rep.StreamDrops += s.Drops.Load()
	}
	if o.cleanup && ctx.Err() == nil {
		tracker.SetPhase(-1)
		b.logf("cleanup: every present client leaves")
		load.Run(ctx, load.Cleanup{Pop: pop}, target, load.RunConfig{Duration: cleanupLimit, Concurrency: o.concurrency})
	}
	return nil
}

// measuredRuns runs every rate with every route, --rounds times over, so
// the routes of one round are compared under the same conditions.
func (b *bench) measuredRuns(ctx context.Context, client *http.Client, pop *load.Population, tracker *load.Tracker,
	target *load.HTTPTarget, owners *load.Ownership) error {
	o := b.o
	targets := make([]*load.HTTPTarget, len(o.routes))
	for i, r := range o.routes {
		t, err := target.WithRoute(r, owners)
		if err != nil {
			return err
		}
		targets[i] = t
	}
	phase := 0
	for round := 1; round <= o.rounds; round++ {
		for _, rate := range o.rates() {
			for i, route := range o.routes {
				if ctx.Err() != nil {
					return nil
				}
				phase++
				tracker.SetPhase(phase)
				b.logf("run %d: route %s, %s, %s", phase, route, describeRate(rate, o.concurrency), o.duration)
				before := takeCPU(ctx, client, o.urls)
				res := load.Run(ctx, load.Workload{Pop: pop}, targets[i], b.runConfig(rate))
				after := takeCPU(ctx, client, o.urls)
				b.waitDeliveries(ctx, tracker, phase)
				st := tracker.Stats(phase)
				ph := newPhase(b.presenceName(route), rate, res, &st)
				ph.Route, ph.Round = route.String(), round
				ph.CPU = cpuPerRequest(before, after, res.Requests)
				b.checkExpiry(pop, res)
				b.checkRateLimited(res)
				b.rep.Presence = append(b.rep.Presence, ph)
			}
		}
	}
	return nil
}

// cpuSnapshot is the CPU time used so far by each node (from /metrics,
// -1 when unknown) and by the load tool itself.
type cpuSnapshot struct {
	nodes []float64
	tool  time.Duration
}

func takeCPU(ctx context.Context, client *http.Client, urls []string) cpuSnapshot {
	s := cpuSnapshot{nodes: make([]float64, len(urls)), tool: load.SelfCPU()}
	for i, u := range urls {
		s.nodes[i] = -1
		if m, err := load.ScrapeMemory(ctx, client, u); err == nil && m.CPU > 0 {
			s.nodes[i] = m.CPU
		}
	}
	return s
}

// cpuPerRequest is the CPU time per request between two snapshots, nil
// when a node did not report it.
func cpuPerRequest(before, after cpuSnapshot, requests uint64) *cpuUse {
	if requests == 0 {
		return nil
	}
	per := func(sec float64) float64 { return sec * 1e6 / float64(requests) }
	u := &cpuUse{Tool: per((after.tool - before.tool).Seconds())}
	for i := range before.nodes {
		if before.nodes[i] < 0 || after.nodes[i] < 0 {
			return nil
		}
		n := per(after.nodes[i] - before.nodes[i])
		u.Nodes = append(u.Nodes, n)
		u.NodesTotal += n
	}
	return u
}

// presenceName names a measured run; the route is named unless it is the
// only one and the default.
func (b *bench) presenceName(route load.Route) string {
	if len(b.o.routes) == 1 && route == load.RouteClient {
		return "presence /presence/update"
	}
	return "presence /presence/update, route " + route.String()
}

// lookupOwners asks the cluster who owns every channel, when a route needs
// it, and records how the channels are spread.
func (b *bench) lookupOwners(ctx context.Context, client *http.Client, pop *load.Population) (*load.Ownership, error) {
	if !b.o.needsOwners() {
		return nil, nil
	}
	owners, err := load.LookupOwners(ctx, client, b.o.urls, b.o.adminToken, pop)
	if err != nil {
		return nil, fmt.Errorf("routes: %w", err)
	}
	b.rep.Owners = make(map[string]int, len(owners.Names))
	for i, n := range owners.Counts() {
		b.rep.Owners[owners.Names[i]] = n
	}
	b.logf("owners looked up: %v channels per node", b.rep.Owners)
	return owners, nil
}

// checkOwnersKept notes channels whose owner changed during the runs: their
// calls went to the wrong node for the route.
func (b *bench) checkOwnersKept(ctx context.Context, client *http.Client, pop *load.Population, owners *load.Ownership) {
	if owners == nil || ctx.Err() != nil {
		return
	}
	later, err := load.LookupOwners(ctx, client, b.o.urls, b.o.adminToken, pop)
	if err != nil {
		b.rep.note("owners not checked after the runs: %v", err)
		return
	}
	if n := owners.Moved(later); n > 0 {
		b.rep.note("%d of %d channels changed owner during the runs (membership changed?): the routes are not what they claim", n, len(owners.Owners))
	}
}

// checkExpiry notes when heartbeats came too rarely to keep every present
// client alive, which turns expiries into unmatched messages.
func (b *bench) checkExpiry(pop *load.Population, res *load.RunResult) {
	hb := load.PerSecond(res.Kinds[load.Heartbeat]*uint64(b.o.channelsPerCall), res.Elapsed)
	present := pop.PresentSlots()
	if hb <= 0 || present == 0 || res.Elapsed < clientTimeout/2 {
		return
	}
	if every := time.Duration(float64(present) / hb * float64(time.Second)); every > clientTimeout*3/4 {
		b.rep.note("each present client was heartbeated about every %s, close to the %s timeout: some expire, which shows as unmatched messages; use fewer --users or a higher rate",
			every.Round(time.Second), clientTimeout)
	}
}

// checkRateLimited notes 429 answers: the server limits each user to 2
// updates/s (burst 20), so a small population at a high rate meets it.
func (b *bench) checkRateLimited(res *load.RunResult) {
	if n := res.Codes["429"]; n > 0 {
		perUser := res.Throughput() / float64(b.o.users)
		b.rep.note("%s calls were rate limited (429): %.1f calls/s per user against the server's 2/s per user; raise --users for a run without them",
			commas(float64(n)), perUser)
	}
}

func describeRate(rate float64, workers int) string {
	if rate == 0 {
		return "closed loop, " + strconv.Itoa(workers) + " workers"
	}
	return "open loop at " + commas(rate) + " req/s, " + strconv.Itoa(workers) + " workers"
}

// subscriberPlan assigns subscriber s the channels (s*f + j) mod channels,
// j < f, and counts the subscribers of each channel.
func subscriberPlan(subscribers, perSub, channels int) ([]int32, [][]int) {
	f := min(perSub, channels)
	per := make([]int32, channels)
	plan := make([][]int, subscribers)
	for s := range plan {
		for j := range f {
			c := (s*f + j) % channels
			plan[s] = append(plan[s], c)
			per[c]++
		}
	}
	return per, plan
}

func countWatched(per []int32) int {
	n := 0
	for _, c := range per {
		if c > 0 {
			n++
		}
	}
	return n
}

func (b *bench) connectSubscribers(ctx context.Context, pop *load.Population, tracker *load.Tracker, plan [][]int) ([]*load.Subscriber, error) {
	client := &http.Client{Transport: &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: len(plan) + 1}}
	handle := tracker.Handler(pop)
	subs := make([]*load.Subscriber, 0, len(plan))
	for s, chans := range plan {
		names := make([]string, len(chans))
		for i, c := range chans {
			names[i] = pop.ChannelName(c)
		}
		tok, err := b.minter.Mint(token.User{ID: b.o.runID + "-sub" + strconv.Itoa(s), Username: "sub" + strconv.Itoa(s), Groups: b.o.groups})
		if err != nil {
			return nil, err
		}
		base := b.o.urls[s%len(b.o.urls)]
		sub := load.NewSubscriber(client, load.SubscribeURL(base, names, tok), handle)
		if err := sub.Connect(ctx); err != nil {
			return nil, fmt.Errorf("subscriber %d at %s: %w", s, base, err)
		}
		subs = append(subs, sub)
	}
	if len(subs) > 0 {
		b.logf("%d subscribers connected", len(subs))
	}
	return subs, nil
}

// waitDeliveries polls until every enter of phase reached its subscribers
// or the grace period ends.
func (b *bench) waitDeliveries(ctx context.Context, tracker *load.Tracker, phase int) {
	deadline := time.Now().Add(b.o.deliveryGrace)
	for tracker.Outstanding(phase) > 0 && time.Now().Before(deadline) && ctx.Err() == nil {
		time.Sleep(20 * time.Millisecond)
	}
}

// checkNodes fails early, with the URL, when a node does not answer.
func checkNodes(ctx context.Context, client *http.Client, urls []string) error {
	for _, u := range urls {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		req, err := http.NewRequestWithContext(cctx, http.MethodGet, u+"/healthz", nil)
		if err == nil {
			var resp *http.Response
			if resp, err = client.Do(req); err == nil {
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					err = errors.New(resp.Status)
				}
			}
		}
		cancel()
		if err != nil {
			return fmt.Errorf("node %s is not healthy: %w", u, err)
		}
	}
	return nil
}

// scrapeAll reads every node's memory: into Before when prev is nil, else
// into prev's After.
func scrapeAll(ctx context.Context, client *http.Client, urls []string, prev []*nodeMemory) []*nodeMemory {
	out := prev
	if out == nil {
		out = make([]*nodeMemory, len(urls))
		for i, u := range urls {
			out[i] = &nodeMemory{URL: u}
		}
	}
	for i, u := range urls {
		m, err := load.ScrapeMemory(ctx, client, u)
		switch {
		case err != nil:
			out[i].Err = err.Error()
		case prev == nil:
			out[i].Before = &m
		default:
			out[i].After = &m
		}
	}
	return out
}

// redisRuns measures Discourse's algorithm on Redis, without and with
// pipelining, at the same rates.
func (b *bench) redisRuns(ctx context.Context) error {
	addr := b.o.redis
	if addr == "auto" {
		srv, err := discourse.StartLocal(ctx, redisStartWait)
		if errors.Is(err, discourse.ErrNotInstalled) {
			b.rep.note("Redis comparison skipped: %v", err)
			return nil
		}
		if err != nil {
			return err
		}
		defer srv.Stop()
		addr = srv.Addr
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, PoolSize: b.o.connections, MaxRetries: -1, DisableIdentity: true,
		MaintNotificationsConfig: &maintnotifications.Config{Mode: maintnotifications.ModeDisabled}})
	defer rdb.Close()
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		if !discourse.Installed() {
			return fmt.Errorf("cannot reach Redis at %s (%v); %w", addr, err, discourse.ErrNotInstalled)
		}
		return fmt.Errorf("cannot reach Redis at %s: %w (--redis auto starts a private redis-server)", addr, err)
	}
	pipelines := []int{1}
	if b.o.redisPipeline > 1 {
		pipelines = append(pipelines, b.o.redisPipeline)
	}
	for _, pl := range pipelines {
		if ctx.Err() != nil {
			break
		}
		if err := b.redisRun(ctx, rdb, addr, pl); err != nil {
			return err
		}
	}
	return nil
}

func (b *bench) redisRun(ctx context.Context, rdb *redis.Client, addr string, pipeline int) error {
	o := b.o
	runID := o.runID + "-redis" + strconv.Itoa(pipeline)
	pop, err := load.NewPopulation(o.population(runID))
	if err != nil {
		return err
	}
	store, err := discourse.New(ctx, rdb, discourse.Config{KeyPrefix: "presence-load:" + runID + ":", Timeout: clientTimeout})
	if err != nil {
		return err
	}
	defer forgetAll(store, pop)
	target := load.NewRedisTarget(store, pop, pipeline)
	name := "Redis (Discourse algorithm, EVALSHA, no pipelining)"
	if pipeline > 1 {
		name = "Redis (Discourse algorithm, EVALSHA, pipeline " + strconv.Itoa(pipeline) + ")"
	}
	if o.warmup {
		b.logf("redis warmup (pipeline %d) at %s", pipeline, addr)
		load.Run(ctx, load.Warmup{Pop: pop}, target, load.RunConfig{Duration: warmupLimit, Concurrency: o.concurrency})
	}
	var sweeper *load.ExpirySweeper
	if o.redisExpiryPeriod > 0 {
		sweeper = load.StartExpirySweeper(ctx, store, o.redisExpiryPeriod)
	}
	for _, rate := range o.rates() {
		if ctx.Err() != nil {
			break
		}
		b.logf("redis run (pipeline %d): %s, %s", pipeline, describeRate(rate, o.concurrency), o.duration)
		res := load.Run(ctx, load.Workload{Pop: pop}, target, b.runConfig(rate))
		ph := newPhase(name, rate, res, nil)
		ph.Pipeline = pipeline
		b.rep.Redis = append(b.rep.Redis, ph)
	}
	if sweeper != nil {
		sweeper.Stop()
		b.rep.RedisExpiryCalls += sweeper.Calls.Load()
	}
	return nil
}

// forgetAll deletes the run's keys from a shared Redis, best effort.
func forgetAll(store *discourse.Store, pop *load.Population) {
	ctx, cancel := context.WithTimeout(context.Background(), cleanupLimit)
	defer cancel()
	for c := range pop.Config().Channels {
		if store.Forget(ctx, pop.ChannelName(c)) != nil {
			return
		}
	}
}

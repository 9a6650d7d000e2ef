package server

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/presencehq/presence/cluster/membership"
)

// rejoinResolveTimeout bounds resolving the seeds' host names in one round.
const rejoinResolveTimeout = 2 * time.Second

// rejoinMaxTargets caps the addresses one round joins, so that a node that
// lost many members does not dial them all every period.
const rejoinMaxTargets = 8

// rememberFailed is how long a failed member's address is retried: at
// least as long as the member table shows it (twice ReapAfter), so a
// partition that outlasted Raft's reaping still heals.
func rememberFailed(reapAfter time.Duration) time.Duration {
	return max(membership.DefaultRememberFailed, 2*reapAfter)
}

// rejoiner heals partitions. memberlist stops probing a member once it
// declares it dead, so after a network partition each side sees the other
// dead and the two stay apart for good. A round joins the seeds (--join)
// that are not live members and the recently failed members (not those
// that left): one push-pull across the former partition lets both sides
// learn, and refute, what the other believed.
type rejoiner struct {
	ml    *membership.Membership
	seeds []string
	log   *slog.Logger
	// lookup resolves a seed's host name; nil means the default resolver.
	lookup func(ctx context.Context, host string) ([]net.IP, error)
}

// run calls round every period until ctx ends or stop reports true (a
// leaving node must not pull itself back in).
func (r *rejoiner) run(ctx context.Context, period time.Duration, stop func() bool) {
	tick := time.NewTicker(period)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if stop() {
			return
		}
		r.round(ctx)
	}
}

// joinResult is the outcome of joining one address.
type joinResult struct {
	addr string
	err  error
}

// round joins every target at once and reports the members that appeared.
// It returns when the joins are done or ctx ends: a dial to an unreachable
// address may take memberlist's whole TCP timeout, which must not hold a
// shutdown (the join finishes on its own and only touches memberlist).
func (r *rejoiner) round(ctx context.Context) {
	before := r.ml.Members()
	targets := rejoinTargets(before, r.ml.Failed(), r.seedAddrs(ctx))
	if len(targets) == 0 {
		return
	}
	if len(targets) > rejoinMaxTargets {
		rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
		targets = targets[:rejoinMaxTargets]
	}
	results := make(chan joinResult, len(targets))
	for _, addr := range targets {
		go func() {
			_, err := r.ml.Join([]string{addr})
			results <- joinResult{addr: addr, err: err}
		}()
	}
	var reached []string
	for range targets {
		select {
		case res := <-results:
			if res.err != nil {
				r.log.Debug("rejoin failed", "addr", res.addr, "err", res.err)
				continue
			}
			reached = append(reached, res.addr)
		case <-ctx.Done():
			return
		}
	}
	r.report(before, reached)
}

// report logs a merge at Info, only when members appeared: a reachable
// seed that is a live member under another address is contacted every
// period and must not fill the log.
func (r *rejoiner) report(before []membership.Member, reached []string) {
	if len(reached) == 0 {
		return
	}
	var appeared []string
	for _, m := range r.ml.Members() {
		if !slices.ContainsFunc(before, func(b membership.Member) bool { return b.Name == m.Name }) {
			appeared = append(appeared, m.Name)
		}
	}
	if len(appeared) == 0 {
		r.log.Debug("rejoin reached members, none new yet", "via", reached)
		return
	}
	r.log.Info("merged with members this node saw as gone", "members", appeared, "via", reached)
}

// seedAddrs resolves the seeds to host:port addresses, as memberlist would
// (a seed without a port uses this node's gossip port). Resolving here
// lets rejoinTargets compare seeds with live members' addresses, and keeps
// memberlist from warning about every failed lookup while partitioned.
func (r *rejoiner) seedAddrs(ctx context.Context) []string {
	if len(r.seeds) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, rejoinResolveTimeout)
	defer cancel()
	_, defPort, _ := net.SplitHostPort(r.ml.Addr())
	var out []string
	for _, seed := range r.seeds {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			host, port = seed, defPort
		}
		ips, err := r.resolve(ctx, host)
		if err != nil {
			r.log.Debug("rejoin: seed not resolved", "seed", seed, "err", err)
			continue
		}
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip.String(), port))
		}
	}
	return out
}

func (r *rejoiner) resolve(ctx context.Context, host string) ([]net.IP, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []net.IP{ip}, nil
	}
	if r.lookup != nil {
		return r.lookup(ctx, host)
	}
	return net.DefaultResolver.LookupIP(ctx, "ip", host)
}

// rejoinTargets lists, without duplicates, the seed addresses that no live
// member has, then the addresses of failed members that are not live again
// (under their name or at their address).
func rejoinTargets(live, failed []membership.Member, seeds []string) []string {
	liveName := make(map[string]bool, len(live))
	taken := make(map[string]bool, len(live)+len(seeds)+len(failed))
	for _, m := range live {
		liveName[m.Name] = true
		taken[m.Addr] = true
	}
	var out []string
	add := func(addr string) {
		if addr != "" && !taken[addr] {
			taken[addr] = true
			out = append(out, addr)
		}
	}
	for _, addr := range seeds {
		add(addr)
	}
	for _, m := range failed {
		if !liveName[m.Name] {
			add(m.Addr)
		}
	}
	return out
}

package membership

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
)

// Defaults of DiscoveryConfig.
const (
	DefaultJoinMinBackoff = 200 * time.Millisecond
	DefaultJoinMaxBackoff = 5 * time.Second
	// DefaultResolveTimeout bounds looking the seeds up in one attempt.
	DefaultResolveTimeout = 2 * time.Second
)

// Resolver looks a host name up, returning every address (A and AAAA
// records); *net.Resolver implements it.
type Resolver interface {
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
}

// DiscoveryConfig configures a Discovery. Zero values are documented per
// field.
type DiscoveryConfig struct {
	// Seeds are the addresses to join (--join): host:port, or a host alone
	// for this node's gossip port. A host name is looked up at every
	// attempt and every address it has is joined, so one DNS name can stand
	// for every node (a Kubernetes headless Service, a compose service
	// scaled up) and follow them as they come and go.
	Seeds []string
	// Resolver looks host names up; nil means net.DefaultResolver.
	Resolver Resolver
	// JoinMinBackoff and JoinMaxBackoff pace the join attempts while no
	// other member is found (doubling from the first to the second);
	// JoinMaxBackoff is also the period of the healing rounds. Zero means
	// the Default* values.
	JoinMinBackoff time.Duration
	JoinMaxBackoff time.Duration
	// ResolveTimeout bounds the lookups of one attempt; 0 means
	// DefaultResolveTimeout.
	ResolveTimeout time.Duration
	// Logger receives the joins and merges; nil discards them.
	Logger *slog.Logger
}

// Discovery finds the other members: it joins the seeds until another
// member answers (Join), then keeps the cluster whole (Heal): memberlist
// never probes a member again once it declared it dead, so after a
// partition both sides would stay apart without a new join.
type Discovery struct {
	ml  *Membership
	cfg DiscoveryConfig
	log *slog.Logger
}

// NewDiscovery returns the discovery of ml's members.
func NewDiscovery(ml *Membership, cfg DiscoveryConfig) *Discovery {
	if cfg.Resolver == nil {
		cfg.Resolver = net.DefaultResolver
	}
	if cfg.JoinMinBackoff <= 0 {
		cfg.JoinMinBackoff = DefaultJoinMinBackoff
	}
	if cfg.JoinMaxBackoff <= 0 {
		cfg.JoinMaxBackoff = DefaultJoinMaxBackoff
	}
	if cfg.ResolveTimeout <= 0 {
		cfg.ResolveTimeout = DefaultResolveTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Discovery{ml: ml, cfg: cfg, log: cfg.Logger}
}

// Join contacts the seeds, looked up again at each attempt, until a member
// other than this node is live, so a node started before its seeds (or
// before DNS lists them) still finds them once they are up. It reports
// false when ctx ends first. Without seeds it returns true at once.
func (d *Discovery) Join(ctx context.Context) bool {
	if len(d.cfg.Seeds) == 0 {
		return true
	}
	backoff := d.cfg.JoinMinBackoff
	for attempt := 1; ; attempt++ {
		addrs, resolveErr := d.seedAddrs(ctx)
		reached := d.joinAll(ctx, without(addrs, d.ml.Addr()))
		if otherMemberLive(d.ml) {
			d.log.Info("joined the cluster", "attempts", attempt, "seeds", d.cfg.Seeds, "reached", reached)
			return true
		}
		level := d.log.Debug
		if attempt == 1 {
			level = d.log.Info
		}
		level("no other member found yet, retrying", "seeds", d.cfg.Seeds, "addresses", addrs,
			"lookup_err", resolveErr, "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return false
		}
		backoff = min(2*backoff, d.cfg.JoinMaxBackoff)
	}
}

// Heal runs a rejoin round every JoinMaxBackoff until ctx ends or stop
// reports true (a leaving node must not pull itself back in): it joins
// the seed addresses that are not live members (new nodes behind a DNS
// name, a seed restarted) and the recently failed members (a healed
// partition).
func (d *Discovery) Heal(ctx context.Context, stop func() bool) {
	tick := time.NewTicker(d.cfg.JoinMaxBackoff)
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
		d.round(ctx)
	}
}

// seedAddrs resolves the seeds to ip:port addresses, as memberlist would
// (a seed without a port uses this node's gossip port), every address of
// a name, without duplicates. The error lists the seeds that did not
// resolve; the addresses of the others are returned anyway.
func (d *Discovery) seedAddrs(ctx context.Context) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.cfg.ResolveTimeout)
	defer cancel()
	_, defPort, _ := net.SplitHostPort(d.ml.Addr())
	var out []string
	var errs []error
	seen := make(map[string]bool)
	for _, seed := range d.cfg.Seeds {
		host, port, err := net.SplitHostPort(seed)
		if err != nil {
			host, port = seed, defPort
		}
		ips, err := d.lookup(ctx, host)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", seed, err))
			continue
		}
		for _, ip := range ips {
			addr := net.JoinHostPort(ip, port)
			if !seen[addr] {
				seen[addr] = true
				out = append(out, addr)
			}
		}
	}
	return out, errors.Join(errs...)
}

// lookup returns host's addresses; an IP literal is its own.
func (d *Discovery) lookup(ctx context.Context, host string) ([]string, error) {
	if ip := net.ParseIP(host); ip != nil {
		return []string{ip.String()}, nil
	}
	addrs, err := d.cfg.Resolver.LookupIPAddr(ctx, host)
	if err != nil {
		return nil, err
	}
	if len(addrs) == 0 {
		return nil, fmt.Errorf("no address for %s", host)
	}
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.String()
	}
	return out, nil
}

// joinResult is the outcome of joining one address.
type joinResult struct {
	addr string
	err  error
}

// joinAll joins every address at once and returns those that answered. It
// returns when the joins are done or ctx ends: a dial to an unreachable
// address (a pod gone but still in DNS) may take memberlist's whole TCP
// timeout, which must hold neither the others nor a shutdown (the join
// finishes on its own and only touches memberlist).
func (d *Discovery) joinAll(ctx context.Context, addrs []string) []string {
	results := make(chan joinResult, len(addrs))
	for _, addr := range addrs {
		go func() {
			_, err := d.ml.Join([]string{addr})
			results <- joinResult{addr: addr, err: err}
		}()
	}
	var reached []string
	for range addrs {
		select {
		case res := <-results:
			if res.err != nil {
				d.log.Debug("join failed", "addr", res.addr, "err", res.err)
				continue
			}
			reached = append(reached, res.addr)
		case <-ctx.Done():
			return reached
		}
	}
	return reached
}

// otherMemberLive reports whether gossip knows a live member besides this
// node (a seed may be this node itself).
func otherMemberLive(ml *Membership) bool {
	for _, m := range ml.Members() {
		if m.Name != ml.LocalName() {
			return true
		}
	}
	return false
}

// without returns addrs without drop.
func without(addrs []string, drop string) []string {
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if a != drop {
			out = append(out, a)
		}
	}
	return out
}

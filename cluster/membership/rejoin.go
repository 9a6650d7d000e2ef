package membership

import (
	"context"
	"math/rand/v2"
	"slices"
)

// rejoinMaxTargets caps the addresses one healing round joins, so that a
// node that lost many members does not dial them all every period.
const rejoinMaxTargets = 8

// round joins, at once, the seed addresses that no live member has and the
// recently failed members (not those that left): one push-pull across a
// former partition lets both sides learn, and refute, what the other
// believed. It logs the members that appeared.
func (d *Discovery) round(ctx context.Context) {
	before := d.ml.Members()
	seeds, err := d.seedAddrs(ctx)
	if err != nil {
		d.log.Debug("rejoin: seeds not all resolved", "err", err)
	}
	targets := rejoinTargets(before, d.ml.Failed(), seeds)
	if len(targets) == 0 {
		return
	}
	if len(targets) > rejoinMaxTargets {
		rand.Shuffle(len(targets), func(i, j int) { targets[i], targets[j] = targets[j], targets[i] })
		targets = targets[:rejoinMaxTargets]
	}
	d.report(before, d.joinAll(ctx, targets))
}

// report logs a merge at Info, only when members appeared: a reachable
// seed that is a live member under another address is contacted every
// period and must not fill the log.
func (d *Discovery) report(before []Member, reached []string) {
	if len(reached) == 0 {
		return
	}
	var appeared []string
	for _, m := range d.ml.Members() {
		if !slices.ContainsFunc(before, func(b Member) bool { return b.Name == m.Name }) {
			appeared = append(appeared, m.Name)
		}
	}
	if len(appeared) == 0 {
		d.log.Debug("rejoin reached members, none new yet", "via", reached)
		return
	}
	d.log.Info("merged with members this node did not see", "members", appeared, "via", reached)
}

// rejoinTargets lists, without duplicates, the seed addresses that no live
// member has, then the addresses of failed members that are not live again
// (under their name or at their address).
func rejoinTargets(live, failed []Member, seeds []string) []string {
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

package router

import (
	"context"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/replica"
	"github.com/presencehq/presence/router/wire"
)

// Promotion and fencing: the hand-offs that replication starts. The copies
// are package replica's; installing them is the hand-off's.

// promoteOrphans is run after a membership change: every copy whose owner
// left is promoted here when this node now owns the channel (through the
// ordinary pull, which installs the copy), or handed to the channel's new
// owner as an install.
func (r *Router) promoteOrphans(gone map[string]bool) {
	v := r.view.Load()
	for _, ch := range r.repl.Copies().Orphans(gone) {
		if r.ctx.Err() != nil {
			return
		}
		if owner := v.Owner(ch); owner != r.self.Name {
			// The new owner merges the copies with whatever it started
			// meanwhile (it may have found nobody to pull the channel from).
			if to, known := v.Member(owner); known {
				for _, e := range r.repl.Copies().TakeToHand(ch, v) {
					r.handCopy(ch, e, to)
				}
			}
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
		t, err := r.route(ctx, ch, 0)
		if err == nil && t.local {
			r.routes.release(ch)
		}
		if err == nil {
			// Already held (started fresh when the dead holder did not
			// answer): the copy is merged in.
			if _, err := r.promoteReplica(ctx, ch, v); err != nil {
				r.log.Info("merging a replica copy failed", "channel", ch, "err", err)
			}
		}
		cancel()
	}
}

// handCopy sends one copy, taken by TakeToHand, to the channel's new
// owner as an install.
func (r *Router) handCopy(channel string, e *replica.Entry, to Member) {
	owner := to.Name
	snap, origin := r.promoted(e)
	q := wire.InstallRequest{From: r.self, Snap: snap, Interest: e.Interest, Origin: origin}
	q.Leaves = r.leaves.Get(channel, nil)
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	since := r.cfg.Clock.Now().UnixNano()
	resp, err := r.calls.Call(ctx, to, wire.MethodInstall, q.Encode)
	r.repl.Copies().HandDone(channel, e, err != nil) // a failed push keeps the copy for the owner's pull
	if err != nil {
		r.log.Info("handing a replica copy to the new owner failed: kept for its pull", "channel", channel, "owner", owner, "err", err)
		return
	}
	r.keepHanded(q.Snap, e.Interest, to, installedBoot(resp), q.Origin, since)
	r.log.Info("handed a replica copy to the new owner", "channel", channel, "owner", owner, "former_owner", e.Owner, "clients", len(q.Snap.Clients), "last_id", q.Snap.LastID,
		"handed", e.Handed())
	r.m.promotions.Inc()
}

// promoted returns the state to install for e, a copy whose owner left,
// and the node whose state it continues (the install's origin, whose
// copies on the replicas it supersedes). Its expiries move later by
// ReplicationInterval (the refreshes the owner may not have sent yet).
//
// A handed entry is this node's own state, kept since it handed it to
// e.Owner, which may have gone on with it before it died: it published
// messages once its replica had the channel (that replica's copy has
// them; the release that would have dropped this entry was lost), and
// after a fence the state kept here holds messages the holder refused,
// never published, under ids the holder published with other messages.
// So its ids start over above any of them, without its backlog
// (presence.RestartSnapshot), and it continues nobody: it must not make
// the replicas drop the holder's copy, which is newer and is merged in
// when its keeper promotes it. Continuing the entry's ids issued the
// holder's ids again, and its backlog delivered the refused messages to
// webhooks (found by the process kill test).
func (r *Router) promoted(e *replica.Entry) (*presence.ChannelSnapshot, string) {
	snap := e.Snapshot(r.cfg.ReplicationInterval)
	if e.Handed() {
		return presence.RestartSnapshot(snap, r.cfg.Clock.Now()), ""
	}
	return snap, e.Owner
}

// promoteReplica installs the copy of channel kept here if its owner left;
// it reports whether it did. Every message the owner published reached the
// copy first, so the channel continues with the next id and its backlog.
func (r *Router) promoteReplica(ctx context.Context, channel string, v *view) (bool, error) {
	if !r.cfg.Replication {
		return false, nil
	}
	copies := r.repl.Copies().Take(channel, v)
	for _, e := range copies {
		// A second copy (two holders died) merges into the first.
		snap, origin := r.promoted(e)
		if err := r.installLocal(ctx, snap, e.Interest, nil, origin, ""); err != nil {
			return false, err
		}
		r.m.promotions.Inc()
		r.log.Info("promoted replica", "channel", channel, "former_owner", e.Owner, "clients", len(snap.Clients), "last_id", snap.LastID,
			"handed", e.Handed())
	}
	return len(copies) > 0, nil
}

// fence reacts to a replica refusing channel because it holds it
// (replica.Config.Fence): another node took the channel over while this
// one was cut off or paused. The state held here is handed to that node,
// which merges it (last writer wins), and this node forwards to it from
// then on.
func (r *Router) fence(channel string, holder Member) {
	r.log.Warn("replica holds a channel owned here: handing it over", "channel", channel, "holder", holder.Name)
	r.run.Go(func() {
		if err := r.pushTo(channel, holder); err != nil {
			r.log.Info("handing a fenced channel over failed", "channel", channel, "holder", holder.Name, "err", err)
			r.settling.request()
		}
	})
}

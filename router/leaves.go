package router

import (
	"context"
	"fmt"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/replica"
	"github.com/presencehq/presence/router/wire"
)

// The leaves a node answered for a channel whose state it did not have
// (cut off from the holder, or in the moment after a partition healed)
// travel to the holder, which drops the clients they concern.

// sendLeaves hands the leaves answered here for channel, which has no state
// here, to the channel's owner in this node's view. This node may have
// served the channel without its state (cut off from the node that held
// it, or in the moment after a partition healed before the member lists
// merged): the client that left is then still present at the holder, which
// must drop it (see takeLeaves).
func (r *Router) sendLeaves(ctx context.Context, channel string, to Member) error {
	if !r.cfg.Replication {
		return nil
	}
	leaves := r.leaves.Get(channel, nil)
	if len(leaves) == 0 {
		return nil
	}
	q := wire.LeavesRequest{From: r.self, Channel: channel, Leaves: leaves}
	_, err := r.calls.Call(ctx, to, wire.MethodLeaves, q.Encode)
	r.log.Debug("sent the leaves of a channel without state here", "channel", channel, "to", to.Name,
		"leaves", len(leaves), "err", err)
	return err
}

// takeLeaves keeps leaves another node answered for a channel without its
// state and passes them on to where the channel is. Kept here, they go with
// every later hand-off of the channel from here and decide every merge
// here; but the receiver may neither hold the channel nor ever get it (the
// sender's view was partial), so it forwards them along its own route (a
// tombstone, or the ring owner). Where the channel is held, the clients that
// left after their last heartbeat are dropped (dropLeftHere).
func (r *Router) takeLeaves(ctx context.Context, q wire.LeavesRequest) error {
	r.leaves.Add(q.Channel, q.Leaves)
	t, err := r.locate(ctx, q.Channel)
	if err != nil {
		return err
	}
	if t.local {
		return r.dropLeftHere(ctx, q.Channel)
	}
	if t.to.Name == q.From.Name {
		// The sender routes the channel here and this node routes it back:
		// the two views disagree. Sent back, the leaves would wait on the
		// sender's hand-off in progress; kept, they go on when the views
		// change.
		r.routes.owesLeaves(q.Channel)
		return nil
	}
	if q.Hops+1 > r.cfg.MaxHops {
		return fmt.Errorf("%w: leaves of %s after %d hops", presence.ErrMoved, q.Channel, q.Hops)
	}
	fwd := wire.LeavesRequest{From: r.self, Channel: q.Channel, Hops: q.Hops + 1, Leaves: r.leaves.Get(q.Channel, nil)}
	_, err = r.calls.Call(ctx, t.to, wire.MethodLeaves, fwd.Encode)
	r.log.Debug("passed leaves on", "channel", q.Channel, "from", q.From.Name, "to", t.to.Name, "hops", fwd.Hops, "err", err)
	return err
}

// dropLeftHere drops the clients of channel, if it is held here, whose
// user or client left after their last heartbeat by the leave log (last
// writer wins, as in merges) and tells subscribers to re-read the channel.
// A channel owned here but not held gets the log applied when its holder
// hands it over (installMerged), or hands the leaves on (owesLeaves).
func (r *Router) dropLeftHere(ctx context.Context, channel string) error {
	if r.routes.owesLeaves(channel) {
		r.log.Debug("kept leaves for a channel owned but not held here", "channel", channel)
		return nil
	}
	if err := r.routes.beginMove(ctx, channel, moveIn); err != nil {
		return err
	}
	defer r.routes.endMove(channel, func(*route) {})
	local, err := r.engine.Export(ctx, channel)
	if err != nil || local == nil {
		return err
	}
	kept := replica.DropLeft(local, r.leaves.Get(channel, nil))
	if kept == local {
		return nil
	}
	r.log.Info("dropped clients that left through another node", "channel", channel,
		"clients", len(local.Clients)-len(kept.Clients))
	// As in installMerged: what the actor still had on its way to the
	// replica is replaced, and the install sends the replica a snapshot.
	r.repl.Stopped(channel, true)
	return r.engine.InstallMerged(ctx, kept)
}

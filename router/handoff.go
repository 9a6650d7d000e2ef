package router

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/replica"
	"github.com/presencehq/presence/router/wire"
)

// pushTo hands channel to the node to: new calls wait, the state is
// exported once the calls in progress are done, the messages already queued
// for remote subscribers are flushed, the node installs the state, and only
// then is the local actor removed and a tombstone left behind.
func (r *Router) pushTo(channel string, to Member) error {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	if err := r.routes.beginMove(ctx, channel, moveOut); err != nil {
		return err
	}
	snap, interest, err := r.exportLocal(ctx, channel)
	if err == nil && snap == nil {
		err = r.sendLeaves(ctx, channel, to)
	}
	if err != nil || snap == nil {
		r.routes.endMove(channel, func(e *route) {
			e.held = e.held && err != nil
			e.owesLeaves = e.owesLeaves && err != nil
		})
		return err
	}
	q := wire.InstallRequest{From: r.self, Snap: snap, Interest: interest, Origin: r.self.Name}
	if r.cfg.Replication {
		q.Leaves = r.leaves.Get(channel, nil)
	}
	since := r.cfg.Clock.Now().UnixNano()
	resp, err := r.calls.Call(ctx, to, wire.MethodInstall, q.Encode)
	if err != nil {
		r.routes.endMove(channel, func(*route) {})
		return err
	}
	// Kept once the channel is not held here (a prune would drop the copy
	// of a channel held here).
	r.forgetLocal(ctx, channel, to)
	r.keepHanded(snap, interest, to, installedBoot(resp), r.self.Name, since)
	r.log.Debug("handed a channel over", "channel", channel, "to", to.Name, "clients", len(snap.Clients),
		"last_id", snap.LastID, "epoch", r.view.Load().epoch)
	// The new holder has the state and this node keeps it until the
	// holder's replica has it: the copy this node's replica keeps would
	// only be stale now.
	r.repl.HandedOver(channel)
	return nil
}

// exportLocal takes the state of a channel marked as moving out, freezes
// the actor and flushes the push queues of the interested nodes. A nil
// snapshot means there is no state here.
func (r *Router) exportLocal(ctx context.Context, channel string) (*presence.ChannelSnapshot, []wire.Interested, error) {
	snap, err := r.engine.Export(ctx, channel)
	if err != nil || snap == nil {
		return nil, nil, err
	}
	r.routes.freeze(channel)
	return snap, r.fan.HandOver(ctx, channel), nil
}

// forgetLocal ends a successful hand-off of channel to to.
func (r *Router) forgetLocal(ctx context.Context, channel string, to Member) {
	if err := r.engine.Remove(ctx, channel); err != nil {
		r.log.Warn("removing a handed-over channel failed", "channel", channel, "err", err)
	}
	r.fan.Drop(channel)
	if r.cfg.Webhooks != nil {
		r.cfg.Webhooks.HandedOver(channel)
	}
	_, seen := r.view.Load().Member(to.Name)
	r.routes.endMove(channel, func(e *route) {
		e.held = false
		e.tomb = &tombstone{to: to, seen: seen}
	})
	r.m.handoffs.WithLabelValues(handoffOut).Inc()
}

// installLocal makes this node the holder of snap's channel. If it already
// holds state for the channel (it started it fresh when the previous holder
// was unreachable), the two are merged. A node that does not own the
// channel by its ring passes it on at its next rebalance pass.
//
// origin is the node whose state snap continues; the snapshot this install
// sends to the replica tells it that origin's copy is superseded. keeper is
// the node that sent snap and keeps it until the replica has the channel
// (handed.go), "" when none does.
func (r *Router) installLocal(ctx context.Context, snap *presence.ChannelSnapshot, interest []wire.Interested, leaves map[string]int64, origin, keeper string) error {
	channel := snap.Channel
	if err := r.routes.beginMove(ctx, channel, moveIn); err != nil {
		return err
	}
	if (origin != "" || keeper != "") && r.cfg.Replication {
		// A keeper waits for its release even when the state continues
		// nobody (a kept state promoted as a restart and handed on).
		r.repl.Superseded(channel, origin, keeper)
	}
	// Interest first: the install publishes (a merge's resync marker) and
	// takes the replica's snapshot, and both must reach the nodes handed over.
	r.fan.Add(channel, interest)
	err := r.installMerged(ctx, snap, leaves)
	if err != nil {
		r.routes.endMove(channel, func(*route) {})
		return err
	}
	r.routes.endMove(channel, func(e *route) {
		e.held, e.tomb, e.owesLeaves = true, nil, false // the install applied the leaves
	})
	r.m.handoffs.WithLabelValues(handoffIn).Inc()
	if r.view.Load().ring.Owner(channel) != r.self.Name {
		r.settling.request()
	}
	return nil
}

// installMerged installs snap merged with the local state. With
// replication on, the leaves known on both sides decide per user (last
// writer wins): a client whose user left after its last heartbeat is not
// brought back by a stale copy.
func (r *Router) installMerged(ctx context.Context, snap *presence.ChannelSnapshot, leaves map[string]int64) error {
	local, err := r.engine.Export(ctx, snap.Channel)
	if err != nil {
		return err
	}
	sides := []*presence.ChannelSnapshot{local, snap} // as their histories left them
	if r.cfg.Replication {
		// The merged state replaces whatever the local actor still had on
		// its way to the replica: those messages are not published, and the
		// install sends the replica a snapshot.
		r.repl.Stopped(snap.Channel, true)
		all := r.leaves.Get(snap.Channel, leaves)
		r.leaves.Add(snap.Channel, leaves)
		snap = replica.DropLeft(snap, all)
		if local != nil {
			local = replica.DropLeft(local, all)
		}
	}
	// Clients whose expiry passed (a stale copy's) are installed too: they
	// leave with the install, with a message, which subscribers and
	// webhooks must get (dropped here, they would never hear of the leave).
	merged, diverged := presence.MergeSnapshots(local, snap)
	if !diverged && presence.DropsAPresentUser(merged, sides...) {
		// The leave log dropped a user's last client, which no message of
		// the history the merge goes on with says: its subscribers would
		// show the user until they next re-read the channel.
		r.log.Info("merged a channel whose leaves dropped a present user: subscribers resync", "channel", snap.Channel,
			"clients", len(merged.Clients), "last_id", merged.LastID)
		return r.engine.InstallMerged(ctx, merged)
	}
	switch {
	case merged == snap:
		r.log.Debug("installed a channel", "channel", snap.Channel, "clients", len(snap.Clients), "last_id", snap.LastID)
		return r.engine.Install(ctx, snap)
	case !diverged:
		r.log.Info("merged two copies of the channel's history", "channel", snap.Channel,
			"clients_here", len(local.Clients), "clients_in", len(snap.Clients), "clients", len(merged.Clients),
			"last_id_here", local.LastID, "last_id_in", snap.LastID, "unpublished", merged.Unpublished)
		return r.engine.Install(ctx, merged)
	}
	r.log.Info("merged a channel with the state held here", "channel", snap.Channel,
		"clients_here", len(local.Clients), "clients_in", len(snap.Clients), "clients", len(merged.Clients),
		"last_id_here", local.LastID, "last_id_in", snap.LastID, "last_id", merged.LastID)
	return r.engine.InstallMerged(ctx, merged)
}

// extract marks channel as moving out (waiting for a hand-off in progress)
// and then answers where it went, or takes its state.
func (r *Router) extract(ctx context.Context, channel string, requester Member, boot uint64) (wire.ExtractReply, error) {
	if err := r.routes.beginMove(ctx, channel, moveOut); err != nil {
		return wire.ExtractReply{}, err
	}
	if e, ok := r.repl.Copies().Handed(channel, requester.Name, boot); ok && !r.routes.Holds(channel) {
		// Asked again by the process it was handed to: the first answer
		// was lost on the way. The state stays kept until released.
		r.routes.endMove(channel, func(*route) {})
		r.log.Debug("handing a kept channel again to the process that asked", "channel", channel, "holder", requester.Name)
		return wire.ExtractReply{Outcome: wire.ExtractSnapshot, Snap: e.Snapshot(0), Interest: e.Interest}, nil
	}
	if to, moved := r.routes.peekTombstone(channel); r.cfg.Replication && (!moved || to.Name == requester.Name) && !r.routes.Holds(channel) {
		// The requester owned the channel and restarted before anyone saw
		// it die (an owner never pulls a channel it holds): it gets back
		// the copy its previous process sent here. Where the channel is
		// held or was handed on, that copy is stale.
		if e, ok := r.repl.Copies().TakeFrom(channel, requester.Name, boot); ok {
			r.routes.endMove(channel, func(*route) {})
			r.m.promotions.Inc()
			snap, _ := r.promoted(e)
			r.keepHanded(snap, e.Interest, requester, boot, r.self.Name, r.cfg.Clock.Now().UnixNano())
			r.log.Info("handed a restarted owner its previous process's copy", "channel", channel, "owner", requester.Name,
				"clients", len(snap.Clients), "last_id", snap.LastID)
			return wire.ExtractReply{Outcome: wire.ExtractSnapshot, Snap: snap, Interest: e.Interest}, nil
		}
	}
	if reply, ok, err := r.extractCopy(channel, requester, boot); ok || err != nil {
		r.routes.endMove(channel, func(*route) {})
		return reply, err
	}
	if _, member := r.view.Load().Member(requester.Name); !member && r.routes.Holds(channel) {
		// Handed to a node the others do not see yet, the channel could not
		// be replicated (its replica would defer the copy) and would die
		// with it if it crashed again.
		r.routes.endMove(channel, func(*route) {})
		return wire.ExtractReply{Outcome: wire.ExtractHeld}, nil
	}
	if to, moved := r.routes.peekTombstone(channel); moved {
		r.routes.endMove(channel, func(*route) {})
		if to.Name == requester.Name {
			return wire.ExtractReply{Outcome: wire.ExtractDelivered}, nil
		}
		return wire.ExtractReply{Outcome: wire.ExtractElsewhere, Elsewhere: to}, nil
	}
	snap, interest, err := r.exportLocal(ctx, channel)
	if err != nil {
		r.routes.endMove(channel, func(*route) {})
		return wire.ExtractReply{}, err
	}
	if snap == nil {
		// Seen as a member already: the tombstone goes when the requester
		// leaves, so a replica promoted then is not sent to a dead node.
		_, seen := r.view.Load().Member(requester.Name)
		r.routes.endMove(channel, func(e *route) {
			e.held = false
			e.tomb = &tombstone{to: requester, seen: seen}
		})
		return wire.ExtractReply{Outcome: wire.ExtractNone}, nil
	}
	r.forgetLocal(ctx, channel, requester)
	r.keepHanded(snap, interest, requester, boot, r.self.Name, r.cfg.Clock.Now().UnixNano())
	r.log.Debug("extracted a channel", "channel", channel, "to", requester.Name, "clients", len(snap.Clients), "last_id", snap.LastID)
	return wire.ExtractReply{Outcome: wire.ExtractSnapshot, Snap: snap, Interest: interest}, nil
}

// extractCopy answers an extract from the replica copies kept here when
// this node does not hold the channel: the requester owns the channel by a
// view in which its owner died, so a copy of a dead owner is promoted
// there (a pull that raced this node's own promotion of the copy finds it
// instead of starting the channel fresh), and a copy of an owner still
// alive here means this node has not seen that death yet: the requester
// waits (wire.ErrBusy) rather than start fresh and merge later.
func (r *Router) extractCopy(channel string, requester Member, boot uint64) (wire.ExtractReply, bool, error) {
	if !r.cfg.Replication || r.routes.Holds(channel) {
		return wire.ExtractReply{}, false, nil
	}
	v := r.view.Load()
	if copies := r.repl.Copies().TakeToHand(channel, v); len(copies) > 0 {
		e := copies[0]
		for _, more := range copies[1:] { // two holders died: merged there
			if !r.run.Go(func() { r.handCopy(channel, more, requester) }) {
				r.repl.Copies().HandDone(channel, more, true)
			}
		}
		snap, _ := r.promoted(e)
		r.keepHanded(snap, e.Interest, requester, boot, r.self.Name, r.cfg.Clock.Now().UnixNano())
		r.repl.Copies().HandDone(channel, e, false) // in the reply, and kept as handed
		r.m.promotions.Inc()
		r.log.Info("handed a replica copy to the owner that asked", "channel", channel, "owner", requester.Name,
			"former_owner", e.Owner, "clients", len(snap.Clients), "last_id", snap.LastID)
		return wire.ExtractReply{Outcome: wire.ExtractSnapshot, Snap: snap, Interest: e.Interest}, true, nil
	}
	if r.repl.Copies().Handing(channel) {
		return wire.ExtractReply{}, false, fmt.Errorf("%w: %s is handing its copy of %s to the owner", wire.ErrBusy, r.self.Name, channel)
	}
	if _, moved := r.routes.peekTombstone(channel); !moved && r.repl.Copies().HasCopyFrom(channel, v, requester.Name) {
		return wire.ExtractReply{}, false, fmt.Errorf("%w: %s keeps a copy of %s whose owner is alive in its view", wire.ErrBusy, r.self.Name, channel)
	}
	return wire.ExtractReply{}, false, nil
}

// pull fetches channel, which this node now owns, from where it would be
// without this node; it follows the channel if that node handed it on. If
// the previous holder cannot be reached the channel starts fresh here: the
// engine's new ids make its subscribers resync. Waiting calls go on when
// f.done is closed.
func (r *Router) pull(channel string, f *flight) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	err := r.fetch(ctx, channel)
	var held heldElsewhere
	var away holderAway
	switch {
	case errors.As(err, &held):
		r.log.Info("channel kept by its holder until it sees this node", "channel", channel, "holder", held.holder.Name)
	case errors.As(err, &away):
		r.log.Info("channel's holder does not answer: waiting for it, or for its death to promote the copy",
			"channel", channel, "holder", away.holder.Name, "err", err)
	case err != nil && r.ctx.Err() == nil:
		r.log.Warn("taking over a channel without its previous state", "channel", channel, "err", err)
	}
	sh := r.routes.shard(channel)
	sh.mu.Lock()
	e := sh.entry(channel)
	e.pull = nil
	switch {
	case held.holder.Name != "":
		e.tomb = &tombstone{to: held.holder, seen: true, until: r.cfg.Clock.Now().Add(heldTombstoneFor).UnixNano()}
	case away.holder.Name != "":
		// Started fresh here, the channel would hide its users until a
		// merge, and the holder's replica copy kept here would be pruned
		// as the copy of a channel held here before the holder's death
		// promotes it. The calls are held and tried again instead.
		f.err = err
	case e.tomb == nil && r.ctx.Err() == nil:
		e.held = true
	}
	sh.tidy(channel, e)
	close(f.done)
	sh.mu.Unlock()
	if r.view.Load().ring.Owner(channel) != r.self.Name {
		r.settling.request()
	}
}

// fetch asks the previous holder for channel and installs what it answers.
func (r *Router) fetch(ctx context.Context, channel string) error {
	v := r.view.Load()
	if promoted, err := r.promoteReplica(ctx, channel, v); promoted || err != nil {
		return err
	}
	from, ok := v.Member(v.others.Owner(channel))
	if !ok {
		r.log.Debug("starting a channel: no other member to pull it from", "channel", channel, "epoch", v.epoch)
		return nil // a cluster of one: nobody had it
	}
	for hop, busy := 0, 0; hop <= r.cfg.MaxHops; {
		q := wire.ExtractRequest{Channel: channel, Requester: r.self, Boot: r.boot}
		resp, err := r.calls.Call(ctx, from, wire.MethodExtract, q.Encode)
		if errors.Is(err, wire.ErrBusy) && busy < r.cfg.Retries {
			busy++
			if err := sleep(ctx, r.cfg.RetryBackoff<<busy); err != nil {
				return err
			}
			continue
		}
		if err != nil && (unanswered(err) || errors.Is(err, wire.ErrBusy)) {
			if _, member := r.view.Load().Member(from.Name); member {
				return holderAway{holder: from, err: err}
			}
		}
		if err != nil {
			return err
		}
		reply, err := wire.DecodeExtractReply(resp)
		if err != nil {
			return err
		}
		switch reply.Outcome {
		case wire.ExtractSnapshot:
			return r.installLocal(ctx, reply.Snap, reply.Interest, nil, from.Name, from.Name)
		case wire.ExtractHeld:
			return heldElsewhere{holder: from}
		case wire.ExtractElsewhere:
			if reply.Elsewhere.Name == r.self.Name {
				return nil
			}
			from, hop = reply.Elsewhere, hop+1
			continue
		}
		r.log.Debug("pulled a channel: nothing to install", "channel", channel, "from", from.Name,
			"outcome", reply.Outcome, "epoch", v.epoch)
		return nil // none, or already delivered here by a push
	}
	return fmt.Errorf("%w: %s handed on more than %d times", presence.ErrMoved, channel, r.cfg.MaxHops)
}

// holderAway is fetch's answer when the node that has the channel is a
// member but does not answer (killed or paused, and not yet declared
// dead), or keeps a copy of a dead owner's channel and has not seen that
// death yet (wire.ErrBusy): the state is there, or on a replica, which
// promotes it once the death is noticed.
type holderAway struct {
	holder Member
	err    error
}

func (h holderAway) Error() string {
	return fmt.Sprintf("router: %s, which has the channel, does not answer: %v", h.holder.Name, h.err)
}

func (h holderAway) Unwrap() error { return h.err }

// unanswered reports whether a call failed for want of an answer (the
// node unreachable, or silent until the call's deadline) rather than with
// the node's own error.
func unanswered(err error) bool {
	return errors.Is(err, transport.ErrPeerUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// heldTombstoneFor is how long a node forwards a channel to a holder that
// kept it (wire.ExtractHeld) before it asks again.
const heldTombstoneFor = 2 * time.Second

// heldElsewhere is fetch's answer when the previous holder keeps the
// channel for now (wire.ExtractHeld).
type heldElsewhere struct{ holder Member }

func (h heldElsewhere) Error() string {
	return fmt.Sprintf("router: %s keeps the channel until it sees this node", h.holder.Name)
}

// sleep waits d of wall time or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

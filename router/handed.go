package router

import (
	"context"
	"fmt"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// A hand-off is complete only when the channel is safe on two nodes. The
// node that hands a channel over (pushTo, extract, or a promotion's
// handCopy) keeps the state it sent in its replica store as a handed copy
// of the new holder's, until the new holder's replica acknowledged the
// channel's snapshot: the new holder then releases it (MethodRelease). A
// new holder that dies first leaves the copy an orphan, promoted like any
// replica copy (promoteOrphans), so a kill at any moment of the hand-off
// loses nobody; its ids start over, since the new holder may have gone on
// with it (Router.promoted). Where this node is the new holder's replica and has that
// holder's own copy from before the install, it keeps both merged, as the
// install merged them: the holder's stream drops that copy before it sends
// the merged state (replica.Store.KeepHanded).

// keepHanded keeps snap, the state of origin's just handed to holder's
// process boot by an install that began at since, until the holder
// releases it. A holder already gone (it died during the hand-off, and its
// death may have been processed already) gets the copy promoted at once.
func (r *Router) keepHanded(snap *presence.ChannelSnapshot, interest []wire.Interested, holder Member, boot uint64, origin string, since int64) {
	if !r.cfg.Replication || snap == nil {
		return
	}
	r.repl.Copies().KeepHanded(snap.Channel, holder.Name, boot, origin, snap, interest, r.cfg.Clock.Now().UnixNano(), since)
	r.log.Debug("keeping a handed channel until its holder releases it", "channel", snap.Channel, "holder", holder.Name,
		"origin", origin, "last_id", snap.LastID)
	if _, alive := r.view.Load().Member(holder.Name); !alive {
		r.run.Go(func() { r.promoteOrphans(map[string]bool{holder.Name: true}) })
	}
}

// released is the replicator's Released: channel is safe on this node and
// its replica, so keeper, the node that handed it here (or whose copy was
// promoted here), may drop the state it kept since.
func (r *Router) released(channel, keeper string) {
	to, ok := r.view.Load().Member(keeper)
	if !ok {
		return // gone: nothing kept there any more
	}
	r.run.Go(func() {
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.ForwardTimeout)
		defer cancel()
		q := wire.ReleaseRequest{Channel: channel, From: r.self, Boot: r.boot}
		if _, err := r.calls.Call(ctx, to, wire.MethodRelease, q.Encode); err != nil {
			// The copy there goes after a while anyway (replica.Store.prune).
			r.log.Debug("releasing a handed channel failed", "channel", channel, "keeper", keeper, "err", err)
		}
	})
}

// handleRelease drops the state of a channel kept since it was handed to
// the caller: the caller's replica has the channel now.
func (r *Router) handleRelease(_ context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeReleaseRequest(body)
	if err != nil {
		return nil, err
	}
	if !presence.ValidChannelName(q.Channel) {
		return nil, fmt.Errorf("%w: release of invalid channel %q", presence.ErrInvalid, q.Channel)
	}
	if r.repl.Copies().Release(q.Channel, q.From.Name, q.Boot, r.cfg.Clock.Now().UnixNano()) {
		r.log.Debug("handed channel released", "channel", q.Channel, "holder", q.From.Name)
	}
	return nil, nil
}

// installReply is what an install answers: this process, recorded with
// the state the sender keeps until this node releases it.
func (r *Router) installReply() []byte {
	reply := wire.InstallReply{Boot: r.boot}
	return wire.Marshal(reply.Encode)
}

// installedBoot reads an install's answer (empty from a node that predates
// it: boot 0, which no process has, so no release matches and the kept
// state goes with the prune).
func installedBoot(resp []byte) uint64 {
	if len(resp) == 0 {
		return 0
	}
	reply, err := wire.DecodeInstallReply(resp)
	if err != nil {
		return 0
	}
	return reply.Boot
}

package router

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/presencehq/presence/internal/lazyctx"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// updateCall is an update as this node serves it: whose, and how it came.
type updateCall struct {
	user     *presence.User
	clientID string
	// hops counts the forwards it took to get here; sent is when the
	// forwarding node sent it (unix ns; 0 at the node it entered).
	hops int
	sent int64
}

// updateShare is the channels of an update that one node serves, or that
// are left to retry.
type updateShare struct {
	to      Member
	present []string
	leave   []string
}

// update serves an update of valid channels, answering its present
// channels in out. The node the request entered (hops 0) holds channels
// whose owner moved, could not be reached or did not answer in time, until
// it answers; the others answer presence.ErrMoved and let it.
func (r *Router) update(ctx context.Context, c updateCall, share updateShare, out map[string]bool) error {
	return held(ctx, r.hold, c.hops, share, func(ctx context.Context, s updateShare) (updateShare, error) {
		return r.updateOnce(ctx, c, s, out)
	})
}

// updateOnce resolves each channel's route once and serves it there: a
// channel held here at once, the others in one call per node, in
// parallel. A leave follows the present of the same channel to its node,
// so present-before-leave holds per channel. It returns the channels to
// retry after a retryable error: those of the shares that failed, or all
// of them when routing itself failed (applying a present or a leave twice
// changes nothing). Only forwardUpdates writes out from several
// goroutines; the channels served here are answered before it starts.
func (r *Router) updateOnce(ctx context.Context, c updateCall, s updateShare, out map[string]bool) (updateShare, error) {
	var shares []*updateShare
	for _, ch := range s.present {
		t, err := r.route(ctx, ch, c.hops)
		if err != nil {
			return s, err
		}
		if !t.local {
			share := shareFor(&shares, t.to)
			share.present = append(share.present, ch)
			continue
		}
		actx, bound := localAttempt(ctx, c)
		ok, err := r.presentHere(actx, c, ch)
		bound.Cancel()
		r.routes.release(ch)
		out[ch] = ok
		if err != nil {
			return s, err
		}
	}
	for _, ch := range s.leave {
		if share := shareWithPresent(shares, ch); share != nil {
			share.leave = append(share.leave, ch)
			continue
		}
		t, err := r.route(ctx, ch, c.hops)
		if err != nil {
			return s, err
		}
		if !t.local {
			share := shareFor(&shares, t.to)
			share.leave = append(share.leave, ch)
			continue
		}
		actx, bound := localAttempt(ctx, c)
		err = r.leaveHere(actx, c, ch)
		bound.Cancel()
		r.routes.release(ch)
		if err != nil {
			return s, err
		}
	}
	return r.forwardUpdates(ctx, c, shares, out)
}

// localAckWait bounds how long an enter or a leave served by the node the
// request entered waits for the replica's acknowledgement before the
// attempt ends and the request is held and tried again. A call in progress
// holds back every hand-off of its channel (an install or a push waits for
// it, for at most HandoffTimeout, 5 s); without a bound, a replica that
// accepts nothing for a while (a node just back from a network cut that
// cannot reach it yet) kept such calls, and so the channel's hand-offs,
// waiting for as long as the client would (measured: a cluster not ready
// for 44 s after a cut healed, requests to a live node unanswered for 20
// s). A forwarded call is bounded by its sender's deadline already.
//
// The retry finds the client present and answers it as a refresh, which
// does not wait for the replica: an enter answered so is in the owner's
// state and on its way to the replica, and is lost only if the owner dies
// too before the replica (or the next one, which gets a snapshot) has it.
const localAckWait = 2 * time.Second

// localAttempt bounds a change served here at the entry node by
// localAckWait (nil: not bounded here). The bound's timer is armed only if
// the change waits (for its replica, or its channel's config): a
// heartbeat's answer is usually there when the engine returns, and
// context.WithTimeout under the request's context cost it about seven
// allocations and a timer for nothing.
func localAttempt(ctx context.Context, c updateCall) (context.Context, *lazyctx.Ctx) {
	if c.hops != 0 {
		return ctx, nil
	}
	bound := lazyctx.WithTimeout(ctx, localAckWait)
	return bound, bound
}

// presentHere marks the client present in channel, held here. With
// replication, the change is on the replica before the answer: an
// acknowledged enter survives the owner's crash.
//
// A forwarded present overtaken by a leave of the same client, which this
// node applied after the present was sent, is answered false and not
// applied: the present waited on its way (a batch held up behind a channel
// being handed over, a pull) while its sender gave up, and the client moved
// on and left; applied now, it would show the client until its timeout.
// Last writer wins, as in merges. A present at the node the request
// entered cannot be overtaken: its client waits for the answer before it
// sends anything else, and gives up by closing the request, which cancels
// the present.
func (r *Router) presentHere(ctx context.Context, c updateCall, channel string) (bool, error) {
	if c.sent != 0 && r.cfg.Replication && r.leaves.LeftAfter(channel, c.user.ID, c.clientID, c.sent) {
		r.log.Debug("dropped a forwarded present overtaken by the client's leave", "channel", channel, "user", c.user.ID, "client", c.clientID)
		return false, nil
	}
	// The expiry counts from when the present was sent (see PresentAckAt).
	return r.engine.PresentAckAt(ctx, c.user, c.clientID, channel, c.sent)
}

// leaveHere makes the client leave channel, held here. With replication
// the leave is recorded even when nothing was present here: a copy merged
// later must not bring the client back.
func (r *Router) leaveHere(ctx context.Context, c updateCall, channel string) error {
	if r.cfg.Replication {
		r.leaves.AddClient(channel, c.user.ID, c.clientID, r.cfg.Clock.Now().UnixNano())
	}
	if r.log.Enabled(ctx, slog.LevelDebug) { // its arguments cost allocations even when not logged
		r.log.Debug("leave served here", "channel", channel, "user", c.user.ID, "client", c.clientID, "hops", c.hops,
			"epoch", r.view.Load().epoch)
	}
	return r.engine.LeaveAck(ctx, c.user.ID, c.clientID, channel)
}

// shareFor returns the share of node to, adding it if needed.
func shareFor(shares *[]*updateShare, to Member) *updateShare {
	for _, s := range *shares {
		if s.to == to {
			return s
		}
	}
	s := &updateShare{to: to}
	*shares = append(*shares, s)
	return s
}

// shareWithPresent returns the share already carrying ch as a present
// channel, so that its leave follows it to the same node, in order.
func shareWithPresent(shares []*updateShare, ch string) *updateShare {
	for _, s := range shares {
		for _, p := range s.present {
			if p == ch {
				return s
			}
		}
	}
	return nil
}

// forwardUpdates sends every share to its node (batched with other
// updates to the same node), in parallel when there are several.
func (r *Router) forwardUpdates(ctx context.Context, c updateCall, shares []*updateShare, out map[string]bool) (updateShare, error) {
	if len(shares) == 0 {
		// All served here (the usual case): return before the variables
		// the closure below captures, which escape, are allocated.
		return updateShare{}, nil
	}
	var mu sync.Mutex // out, failed and errs, written by the shares' goroutines
	var failed updateShare
	var errs forwardErrors
	parallel(shares, func(s *updateShare) {
		q := wire.UpdateRequest{Header: r.header(c.hops), User: c.user, ClientID: c.clientID, Present: s.present, Leave: s.leave}
		vals, err := r.batch.do(ctx, s.to, q)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			r.routes.forgetUnreachable(err, r.view.Load(), s.to, s.present, s.leave)
			errs.add(ctx, err)
			failed.present = append(failed.present, s.present...)
			failed.leave = append(failed.leave, s.leave...)
			return
		}
		for i, ch := range s.present {
			out[ch] = vals[i]
		}
	})
	return failed, errs.err()
}

// serveUpdate serves one update of a forwarded batch (its edge: the checks
// Update makes, and the sender's deadline) and appends the answers of its
// present channels to vals.
func (r *Router) serveUpdate(ctx context.Context, q *wire.UpdateRequest, vals []bool) ([]bool, error) {
	if err := checkUpdate(q.User, q.ClientID, q.Present, q.Leave); err != nil {
		return vals, err
	}
	c := updateCall{user: q.User, clientID: q.ClientID, hops: q.Header.Hops}
	if deadline := q.Header.Deadline; deadline != 0 {
		now := r.cfg.Clock.Now().UnixNano()
		if now > deadline {
			// The sender has given up on this attempt and may have routed
			// the update again; ErrMoved says so, if it still listens.
			return vals, fmt.Errorf("%w: forwarded update arrived after its deadline", presence.ErrMoved)
		}
		// Waits on the way (a pull, a hand-off) end with the sender's
		// deadline: after it, the sender has given up and may have
		// retried elsewhere.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(deadline-now))
		defer cancel()
		// The header carries the deadline, not the send time: this
		// assumes the sender's ForwardTimeout is this node's (the nodes
		// of a cluster share their configuration).
		c.sent = deadline - r.cfg.ForwardTimeout.Nanoseconds()
	}
	out := make(map[string]bool, len(q.Present))
	if err := r.update(ctx, c, admitUpdate(q.Present, q.Leave, out), out); err != nil {
		return vals, err
	}
	for _, ch := range q.Present {
		vals = append(vals, out[ch])
	}
	return vals, nil
}

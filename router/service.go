package router

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/presencehq/presence/cluster"
	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// Update implements presence.Service: the channels are grouped by the node
// serving them, local ones go to the engine, and each remote node gets one
// call with its share (present before leave, as for a local update).
func (r *Router) Update(ctx context.Context, u *presence.User, clientID string, present, leave []string) (map[string]bool, error) {
	if err := checkUpdate(u, clientID, present, leave); err != nil {
		return nil, err
	}
	return r.update(ctx, u, clientID, present, leave, 0, 0)
}

func checkUpdate(u *presence.User, clientID string, present, leave []string) error {
	switch {
	case u.Anonymous():
		return fmt.Errorf("%w: anonymous users cannot be present", presence.ErrForbidden)
	case clientID == "" || len(clientID) > presence.MaxClientIDBytes:
		return fmt.Errorf("%w: client id must be 1 to %d bytes", presence.ErrInvalid, presence.MaxClientIDBytes)
	case len(present) > presence.MaxChannelsPerCall || len(leave) > presence.MaxChannelsPerCall:
		return fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, presence.MaxChannelsPerCall)
	}
	return nil
}

// Get implements presence.Service: local channels are read from the engine
// and each remote node answers its share in one call, in parallel.
func (r *Router) Get(ctx context.Context, u *presence.User, channels []string) (map[string]*presence.ChannelState, error) {
	distinct := make([]string, 0, len(channels))
	seen := make(map[string]bool, len(channels))
	for _, ch := range channels {
		if seen[ch] {
			continue
		}
		if len(distinct) == presence.MaxChannelsPerCall {
			return nil, fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, presence.MaxChannelsPerCall)
		}
		seen[ch] = true
		distinct = append(distinct, ch)
	}
	return r.get(ctx, u, distinct, 0)
}

// Subscribe implements presence.Service on the router's hub, with the router
// as the catch-up source (forwarded to each channel's owner).
func (r *Router) Subscribe(ctx context.Context, u *presence.User, from map[string]int64) (presence.Subscription, error) {
	return r.fan.Subscribe(ctx, u, from)
}

// Since implements presence.CatchupSource for the hub's subscriptions. A
// remote owner registers this node's interest in the channel before it
// answers, so nothing published later is missed.
func (r *Router) Since(ctx context.Context, u *presence.User, channel string, after int64) (presence.Catchup, error) {
	if !presence.ValidChannelName(channel) {
		return presence.Catchup{Unavailable: true}, nil
	}
	return r.fan.Since(ctx, u, channel, after)
}

// update serves an update received after hops forwards. The node the
// request entered (hops 0) retries channels whose owner moved or could not be
// reached; the others answer presence.ErrMoved and let it. sent is when the
// forwarding node sent it (unix ns; 0 at the node the request entered).
func (r *Router) update(ctx context.Context, u *presence.User, clientID string, present, leave []string, hops int, sent int64) (map[string]bool, error) {
	out := make(map[string]bool, len(present))
	var mu sync.Mutex
	for attempt := 0; ; attempt++ {
		retry, err := r.updateOnce(ctx, u, clientID, present, leave, hops, sent, out, &mu)
		if err == nil {
			return out, nil
		}
		if !r.shouldRetry(ctx, err, hops, attempt) {
			return nil, r.finalError(err, hops)
		}
		present, leave = retry.present, retry.leave
	}
}

// updateGroup is the share of an update that one node serves.
type updateGroup struct {
	to      Member
	present []string
	leave   []string
}

// updateOnce applies the local share at once and sends each remote share in
// parallel. It returns the channels to retry after a retryable error: those
// of the remote shares that failed, or all of them when routing itself
// failed (applying a present or a leave twice changes nothing).
func (r *Router) updateOnce(ctx context.Context, u *presence.User, clientID string, present, leave []string,
	hops int, sent int64, out map[string]bool, mu *sync.Mutex) (updateGroup, error) {
	var groups []*updateGroup
	for _, ch := range present {
		to, remote, err := r.updateLocal(ctx, ch, hops, func() error {
			if r.overtaken(ch, u.ID, clientID, sent) {
				mu.Lock()
				out[ch] = false
				mu.Unlock()
				return nil
			}
			// With replication, the change is on the replica before the
			// answer: an acknowledged enter survives the owner's crash.
			ok, err := r.engine.PresentAck(ctx, u, clientID, ch)
			mu.Lock()
			out[ch] = ok
			mu.Unlock()
			return err
		})
		if err != nil {
			return updateGroup{present: present, leave: leave}, err
		}
		if remote {
			var g *updateGroup
			groups, g = groupFor(groups, to)
			g.present = append(g.present, ch)
		}
	}
	for _, ch := range leave {
		if g := groupWithPresent(groups, ch); g != nil {
			g.leave = append(g.leave, ch)
			continue
		}
		to, remote, err := r.updateLocal(ctx, ch, hops, func() error {
			if r.cfg.Replication {
				// Recorded even when nothing was present here: a copy
				// merged later must not bring the client back.
				r.leaves.AddClient(ch, u.ID, clientID, r.cfg.Clock.Now().UnixNano())
			}
			r.log.Debug("leave served here", "channel", ch, "user", u.ID, "client", clientID, "hops", hops,
				"epoch", r.view.Load().epoch)
			return r.engine.LeaveAck(ctx, u.ID, clientID, ch)
		})
		if err != nil {
			return updateGroup{present: present, leave: leave}, err
		}
		if remote {
			var g *updateGroup
			groups, g = groupFor(groups, to)
			g.leave = append(g.leave, ch)
		}
	}
	return r.sendUpdates(ctx, u, clientID, hops, groups, out, mu)
}

// overtaken reports whether a forwarded present, sent at sent (unix ns, 0
// when not forwarded), was overtaken by a leave of the same client that
// this node applied to channel after it was sent. The present waited on its
// way (a batch held up behind a channel being handed over, a pull) while
// its sender gave up, and the client moved on and left; applied now, it
// would show the client until its timeout. Last writer wins, as in merges.
// A present at the node the request entered cannot be overtaken: its client
// waits for the answer before it sends anything else, and gives up by
// closing the request, which cancels the present.
func (r *Router) overtaken(channel, userID, clientID string, sent int64) bool {
	if sent == 0 || !r.cfg.Replication {
		return false
	}
	if r.leaves.LeftAfter(channel, userID, clientID, sent) {
		r.log.Debug("dropped a forwarded present overtaken by the client's leave", "channel", channel, "user", userID, "client", clientID)
		return true
	}
	return false
}

// updateLocal routes one channel: it runs apply when the channel is served
// here (or its name is invalid: the engine then answers false or ignores
// it, as it would locally), and otherwise returns the node that serves it.
func (r *Router) updateLocal(ctx context.Context, ch string, hops int, apply func() error) (to Member, remote bool, err error) {
	if !presence.ValidChannelName(ch) {
		return Member{}, false, apply()
	}
	t, err := r.acquire(ctx, ch)
	if err != nil {
		return Member{}, false, err
	}
	if t.local {
		defer r.routes.release(ch)
		return Member{}, false, apply()
	}
	if hops+1 > r.cfg.MaxHops {
		return Member{}, false, fmt.Errorf("%w: %s after %d hops", presence.ErrMoved, ch, hops)
	}
	return t.to, true, nil
}

// groupFor returns the group of node to, adding it if needed.
func groupFor(groups []*updateGroup, to Member) ([]*updateGroup, *updateGroup) {
	for _, g := range groups {
		if g.to == to {
			return groups, g
		}
	}
	g := &updateGroup{to: to}
	return append(groups, g), g
}

// groupWithPresent returns the group already carrying ch as a present
// channel, so that its leave follows it to the same node, in order.
func groupWithPresent(groups []*updateGroup, ch string) *updateGroup {
	for _, g := range groups {
		for _, p := range g.present {
			if p == ch {
				return g
			}
		}
	}
	return nil
}

// sendUpdates forwards every group, in parallel when there are several.
func (r *Router) sendUpdates(ctx context.Context, u *presence.User, clientID string, hops int,
	groups []*updateGroup, out map[string]bool, mu *sync.Mutex) (updateGroup, error) {
	var failed updateGroup
	var firstErr, hardErr error
	record := func(g *updateGroup, vals []bool, err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			for i, ch := range g.present {
				out[ch] = vals[i]
			}
			return
		}
		r.forgetUnreachable(err, g.to, g.present, g.leave)
		firstErr = cmpErr(firstErr, err)
		if !retryable(err) {
			hardErr = cmpErr(hardErr, err)
		}
		failed.present = append(failed.present, g.present...)
		failed.leave = append(failed.leave, g.leave...)
	}
	parallel(groups, func(g *updateGroup) {
		vals, err := r.forwardUpdate(ctx, g, u, clientID, hops)
		record(g, vals, err)
	})
	if hardErr != nil {
		return failed, hardErr
	}
	return failed, firstErr
}

func cmpErr(prev, err error) error {
	if prev != nil {
		return prev
	}
	return err
}

// parallel runs fn for each item, the last one on the calling goroutine.
func parallel[T any](items []T, fn func(T)) {
	if len(items) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, it := range items[:len(items)-1] {
		wg.Go(func() { fn(it) })
	}
	fn(items[len(items)-1])
	wg.Wait()
}

func (r *Router) forwardUpdate(ctx context.Context, g *updateGroup, u *presence.User, clientID string, hops int) ([]bool, error) {
	q := wire.UpdateRequest{Header: r.header(hops), User: u, ClientID: clientID, Present: g.present, Leave: g.leave}
	return r.batch.do(ctx, g.to, q)
}

// header is what this node attaches to a call it forwards after hops.
func (r *Router) header(hops int) wire.Header {
	deadline := r.cfg.Clock.Now().Add(r.cfg.ForwardTimeout).UnixNano()
	return wire.Header{Epoch: r.view.Load().epoch, Hops: hops + 1, Deadline: deadline}
}

// current refuses a forwarded update read after its sender's deadline.
func (r *Router) current(h wire.Header) error {
	if h.Deadline != 0 && r.cfg.Clock.Now().UnixNano() > h.Deadline {
		return fmt.Errorf("%w: forwarded update arrived after its deadline", presence.ErrUnavailable)
	}
	return nil
}

// get serves a get received after hops forwards, with the retries of update.
func (r *Router) get(ctx context.Context, u *presence.User, channels []string, hops int) (map[string]*presence.ChannelState, error) {
	out := make(map[string]*presence.ChannelState, len(channels))
	var mu sync.Mutex
	for attempt := 0; ; attempt++ {
		retry, err := r.getOnce(ctx, u, channels, hops, out, &mu)
		if err == nil {
			return out, nil
		}
		if !r.shouldRetry(ctx, err, hops, attempt) {
			return nil, r.finalError(err, hops)
		}
		channels = retry
	}
}

// getGroup is the share of a get that one node serves.
type getGroup struct {
	to       Member
	channels []string
}

func (r *Router) getOnce(ctx context.Context, u *presence.User, channels []string, hops int,
	out map[string]*presence.ChannelState, mu *sync.Mutex) ([]string, error) {
	var groups []*getGroup
	for _, ch := range channels {
		if !presence.ValidChannelName(ch) {
			out[ch] = nil
			continue
		}
		t, err := r.acquire(ctx, ch)
		if err != nil {
			return channels, err
		}
		if t.local {
			st, err := r.engine.State(ctx, u, ch)
			r.routes.release(ch)
			if err != nil {
				return channels, err
			}
			mu.Lock()
			out[ch] = st
			mu.Unlock()
			continue
		}
		if hops+1 > r.cfg.MaxHops {
			return channels, fmt.Errorf("%w: %s after %d hops", presence.ErrMoved, ch, hops)
		}
		groups = addToGetGroup(groups, t.to, ch)
	}
	var failed []string
	var firstErr, hardErr error
	parallel(groups, func(g *getGroup) {
		states, err := r.forwardGet(ctx, g, u, hops)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			r.forgetUnreachable(err, g.to, g.channels, nil)
			firstErr = cmpErr(firstErr, err)
			if !retryable(err) {
				hardErr = cmpErr(hardErr, err)
			}
			failed = append(failed, g.channels...)
			return
		}
		for i, ch := range g.channels {
			out[ch] = states[i]
		}
	})
	if hardErr != nil {
		return failed, hardErr
	}
	return failed, firstErr
}

func addToGetGroup(groups []*getGroup, to Member, ch string) []*getGroup {
	for _, g := range groups {
		if g.to == to {
			g.channels = append(g.channels, ch)
			return groups
		}
	}
	return append(groups, &getGroup{to: to, channels: []string{ch}})
}

func (r *Router) forwardGet(ctx context.Context, g *getGroup, u *presence.User, hops int) ([]*presence.ChannelState, error) {
	q := wire.GetRequest{Header: r.header(hops), User: u, Channels: g.channels}
	r.m.fwdGet.Inc()
	resp, err := r.calls.Call(ctx, g.to, wire.MethodGet, q.Encode)
	if err != nil {
		return nil, err
	}
	reply, err := wire.DecodeGetReply(resp)
	if err == nil && len(reply.States) != len(g.channels) {
		err = wire.ErrMalformed
	}
	return reply.States, err
}

// since serves a catch-up received after hops forwards. When it runs here
// and node is another node, node's interest in channel is registered at gen
// first (gen 0: no registration).
func (r *Router) since(ctx context.Context, u *presence.User, channel string, after int64, hops int, node Member, gen uint64) (presence.Catchup, error) {
	for attempt := 0; ; attempt++ {
		cu, err := r.sinceOnce(ctx, u, channel, after, hops, node, gen)
		if err == nil {
			return cu, nil
		}
		if !r.shouldRetry(ctx, err, hops, attempt) {
			return presence.Catchup{}, r.finalError(err, hops)
		}
	}
}

func (r *Router) sinceOnce(ctx context.Context, u *presence.User, channel string, after int64, hops int, node Member, gen uint64) (presence.Catchup, error) {
	t, err := r.acquire(ctx, channel)
	if err != nil {
		return presence.Catchup{}, err
	}
	if t.local {
		defer r.routes.release(channel)
		if gen != 0 && node.Name != r.self.Name {
			r.fan.Register(node, channel, gen)
		}
		return r.engine.Since(ctx, u, channel, after)
	}
	if hops+1 > r.cfg.MaxHops {
		return presence.Catchup{}, fmt.Errorf("%w: %s after %d hops", presence.ErrMoved, channel, hops)
	}
	q := wire.SinceRequest{Header: r.header(hops), User: u, Channel: channel, After: after, Node: node, Gen: gen}
	r.m.fwdSince.Inc()
	resp, err := r.calls.Call(ctx, t.to, wire.MethodSince, q.Encode)
	if err != nil {
		r.forgetUnreachable(err, t.to, []string{channel}, nil)
		return presence.Catchup{}, err
	}
	reply, err := wire.DecodeSinceReply(resp)
	return reply.Catchup, err
}

// retryable reports whether a failed forward may succeed if routed again:
// the owner moved, was busy handing the channel over, or was unreachable
// (membership is about to say so).
func retryable(err error) bool {
	return errors.Is(err, presence.ErrMoved) || errors.Is(err, wire.ErrBusy) || errors.Is(err, cluster.ErrPeerUnavailable)
}

// shouldRetry decides whether the entry node retries after err, pausing
// first (a doubling backoff; wall time, since it paces network calls).
func (r *Router) shouldRetry(ctx context.Context, err error, hops, attempt int) bool {
	if hops != 0 || attempt >= r.cfg.Retries || !retryable(err) || ctx.Err() != nil {
		return false
	}
	t := time.NewTimer(r.cfg.RetryBackoff << attempt)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// finalError turns what is left after the retries into the error the
// caller sees. A forwarding node passes presence.ErrMoved back for the entry
// node to retry; at the entry node a channel that keeps moving, a busy or
// unreachable owner, or an error without meaning to the API becomes
// presence.ErrUnavailable (503). Other sentinels and context errors stay.
func (r *Router) finalError(err error, hops int) error {
	switch {
	case hops != 0 && errors.Is(err, presence.ErrMoved):
		return err
	case retryable(err), !wire.IsSentinel(err) && !isContextErr(err):
		return fmt.Errorf("%w: %w", presence.ErrUnavailable, err)
	}
	return err
}

func isContextErr(err error) bool {
	return errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// forgetUnreachable drops the tombstones of channels that pointed to a node
// which could not be reached and is no longer a member.
func (r *Router) forgetUnreachable(err error, to Member, lists ...[]string) {
	if !errors.Is(err, cluster.ErrPeerUnavailable) {
		return
	}
	if _, member := r.view.Load().Member(to.Name); member {
		return
	}
	for _, list := range lists {
		for _, ch := range list {
			r.routes.dropTombstone(ch, to)
		}
	}
}

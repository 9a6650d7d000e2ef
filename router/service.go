package router

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// A request reads in one direction: the edge (the Service methods here, or
// a handler for a forwarded call) checks it and its channel names once;
// then each channel's route is resolved once (route), and the channel is
// served here (the engine) or its share forwarded to the node that serves
// it, in one call per node. The node the request entered holds what failed
// until the owner answers (held, in hold.go).

// Update implements presence.Service: the channels are grouped by the node
// serving them, local ones go to the engine, and each remote node gets one
// call with its share (present before leave, as for a local update).
func (r *Router) Update(ctx context.Context, u *presence.User, clientID string, present, leave []string) (map[string]bool, error) {
	if err := checkUpdate(u, clientID, present, leave); err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(present))
	share := admitUpdate(present, leave, out)
	if err := r.update(ctx, updateCall{user: u, clientID: clientID}, share, out); err != nil {
		return nil, err
	}
	return out, nil
}

// checkUpdate checks an update at the edge, before its channel names.
func checkUpdate(u *presence.User, clientID string, present, leave []string) error {
	switch {
	case u.Anonymous():
		return fmt.Errorf("%w: anonymous users cannot be present", presence.ErrForbidden)
	case clientID == "" || len(clientID) > presence.MaxClientIDBytes:
		return fmt.Errorf("%w: client id must be 1 to %d bytes", presence.ErrInvalid, presence.MaxClientIDBytes)
	case len(present) > presence.MaxChannelsPerCall || len(leave) > presence.MaxLeaveChannels:
		return fmt.Errorf("%w: more than %d present or %d leave channels", presence.ErrInvalid,
			presence.MaxChannelsPerCall, presence.MaxLeaveChannels)
	}
	return nil
}

// admitUpdate checks an update's channel names, once, at the edge: a
// present of an invalid name is answered false (as a channel that does not
// exist), a leave of one is dropped (nothing can be present there). What it
// returns is routed without being checked again.
func admitUpdate(present, leave []string, out map[string]bool) updateShare {
	return updateShare{
		present: validNames(present, func(ch string) { out[ch] = false }),
		leave:   validNames(leave, func(string) {}),
	}
}

// validNames returns names without the invalid channel names, telling
// invalid about each; names itself when all are valid, which allocates
// nothing.
func validNames(names []string, invalid func(string)) []string {
	for i, ch := range names {
		if presence.ValidChannelName(ch) {
			continue
		}
		valid := slices.Clone(names[:i])
		invalid(ch)
		for _, ch := range names[i+1:] {
			if presence.ValidChannelName(ch) {
				valid = append(valid, ch)
			} else {
				invalid(ch)
			}
		}
		return valid
	}
	return names
}

// Get implements presence.Service: local channels are read from the engine
// and each remote node answers its share in one call, in parallel.
func (r *Router) Get(ctx context.Context, u *presence.User, channels []string) (map[string]*presence.ChannelState, error) {
	return r.readEdge(ctx, channels, presence.MaxChannelsPerCall, func(ctx context.Context, valid []string, out map[string]*presence.ChannelState) error {
		return r.get(ctx, u, valid, 0, out)
	})
}

// readEdge is the edge of a read (Get, Inspect): channels are deduplicated
// and bounded by max, invalid names answered nil, and read serves the rest.
func (r *Router) readEdge(ctx context.Context, channels []string, max int,
	read func(ctx context.Context, valid []string, out map[string]*presence.ChannelState) error) (map[string]*presence.ChannelState, error) {
	distinct := make([]string, 0, len(channels))
	seen := make(map[string]bool, len(channels))
	for _, ch := range channels {
		if seen[ch] {
			continue
		}
		if len(distinct) == max {
			return nil, fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, max)
		}
		seen[ch] = true
		distinct = append(distinct, ch)
	}
	out := make(map[string]*presence.ChannelState, len(distinct))
	valid := validNames(distinct, func(ch string) { out[ch] = nil })
	if err := read(ctx, valid, out); err != nil {
		return nil, err
	}
	return out, nil
}

// Subscribe implements presence.Service on the node's hub (package
// fanout); each channel's catch-up comes from the node that holds it.
func (r *Router) Subscribe(ctx context.Context, u *presence.User, from map[string]int64) (presence.Subscription, error) {
	return r.fan.Subscribe(ctx, u, from)
}

// Since implements presence.CatchupSource: the catch-up of channel after
// after, from the node that holds it. A remote holder registers this
// node's interest in the channel before it answers when the channel has
// local subscribers, so nothing published later is missed.
func (r *Router) Since(ctx context.Context, u *presence.User, channel string, after int64) (presence.Catchup, error) {
	if !presence.ValidChannelName(channel) {
		return presence.Catchup{Unavailable: true}, nil
	}
	return r.fan.Since(ctx, u, channel, after)
}

// get serves a get of valid channels received after hops forwards, into
// out; the node the request entered retries what failed.
func (r *Router) get(ctx context.Context, u *presence.User, channels []string, hops int, out map[string]*presence.ChannelState) error {
	return r.read(ctx, channels, hops, out,
		func(ctx context.Context, ch string) (*presence.ChannelState, error) {
			return r.engine.State(ctx, u, ch)
		},
		func(ctx context.Context, s *getShare) ([]*presence.ChannelState, error) {
			return r.forwardGet(ctx, s, u, hops)
		})
}

// getShare is the share of a read that one node serves.
type getShare struct {
	to       Member
	channels []string
}

// read serves a read of valid channels received after hops forwards, into
// out: local reads the channels held here, remote asks another node for
// its share. The node the request entered holds and retries what failed.
func (r *Router) read(ctx context.Context, channels []string, hops int, out map[string]*presence.ChannelState,
	local func(context.Context, string) (*presence.ChannelState, error),
	remote func(context.Context, *getShare) ([]*presence.ChannelState, error)) error {
	var mu sync.Mutex
	return held(ctx, r.hold, hops, channels, func(ctx context.Context, channels []string) ([]string, error) {
		return r.readOnce(ctx, channels, hops, out, &mu, local, remote)
	})
}

// readOnce reads the channels served here and asks each other node for its
// share, in parallel. It returns the channels to retry after a retryable
// error: those of the shares that failed, or all of them when routing
// itself failed.
func (r *Router) readOnce(ctx context.Context, channels []string, hops int,
	out map[string]*presence.ChannelState, mu *sync.Mutex,
	local func(context.Context, string) (*presence.ChannelState, error),
	remote func(context.Context, *getShare) ([]*presence.ChannelState, error)) ([]string, error) {
	var shares []*getShare
	for _, ch := range channels {
		t, err := r.route(ctx, ch, hops)
		if err != nil {
			return channels, err
		}
		if !t.local {
			shares = addToGetShare(shares, t.to, ch)
			continue
		}
		st, err := local(ctx, ch)
		r.routes.release(ch)
		if err != nil {
			return channels, err
		}
		mu.Lock()
		out[ch] = st
		mu.Unlock()
	}
	var failed []string
	var errs forwardErrors
	parallel(shares, func(s *getShare) {
		states, err := remote(ctx, s)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			r.routes.forgetUnreachable(err, r.view.Load(), s.to, s.channels)
			errs.add(ctx, err)
			failed = append(failed, s.channels...)
			return
		}
		for i, ch := range s.channels {
			out[ch] = states[i]
		}
	})
	return failed, errs.err()
}

func addToGetShare(shares []*getShare, to Member, ch string) []*getShare {
	for _, s := range shares {
		if s.to == to {
			s.channels = append(s.channels, ch)
			return shares
		}
	}
	return append(shares, &getShare{to: to, channels: []string{ch}})
}

func (r *Router) forwardGet(ctx context.Context, s *getShare, u *presence.User, hops int) ([]*presence.ChannelState, error) {
	q := wire.GetRequest{Header: r.header(hops), User: u, Channels: s.channels}
	r.m.fwdGet.Inc()
	// One stuck node must not take the whole request: a call that times
	// out is held and routed again like a failed one.
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
	defer cancel()
	resp, err := r.calls.Call(ctx, s.to, wire.MethodGet, q.Encode)
	if err != nil {
		return nil, err
	}
	reply, err := wire.DecodeGetReply(resp)
	if err == nil && len(reply.States) != len(s.channels) {
		err = wire.ErrMalformed
	}
	return reply.States, err
}

// since serves the catch-up of a valid channel received after hops
// forwards. Where it is served, node's interest in channel is registered
// at gen first, when node is another node (gen 0: no registration).
func (r *Router) since(ctx context.Context, u *presence.User, channel string, after int64, hops int, node Member, gen uint64) (presence.Catchup, error) {
	var cu presence.Catchup
	err := held(ctx, r.hold, hops, struct{}{}, func(ctx context.Context, _ struct{}) (struct{}, error) {
		var err error
		cu, err = r.sinceOnce(ctx, u, channel, after, hops, node, gen)
		return struct{}{}, err
	})
	if err != nil {
		return presence.Catchup{}, err
	}
	return cu, nil
}

func (r *Router) sinceOnce(ctx context.Context, u *presence.User, channel string, after int64, hops int, node Member, gen uint64) (presence.Catchup, error) {
	t, err := r.route(ctx, channel, hops)
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
	q := wire.SinceRequest{Header: r.header(hops), User: u, Channel: channel, After: after, Node: node, Gen: gen}
	r.m.fwdSince.Inc()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
	defer cancel()
	resp, err := r.calls.Call(ctx, t.to, wire.MethodSince, q.Encode)
	if err != nil {
		r.routes.forgetUnreachable(err, r.view.Load(), t.to, []string{channel})
		return presence.Catchup{}, err
	}
	reply, err := wire.DecodeSinceReply(resp)
	return reply.Catchup, err
}

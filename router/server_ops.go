package router

import (
	"context"
	"fmt"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// The server side's operations (the application's backend) across the
// cluster. They read in one direction like Get and Update: checked once
// where they enter, each channel routed once, served by the node that
// holds it (the engine there) or forwarded, and held by the node the
// request entered while the channel's owner cannot answer (held).
//
//   - Inspect is Get with whole states (users of count-only channels too),
//     forwarded as wire.MethodInspect, one call per node in parallel.
//   - Can is answered where the channel's updates are: the config a node
//     resolves for a channel (its callback's cache, a Go function) is the
//     one its updates are checked against, so asking that node makes can?
//     agree with update. It needs no state: it never pulls the channel.
//   - Clear is a leave of every client, served like a leave (the channel is
//     pulled first if this node owns it without holding it), recorded in
//     the leave log per user so that a copy merged later cannot bring the
//     cleared clients back, and answered once the replica has it.

// Inspect implements presence.Service: the whole state of each channel,
// local ones from the engine and each other node's share in one call.
func (r *Router) Inspect(ctx context.Context, channels []string) (map[string]*presence.ChannelState, error) {
	return r.readEdge(ctx, channels, presence.MaxInspectChannels, func(ctx context.Context, valid []string, out map[string]*presence.ChannelState) error {
		return r.inspect(ctx, valid, 0, out)
	})
}

// inspect serves an inspect of valid channels received after hops
// forwards, into out; the node the request entered retries what failed.
func (r *Router) inspect(ctx context.Context, channels []string, hops int, out map[string]*presence.ChannelState) error {
	return r.read(ctx, channels, hops, out, r.engine.FullState,
		func(ctx context.Context, s *getShare) ([]*presence.ChannelState, error) {
			return r.forwardInspect(ctx, s, hops)
		})
}

func (r *Router) forwardInspect(ctx context.Context, s *getShare, hops int) ([]*presence.ChannelState, error) {
	q := wire.InspectRequest{Header: r.header(hops), Channels: s.channels}
	r.m.forwarded.WithLabelValues("inspect").Inc()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout) // a stuck node does not take the hold
	defer cancel()
	resp, err := r.calls.Call(ctx, s.to, wire.MethodInspect, q.Encode)
	if err != nil {
		return nil, err
	}
	reply, err := wire.DecodeGetReply(resp)
	if err == nil && len(reply.States) != len(s.channels) {
		err = wire.ErrMalformed
	}
	return reply.States, err
}

// Can implements presence.Service: the node that serves channel's updates
// answers, by the config it resolves.
func (r *Router) Can(ctx context.Context, u *presence.User, channel string) (presence.Access, error) {
	if !presence.ValidChannelName(channel) {
		return presence.Access{}, nil
	}
	return r.can(ctx, u, channel, 0)
}

// can serves a can? of a valid channel received after hops forwards.
func (r *Router) can(ctx context.Context, u *presence.User, channel string, hops int) (presence.Access, error) {
	var acc presence.Access
	err := held(ctx, r.hold, hops, struct{}{}, func(ctx context.Context, _ struct{}) (struct{}, error) {
		var err error
		acc, err = r.canOnce(ctx, u, channel, hops)
		return struct{}{}, err
	})
	return acc, err
}

func (r *Router) canOnce(ctx context.Context, u *presence.User, channel string, hops int) (presence.Access, error) {
	t, err := r.locate(ctx, channel)
	if err != nil {
		return presence.Access{}, err
	}
	if t.local {
		return r.engine.Can(ctx, u, channel)
	}
	if hops+1 > r.cfg.MaxHops {
		return presence.Access{}, fmt.Errorf("%w: %s after %d hops", presence.ErrMoved, channel, hops)
	}
	q := wire.CanRequest{Header: r.header(hops), User: u, Channel: channel}
	r.m.forwarded.WithLabelValues("can").Inc()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
	defer cancel()
	resp, err := r.calls.Call(ctx, t.to, wire.MethodCan, q.Encode)
	if err != nil {
		r.routes.forgetUnreachable(err, r.view.Load(), t.to, []string{channel})
		return presence.Access{}, err
	}
	reply, err := wire.DecodeCanReply(resp)
	return reply.Access, err
}

// Clear implements presence.Service: every client of channel leaves, on
// the node that holds it.
func (r *Router) Clear(ctx context.Context, channel string) error {
	if !presence.ValidChannelName(channel) {
		return nil
	}
	return r.clear(ctx, channel, 0)
}

// clear serves a clear of a valid channel received after hops forwards.
func (r *Router) clear(ctx context.Context, channel string, hops int) error {
	return held(ctx, r.hold, hops, struct{}{}, func(ctx context.Context, _ struct{}) (struct{}, error) {
		return struct{}{}, r.clearOnce(ctx, channel, hops)
	})
}

func (r *Router) clearOnce(ctx context.Context, channel string, hops int) error {
	t, err := r.route(ctx, channel, hops)
	if err != nil {
		return err
	}
	if t.local {
		defer r.routes.release(channel)
		return r.clearHere(ctx, channel)
	}
	q := wire.ClearRequest{Header: r.header(hops), Channel: channel}
	r.m.forwarded.WithLabelValues("clear").Inc()
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
	defer cancel()
	if _, err := r.calls.Call(ctx, t.to, wire.MethodClear, q.Encode); err != nil {
		r.routes.forgetUnreachable(err, r.view.Load(), t.to, []string{channel})
		return err
	}
	return nil
}

// clearHere clears channel, held here. With replication every user that
// left is recorded in the leave log at the clear's time: a copy of the
// channel merged later drops the clients heard from before it.
func (r *Router) clearHere(ctx context.Context, channel string) error {
	at := r.cfg.Clock.Now().UnixNano()
	users, err := r.engine.ClearAck(ctx, channel)
	if r.cfg.Replication && len(users) > 0 {
		leaves := make(map[string]int64, len(users))
		for _, id := range users {
			leaves[id] = at
		}
		r.leaves.Add(channel, leaves)
	}
	r.log.Debug("channel cleared here", "channel", channel, "users", len(users), "err", err)
	return err
}

func (r *Router) handleInspect(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeInspectRequest(body)
	if err != nil {
		return nil, err
	}
	if len(q.Channels) > presence.MaxInspectChannels {
		return nil, fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, presence.MaxInspectChannels)
	}
	out := make(map[string]*presence.ChannelState, len(q.Channels))
	valid := validNames(q.Channels, func(string) {}) // nil in the reply
	if err := r.inspect(ctx, valid, q.Header.Hops, out); err != nil {
		return nil, err
	}
	reply := wire.GetReply{States: make([]*presence.ChannelState, len(q.Channels))}
	for i, ch := range q.Channels {
		reply.States[i] = out[ch]
	}
	return wire.Marshal(reply.Encode), nil
}

func (r *Router) handleCan(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeCanRequest(body)
	if err != nil {
		return nil, err
	}
	var reply wire.CanReply
	if presence.ValidChannelName(q.Channel) {
		if reply.Access, err = r.can(ctx, q.User, q.Channel, q.Header.Hops); err != nil {
			return nil, err
		}
	}
	return wire.Marshal(reply.Encode), nil
}

// handleClear serves a forwarded clear. Like a forwarded update it is
// dropped when read after its sender's deadline (a node paused with it in
// its socket must not clear clients that entered since), and the waits on
// its way end with that deadline.
func (r *Router) handleClear(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeClearRequest(body)
	if err != nil {
		return nil, err
	}
	if !presence.ValidChannelName(q.Channel) {
		return nil, nil
	}
	if deadline := q.Header.Deadline; deadline != 0 {
		now := r.cfg.Clock.Now().UnixNano()
		if now > deadline {
			return nil, fmt.Errorf("%w: forwarded clear arrived after its deadline", presence.ErrUnavailable)
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Duration(deadline-now))
		defer cancel()
	}
	return nil, r.clear(ctx, q.Channel, q.Header.Hops)
}

package router

import (
	"context"
	"fmt"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// Handle serves one router call from another node.
func (r *Router) Handle(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	switch method {
	case wire.MethodUpdate:
		return r.handleUpdate(ctx, body)
	case wire.MethodGet:
		return r.handleGet(ctx, body)
	case wire.MethodSince:
		return r.handleSince(ctx, body)
	case wire.MethodInterest:
		return r.handleInterest(ctx, body)
	case wire.MethodPush:
		return r.handlePush(body)
	case wire.MethodExtract:
		return r.handleExtract(ctx, body)
	case wire.MethodInstall:
		return r.handleInstall(ctx, body)
	case wire.MethodReplicate:
		return r.repl.HandleReplicate(ctx, body)
	case wire.MethodLeaves:
		return r.handleLeaves(ctx, body)
	}
	return nil, fmt.Errorf("%w: unknown router method %d", presence.ErrInvalid, method)
}

func (r *Router) handleGet(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeGetRequest(body)
	if err != nil {
		return nil, err
	}
	if len(q.Channels) > presence.MaxChannelsPerCall {
		return nil, fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, presence.MaxChannelsPerCall)
	}
	out, err := r.get(ctx, q.User, q.Channels, q.Header.Hops)
	if err != nil {
		return nil, err
	}
	reply := wire.GetReply{States: make([]*presence.ChannelState, len(q.Channels))}
	for i, ch := range q.Channels {
		reply.States[i] = out[ch]
	}
	return wire.Marshal(reply.Encode), nil
}

func (r *Router) handleSince(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeSinceRequest(body)
	if err != nil {
		return nil, err
	}
	if !presence.ValidChannelName(q.Channel) {
		reply := wire.SinceReply{Catchup: presence.Catchup{Unavailable: true}}
		return wire.Marshal(reply.Encode), nil
	}
	cu, err := r.since(ctx, q.User, q.Channel, q.After, q.Header.Hops, q.Node, q.Gen)
	if err != nil {
		return nil, err
	}
	reply := wire.SinceReply{Catchup: cu}
	return wire.Marshal(reply.Encode), nil
}

// handleInterest registers interest changes. A change for a channel this
// node handed away follows it to its new holder, so that it is not lost in
// a hand-off that was already under way.
func (r *Router) handleInterest(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeInterestRequest(body)
	if err != nil {
		return nil, err
	}
	onward := make(map[Member][]wire.InterestChange)
	for _, c := range q.Changes {
		to, moved, err := r.routes.tombstoneTo(ctx, c.Channel)
		if err != nil {
			return nil, err
		}
		if moved && to.Name != q.Node.Name {
			onward[to] = append(onward[to], c)
			continue
		}
		r.interest.apply(q.Node, c)
	}
	for to, changes := range onward {
		fwd := wire.InterestRequest{Node: q.Node, Changes: changes}
		if _, err := r.calls.Call(ctx, to, wire.MethodInterest, fwd.Encode); err != nil {
			r.log.Debug("forwarding interest failed", "to", to.Name, "err", err)
		}
	}
	return nil, nil
}

// handlePush feeds pushed messages to the local subscribers and answers the
// channels nobody here follows any more, so the owner stops pushing them.
func (r *Router) handlePush(body []byte) ([]byte, error) {
	q, err := wire.DecodePushRequest(body)
	if err != nil {
		return nil, err
	}
	var reply wire.PushReply
	for _, m := range q.Messages {
		if wanted, gen := r.feed.deliver(m); !wanted && !hasChannel(reply.Unwanted, m.Channel) {
			reply.Unwanted = append(reply.Unwanted, wire.InterestChange{Channel: m.Channel, Gen: gen})
		}
	}
	if len(reply.Unwanted) == 0 {
		return nil, nil
	}
	return wire.Marshal(reply.Encode), nil
}

func hasChannel(changes []wire.InterestChange, ch string) bool {
	for _, c := range changes {
		if c.Channel == ch {
			return true
		}
	}
	return false
}

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
		return r.fan.HandleInterest(ctx, body)
	case wire.MethodPush:
		return r.fan.HandlePush(ctx, body)
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

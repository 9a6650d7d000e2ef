package router

import (
	"context"
	"fmt"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// handler serves one node-to-node method: the request's body in, the
// reply's body out.
type handler func(ctx context.Context, body []byte) ([]byte, error)

// registerHandlers lists every node-to-node method of the router and what
// serves it; Handle dispatches by this table. The requests and replies are
// package wire's; the handlers of the router's parts are theirs.
func (r *Router) registerHandlers() {
	r.handlers = [wire.MaxMethod + 1]handler{
		wire.MethodUpdate:    r.handleUpdate,         // forwarded updates, batched
		wire.MethodGet:       r.handleGet,            // a Get share
		wire.MethodSince:     r.handleSince,          // a catch-up, registering interest
		wire.MethodInterest:  r.fan.HandleInterest,   // interest changes of a node with subscribers
		wire.MethodPush:      r.fan.HandlePush,       // messages for this node's subscribers
		wire.MethodExtract:   r.handleExtract,        // pull: hand a channel over
		wire.MethodInstall:   r.handleInstall,        // push: take a channel over
		wire.MethodReplicate: r.repl.HandleReplicate, // a replication batch for the copies kept here
		wire.MethodLeaves:    r.handleLeaves,         // leaves answered without the channel's state
		wire.MethodLimit:     r.limit.Handle,         // rate limit tokens borrowed, given back, recalled
		wire.MethodRelease:   r.handleRelease,        // a channel handed over is safe on two nodes (handed.go)

		wire.MethodInspect: r.handleInspect, // the server side's read (server_ops.go)
		wire.MethodCan:     r.handleCan,     // the server side's can?
		wire.MethodClear:   r.handleClear,   // the server side's clear
	}
}

// Handle serves one router call from another node (the server's transport
// handler sends methods 1 to wire.MaxMethod here).
func (r *Router) Handle(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	if int(method) < len(r.handlers) {
		if h := r.handlers[method]; h != nil {
			return h(ctx, body)
		}
	}
	return nil, fmt.Errorf("%w: unknown router method %d", presence.ErrInvalid, method)
}

// handleUpdate serves a batch of forwarded updates, in order on the calling
// goroutine (a goroutine per update measured half the throughput). The
// batch is decoded through the intern table (the same clients heartbeat
// again and again): fewer allocations per forwarded update, and the
// channel recognises its client's user by pointer.
func (r *Router) handleUpdate(ctx context.Context, body []byte) ([]byte, error) {
	reqs, err := r.intern.DecodeUpdateBatch(body)
	if err != nil {
		return nil, err
	}
	res := wire.NewUpdateResults(len(reqs))
	var vals []bool // scratch for each update's answers
	for i := range reqs {
		var err error
		vals, err = r.serveUpdate(ctx, &reqs[i], vals[:0])
		res.Add(vals, err)
	}
	return res.Bytes(), nil
}

func (r *Router) handleGet(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeGetRequest(body)
	if err != nil {
		return nil, err
	}
	if len(q.Channels) > presence.MaxChannelsPerCall {
		return nil, fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, presence.MaxChannelsPerCall)
	}
	out := make(map[string]*presence.ChannelState, len(q.Channels))
	valid := validNames(q.Channels, func(string) {}) // nil in the reply
	if err := r.get(ctx, q.User, valid, q.Header.Hops, out); err != nil {
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
	reply := wire.SinceReply{Catchup: presence.Catchup{Unavailable: true}}
	if presence.ValidChannelName(q.Channel) {
		if reply.Catchup, err = r.since(ctx, q.User, q.Channel, q.After, q.Header.Hops, q.Node, q.Gen); err != nil {
			return nil, err
		}
	}
	return wire.Marshal(reply.Encode), nil
}

// handleExtract hands a channel over to the node that took it over (the
// pull side of a hand-off). The answer says whether there was state, or
// where it went if this node had already handed it away.
func (r *Router) handleExtract(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeExtractRequest(body)
	if err != nil {
		return nil, err
	}
	reply, err := r.extract(ctx, q.Channel, q.Requester, q.Boot)
	r.log.Debug("extract answered", "channel", q.Channel, "requester", q.Requester.Name, "outcome", reply.Outcome,
		"err", err, "epoch", r.view.Load().epoch)
	if err != nil {
		return nil, err
	}
	return wire.Marshal(reply.Encode), nil
}

// handleInstall takes over a channel pushed by its previous holder.
func (r *Router) handleInstall(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeInstallRequest(body)
	if err != nil {
		return nil, err
	}
	if !presence.ValidChannelName(q.Snap.Channel) {
		return nil, fmt.Errorf("%w: install of invalid channel %q", presence.ErrInvalid, q.Snap.Channel)
	}
	if r.view.isDraining() {
		return nil, fmt.Errorf("%w: %s is leaving", presence.ErrMoved, r.self.Name)
	}
	if err := r.installLocal(ctx, q.Snap, q.Interest, q.Leaves, q.Origin, q.From.Name); err != nil {
		return nil, err
	}
	return r.installReply(), nil
}

// handleLeaves takes the leaves another node answered for a channel it had
// no state of.
func (r *Router) handleLeaves(ctx context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeLeavesRequest(body)
	if err != nil {
		return nil, err
	}
	if !presence.ValidChannelName(q.Channel) {
		return nil, fmt.Errorf("%w: leaves of invalid channel %q", presence.ErrInvalid, q.Channel)
	}
	return nil, r.takeLeaves(ctx, q)
}

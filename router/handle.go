package router

import (
	"context"
	"fmt"

	"github.com/presencehq/presence/presence"
)

// Transport methods served by Handle. The router owns methods 1 to
// MaxMethod; the server's transport handler sends those here.
const (
	MethodUpdate   uint16 = 1 // Update shares of several callers for one owner
	MethodGet      uint16 = 2 // Get share of one owner
	MethodSince    uint16 = 3 // a subscriber's catch-up, registering interest
	MethodInterest uint16 = 4 // interest changes of a node with subscribers
	MethodPush     uint16 = 5 // published messages for a node's subscribers
	MethodExtract  uint16 = 6 // pull: hand a channel over to the requester
	MethodInstall  uint16 = 7 // push: take over a channel's state
	MethodLeaves   uint16 = 9 // leaves answered where the channel had no state
	// MaxMethod is the highest method number reserved for the router.
	MaxMethod uint16 = 99
)

// TransportErrors returns the sentinel errors that must cross the wire; the
// server passes them as transport.Config.Errors. It is the same list
// as the package function, for callers holding a Router.
func (r *Router) TransportErrors() []error { return TransportErrors() }

// Handle serves one router call from another node.
func (r *Router) Handle(ctx context.Context, method uint16, body []byte) ([]byte, error) {
	switch method {
	case MethodUpdate:
		return r.handleUpdate(ctx, body)
	case MethodGet:
		return r.handleGet(ctx, body)
	case MethodSince:
		return r.handleSince(ctx, body)
	case MethodInterest:
		return r.handleInterest(ctx, body)
	case MethodPush:
		return r.handlePush(body)
	case MethodExtract:
		return r.handleExtract(ctx, body)
	case MethodInstall:
		return r.handleInstall(ctx, body)
	case MethodReplicate:
		return r.handleReplicate(body)
	case MethodLeaves:
		return r.handleLeaves(ctx, body)
	}
	return nil, fmt.Errorf("%w: unknown router method %d", presence.ErrInvalid, method)
}

func (r *Router) handleGet(ctx context.Context, body []byte) ([]byte, error) {
	q, err := decodeGetRequest(body)
	if err != nil {
		return nil, err
	}
	if len(q.channels) > presence.MaxChannelsPerCall {
		return nil, fmt.Errorf("%w: more than %d channels", presence.ErrInvalid, presence.MaxChannelsPerCall)
	}
	out, err := r.get(ctx, q.user, q.channels, q.hdr.hops)
	if err != nil {
		return nil, err
	}
	states := make([]*presence.ChannelState, len(q.channels))
	for i, ch := range q.channels {
		states[i] = out[ch]
	}
	var e encoder
	encodeStates(&e, states)
	return e.b, nil
}

func (r *Router) handleSince(ctx context.Context, body []byte) ([]byte, error) {
	q, err := decodeSinceRequest(body)
	if err != nil {
		return nil, err
	}
	if !presence.ValidChannelName(q.channel) {
		var e encoder
		e.catchup(presence.Catchup{Unavailable: true})
		return e.b, nil
	}
	cu, err := r.since(ctx, q.user, q.channel, q.after, q.hdr.hops, q.node, q.gen)
	if err != nil {
		return nil, err
	}
	var e encoder
	e.catchup(cu)
	return e.b, nil
}

// handleInterest registers interest changes. A change for a channel this
// node handed away follows it to its new holder, so that it is not lost in
// a hand-off that was already under way.
func (r *Router) handleInterest(ctx context.Context, body []byte) ([]byte, error) {
	q, err := decodeInterestRequest(body)
	if err != nil {
		return nil, err
	}
	onward := make(map[Member][]interestChange)
	for _, c := range q.changes {
		to, moved, err := r.tombstoneTo(ctx, c.channel)
		if err != nil {
			return nil, err
		}
		if moved && to.Name != q.node.Name {
			onward[to] = append(onward[to], c)
			continue
		}
		r.interest.apply(q.node, c)
	}
	for to, changes := range onward {
		fwd := interestRequest{node: q.node, changes: changes}
		if _, err := r.call(ctx, to, MethodInterest, fwd.encode); err != nil {
			r.log.Debug("forwarding interest failed", "to", to.Name, "err", err)
		}
	}
	return nil, nil
}

// handlePush feeds pushed messages to the local subscribers and answers the
// channels nobody here follows any more, so the owner stops pushing them.
func (r *Router) handlePush(body []byte) ([]byte, error) {
	q, err := decodePushRequest(body)
	if err != nil {
		return nil, err
	}
	var unwanted []interestChange
	for _, m := range q.messages {
		if wanted, gen := r.feed.deliver(m); !wanted && !hasChannel(unwanted, m.Channel) {
			unwanted = append(unwanted, interestChange{channel: m.Channel, gen: gen})
		}
	}
	if len(unwanted) == 0 {
		return nil, nil
	}
	var e encoder
	encodeChanges(&e, unwanted)
	return e.b, nil
}

func hasChannel(changes []interestChange, ch string) bool {
	for _, c := range changes {
		if c.channel == ch {
			return true
		}
	}
	return false
}

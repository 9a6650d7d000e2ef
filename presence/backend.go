package presence

import (
	"context"
	"fmt"
	"slices"
)

// Backend is the server side's presence API over a Service: what
// Discourse's server code does with PresenceChannel from Ruby (chat's
// "replying" indicator, the who's-online plugin, a page embedding a
// channel's initial state), named as Discourse names it. The caller is
// trusted: it acts for any user, reads the users of count-only channels
// and is not rate limited. Over a cluster's Service (the Router, which a
// node's server.Server.Presence wraps) every operation works whichever
// node owns the channel. It is safe for concurrent use.
type Backend struct {
	svc Service
}

// NewBackend returns the server side's API over svc.
func NewBackend(svc Service) *Backend { return &Backend{svc: svc} }

// Present marks clientID of u present in channel (Discourse's
// channel.present(user_id:, client_id:)), or moves its expiry when it is
// present already: call it again within the channel's timeout to stay
// present. It reports false when the channel does not exist, u may not
// enter it, or it holds its MaxUsers users and u is not one of them.
func (b *Backend) Present(ctx context.Context, u *User, clientID, channel string) (bool, error) {
	got, err := b.svc.Update(ctx, u, clientID, []string{channel}, nil)
	if err != nil {
		return false, err
	}
	return got[channel], nil
}

// Leave makes client clientID of user userID leave channel (Discourse's
// channel.leave(user_id:, client_id:)). It says nothing about whether the
// channel exists or the client was present.
func (b *Backend) Leave(ctx context.Context, userID, clientID, channel string) error {
	_, err := b.svc.Update(ctx, &User{ID: userID}, clientID, nil, []string{channel})
	return err
}

// Update is POST /presence/update for u: present channels first (at most
// MaxChannelsPerCall), then leave channels (any number, sent
// MaxLeaveChannels at a time), with one answer per present channel.
func (b *Backend) Update(ctx context.Context, u *User, clientID string, present, leave []string) (map[string]bool, error) {
	first := leave[:min(len(leave), MaxLeaveChannels)]
	out, err := b.svc.Update(ctx, u, clientID, present, first)
	for rest := leave[len(first):]; err == nil && len(rest) > 0; {
		chunk := rest[:min(len(rest), MaxLeaveChannels)]
		rest = rest[len(chunk):]
		_, err = b.svc.Update(ctx, u, clientID, nil, chunk)
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

// State returns channel's whole state (Discourse's channel.state): count,
// last message id and the present users sorted by id, listed even when the
// channel is count-only. A channel that does not exist, or an invalid
// name, is an error wrapping ErrNotFound (Discourse raises NotFound).
func (b *Backend) State(ctx context.Context, channel string) (*ChannelState, error) {
	states, err := b.svc.Inspect(ctx, []string{channel})
	if err != nil {
		return nil, err
	}
	st := states[channel]
	if st == nil {
		return nil, fmt.Errorf("%w: channel %q does not exist", ErrNotFound, channel)
	}
	return st, nil
}

// States returns the whole state of each channel, nil for one that does
// not exist or an invalid name; any number of channels, asked
// MaxInspectChannels at a time.
func (b *Backend) States(ctx context.Context, channels []string) (map[string]*ChannelState, error) {
	out := make(map[string]*ChannelState, len(channels))
	for chunk := range slices.Chunk(channels, MaxInspectChannels) {
		states, err := b.svc.Inspect(ctx, chunk)
		if err != nil {
			return nil, err
		}
		for _, ch := range chunk {
			out[ch] = states[ch]
		}
	}
	return out, nil
}

// UserIDs returns the ids of channel's present users, sorted (Discourse's
// channel.user_ids), count-only channels included; ErrNotFound as State.
func (b *Backend) UserIDs(ctx context.Context, channel string) ([]string, error) {
	st, err := b.State(ctx, channel)
	if err != nil {
		return nil, err
	}
	return st.UserIDs(), nil
}

// Count returns how many users are present in channel (Discourse's
// channel.count); ErrNotFound as State.
func (b *Backend) Count(ctx context.Context, channel string) (int, error) {
	st, err := b.State(ctx, channel)
	if err != nil {
		return 0, err
	}
	return st.Count, nil
}

// Can answers what u (nil: an anonymous visitor) may do in channel, as the
// node serving the channel's updates decides it; the zero Access for a
// channel that does not exist.
func (b *Backend) Can(ctx context.Context, u *User, channel string) (Access, error) {
	return b.svc.Can(ctx, u, channel)
}

// CanView is Discourse's channel.can_view?(user_id:): whether u (nil: an
// anonymous visitor) may see the channel's state and messages.
func (b *Backend) CanView(ctx context.Context, u *User, channel string) (bool, error) {
	acc, err := b.svc.Can(ctx, u, channel)
	return acc.CanView, err
}

// CanEnter is Discourse's channel.can_enter?(user_id:): whether u may be
// present in the channel. A channel at its MaxUsers still refuses a user
// who may enter but is not present yet.
func (b *Backend) CanEnter(ctx context.Context, u *User, channel string) (bool, error) {
	acc, err := b.svc.Can(ctx, u, channel)
	return acc.CanEnter, err
}

// Clear makes every client of channel leave at once (Discourse's
// channel.clear), publishing one message when anyone was present.
func (b *Backend) Clear(ctx context.Context, channel string) error {
	return b.svc.Clear(ctx, channel)
}

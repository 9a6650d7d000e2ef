package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
)

// User is the user a server-side update acts for, as a user token's
// claims would name them.
type User struct {
	ID             string   `json:"id"` // 1..128 bytes
	Username       string   `json:"username,omitempty"`
	Name           string   `json:"name,omitempty"`
	AvatarTemplate string   `json:"avatar_template,omitempty"`
	Groups         []string `json:"groups,omitempty"` // matched against allowed_group_ids
}

// UserInfo is what other users see of a present user.
type UserInfo struct {
	ID             string `json:"id"`
	Username       string `json:"username"`
	Name           string `json:"name"`
	AvatarTemplate string `json:"avatar_template"`
}

// ChannelState is a channel's whole state, as the trusted backend sees it:
// users are listed in count-only channels too.
type ChannelState struct {
	Count         int   `json:"count"`
	LastMessageID int64 `json:"last_message_id"` // pass it to a browser's subscribe
	CountOnly     bool  `json:"count_only"`
	// UserIDs and Users are sorted by id.
	UserIDs []string   `json:"user_ids"`
	Users   []UserInfo `json:"users"`
}

// Access is what a user may do in a channel.
type Access struct {
	Exists    bool `json:"exists"`
	CanView   bool `json:"can_view"`
	CanEnter  bool `json:"can_enter"` // a permission: a channel at MaxUsers still refuses new users
	CountOnly bool `json:"count_only"`
	MaxUsers  int  `json:"max_users,omitempty"` // 0: no cap
}

// Paths of the server-side API.
const (
	pathUpdate = "/server/presence/update"
	pathGet    = "/server/presence/get"
	pathCan    = "/server/presence/can"
	pathClear  = "/server/presence/channel"
)

// updateBody is the body of POST /server/presence/update.
type updateBody struct {
	User     User     `json:"user"`
	ClientID string   `json:"client_id"`
	Present  []string `json:"present_channels,omitempty"`
	Leave    []string `json:"leave_channels,omitempty"`
}

// Update marks client clientID of u present in each present channel (at
// most 50) and then makes it leave each leave channel (at most 500), as a
// browser's POST /presence/update would for u. It answers, per present
// channel, whether the client is present there: false where the channel
// does not exist, u may not enter it, or it holds its max_users users and
// u is not one of them. Call it again within the channels' timeout to
// stay present.
func (cl *Client) Update(ctx context.Context, u User, clientID string, present, leave []string) (map[string]bool, error) {
	out := map[string]bool{}
	err := cl.do(ctx, call{method: http.MethodPost, path: pathUpdate,
		body: updateBody{User: u, ClientID: clientID, Present: present, Leave: leave}, out: &out})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Present marks client clientID of u present in channel (Discourse's
// channel.present) and reports whether it is.
func (cl *Client) Present(ctx context.Context, u User, clientID, channel string) (bool, error) {
	got, err := cl.Update(ctx, u, clientID, []string{channel}, nil)
	if err != nil {
		return false, err
	}
	return got[channel], nil
}

// Leave makes client clientID of user userID leave channel (Discourse's
// channel.leave). It says nothing about whether the client was present.
func (cl *Client) Leave(ctx context.Context, userID, clientID, channel string) error {
	_, err := cl.Update(ctx, User{ID: userID}, clientID, nil, []string{channel})
	return err
}

// Get returns the whole state of each channel: nil for one that does not
// exist or has an invalid name. Any number of channels, asked
// MaxChannelsPerGet at a time.
func (cl *Client) Get(ctx context.Context, channels ...string) (map[string]*ChannelState, error) {
	out := make(map[string]*ChannelState, len(channels))
	for start := 0; start < len(channels); start += MaxChannelsPerGet {
		chunk := channels[start:min(start+MaxChannelsPerGet, len(channels))]
		got := map[string]*ChannelState{}
		err := cl.do(ctx, call{method: http.MethodGet, path: pathGet, query: url.Values{"channels[]": chunk}, out: &got})
		if err != nil {
			return nil, err
		}
		for _, ch := range chunk {
			out[ch] = got[ch]
		}
	}
	return out, nil
}

// State returns channel's whole state (Discourse's channel.state); a
// channel that does not exist is an error matching ErrNotFound.
func (cl *Client) State(ctx context.Context, channel string) (*ChannelState, error) {
	got, err := cl.Get(ctx, channel)
	if err != nil {
		return nil, err
	}
	if got[channel] == nil {
		return nil, fmt.Errorf("%w: channel %q does not exist", ErrNotFound, channel)
	}
	return got[channel], nil
}

// Can answers what u (nil: an anonymous visitor) may do in channel; its id
// and groups count, the rest of u does not. The zero Access for a channel
// that does not exist.
func (cl *Client) Can(ctx context.Context, channel string, u *User) (Access, error) {
	q := url.Values{"channel": {channel}}
	if u != nil {
		q.Set("user_id", u.ID)
		if len(u.Groups) > 0 {
			q["groups[]"] = u.Groups
		}
	}
	var acc Access
	err := cl.do(ctx, call{method: http.MethodGet, path: pathCan, query: q, out: &acc})
	return acc, err
}

// Clear makes every client of channel leave at once (Discourse's
// channel.clear): one message when anyone was present.
func (cl *Client) Clear(ctx context.Context, channel string) error {
	return cl.do(ctx, call{method: http.MethodDelete, path: pathClear, query: url.Values{"channel": {channel}}})
}

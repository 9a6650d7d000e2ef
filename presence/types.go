// Package presence holds channel state and rules: per-user dedupe of clients,
// expiry by a timer wheel, messages with contiguous ids and a backlog, channel
// configuration (Raft-stored prefix rules, HTTP callbacks, registered Go
// functions) and permissions. It knows nothing about HTTP or the cluster.
package presence

import (
	"context"
	"errors"
	"slices"
)

// Sentinel errors. Callers wrap them with %w; the api package maps them to HTTP
// statuses in one place.
var (
	ErrInvalid      = errors.New("invalid input")                 // 400
	ErrUnauthorized = errors.New("not authenticated")             // 401
	ErrForbidden    = errors.New("forbidden")                     // 403
	ErrNotFound     = errors.New("not found")                     // 404
	ErrTooLarge     = errors.New("request too large")             // 413
	ErrRateLimited  = errors.New("rate limited")                  // 429
	ErrOverloaded   = errors.New("overloaded")                    // 503
	ErrUnavailable  = errors.New("temporarily unavailable")       // 503
	ErrMoved        = errors.New("channel owned by another node") // retried by the cluster layer
)

// Limits of the contract.
const (
	DefaultTimeoutSeconds = 60 // a client's presence lifetime without heartbeat
	MinTimeoutSeconds     = 1
	MaxTimeoutSeconds     = 3600
	MaxChannelNameBytes   = 256
	MaxClientIDBytes      = 128
	MaxUserIDBytes        = 128
	MaxChannelsPerCall    = 50   // channels of one get, or present channels of one update
	MaxLeaveChannels      = 500  // leave channels of one update (a page leaving everything)
	MaxSubscribeChannels  = 500  // channels of one SSE stream
	BacklogMinMessages    = 1000 // a channel keeps at least its last 1000 messages...
	BacklogMinAgeSeconds  = 600  // ...and every message younger than 10 minutes
)

// User is the verified identity of a caller. The zero value (or nil) is anonymous.
type User struct {
	ID             string   `json:"id"`
	Username       string   `json:"username,omitempty"`
	Name           string   `json:"name,omitempty"`
	AvatarTemplate string   `json:"avatar_template,omitempty"`
	Groups         []string `json:"groups,omitempty"`
}

// Anonymous reports whether u carries no identity.
func (u *User) Anonymous() bool { return u == nil || u.ID == "" }

// Info returns the fields shown to other users.
func (u *User) Info() UserInfo {
	return UserInfo{ID: u.ID, Username: u.Username, Name: u.Name, AvatarTemplate: u.AvatarTemplate}
}

// UserInfo is what other users see of a present user.
type UserInfo struct {
	ID             string `json:"id"`
	Username       string `json:"username"`
	Name           string `json:"name"`
	AvatarTemplate string `json:"avatar_template"`
}

// Config is a channel's configuration. The zero value is a private channel
// nobody may view, with the default timeout.
type Config struct {
	Public          bool     `json:"public,omitempty"`
	AllowedUserIDs  []string `json:"allowed_user_ids,omitempty"`
	AllowedGroupIDs []string `json:"allowed_group_ids,omitempty"`
	CountOnly       bool     `json:"count_only,omitempty"`
	// Timeout in seconds; 0 means DefaultTimeoutSeconds.
	Timeout int `json:"timeout,omitempty"`
}

// EveryoneGroup admits every signed-in user when listed in AllowedGroupIDs.
const EveryoneGroup = "everyone"

// TimeoutSeconds returns the effective timeout.
func (c *Config) TimeoutSeconds() int {
	if c.Timeout == 0 {
		return DefaultTimeoutSeconds
	}
	return c.Timeout
}

// CanView reports whether u may see the channel's state and messages.
func (c *Config) CanView(u *User) bool {
	if c.Public {
		return true
	}
	if u.Anonymous() {
		return false
	}
	if slices.Contains(c.AllowedUserIDs, u.ID) {
		return true
	}
	for _, g := range c.AllowedGroupIDs {
		if g == EveryoneGroup || slices.Contains(u.Groups, g) {
			return true
		}
	}
	return false
}

// CanEnter reports whether u may be present in the channel.
func (c *Config) CanEnter(u *User) bool { return !u.Anonymous() && c.CanView(u) }

// ChannelState is the answer of /presence/get for one channel.
type ChannelState struct {
	CountOnly     bool       `json:"-"`
	Count         int        `json:"count"`
	LastMessageID int64      `json:"last_message_id"`
	Users         []UserInfo `json:"users,omitempty"` // empty for count-only channels
}

// Message is one published change of a channel. Exactly one of the payload
// groups is set: EnteringUsers, LeavingUserIDs, or CountDelta (count-only).
type Message struct {
	Channel        string     `json:"channel"`
	ID             int64      `json:"message_id"`
	EnteringUsers  []UserInfo `json:"-"`
	LeavingUserIDs []string   `json:"-"`
	CountDelta     int        `json:"-"`
	CountOnly      bool       `json:"-"`
	// Resync marks a break in the channel's history (two states were
	// merged): it carries no change, and every subscriber must re-read the
	// channel instead of applying it.
	Resync bool `json:"-"`
	// Audience is the channel config at publish time: only users allowed to
	// view by it receive the message.
	Audience *Config `json:"-"`
	// PublishedAtUnixMilli helps prune the backlog by age.
	PublishedAtUnixMilli int64 `json:"-"`
}

// EventKind tells what a subscription event carries.
type EventKind uint8

// Event kinds streamed to subscribers.
const (
	EventMessage     EventKind = iota + 1 // a Message
	EventResync                           // continuity lost: the client must GET the channel again
	EventUnavailable                      // channel does not exist or may not be viewed
)

// Event is one item of a subscription stream.
type Event struct {
	Kind    EventKind
	Channel string
	Message *Message // for EventMessage
	// LastID is the id the stream's cursor for Channel moves to after this
	// event (the message id, or the channel's last id at resync).
	LastID int64
}

// Service is what the HTTP layer needs. The local Engine implements it for a
// node that owns every channel; the cluster layer wraps it to forward.
type Service interface {
	// Get returns each channel's state; nil where the channel does not exist,
	// the name is invalid, or u may not view it.
	Get(ctx context.Context, u *User, channels []string) (map[string]*ChannelState, error)
	// Update marks clientID present in each present channel (true where
	// applied) and then makes it leave each leave channel.
	Update(ctx context.Context, u *User, clientID string, present, leave []string) (map[string]bool, error)
	// Subscribe streams events for the channels of from (name -> last seen id,
	// -1 for new messages only) until ctx ends or the Subscription is closed.
	Subscribe(ctx context.Context, u *User, from map[string]int64) (Subscription, error)
}

// Subscription is a live stream of events for a set of channels.
type Subscription interface {
	// Events delivers events in order; it is closed when the subscription
	// ends (Close, context end, or the subscriber falling too far behind).
	Events() <-chan Event
	// Close ends the subscription and releases its resources. Idempotent.
	Close()
}

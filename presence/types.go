// Package presence holds channel state and rules: per-user dedupe of clients,
// expiry by a timer wheel, messages with contiguous ids and a backlog, channel
// configuration (Raft-stored prefix rules, HTTP callbacks, registered Go
// functions) and permissions. It knows nothing about HTTP or the cluster.
package presence

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
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
	MaxChannelsPerCall    = 50        // channels of one get, or present channels of one update
	MaxLeaveChannels      = 500       // leave channels of one update (a page leaving everything)
	MaxInspectChannels    = 500       // channels of one Inspect (the server side's read)
	MaxSubscribeChannels  = 500       // channels of one SSE stream
	MaxUsersLimit         = 1_000_000 // the highest max_users of a channel config
	BacklogMinMessages    = 1000      // a channel keeps at least its last 1000 messages...
	BacklogMinAgeSeconds  = 600       // ...and every message younger than 10 minutes
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
	// MaxUsers caps the users present at once (1..MaxUsersLimit); 0 means
	// no cap. A user who is not present yet is refused (false) while the
	// channel holds MaxUsers users; present users keep heartbeating, and
	// their new clients are admitted (presence is per user). A merge of two
	// states (a healed partition) keeps every client even past the cap:
	// nobody is removed, and new users are refused until the channel is
	// below the cap again.
	MaxUsers int `json:"max_users,omitempty"`
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

// CanEnter reports whether u may be present in the channel. It is about
// permission only: a channel holding MaxUsers users still refuses a user
// who may enter but is not present yet.
func (c *Config) CanEnter(u *User) bool { return !u.Anonymous() && c.CanView(u) }

// Access is what a user may do in a channel (the server side's can?).
type Access struct {
	Exists    bool `json:"exists"`    // the channel has a config
	CanView   bool `json:"can_view"`  // Config.CanView
	CanEnter  bool `json:"can_enter"` // Config.CanEnter
	CountOnly bool `json:"count_only"`
	// MaxUsers is the channel's cap, 0 for none.
	MaxUsers int `json:"max_users,omitempty"`
}

// AccessOf answers what u may do in a channel of config cfg (nil: the
// channel does not exist).
func AccessOf(cfg *Config, u *User) Access {
	if cfg == nil {
		return Access{}
	}
	return Access{Exists: true, CanView: cfg.CanView(u), CanEnter: cfg.CanEnter(u), CountOnly: cfg.CountOnly, MaxUsers: cfg.MaxUsers}
}

// ChannelState is the answer of /presence/get for one channel.
type ChannelState struct {
	CountOnly     bool  `json:"-"`
	Count         int   `json:"count"`
	LastMessageID int64 `json:"last_message_id"`
	// Users are sorted by id; empty for count-only channels, except in
	// the answers of Inspect (the server side is trusted).
	Users []UserInfo `json:"users,omitempty"`
}

// UserIDs returns the ids of Users, in their order.
func (st *ChannelState) UserIDs() []string {
	ids := make([]string, len(st.Users))
	for i, u := range st.Users {
		ids[i] = u.ID
	}
	return ids
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
	// Occupied: the message brought the channel its first user; Vacated:
	// it took the last one away. The channel's owner sets them when it
	// publishes; they do not travel between nodes (a state handed over
	// derives them again from its users and backlog).
	Occupied bool `json:"-"`
	Vacated  bool `json:"-"`
	// publishedBy counts the published messages of the channel state that
	// issued m, on the node that issued it (nil on a message from
	// elsewhere): see MarkPublished.
	publishedBy *atomic.Int64
}

// MarkPublished records that m went out to its channel's subscribers: a
// catch-up of the channel on the node that issued m may include it from
// now on (Engine.Since), and never before. Whoever publishes a message of
// a channel held here calls it: the Engine without a Replicator, the
// router once the replica has the change. A message the replica refused
// is never published and so never caught up with: a later owner may issue
// its id with other content. On a message from elsewhere it does nothing.
func (m *Message) MarkPublished() {
	p := m.publishedBy
	if p == nil {
		return
	}
	for cur := p.Load(); m.ID > cur && !p.CompareAndSwap(cur, m.ID); cur = p.Load() {
	}
}

// UserDelta returns how the message changed the number of users present:
// the users entering, minus those leaving, or a count-only channel's
// delta. ok is false for a resync marker, which says nothing of the
// change.
func (m *Message) UserDelta() (delta int, ok bool) {
	switch {
	case m.Resync:
		return 0, false
	case m.CountOnly:
		return m.CountDelta, true
	}
	return len(m.EnteringUsers) - len(m.LeavingUserIDs), true
}

// markOccupancy sets Occupied and Vacated from the number of users present
// right after the message.
func (m *Message) markOccupancy(usersAfter int) {
	if d, ok := m.UserDelta(); ok {
		m.Occupied = d > 0 && usersAfter == d
		m.Vacated = d < 0 && usersAfter == 0
	}
}

// EventKind tells what a subscription event carries.
type EventKind uint8

// Event kinds streamed to subscribers.
const (
	EventMessage     EventKind = iota + 1 // a Message
	EventResync                           // continuity lost: the client must GET the channel again
	EventUnavailable                      // channel does not exist or may not be viewed
	// EventPosition tells where a channel subscribed for new messages only
	// (-1) stands, its last id, so that the stream's cursor covers it at
	// once: a reconnection before its first message resumes from there
	// instead of asking for new messages again. Nothing for the subscriber
	// to act on.
	EventPosition
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

	// The server side's operations: the application's backend is trusted,
	// so they answer whatever any user may view (Update above acts for the
	// user it is given).

	// Inspect returns the whole state of each of at most MaxInspectChannels
	// distinct channels, users included even in count-only channels; nil
	// only where the channel does not exist or its name is invalid.
	Inspect(ctx context.Context, channels []string) (map[string]*ChannelState, error)
	// Can answers what u (nil: anonymous) may do in channel, as the
	// channel's owner decides it for an update; the zero Access for a
	// channel that does not exist or an invalid name.
	Can(ctx context.Context, u *User, channel string) (Access, error)
	// Clear makes every client of channel leave at once: one message
	// (leaving_user_ids, or count_delta) when anyone was present. A
	// channel that does not exist or an invalid name is nothing to clear.
	Clear(ctx context.Context, channel string) error
}

// Subscription is a live stream of events for a set of channels.
type Subscription interface {
	// Events delivers events in order; it is closed when the subscription
	// ends (Close, context end, or the subscriber falling too far behind).
	Events() <-chan Event
	// Close ends the subscription and releases its resources. Idempotent.
	Close()
}

// QueuedSubscription is a Subscription that can also be read without a
// goroutine or a channel of its own, as the Hub's subscriptions can: a
// server holding many idle streams registers a wake function with Notify
// and takes the queued events when it is called. A subscription is read
// either through Events or through Notify and Take, never both.
type QueuedSubscription interface {
	Subscription
	// Notify registers wake, called without the subscription's locks
	// whenever events become available to Take after there were none,
	// and when the subscription ends. It must not block. It is called at
	// once if events are queued already. At most once, and not after
	// Events.
	Notify(wake func())
	// Take appends the queued events, in order, to dst and empties the
	// queue. ended reports that the subscription ended (Close, context
	// end, or the queue overflowing because the subscriber fell too far
	// behind) and no event follows those returned.
	Take(dst []Event) (evs []Event, ended bool)
}

package presence

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// clientKey identifies a client: client ids are scoped per user, so one user
// can never make another user's client leave. A struct key keeps map lookups
// free of allocation.
type clientKey struct{ userID, clientID string }

// client is one present browser tab or app instance.
type client struct {
	key       clientKey
	user      *presentUser
	expiresAt int64 // unix nanoseconds; moved by every heartbeat
	armedAt   int64 // deadline the timer was last armed for
	gone      bool  // left or expired; its timer may still be in flight
	timer     timer[*client]
}

// presentUser is a user with at least one present client.
type presentUser struct {
	info    UserInfo // from the token of the latest heartbeat
	clients int
}

// channel is the state of one channel, owned by a single actor goroutine.
// Its methods return the message to publish, or nil.
type channel struct {
	name    string
	cfg     *Config // latest config seen: the audience of messages
	clients map[clientKey]*client
	users   map[string]*presentUser
	lastID  int64
	backlog backlog
	timers  *timerGroup[*client] // identifies this incarnation's timers
	wheel   *wheel[*client]
	metrics *Metrics
}

func newChannel(name string, baseID int64, w *wheel[*client], m *Metrics) *channel {
	return &channel{
		name:    name,
		clients: make(map[clientKey]*client),
		users:   make(map[string]*presentUser),
		lastID:  baseID,
		timers:  &timerGroup[*client]{name: name},
		wheel:   w,
		metrics: m,
	}
}

// empty reports whether no client is present.
func (ch *channel) empty() bool { return len(ch.clients) == 0 }

// present marks a client of u present until now + the channel timeout. A
// heartbeat of a known client only moves its expiry: the wheel notices when
// the old deadline fires (lazy rescheduling).
func (ch *channel) present(u *User, clientID string, cfg *Config, now int64) *Message {
	ch.cfg = cfg
	expires := now + int64(cfg.TimeoutSeconds())*int64(time.Second)
	if c, ok := ch.clients[clientKey{u.ID, clientID}]; ok {
		c.expiresAt = expires
		ch.refreshInfo(c.user, u)
		if expires < c.armedAt { // the timeout shrank: fire earlier
			c.armedAt = expires
			ch.wheel.schedule(&c.timer, expires)
		}
		return nil
	}
	pu, first := ch.add(u, clientID, expires)
	if !first {
		return nil
	}
	if cfg.CountOnly {
		return ch.publish(func(m *Message) { m.CountDelta = 1 }, now)
	}
	return ch.publish(func(m *Message) { m.EnteringUsers = []UserInfo{pu.info} }, now)
}

// add registers a new client present until expires and reports whether it is
// its user's first.
func (ch *channel) add(u *User, clientID string, expires int64) (pu *presentUser, first bool) {
	c := &client{key: clientKey{u.ID, clientID}, expiresAt: expires, armedAt: expires}
	c.timer.group, c.timer.value = ch.timers, c
	ch.clients[c.key] = c
	ch.metrics.clients.Add(1)
	ch.wheel.schedule(&c.timer, expires)

	pu, ok := ch.users[u.ID]
	if !ok {
		pu = &presentUser{info: u.Info()}
		ch.users[u.ID] = pu
		ch.metrics.users.Add(1)
	} else {
		ch.refreshInfo(pu, u)
	}
	c.user = pu
	pu.clients++
	return pu, pu.clients == 1
}

// refreshInfo keeps what other users see of pu in line with u's latest token.
func (ch *channel) refreshInfo(pu *presentUser, u *User) {
	if pu.info.Username != u.Username || pu.info.Name != u.Name || pu.info.AvatarTemplate != u.AvatarTemplate {
		pu.info = u.Info()
	}
}

// leave removes a client at once.
func (ch *channel) leave(userID, clientID string, now int64) *Message {
	c, ok := ch.clients[clientKey{userID, clientID}]
	if !ok {
		return nil
	}
	ch.wheel.cancel(&c.timer)
	if !ch.remove(c) {
		return nil
	}
	return ch.leaving([]string{userID}, now)
}

// remove forgets c and reports whether its user has no client left.
func (ch *channel) remove(c *client) (userLeft bool) {
	c.gone = true
	delete(ch.clients, c.key)
	ch.metrics.clients.Add(-1)
	c.user.clients--
	if c.user.clients > 0 {
		return false
	}
	delete(ch.users, c.key.userID)
	ch.metrics.users.Add(-1)
	return true
}

// leaving publishes that the users left, in one message.
func (ch *channel) leaving(userIDs []string, now int64) *Message {
	if ch.cfg.CountOnly {
		return ch.publish(func(m *Message) { m.CountDelta = -len(userIDs) }, now)
	}
	return ch.publish(func(m *Message) { m.LeavingUserIDs = userIDs }, now)
}

// expire handles the timers of this channel that the wheel found due at now:
// clients whose deadline passed leave (every user left without clients in one
// message), the others are re-armed at their newer deadline. It returns the
// message and the number of clients expired.
func (ch *channel) expire(g *timerGroup[*client], due *timer[*client], now int64) (*Message, int) {
	if g != ch.timers {
		return nil, 0 // timers of a previous incarnation of the channel
	}
	var left []string
	var rearm *timer[*client]
	expired := 0
	for t := due; t != nil; {
		next := t.next
		c := t.value
		switch {
		case c.gone:
		case c.expiresAt <= now:
			expired++
			if ch.remove(c) {
				left = append(left, c.key.userID)
			}
		default:
			t.deadline, c.armedAt = c.expiresAt, c.expiresAt
			t.next = rearm
			rearm = t
		}
		t = next
	}
	ch.wheel.scheduleList(rearm)
	ch.metrics.expired.Add(uint64(expired))
	if len(left) == 0 {
		return nil, expired
	}
	slices.Sort(left)
	return ch.leaving(left, now), expired
}

// publish appends the next message to the backlog and returns it.
func (ch *channel) publish(fill func(*Message), now int64) *Message {
	ch.lastID++
	m := &Message{
		Channel:              ch.name,
		ID:                   ch.lastID,
		CountOnly:            ch.cfg.CountOnly,
		Audience:             ch.cfg,
		PublishedAtUnixMilli: now / int64(time.Millisecond),
	}
	fill(m)
	ch.backlog.push(m, m.PublishedAtUnixMilli)
	ch.metrics.published.Add(1)
	return m
}

// state returns the channel as /presence/get shows it under cfg.
func (ch *channel) state(cfg *Config) *ChannelState {
	st := &ChannelState{CountOnly: cfg.CountOnly, Count: len(ch.users), LastMessageID: ch.lastID}
	if cfg.CountOnly {
		return st
	}
	st.Users = make([]UserInfo, 0, len(ch.users))
	for _, pu := range ch.users {
		st.Users = append(st.Users, pu.info)
	}
	slices.SortFunc(st.Users, func(a, b UserInfo) int { return cmp.Compare(a.ID, b.ID) })
	return st
}

// since returns the catch-up of a subscriber that has seen every message up
// to after; a negative after asks for the last id only.
func (ch *channel) since(after int64) Catchup {
	if after < 0 {
		return Catchup{LastID: ch.lastID}
	}
	msgs, ok := ch.backlog.since(after, ch.lastID)
	return Catchup{LastID: ch.lastID, Messages: msgs, Resync: !ok}
}

// snapshot exports the whole state for a hand-off.
func (ch *channel) snapshot() *ChannelSnapshot {
	s := &ChannelSnapshot{
		Channel: ch.name,
		Config:  ch.cfg,
		LastID:  ch.lastID,
		Clients: make([]ClientSnapshot, 0, len(ch.clients)),
		Backlog: ch.backlog.all(),
	}
	for _, c := range ch.clients {
		s.Clients = append(s.Clients, ClientSnapshot{User: c.user.info, ClientID: c.key.clientID, ExpiresAtUnixNano: c.expiresAt})
	}
	return s
}

// clear drops every client (publishing nothing) and every message.
func (ch *channel) clear() {
	for _, c := range ch.clients {
		ch.wheel.cancel(&c.timer)
		ch.remove(c)
	}
	ch.backlog.reset()
}

// install replaces the state by s. The caller validated s.
func (ch *channel) install(s *ChannelSnapshot) {
	ch.clear()
	ch.cfg = s.Config
	ch.lastID = s.LastID
	for _, m := range s.Backlog {
		ch.backlog.push(m, m.PublishedAtUnixMilli)
	}
	for _, cs := range s.Clients {
		u := &User{ID: cs.User.ID, Username: cs.User.Username, Name: cs.User.Name, AvatarTemplate: cs.User.AvatarTemplate}
		if _, dup := ch.clients[clientKey{u.ID, cs.ClientID}]; !dup {
			ch.add(u, cs.ClientID, cs.ExpiresAtUnixNano)
		}
	}
}

// ChannelSnapshot is the whole state of a channel: what a new owner needs to
// continue it without clients noticing (same members, expiries, message ids
// and backlog).
type ChannelSnapshot struct {
	Channel string
	// Config is the latest config the channel saw (audience of its messages);
	// nil when the channel never had a client.
	Config  *Config
	LastID  int64
	Clients []ClientSnapshot
	Backlog []*Message // oldest first, contiguous ids ending at LastID
}

// ClientSnapshot is one present client of a ChannelSnapshot.
type ClientSnapshot struct {
	User              UserInfo
	ClientID          string
	ExpiresAtUnixNano int64
}

// Validate checks that s is internally consistent.
func (s *ChannelSnapshot) Validate() error {
	if len(s.Clients) > 0 && s.Config == nil {
		return fmt.Errorf("%w: snapshot of %s has clients but no config", ErrInvalid, s.Channel)
	}
	for i, m := range s.Backlog {
		if want := s.LastID - int64(len(s.Backlog)-1-i); m == nil || m.ID != want || m.Channel != s.Channel {
			return fmt.Errorf("%w: snapshot of %s: backlog is not this channel's contiguous ids up to %d", ErrInvalid, s.Channel, s.LastID)
		}
	}
	for _, c := range s.Clients {
		if c.User.ID == "" || c.ClientID == "" {
			return fmt.Errorf("%w: snapshot of %s: client without ids", ErrInvalid, s.Channel)
		}
	}
	return nil
}

// Catchup is what a subscriber needs to continue a channel from an id.
type Catchup struct {
	// Unavailable: the channel does not exist or may not be viewed.
	Unavailable bool
	// Resync: continuity from the asked id cannot be proven.
	Resync bool
	// LastID is the channel's last message id.
	LastID int64
	// Messages are those after the asked id, oldest first.
	Messages []*Message
}

package presence

import (
	"cmp"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// clientKey identifies a client: client ids are scoped per user, so one user
// can never make another user's client leave. A struct key keeps map lookups
// free of allocation.
type clientKey struct{ userID, clientID string }

// client is one present browser tab or app instance. A node holds one per
// present client, so it is kept to 96 bytes; a client that left is
// recognised by no longer being in the map.
type client struct {
	// user is the identity of the client's latest heartbeat (its ID never
	// changes): a heartbeat with the same token compares one pointer.
	user      *User
	clientID  string
	expiresAt int64 // unix nanoseconds; moved by every heartbeat
	armedAt   int64 // deadline the timer was last armed for
	timer     timer[*client]
}

// key returns the client's key in the channel's map.
func (c *client) key() clientKey { return clientKey{c.user.ID, c.clientID} }

// presentUser is a user with at least one present client, stored by value
// in the channel's users map (no allocation per user and channel).
type presentUser struct {
	user    *User // from the token of the latest heartbeat; never modified
	clients int32
}

// channel is the state of one channel, owned by a single actor goroutine.
// Its methods return the message to publish, or nil.
type channel struct {
	name    string
	cfg     *Config // latest config seen: the audience of messages
	clients map[clientKey]*client
	users   map[string]presentUser
	lastID  int64
	// published is the last id published (Message.MarkPublished), shared
	// with the messages of this state in flight: a catch-up stops there,
	// short of messages still on their way to the replica. A new state
	// (an incarnation, an install) gets a new counter, so that a message
	// of the state it replaced cannot move it.
	published *atomic.Int64
	// delivered is the position up to which the channel's messages were
	// acknowledged by its webhook (or need no delivery): see
	// ChannelSnapshot.Delivered.
	delivered int64
	backlog   backlog
	timers    *timerGroup[*client] // identifies this incarnation's timers
	wheel     *wheel[*client]
	metrics   *Metrics
	// track: a Replicator is told every change; changes collects those of
	// the current operation.
	track   bool
	changes []Change
}

// publishedFrom returns a state's counter of published ids, at id.
func publishedFrom(id int64) *atomic.Int64 {
	p := new(atomic.Int64)
	p.Store(id)
	return p
}

func newChannel(name string, baseID int64, w *wheel[*client], m *Metrics) *channel {
	ch := &channel{}
	ch.init(name, baseID, w, m)
	return ch
}

// init prepares a zero channel in place (channel actors embed theirs).
func (ch *channel) init(name string, baseID int64, w *wheel[*client], m *Metrics) {
	*ch = channel{
		name:    name,
		clients: make(map[clientKey]*client),
		users:   make(map[string]presentUser),
		lastID:  baseID,
		// A new incarnation has nothing to deliver from before its first id.
		delivered: baseID,
		published: publishedFrom(baseID),
		timers:    &timerGroup[*client]{name: name},
		wheel:     w,
		metrics:   m,
	}
}

// empty reports whether no client is present.
func (ch *channel) empty() bool { return len(ch.clients) == 0 }

// present marks a client of u present until now + the channel timeout,
// and returns the message it publishes, if any. It refuses (admitted
// false, nothing changed) a user who is not present while the channel
// holds cfg.MaxUsers users.
func (ch *channel) present(u *User, clientID string, cfg *Config, now int64) (m *Message, admitted bool) {
	if ch.heartbeat(u, clientID, cfg, now) {
		return nil, true
	}
	if ch.full(u.ID, cfg) {
		ch.metrics.refusedFull.Add(1)
		return nil, false
	}
	return ch.enter(u, clientID, cfg, now), true
}

// full reports whether cfg's cap keeps userID out: the channel holds
// MaxUsers users or more (a merge may have brought more), and userID is
// not one of them. A present user's new client is no new user.
func (ch *channel) full(userID string, cfg *Config) bool {
	if cfg.MaxUsers <= 0 {
		return false
	}
	_, present := ch.users[userID]
	return !present && len(ch.users) >= cfg.MaxUsers
}

// enter adds a client of u that is not present yet.
func (ch *channel) enter(u *User, clientID string, cfg *Config, now int64) *Message {
	ch.cfg = cfg
	expires := now + timeoutNanos(cfg)
	first := ch.add(u, clientID, expires, expires)
	if ch.track {
		ch.changes = append(ch.changes, Change{Kind: ChangeEnter, Channel: ch.name, User: u, Config: cfg,
			ExpiresAt: expires, UserID: u.ID, ClientID: clientID, At: now})
	}
	if !first {
		return nil
	}
	if cfg.CountOnly {
		return ch.publish(func(m *Message) { m.CountDelta = 1 }, now)
	}
	return ch.publishEnter(u, now)
}

// heartbeat moves the expiry of u's client if it is present and reports
// whether it was; otherwise it changes nothing. It never publishes. The
// wheel notices the moved expiry when the old deadline fires (lazy
// rescheduling), unless the timeout shrank.
func (ch *channel) heartbeat(u *User, clientID string, cfg *Config, now int64) bool {
	c, ok := ch.clients[clientKey{u.ID, clientID}]
	if !ok {
		return false
	}
	expires := now + timeoutNanos(cfg)
	if expires < c.expiresAt && timeoutNanos(ch.cfg) == timeoutNanos(cfg) {
		// Sent before the heartbeat that set the expiry (expiries count
		// from when a present was sent) and applied after it: it moves
		// nothing. Under a shorter timeout, an earlier expiry is meant.
		expires = c.expiresAt
	}
	ch.cfg = cfg
	c.expiresAt = expires
	if ch.track {
		ch.changes = append(ch.changes, Change{Kind: ChangeRefresh, Channel: ch.name, User: u,
			ExpiresAt: expires, UserID: u.ID, ClientID: clientID, At: now})
	}
	if c.user != u {
		c.user = u
		ch.refreshUser(u)
	}
	if expires < c.armedAt { // the timeout shrank: fire earlier
		c.armedAt = expires
		ch.wheel.schedule(&c.timer, expires)
	}
	return true
}

func timeoutNanos(cfg *Config) int64 { return int64(cfg.TimeoutSeconds()) * int64(time.Second) }

// add registers a new client present until expires, its timer armed for
// armAt (expires, or later for an installed copy's grace), and reports
// whether it is its user's first.
func (ch *channel) add(u *User, clientID string, expires, armAt int64) (first bool) {
	c := &client{user: u, clientID: clientID, expiresAt: expires, armedAt: armAt}
	c.timer.group, c.timer.value = ch.timers, c
	ch.clients[c.key()] = c
	ch.metrics.clients.Add(1)
	ch.wheel.schedule(&c.timer, armAt)

	pu, ok := ch.users[u.ID]
	if !ok {
		ch.metrics.users.Add(1)
	}
	if !ok || !sameInfo(pu.user, u) {
		pu.user = u
	}
	pu.clients++
	ch.users[u.ID] = pu
	return pu.clients == 1
}

// refreshUser keeps what other users see of present user u in line with
// u's latest token.
func (ch *channel) refreshUser(u *User) {
	pu := ch.users[u.ID]
	if pu.user != u && !sameInfo(pu.user, u) {
		pu.user = u
		ch.users[u.ID] = pu
	}
}

// sameInfo reports whether a and b show other users the same fields.
func sameInfo(a, b *User) bool {
	return a.Username == b.Username && a.Name == b.Name && a.AvatarTemplate == b.AvatarTemplate
}

// leave removes a client at once.
func (ch *channel) leave(userID, clientID string, now int64) *Message {
	c, ok := ch.clients[clientKey{userID, clientID}]
	if !ok {
		return nil
	}
	ch.wheel.cancel(&c.timer)
	ch.trackLeave(c, now)
	if !ch.remove(c) {
		return nil
	}
	return ch.leaving([]string{userID}, now)
}

// remove forgets c and reports whether its user has no client left.
func (ch *channel) remove(c *client) (userLeft bool) {
	userID := c.user.ID
	delete(ch.clients, c.key())
	ch.metrics.clients.Add(-1)
	pu := ch.users[userID]
	pu.clients--
	if pu.clients > 0 {
		ch.users[userID] = pu
		return false
	}
	delete(ch.users, userID)
	ch.metrics.users.Add(-1)
	return true
}

// trackLeave records that c leaves, for the Replicator.
func (ch *channel) trackLeave(c *client, now int64) {
	if ch.track {
		ch.changes = append(ch.changes, Change{Kind: ChangeLeave, Channel: ch.name, UserID: c.user.ID, ClientID: c.clientID, At: now})
	}
}

// leaveAll makes every client leave at once (the server side's clear) and
// returns the message, nil when nobody was present, and the users that
// left, sorted.
func (ch *channel) leaveAll(now int64) (*Message, []string) {
	if len(ch.clients) == 0 {
		return nil, nil
	}
	users := make([]string, 0, len(ch.users))
	for id := range ch.users {
		users = append(users, id)
	}
	slices.Sort(users)
	for _, c := range ch.clients {
		ch.wheel.cancel(&c.timer)
		ch.trackLeave(c, now)
		ch.remove(c)
	}
	return ch.leaving(users, now), users
}

// expireInstalled makes the clients of a state just installed whose
// expiry (with the snapshot's grace) passed already leave at once, with
// the message, and returns it (nil when no user left). Left to the wheel
// they would leave at its next tick, after the channel served whatever
// waited for the install: a copy promoted seconds after its owner died
// showed, to the reads and presents held meanwhile, clients that had
// expired before the promotion (a present refused by max_users for them,
// found by the process kill test).
func (ch *channel) expireInstalled(now int64) *Message {
	var left []string
	expired := 0
	for _, c := range ch.clients {
		if c.armedAt > now {
			continue
		}
		expired++
		ch.wheel.cancel(&c.timer)
		left = ch.expireClient(c, now, left)
	}
	return ch.expired(left, expired, now)
}

// expireClient makes c leave, expired, and returns left with its user
// added when c was the user's last client.
func (ch *channel) expireClient(c *client, now int64, left []string) []string {
	ch.trackLeave(c, now)
	if ch.remove(c) {
		left = append(left, c.user.ID)
	}
	return left
}

// expired counts n expired clients and returns the message of the users
// they took away (left), or nil when there are none.
func (ch *channel) expired(left []string, n int, now int64) *Message {
	ch.metrics.expired.Add(uint64(n))
	if len(left) == 0 {
		return nil
	}
	slices.Sort(left)
	return ch.leaving(left, now)
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
		case ch.clients[c.key()] != c: // left, or expired in an earlier batch
		case c.expiresAt <= now:
			expired++
			left = ch.expireClient(c, now, left)
		default:
			t.deadline, c.armedAt = c.expiresAt, c.expiresAt
			t.next = rearm
			rearm = t
		}
		t = next
	}
	ch.wheel.scheduleList(rearm)
	return ch.expired(left, expired, now), expired
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
		publishedBy:          ch.published,
	}
	fill(m)
	m.markOccupancy(len(ch.users))
	ch.backlog.push(m, m.PublishedAtUnixMilli)
	ch.metrics.published.Add(1)
	return m
}

// publishEnter publishes u entering a channel that is not count-only; the
// backlog keeps it in compact form.
func (ch *channel) publishEnter(u *User, now int64) *Message {
	ch.lastID++
	m := newEnterMessage(ch.name, ch.lastID, ch.cfg, now/int64(time.Millisecond), u)
	m.publishedBy = ch.published
	m.markOccupancy(len(ch.users))
	ch.backlog.pushEnter(m, u, m.PublishedAtUnixMilli)
	ch.metrics.published.Add(1)
	return m
}

// publishResync publishes a resync marker (see Message.Resync).
func (ch *channel) publishResync(now int64) *Message {
	return ch.publish(func(m *Message) { m.Resync = true }, now)
}

// acknowledge moves the delivery position to id (Engine.Acknowledge) and
// reports whether it moved: never back, never past the last id.
func (ch *channel) acknowledge(id, now int64) bool {
	id = min(id, ch.lastID)
	if id <= ch.delivered {
		return false
	}
	ch.delivered = id
	if ch.track {
		ch.changes = append(ch.changes, Change{Kind: ChangeDelivered, Channel: ch.name, Delivered: id, At: now})
	}
	return true
}

// state returns the channel as /presence/get shows it under cfg; full
// lists the users of a count-only channel too (the server side's read).
func (ch *channel) state(cfg *Config, full bool) *ChannelState {
	st := &ChannelState{CountOnly: cfg.CountOnly, Count: len(ch.users), LastMessageID: ch.lastID}
	if cfg.CountOnly && !full {
		return st
	}
	st.Users = make([]UserInfo, 0, len(ch.users))
	for _, pu := range ch.users {
		st.Users = append(st.Users, pu.user.Info())
	}
	slices.SortFunc(st.Users, func(a, b UserInfo) int { return cmp.Compare(a.ID, b.ID) })
	return st
}

// since returns the catch-up of a subscriber that has seen every message up
// to after; a negative after asks for the last id only.
func (ch *channel) since(after int64) Catchup {
	// Only what was published: a message still on its way to the replica
	// may never be (its owner dies first, or the replica refuses it), and
	// the next owner then issues its id with other content. The messages
	// after it reach the subscriber as they are published.
	last := ch.lastPublished()
	switch {
	case after < 0:
		return Catchup{LastID: last}
	case after > last && after <= ch.lastID:
		// The subscriber read the state with a message not yet published
		// (Engine.State shows it): it has that far already.
		return Catchup{LastID: after}
	}
	msgs, ok := ch.backlog.since(after, last)
	return Catchup{LastID: last, Messages: msgs, Resync: !ok}
}

// lastPublished returns the last id published: catch-ups go that far.
func (ch *channel) lastPublished() int64 { return min(ch.lastID, ch.published.Load()) }

// snapshot exports the whole state for a hand-off.
func (ch *channel) snapshot() *ChannelSnapshot {
	s := &ChannelSnapshot{
		Channel:     ch.name,
		Config:      ch.cfg,
		LastID:      ch.lastID,
		Delivered:   ch.delivered,
		Unpublished: int(ch.lastID - ch.lastPublished()),
		Clients:     make([]ClientSnapshot, 0, len(ch.clients)),
		Backlog:     ch.backlog.all(),
	}
	for _, c := range ch.clients {
		s.Clients = append(s.Clients, ClientSnapshot{User: ch.users[c.user.ID].user.Info(), ClientID: c.clientID, ExpiresAtUnixNano: c.expiresAt})
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

// install replaces the state by s. The caller validated s. It returns
// the message to publish once the installed state is safe, or nil: the
// last of s's unpublished messages (ChannelSnapshot.Unpublished), which
// publishes those before it too (a subscriber that has not seen them
// catches up on the gap).
func (ch *channel) install(s *ChannelSnapshot) *Message {
	ch.clear()
	ch.cfg = s.Config
	ch.lastID = s.LastID
	// The rest of an installed backlog is caught up with: the node it came
	// from published it, or its message was safe on a replica, which is
	// what publishing waits for.
	// Unpublished messages the backlog no longer holds count as published:
	// no catch-up can reach them anyway.
	tail := min(s.Unpublished, len(s.Backlog))
	ch.published = publishedFrom(s.LastID - int64(tail))
	ch.delivered = s.Delivered
	for _, m := range s.Backlog {
		ch.backlog.push(m, m.PublishedAtUnixMilli)
	}
	for _, cs := range s.Clients {
		u := &User{ID: cs.User.ID, Username: cs.User.Username, Name: cs.User.Name, AvatarTemplate: cs.User.AvatarTemplate}
		if _, dup := ch.clients[clientKey{u.ID, cs.ClientID}]; !dup {
			ch.add(u, cs.ClientID, cs.ExpiresAtUnixNano, cs.ExpiresAtUnixNano+int64(s.ExpiryGrace))
		}
	}
	if tail == 0 {
		return nil
	}
	// A copy: s's messages may be shared with the state that sent them.
	last := *s.Backlog[len(s.Backlog)-1]
	last.publishedBy = ch.published
	return &last
}

// ChannelSnapshot is the whole state of a channel: what a new owner needs to
// continue it without clients noticing (same members, expiries, message ids
// and backlog).
type ChannelSnapshot struct {
	Channel string
	// Config is the latest config the channel saw (audience of its messages);
	// nil when the channel never had a client.
	Config *Config
	LastID int64
	// Delivered is the webhook delivery position: every message up to it
	// was acknowledged by the channel's webhook, or needed no delivery.
	// The channel's next holder delivers from the message after it.
	// 0 <= Delivered <= LastID.
	Delivered int64
	// Unpublished counts the messages at the end of the backlog that the
	// holder had not published when it took the snapshot: they were on
	// their way to its replica, and a hand-off drops what is in flight
	// there. The installer publishes them once its own replica has the
	// state (catch-ups stop short of them until then). 0 <= Unpublished;
	// the zero value says every message was published.
	Unpublished int
	Clients     []ClientSnapshot
	Backlog     []*Message // oldest first, contiguous ids ending at LastID
	// ExpiryGrace delays the expiry of the installed clients past their
	// ExpiresAtUnixNano, which stays their last heartbeat plus the timeout
	// (merges compare it with leave times): a replica's copy may lack the
	// refreshes its owner batched last, and a client must not leave before
	// its timeout.
	ExpiryGrace time.Duration
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
	if s.Delivered < 0 || s.Delivered > s.LastID {
		return fmt.Errorf("%w: snapshot of %s: delivery position %d outside 0..%d", ErrInvalid, s.Channel, s.Delivered, s.LastID)
	}
	if s.ExpiryGrace < 0 {
		return fmt.Errorf("%w: snapshot of %s: negative expiry grace", ErrInvalid, s.Channel)
	}
	if s.Unpublished < 0 {
		return fmt.Errorf("%w: snapshot of %s: negative count of unpublished messages", ErrInvalid, s.Channel)
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

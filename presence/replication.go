package presence

import "time"

// ChangeKind says what a Change did to a channel.
type ChangeKind uint8

// Kinds of Change.
const (
	// ChangeEnter: a client became present (its user may have been present
	// already through another client).
	ChangeEnter ChangeKind = iota + 1
	// ChangeRefresh: a present client's expiry moved. It never publishes,
	// so a replicator may batch it.
	ChangeRefresh
	// ChangeLeave: a client left or expired.
	ChangeLeave
	// ChangeSnapshot: the channel's whole state was installed, or a copy of
	// it was asked for (Engine.Resend). Snapshot returns it.
	ChangeSnapshot
	// ChangeStopped: the channel's actor stopped here (handed over,
	// passivated or removed); nothing of it remains on this node.
	ChangeStopped
	// ChangeDelivered: the webhook delivery position moved (Delivered). It
	// never publishes, and a later one includes it, so a replicator may
	// batch it.
	ChangeDelivered
)

// Replicator receives every change of every channel's state, in the
// channel's order, on the channel's goroutine (or under its inline lock):
// it must not block. With a Replicator, the engine publishes nothing itself:
// the replicator publishes each change's Message once the change is safe
// (typically acknowledged by a replica), or drops it when this node turns
// out not to own the channel any more. It must also answer every Done.
type Replicator interface {
	Replicate(c Change)
}

// Change is one step of a channel's state.
type Change struct {
	Kind    ChangeKind
	Channel string
	// User and ExpiresAt are the client's identity and new expiry (Enter,
	// Refresh); Config is the channel config that admitted it (Enter).
	User      *User
	Config    *Config
	ExpiresAt int64 // unix ns
	// UserID and ClientID identify the client (Enter, Refresh, Leave).
	UserID   string
	ClientID string
	// At is when the change happened (unix ns).
	At int64
	// Delivered is the new delivery position (ChangeDelivered).
	Delivered int64
	// Message is what the change published, or nil. Of several changes made
	// by one operation (expiry of many clients) the last carries it.
	Message *Message
	// Done, when not nil, is waited on by the caller that made the change:
	// the replicator sends nil once the change is safe, or an error.
	Done chan<- error

	src *channel // valid only during the Replicate call
}

// Snapshot returns the channel's whole state right after the change. It
// may only be called during Replicator.Replicate, on the channel's
// goroutine; it returns nil for ChangeStopped.
func (c *Change) Snapshot() *ChannelSnapshot {
	if c.src == nil {
		return nil
	}
	return c.src.snapshot()
}

// Copy is a passive copy of a channel kept by a replica: the owner's
// changes are applied in order, nothing expires and nothing is published
// until the copy is promoted (Snapshot, then Engine.Install).
type Copy struct {
	name      string
	cfg       *Config
	lastID    int64
	delivered int64
	clients   map[clientKey]ClientSnapshot
	backlog   backlog
}

// NewCopy starts a copy from an owner's snapshot, which the caller validated.
func NewCopy(s *ChannelSnapshot) *Copy {
	c := &Copy{name: s.Channel, cfg: s.Config, lastID: s.LastID, delivered: s.Delivered,
		clients: make(map[clientKey]ClientSnapshot, len(s.Clients))}
	for _, cs := range s.Clients {
		c.clients[clientKey{cs.User.ID, cs.ClientID}] = cs
	}
	for _, m := range s.Backlog {
		c.backlog.push(m, m.PublishedAtUnixMilli)
	}
	return c
}

// Clients returns how many clients the copy holds.
func (c *Copy) Clients() int { return len(c.clients) }

// Apply applies one of the owner's changes (not a snapshot).
func (c *Copy) Apply(ch *Change) {
	key := clientKey{ch.UserID, ch.ClientID}
	switch ch.Kind {
	case ChangeEnter, ChangeRefresh:
		if ch.Config != nil {
			c.cfg = ch.Config
		}
		cs, ok := c.clients[key]
		if !ok || ch.User != nil {
			if ch.User != nil {
				cs.User = ch.User.Info()
			}
			cs.ClientID = ch.ClientID
		}
		cs.ExpiresAtUnixNano = max(cs.ExpiresAtUnixNano, ch.ExpiresAt)
		if cs.User.ID != "" {
			c.clients[key] = cs
		}
	case ChangeLeave:
		delete(c.clients, key)
	case ChangeDelivered:
		// An acknowledged message was published, so the copy has it; the
		// bound only guards the snapshot's consistency.
		c.delivered = max(c.delivered, min(ch.Delivered, c.lastID))
	}
	if m := ch.Message; m != nil {
		switch {
		case m.ID <= c.lastID:
			// Not after what the copy has (it arrived late): a channel's
			// ids only grow, and a copy promoted with a smaller last id
			// would issue an id its subscribers saw again, with another
			// message.
		case m.ID != c.lastID+1:
			c.backlog.reset() // the backlog must stay contiguous
			fallthrough
		default:
			c.lastID = m.ID
			c.backlog.push(m, m.PublishedAtUnixMilli)
		}
	}
}

// Snapshot returns the copy as a snapshot to install, with an ExpiryGrace
// of grace: heartbeats the owner batched in its last moments may not have
// reached the copy, and a client must not leave before its timeout. The
// expiries themselves stay as the owner sent them, so that merges compare
// the clients' last heartbeats with leave times exactly.
func (c *Copy) Snapshot(grace time.Duration) *ChannelSnapshot {
	s := &ChannelSnapshot{Channel: c.name, Config: c.cfg, LastID: c.lastID, Delivered: c.delivered, Backlog: c.backlog.all(), ExpiryGrace: grace}
	s.Clients = make([]ClientSnapshot, 0, len(c.clients))
	for _, cs := range c.clients {
		s.Clients = append(s.Clients, cs)
	}
	return s
}

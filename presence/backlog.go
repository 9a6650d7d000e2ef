package presence

// Backlog bounds. A channel keeps at least BacklogMinMessages messages and
// every message younger than BacklogMinAgeSeconds, up to backlogHardCap.
const (
	backlogHardCap     = 10 * BacklogMinMessages
	backlogInitialCap  = 16
	backlogShrinkAbove = 2 * BacklogMinMessages // capacity worth giving back
)

// backlog is a growable ring of a channel's recent messages, oldest first.
// Message ids in it are contiguous and the newest is the channel's last id.
//
// Most messages of a busy node are one user entering, and a node with a
// million present clients holds a million of them for ten minutes, so those
// are kept compact (the user's identity, not a Message with a copy of it)
// and rebuilt on the rare catch-up that reads them.
type backlog struct {
	buf     []backlogEntry
	head    int // index of the oldest message
	n       int
	last    int64  // id of the newest message; the others' ids follow
	channel string // name the rebuilt messages carry
}

// backlogEntry is one message: msg itself, or, when msg is nil, a plain
// enter of user rebuilt from the other fields (its id is implied by its
// position).
type backlogEntry struct {
	msg      *Message
	user     *User
	audience *Config
	at       int64 // PublishedAtUnixMilli
}

// len returns the number of messages held.
func (b *backlog) len() int { return b.n }

// entry returns the i-th oldest entry.
func (b *backlog) entry(i int) *backlogEntry { return &b.buf[(b.head+i)%len(b.buf)] }

// id returns the id of the i-th oldest message.
func (b *backlog) id(i int) int64 { return b.last - int64(b.n-1-i) }

// at returns the i-th oldest message.
func (b *backlog) at(i int) *Message {
	e := b.entry(i)
	if e.msg != nil {
		return e.msg
	}
	return newEnterMessage(b.channel, b.id(i), e.audience, e.at, e.user)
}

// push appends m, first dropping messages that are both beyond the newest
// BacklogMinMessages and older than BacklogMinAgeSeconds.
func (b *backlog) push(m *Message, nowMilli int64) {
	b.add(backlogEntry{msg: m, at: m.PublishedAtUnixMilli}, m, nowMilli)
}

// pushEnter appends m, a message of user u alone entering that
// newEnterMessage made, in its compact form.
func (b *backlog) pushEnter(m *Message, u *User, nowMilli int64) {
	b.add(backlogEntry{user: u, audience: m.Audience, at: m.PublishedAtUnixMilli}, m, nowMilli)
}

// add appends e, the entry of m, whose id follows the newest one.
func (b *backlog) add(e backlogEntry, m *Message, nowMilli int64) {
	b.prune(nowMilli)
	if b.n == len(b.buf) {
		if len(b.buf) < backlogHardCap {
			b.resize(min(max(2*len(b.buf), backlogInitialCap), backlogHardCap))
		} else {
			b.dropOldest() // hard cap: even young messages go
		}
	}
	b.buf[(b.head+b.n)%len(b.buf)] = e
	b.n++
	b.channel, b.last = m.Channel, m.ID
}

func (b *backlog) prune(nowMilli int64) {
	cutoff := nowMilli - BacklogMinAgeSeconds*1000
	for b.n > BacklogMinMessages && b.entry(0).at < cutoff {
		b.dropOldest()
	}
	if len(b.buf) > backlogShrinkAbove && b.n < len(b.buf)/4 {
		b.resize(len(b.buf) / 2)
	}
}

func (b *backlog) dropOldest() {
	b.buf[b.head] = backlogEntry{}
	b.head = (b.head + 1) % len(b.buf)
	b.n--
}

func (b *backlog) resize(capacity int) {
	buf := make([]backlogEntry, capacity)
	for i := range b.n {
		buf[i] = *b.entry(i)
	}
	b.buf, b.head = buf, 0
}

// since returns the messages with after < id <= upTo (the channel's last
// id, or the last one published). ok is false when continuity from after
// cannot be proven: after is older than the backlog, or newer than upTo
// (an id from another incarnation of the channel).
func (b *backlog) since(after, upTo int64) (msgs []*Message, ok bool) {
	switch {
	case after > upTo:
		return nil, false
	case after == upTo:
		return nil, true
	case b.n == 0:
		return nil, false
	}
	oldest := b.id(0)
	if after < oldest-1 {
		return nil, false
	}
	start := int(after + 1 - oldest)
	end := b.n - int(max(0, b.last-upTo))
	msgs = make([]*Message, 0, max(0, end-start))
	for i := start; i < end; i++ {
		msgs = append(msgs, b.at(i))
	}
	return msgs, true
}

// all returns every message held, oldest first.
func (b *backlog) all() []*Message {
	msgs := make([]*Message, b.n)
	for i := range b.n {
		msgs[i] = b.at(i)
	}
	return msgs
}

// reset drops every message.
func (b *backlog) reset() { *b = backlog{} }

// enterMessage allocates a one-user enter message and its user list at once.
type enterMessage struct {
	m     Message
	users [1]UserInfo
}

// newEnterMessage returns the message of u alone entering channel.
func newEnterMessage(channel string, id int64, audience *Config, atMilli int64, u *User) *Message {
	em := &enterMessage{
		m:     Message{Channel: channel, ID: id, Audience: audience, PublishedAtUnixMilli: atMilli},
		users: [1]UserInfo{u.Info()},
	}
	em.m.EnteringUsers = em.users[:]
	return &em.m
}

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
type backlog struct {
	buf  []*Message
	head int // index of the oldest message
	n    int
}

// len returns the number of messages held.
func (b *backlog) len() int { return b.n }

// at returns the i-th oldest message.
func (b *backlog) at(i int) *Message { return b.buf[(b.head+i)%len(b.buf)] }

// push appends m, first dropping messages that are both beyond the newest
// BacklogMinMessages and older than BacklogMinAgeSeconds.
func (b *backlog) push(m *Message, nowMilli int64) {
	b.prune(nowMilli)
	if b.n == len(b.buf) {
		if len(b.buf) < backlogHardCap {
			b.resize(min(max(2*len(b.buf), backlogInitialCap), backlogHardCap))
		} else {
			b.dropOldest() // hard cap: even young messages go
		}
	}
	b.buf[(b.head+b.n)%len(b.buf)] = m
	b.n++
}

func (b *backlog) prune(nowMilli int64) {
	cutoff := nowMilli - BacklogMinAgeSeconds*1000
	for b.n > BacklogMinMessages && b.at(0).PublishedAtUnixMilli < cutoff {
		b.dropOldest()
	}
	if len(b.buf) > backlogShrinkAbove && b.n < len(b.buf)/4 {
		b.resize(len(b.buf) / 2)
	}
}

func (b *backlog) dropOldest() {
	b.buf[b.head] = nil
	b.head = (b.head + 1) % len(b.buf)
	b.n--
}

func (b *backlog) resize(capacity int) {
	buf := make([]*Message, capacity)
	for i := range b.n {
		buf[i] = b.at(i)
	}
	b.buf, b.head = buf, 0
}

// since returns the messages with id > after. ok is false when continuity
// from after cannot be proven: after is older than the backlog, or newer
// than lastID (an id from another incarnation of the channel).
func (b *backlog) since(after, lastID int64) (msgs []*Message, ok bool) {
	switch {
	case after > lastID:
		return nil, false
	case after == lastID:
		return nil, true
	case b.n == 0:
		return nil, false
	}
	oldest := b.at(0).ID
	if after < oldest-1 {
		return nil, false
	}
	start := int(after + 1 - oldest)
	msgs = make([]*Message, 0, b.n-start)
	for i := start; i < b.n; i++ {
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

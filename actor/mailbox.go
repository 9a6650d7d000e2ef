package actor

import "sync"

// envelope is one queued user message.
type envelope[M any] struct {
	msg M
	// failed is set by Ask and closed if the behaviour panics while handling
	// msg, so the asker learns at once instead of waiting for its deadline.
	failed chan struct{}
}

// sysFlags are pending system requests; they are served before user messages.
type sysFlags uint8

const sysPassivate sysFlags = 1 << iota

type pushResult uint8

const (
	pushed pushResult = iota
	pushFull
	pushClosed
)

// nextKind says what mailbox.next returned.
type nextKind uint8

const (
	gotMessage nextKind = iota
	gotSystem
	gotDrained // closed and empty: the actor must exit
)

const (
	initialCapacity = 8
	// shrinkAbove is the ring capacity above which an idle actor gives its
	// buffer back, so a past burst does not pin memory on 100,000 actors.
	shrinkAbove = 64
)

// mailbox is a bounded FIFO with many producers and one consumer (the
// actor's goroutine). A mutex-guarded ring keeps Tell allocation-free in
// steady state; the consumer sleeps on wake only when the ring is empty, so
// producers touch the channel only to wake a sleeping actor.
type mailbox[M any] struct {
	mu      sync.Mutex
	buf     []envelope[M] // ring, grown on demand up to limit
	head    int
	n       int
	limit   int
	sys     sysFlags
	closed  bool // no further user messages are accepted
	waiting bool // the consumer is (about to be) blocked on wake
	wake    chan struct{}
}

// init prepares a zero mailbox in place (actors embed theirs).
func (m *mailbox[M]) init(limit int) {
	m.limit = limit
	m.wake = make(chan struct{}, 1)
}

// push enqueues env unless the mailbox is full or closed.
func (m *mailbox[M]) push(env envelope[M]) pushResult {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return pushClosed
	}
	if m.n == len(m.buf) {
		if m.n >= m.limit {
			m.mu.Unlock()
			return pushFull
		}
		m.grow()
	}
	i := m.head + m.n
	if i >= len(m.buf) {
		i -= len(m.buf)
	}
	m.buf[i] = env
	m.n++
	m.unlockAndWake()
	return pushed
}

// unlockAndWake releases the lock and wakes the consumer if it sleeps. Only
// the caller that flips waiting sends, so the 1-slot channel never blocks.
func (m *mailbox[M]) unlockAndWake() {
	wake := m.waiting
	m.waiting = false
	m.mu.Unlock()
	if wake {
		m.wake <- struct{}{}
	}
}

func (m *mailbox[M]) grow() {
	c := min(max(2*len(m.buf), initialCapacity), m.limit)
	buf := make([]envelope[M], c)
	k := copy(buf, m.buf[m.head:])
	copy(buf[k:], m.buf[:m.head])
	m.buf, m.head = buf, 0
}

// next blocks until there is a system request, a user message, or the
// mailbox is closed and drained. System requests come first.
func (m *mailbox[M]) next() (envelope[M], sysFlags, nextKind) {
	for {
		m.mu.Lock()
		if s := m.sys; s != 0 {
			m.sys = 0
			m.mu.Unlock()
			return envelope[M]{}, s, gotSystem
		}
		if m.n > 0 {
			env := m.buf[m.head]
			m.buf[m.head] = envelope[M]{} // drop references for the GC
			m.head++
			if m.head == len(m.buf) {
				m.head = 0
			}
			m.n--
			m.mu.Unlock()
			return env, 0, gotMessage
		}
		if m.closed {
			m.mu.Unlock()
			return envelope[M]{}, 0, gotDrained
		}
		m.head = 0
		m.waiting = true
		m.mu.Unlock()
		<-m.wake
	}
}

// request posts a system request; it is ignored once the mailbox is closed.
func (m *mailbox[M]) request(f sysFlags) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return
	}
	m.sys |= f
	m.unlockAndWake()
}

// close stops accepting user messages; queued ones are still delivered.
func (m *mailbox[M]) close() {
	m.mu.Lock()
	m.closed = true
	m.unlockAndWake()
}

// closeIfEmpty closes the mailbox only if nothing is queued. Checking and
// closing under the lock push takes is what guarantees that no accepted
// message is left behind by a passivating actor.
func (m *mailbox[M]) closeIfEmpty() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed || m.n > 0 {
		return false
	}
	m.closed = true
	return true
}

// closeAndDrop closes the mailbox and discards everything queued.
func (m *mailbox[M]) closeAndDrop() (dropped int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	dropped = m.n
	m.buf, m.head, m.n = nil, 0, 0
	return dropped
}

// shrinkIfIdle releases a large empty buffer.
func (m *mailbox[M]) shrinkIfIdle() {
	m.mu.Lock()
	if m.n == 0 && len(m.buf) > shrinkAbove {
		m.buf, m.head = nil, 0
	}
	m.mu.Unlock()
}

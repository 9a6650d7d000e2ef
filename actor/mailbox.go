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
	gotIdle    // open and empty: the actor was released and must return
)

const (
	// initialCapacity is small because most mailboxes hold one message at a
	// time: 100,000 idle channels must not each pin a large ring.
	initialCapacity = 2
	// shrinkAbove is the ring capacity above which an idle actor gives its
	// buffer back, so a past burst does not pin memory on 100,000 actors.
	shrinkAbove = initialCapacity
)

// mailbox is a bounded FIFO with many producers and one consumer at a time.
// A mutex-guarded ring keeps Tell allocation-free in steady state. No
// goroutine waits on an empty mailbox: running says whether someone (a
// goroutine started for it, or a caller running a message inline) currently
// owns the actor; the producer that finds it idle and not running claims it
// and starts it.
type mailbox[M any] struct {
	mu      sync.Mutex
	buf     []envelope[M] // ring, grown on demand up to limit
	head    int
	n       int
	limit   int
	sys     sysFlags
	closed  bool // no further user messages are accepted
	running bool // the actor is owned by a goroutine or an inline caller

	// pool, when set, recycles the ring while the mailbox is idle, so that
	// idle actors hold no buffer; box is the pool's holder of buf.
	pool *bufPool[M]
	box  *[]envelope[M]
}

// bufPool recycles the rings of idle mailboxes (all of initialCapacity). It
// is a plain stack under a lock rather than a sync.Pool: a ring is released
// by the actor's goroutine and taken again by a sender, usually on another
// P, which a sync.Pool's per-P private slot would miss.
type bufPool[M any] struct {
	mu   sync.Mutex
	free []*[]envelope[M]
}

// maxPooledRings bounds the rings kept for reuse: enough for every actor
// that is busy at once, little memory when none is.
const maxPooledRings = 1024

func (bp *bufPool[M]) get() *[]envelope[M] {
	bp.mu.Lock()
	defer bp.mu.Unlock()
	n := len(bp.free)
	if n == 0 {
		return nil
	}
	box := bp.free[n-1]
	bp.free[n-1] = nil
	bp.free = bp.free[:n-1]
	return box
}

func (bp *bufPool[M]) put(box *[]envelope[M]) {
	bp.mu.Lock()
	if len(bp.free) < maxPooledRings {
		bp.free = append(bp.free, box)
	}
	bp.mu.Unlock()
}

// init prepares a zero mailbox in place (actors embed theirs). Without
// usePool it keeps its ring for its whole life.
func (m *mailbox[M]) init(limit int) {
	m.limit = limit
}

// usePool makes the mailbox recycle its ring through p while idle. Pooled
// rings have initialCapacity, so a smaller limit cannot use them.
func (m *mailbox[M]) usePool(p *bufPool[M]) {
	if m.limit >= initialCapacity {
		m.pool = p
	}
}

// push enqueues env unless the mailbox is full or closed.
func (m *mailbox[M]) push(env envelope[M]) pushResult {
	r, _ := m.enqueue(env)
	return r
}

// enqueue is push that also reports whether the caller claimed the idle
// actor and must start it.
func (m *mailbox[M]) enqueue(env envelope[M]) (pushResult, bool) {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return pushClosed, false
	}
	if m.n == len(m.buf) {
		if m.n >= m.limit {
			m.mu.Unlock()
			return pushFull, false
		}
		m.grow()
	}
	i := m.head + m.n
	if i >= len(m.buf) {
		i -= len(m.buf)
	}
	m.buf[i] = env
	m.n++
	return pushed, m.unlockClaim()
}

// unlockClaim claims the actor if nobody runs it and releases the lock. It
// reports whether the caller now owns the actor.
func (m *mailbox[M]) unlockClaim() bool {
	if m.running {
		m.mu.Unlock()
		return false
	}
	m.running = true
	m.mu.Unlock()
	return true
}

func (m *mailbox[M]) grow() {
	if len(m.buf) == 0 && m.pool != nil {
		if box := m.pool.get(); box != nil {
			m.buf, m.box, m.head = *box, box, 0
			*box = nil
			return
		}
	}
	c := min(max(2*len(m.buf), initialCapacity), m.limit)
	buf := make([]envelope[M], c)
	k := copy(buf, m.buf[m.head:])
	copy(buf[k:], m.buf[:m.head])
	m.buf, m.head = buf, 0
}

// next returns the next system request or user message for the owner of
// the actor. On an open empty mailbox it releases the actor (gotIdle): the
// caller must not touch the actor afterwards, since the next producer may
// start it at once.
func (m *mailbox[M]) next() (envelope[M], sysFlags, nextKind) {
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
	m.running = false
	m.recycle()
	m.mu.Unlock()
	return envelope[M]{}, 0, gotIdle
}

// recycle gives an empty ring of initial size back to the pool and drops a
// larger one, under the lock.
func (m *mailbox[M]) recycle() {
	if m.pool == nil || m.buf == nil {
		return
	}
	if len(m.buf) == initialCapacity {
		box := m.box
		if box == nil {
			box = new([]envelope[M])
		}
		*box = m.buf
		m.pool.put(box)
	}
	m.buf, m.box, m.head = nil, nil, 0
}

// tryClaim claims an open, empty, idle actor for a caller that wants to run
// one message inline. It fails when anything is queued or someone runs it.
func (m *mailbox[M]) tryClaim() bool {
	m.mu.Lock()
	ok := !m.running && !m.closed && m.n == 0 && m.sys == 0
	if ok {
		m.running = true
	}
	m.mu.Unlock()
	return ok
}

// release gives up an inline claim. It reports false, keeping the claim,
// when work arrived meanwhile: the caller must then start the actor.
func (m *mailbox[M]) release() bool {
	m.mu.Lock()
	if m.n > 0 || m.sys != 0 || m.closed {
		m.mu.Unlock()
		return false
	}
	m.running = false
	m.mu.Unlock()
	return true
}

// request posts a system request; it is ignored once the mailbox is closed.
// It reports whether the caller claimed the actor and must start it.
func (m *mailbox[M]) request(f sysFlags) bool {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return false
	}
	m.sys |= f
	return m.unlockClaim()
}

// close stops accepting user messages; queued ones are still delivered. It
// reports whether the caller claimed the actor and must start it (to drain
// and stop it).
func (m *mailbox[M]) close() bool {
	m.mu.Lock()
	m.closed = true
	return m.unlockClaim()
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

// shrinkIfIdle releases a grown empty buffer.
func (m *mailbox[M]) shrinkIfIdle() {
	m.mu.Lock()
	if m.n == 0 && len(m.buf) > shrinkAbove {
		m.buf, m.head = nil, 0
	}
	m.mu.Unlock()
}

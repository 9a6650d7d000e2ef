package membership

import (
	"strconv"
	"time"

	"github.com/hashicorp/memberlist"
)

// EventKind says what happened to a member.
type EventKind int

// Kinds of Event.
const (
	// EventJoin: a member appeared (this node included, at start).
	EventJoin EventKind = iota + 1
	// EventUpdate: a member's metadata changed.
	EventUpdate
	// EventLeave: a member left gracefully (Member.State "left"). In rare
	// gossip orderings a graceful leave is reported as EventFailed instead,
	// so treat the two alike for correctness and the kind as a hint.
	EventLeave
	// EventFailed: failure detection declared a member dead (State "dead").
	EventFailed
	// EventResync: events were dropped because the consumer lagged; the
	// event carries no member. Re-read Members() to catch up.
	EventResync
)

// String returns the kind's name.
func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFailed:
		return "failed"
	case EventResync:
		return "resync"
	}
	return "unknown(" + strconv.Itoa(int(k)) + ")"
}

// Member is one node as membership sees it.
type Member struct {
	Name  string
	Addr  string // gossip address, host:port
	Meta  Meta
	State string // one of the State* constants
	// Draining: the member announced it is shutting down and hands its
	// channels over (Membership.AnnounceDraining). It stays alive, and owns
	// what it holds, until it leaves.
	Draining bool
}

// Event reports a change in membership. Consumers should treat events
// as idempotent hints (a Join for a known member, a Leave for an unknown one)
// and rebuild from Members() on EventResync.
type Event struct {
	Kind   EventKind
	Member Member // zero for EventResync
}

// failedMember is a member declared dead, and since when.
type failedMember struct {
	Member
	since time.Time
}

// observe records a member's latest state in the view and the failed
// members, and reports it.
func (m *Membership) observe(kind EventKind, mem Member) {
	now := time.Now()
	m.viewMu.Lock()
	prev, seen := m.view[mem.Name]
	switch kind {
	case EventFailed:
		delete(m.view, mem.Name)
		// A member that announced its leave is gone for good, even when
		// memberlist reports the leave as a failure.
		if seen && prev.State == StateAlive && mem.Name != m.name {
			m.failed[mem.Name] = failedMember{Member: mem, since: now}
		}
		pruneFailed(m.failed, now, m.keepFailed)
	case EventLeave:
		delete(m.view, mem.Name)
		delete(m.failed, mem.Name)
	default:
		m.view[mem.Name] = mem
		delete(m.failed, mem.Name)
	}
	m.viewMu.Unlock()
	m.emit(Event{Kind: kind, Member: mem})
}

// pruneFailed forgets the members that failed more than keep before now.
func pruneFailed(failed map[string]failedMember, now time.Time, keep time.Duration) {
	for name, f := range failed {
		if now.Sub(f.since) > keep {
			delete(failed, name)
		}
	}
}

// stopEvents ends the resync goroutine and closes the events channel.
func (m *Membership) stopEvents() {
	close(m.done)
	m.wg.Wait()
	m.eventsMu.Lock()
	m.closed = true
	close(m.events)
	m.eventsMu.Unlock()
}

// emit hands an event to the channel without ever blocking memberlist.
// While a resync is owed, events are dropped: the resync covers them, and
// delivering later events first would reorder what the consumer sees.
func (m *Membership) emit(ev Event) {
	m.eventsMu.Lock()
	defer m.eventsMu.Unlock()
	if m.closed || m.lagging.Load() {
		return
	}
	select {
	case m.events <- ev:
	default:
		m.lagging.Store(true)
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// resyncLoop delivers an EventResync after events were dropped. The flag
// is cleared before the send, so an event dropped later owes a new resync
// and no change can fall between a consumer's re-read and the flag.
func (m *Membership) resyncLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.kick:
		case <-m.done:
			return
		}
		m.lagging.Store(false)
		m.log.Warn("membership events dropped; consumer told to resync")
		select {
		case m.events <- Event{Kind: EventResync}:
		case <-m.done:
			return
		}
	}
}

// member converts a memberlist node, gone or still live; metadata that
// does not decode is logged and left zero rather than hiding the node.
func (m *Membership) member(n *memberlist.Node, gone bool) Member {
	meta, flags, err := decodeMeta(n.Meta)
	if err != nil {
		m.log.Warn("member metadata unreadable", "member", n.Name, "err", err)
	}
	leaving := flags&flagLeaving != 0
	state := StateAlive
	switch {
	case gone && leaving:
		state = StateLeft
	case gone:
		state = StateDead
	case leaving:
		state = StateLeaving
	}
	return Member{Name: n.Name, Addr: n.Address(), Meta: meta, State: state,
		Draining: state == StateAlive && flags&flagDraining != 0}
}

// metaDelegate serves this node's metadata to memberlist. Membership uses
// no user messages or state exchange, so the rest are no-ops.
type metaDelegate struct{ m *Membership }

func (d metaDelegate) NodeMeta(limit int) []byte {
	d.m.metaMu.Lock()
	defer d.m.metaMu.Unlock()
	if len(d.m.encoded) > limit {
		return nil // encode already enforced memberlist.MetaMaxSize
	}
	return append([]byte(nil), d.m.encoded...)
}

func (metaDelegate) NotifyMsg([]byte)                  {}
func (metaDelegate) GetBroadcasts(_, _ int) [][]byte   { return nil }
func (metaDelegate) LocalState(bool) []byte            { return nil }
func (metaDelegate) MergeRemoteState(_ []byte, _ bool) {}

// eventDelegate receives memberlist's node events. memberlist calls
// it with its node lock held, so it only copies and hands off.
type eventDelegate struct{ m *Membership }

func (d eventDelegate) NotifyJoin(n *memberlist.Node) {
	d.m.observe(EventJoin, d.m.member(n, false))
}

func (d eventDelegate) NotifyLeave(n *memberlist.Node) {
	mem := d.m.member(n, true)
	kind := EventFailed
	if mem.State == StateLeft {
		kind = EventLeave
	}
	d.m.observe(kind, mem)
}

func (d eventDelegate) NotifyUpdate(n *memberlist.Node) {
	d.m.observe(EventUpdate, d.m.member(n, false))
}

package actor

import "testing"

func newMailbox[M any](limit int) *mailbox[M] {
	m := &mailbox[M]{}
	m.init(limit)
	return m
}

// TestMailboxRingKeepsOrder interleaves pushes and pops so the ring wraps and
// grows with a non-zero head, then fills it to its bound.
func TestMailboxRingKeepsOrder(t *testing.T) {
	m := newMailbox[int](40)
	next, want := 0, 0
	pop := func() {
		t.Helper()
		env, _, kind := m.next()
		if kind != gotMessage || env.msg != want {
			t.Fatalf("popped %v (kind %d), want %d", env.msg, kind, want)
		}
		want++
	}
	for round := range 6 {
		for range 3 + round {
			if r := m.push(envelope[int]{msg: next}); r != pushed {
				t.Fatalf("push %d: result %d", next, r)
			}
			next++
		}
		pop()
		pop()
	}
	for m.push(envelope[int]{msg: next}) == pushed {
		next++
	}
	if m.n != 40 || len(m.buf) != 40 {
		t.Fatalf("full mailbox holds %d in %d slots, want 40 in 40", m.n, len(m.buf))
	}
	for want < next {
		pop()
	}
}

func TestMailboxSystemRequestsFirst(t *testing.T) {
	m := newMailbox[int](4)
	m.push(envelope[int]{msg: 1})
	m.request(sysPassivate)
	if _, sys, kind := m.next(); kind != gotSystem || sys != sysPassivate {
		t.Fatalf("next = kind %d sys %d, want the passivate request first", kind, sys)
	}
	if m.closeIfEmpty() {
		t.Fatal("closeIfEmpty closed a mailbox holding a message")
	}
	if env, _, kind := m.next(); kind != gotMessage || env.msg != 1 {
		t.Fatalf("next = %v kind %d, want message 1", env.msg, kind)
	}
	if !m.closeIfEmpty() {
		t.Fatal("closeIfEmpty refused an empty mailbox")
	}
	if r := m.push(envelope[int]{msg: 2}); r != pushClosed {
		t.Fatalf("push after close = %d, want pushClosed", r)
	}
	m.request(sysPassivate) // ignored once closed
	if _, _, kind := m.next(); kind != gotDrained {
		t.Fatalf("next on a closed empty mailbox = kind %d, want gotDrained", kind)
	}
}

func TestMailboxShrinksWhenIdle(t *testing.T) {
	m := newMailbox[int](1000)
	for i := range 200 {
		m.push(envelope[int]{msg: i})
	}
	m.shrinkIfIdle()
	if len(m.buf) < 200 {
		t.Fatal("shrank a mailbox that still holds messages")
	}
	for range 200 {
		m.next()
	}
	m.shrinkIfIdle()
	if m.buf != nil {
		t.Fatalf("idle mailbox kept %d slots", len(m.buf))
	}
	if m.push(envelope[int]{msg: 7}) != pushed {
		t.Fatal("push after shrink failed")
	}
}

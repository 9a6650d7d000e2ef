package tokenbucket

import "sync/atomic"

// Memo is where a limiter may remember, between calls, where it found one
// caller's bucket, so that the next call skips the lookup by key: on a
// busy node that lookup, into the state of tens of thousands of users, is
// a few cache misses on every call. The caller keeps one Memo per key (a
// cached token's entry carries one for its user) and passes it with every
// call for that key, never with another key's. The zero Memo is empty;
// a limiter checks what it finds there and looks the bucket up again when
// it is stale, so a Memo only ever saves work.
type Memo struct {
	v atomic.Value
}

// Load returns what Store put in the memo, or nil.
func (m *Memo) Load() any {
	if m == nil {
		return nil
	}
	return m.v.Load()
}

// Store remembers v, always of the same type for one memo (a limiter
// stores its own kind of entry). A nil memo remembers nothing.
func (m *Memo) Store(v any) {
	if m != nil {
		m.v.Store(v)
	}
}

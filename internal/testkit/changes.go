package testkit

import (
	"bytes"
	"slices"
	"sync"
)

// Change is one call of a change callback: a key and its new value, nil
// when the key was deleted.
type Change struct {
	Key   string
	Value []byte
}

// Changes records the calls of a callback of the form
// func(key string, value []byte), as replicated maps report their changed
// keys. It is safe for concurrent use; the zero value is ready to use.
type Changes struct {
	mu    sync.Mutex
	calls []Change
}

// Record appends one call; pass it as the callback. value is kept as
// given, not copied.
func (c *Changes) Record(key string, value []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, Change{Key: key, Value: value})
}

// Calls returns the calls recorded so far, in order.
func (c *Changes) Calls() []Change {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.calls)
}

// Reset forgets the calls recorded so far.
func (c *Changes) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = nil
}

// Latest returns the last value recorded for every key, nil for a key
// last deleted.
func (c *Changes) Latest() map[string][]byte {
	out := make(map[string][]byte)
	for _, ch := range c.Calls() {
		out[ch.Key] = ch.Value
	}
	return out
}

// EqualChanges reports whether a and b hold the same calls in the same
// order, telling a deletion (nil) from an empty value.
func EqualChanges(a, b []Change) bool {
	return slices.EqualFunc(a, b, func(x, y Change) bool {
		return x.Key == y.Key && bytes.Equal(x.Value, y.Value) && (x.Value == nil) == (y.Value == nil)
	})
}

package fsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// ErrKeyNotFound answers an OpDelete of a key the map does not hold.
var ErrKeyNotFound = errors.New("fsm: key not found")

// change is one key whose value an apply or restore changed; a nil value
// means the key was deleted.
type change struct {
	key   string
	value []byte
}

// FSM is the replicated key/value map; it implements raft.FSM. Raft calls
// Apply, Snapshot and Restore from a single goroutine; readers take the
// read lock.
type FSM struct {
	// writes counts the log entries applied (see Writes).
	writes   atomic.Uint64
	mu       sync.RWMutex
	data     map[string][]byte // values are never mutated once stored
	onChange func(key string, value []byte)
}

// New returns an empty map. onChange, if not nil, is called for every key
// whose value an Apply or Restore changes, with the new value (a copy) or
// nil for a deletion, synchronously on Raft's goroutine and outside the
// lock, so it may read the map.
func New(onChange func(key string, value []byte)) *FSM {
	return &FSM{data: make(map[string][]byte), onChange: onChange}
}

// Apply implements raft.FSM. It returns nil on success or an error naming
// the entry's log index, which the Raft store hands back to the writer
// through the ApplyFuture's response.
func (f *FSM) Apply(entry *raft.Log) any {
	f.writes.Add(1)
	var cmd Command
	if err := json.Unmarshal(entry.Data, &cmd); err != nil {
		return fmt.Errorf("fsm: decode command at index %d: %w", entry.Index, err)
	}
	switch cmd.Op {
	case OpPut:
		if cmd.Value == nil {
			// A nil value would read as a deletion to onChange.
			cmd.Value = []byte{}
		}
		if !f.put(cmd.Key, cmd.Value) {
			return nil
		}
	case OpDelete:
		if err := f.delete(cmd.Key); err != nil {
			return err
		}
		cmd.Value = nil
	default:
		return fmt.Errorf("fsm: unknown op %q at index %d", cmd.Op, entry.Index)
	}
	// Outside the lock, so the callback may read the map.
	f.notify([]change{{key: cmd.Key, value: cmd.Value}})
	return nil
}

// put stores value and reports whether it differs from the previous one.
func (f *FSM) put(key string, value []byte) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	old, ok := f.data[key]
	if ok && bytes.Equal(old, value) {
		return false
	}
	f.data[key] = value
	return true
}

// delete removes key, answering ErrKeyNotFound when it is absent; deciding
// here, in log order, makes the answer linearizable.
func (f *FSM) delete(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.data[key]; !ok {
		return fmt.Errorf("%w: %q", ErrKeyNotFound, key)
	}
	delete(f.data, key)
	return nil
}

func (f *FSM) notify(changes []change) {
	if f.onChange == nil {
		return
	}
	for _, c := range changes {
		// A copy, so the callback cannot alter the replicated state.
		f.onChange(c.key, bytes.Clone(c.value))
	}
}

// Get returns a copy of the value of key.
func (f *FSM) Get(key string) ([]byte, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.data[key]
	return bytes.Clone(v), ok
}

// List returns a deep copy of the map.
func (f *FSM) List() map[string][]byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string][]byte, len(f.data))
	for k, v := range f.data {
		out[k] = bytes.Clone(v)
	}
	return out
}

// Writes returns how many log entries Apply has been given, valid or not:
// a leader compares it before and after a follower's outage to learn
// whether the follower missed writes.
func (f *FSM) Writes() uint64 { return f.writes.Load() }

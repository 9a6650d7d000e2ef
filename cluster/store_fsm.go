package cluster

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/raft"
)

// storeOp names a command in the Raft log.
type storeOp string

const (
	storeOpPut    storeOp = "put"
	storeOpDelete storeOp = "delete"
)

// storeCommand is one entry of the Raft log. JSON keeps it readable in a
// debugger and extensible; the documents are small and writes rare.
type storeCommand struct {
	Op    storeOp `json:"op"`
	Key   string  `json:"key"`
	Value []byte  `json:"value,omitempty"`
}

// storeChange is one key whose value an apply or restore changed; a nil
// value means the key was deleted.
type storeChange struct {
	key   string
	value []byte
}

// storeFSM is the replicated key/value map. Raft calls Apply, Snapshot and
// Restore from a single goroutine; readers take the read lock.
type storeFSM struct {
	// writes counts the log entries applied (see watchLaggingFollowers).
	writes   atomic.Uint64
	mu       sync.RWMutex
	data     map[string][]byte // values are never mutated once stored
	onChange func(key string, value []byte)
}

func newStoreFSM(onChange func(key string, value []byte)) *storeFSM {
	return &storeFSM{data: make(map[string][]byte), onChange: onChange}
}

// Apply implements raft.FSM. It returns nil on success or an error, which
// Store hands back to the writer through the ApplyFuture's response.
func (f *storeFSM) Apply(entry *raft.Log) any {
	f.writes.Add(1)
	var cmd storeCommand
	if err := json.Unmarshal(entry.Data, &cmd); err != nil {
		return fmt.Errorf("cluster: decode store command at index %d: %w", entry.Index, err)
	}
	switch cmd.Op {
	case storeOpPut:
		if cmd.Value == nil {
			// A nil value would read as a deletion to OnChange.
			cmd.Value = []byte{}
		}
		if !f.put(cmd.Key, cmd.Value) {
			return nil
		}
	case storeOpDelete:
		if err := f.delete(cmd.Key); err != nil {
			return err
		}
		cmd.Value = nil
	default:
		return fmt.Errorf("cluster: unknown store op %q at index %d", cmd.Op, entry.Index)
	}
	// Outside the lock, so the callback may read the store.
	f.notify([]storeChange{{key: cmd.Key, value: cmd.Value}})
	return nil
}

// put stores value and reports whether it differs from the previous one.
func (f *storeFSM) put(key string, value []byte) bool {
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
func (f *storeFSM) delete(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.data[key]; !ok {
		return fmt.Errorf("%w: %q", ErrKeyNotFound, key)
	}
	delete(f.data, key)
	return nil
}

func (f *storeFSM) notify(changes []storeChange) {
	if f.onChange == nil {
		return
	}
	for _, c := range changes {
		// A copy, so the callback cannot alter the replicated state.
		f.onChange(c.key, bytes.Clone(c.value))
	}
}

// get returns a copy of the value of key.
func (f *storeFSM) get(key string) ([]byte, bool) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	v, ok := f.data[key]
	return bytes.Clone(v), ok
}

// list returns a deep copy of the map.
func (f *storeFSM) list() map[string][]byte {
	f.mu.RLock()
	defer f.mu.RUnlock()
	out := make(map[string][]byte, len(f.data))
	for k, v := range f.data {
		out[k] = bytes.Clone(v)
	}
	return out
}

// Snapshot implements raft.FSM. Values are immutable, so a shallow copy of
// the map is a consistent point-in-time view and cheap to take.
func (f *storeFSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	data := make(map[string][]byte, len(f.data))
	for k, v := range f.data {
		data[k] = v
	}
	return &storeSnapshot{data: data}, nil
}

// Restore implements raft.FSM: it replaces the whole map and reports every
// key that was added, changed or removed, in key order.
func (f *storeFSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data := make(map[string][]byte)
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("cluster: decode store snapshot: %w", err)
	}
	f.mu.Lock()
	changes := storeDiff(f.data, data)
	f.data = data
	f.mu.Unlock()
	f.notify(changes)
	return nil
}

// storeDiff lists the keys whose values differ between prev and next, sorted.
func storeDiff(prev, next map[string][]byte) []storeChange {
	var changes []storeChange
	for k, v := range next {
		if pv, ok := prev[k]; !ok || !bytes.Equal(pv, v) {
			changes = append(changes, storeChange{key: k, value: v})
		}
	}
	for k := range prev {
		if _, ok := next[k]; !ok {
			changes = append(changes, storeChange{key: k})
		}
	}
	slices.SortFunc(changes, func(a, b storeChange) int { return strings.Compare(a.key, b.key) })
	return changes
}

// storeSnapshot is a point-in-time copy of the map, written as one JSON object.
type storeSnapshot struct {
	data map[string][]byte
}

// Persist implements raft.FSMSnapshot.
func (s *storeSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("cluster: write store snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot; the copy needs no cleanup.
func (s *storeSnapshot) Release() {}

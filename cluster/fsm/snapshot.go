package fsm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/hashicorp/raft"
)

// Snapshot implements raft.FSM. Values are immutable, so a shallow copy of
// the map is a consistent point-in-time view and cheap to take.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	data := make(map[string][]byte, len(f.data))
	for k, v := range f.data {
		data[k] = v
	}
	return &snapshot{data: data}, nil
}

// Restore implements raft.FSM: it replaces the whole map and reports every
// key that was added, changed or removed, in key order.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	data := make(map[string][]byte)
	if err := json.NewDecoder(rc).Decode(&data); err != nil {
		return fmt.Errorf("fsm: decode snapshot: %w", err)
	}
	f.mu.Lock()
	changes := diff(f.data, data)
	f.data = data
	f.mu.Unlock()
	f.notify(changes)
	return nil
}

// diff lists the keys whose values differ between prev and next, sorted.
func diff(prev, next map[string][]byte) []change {
	var changes []change
	for k, v := range next {
		if pv, ok := prev[k]; !ok || !bytes.Equal(pv, v) {
			changes = append(changes, change{key: k, value: v})
		}
	}
	for k := range prev {
		if _, ok := next[k]; !ok {
			changes = append(changes, change{key: k})
		}
	}
	slices.SortFunc(changes, func(a, b change) int { return strings.Compare(a.key, b.key) })
	return changes
}

// snapshot is a point-in-time copy of the map, written as one JSON object.
type snapshot struct {
	data map[string][]byte
}

// Persist implements raft.FSMSnapshot.
func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.data); err != nil {
		sink.Cancel()
		return fmt.Errorf("fsm: write snapshot: %w", err)
	}
	return sink.Close()
}

// Release implements raft.FSMSnapshot; the copy needs no cleanup.
func (s *snapshot) Release() {}

package cluster

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"testing"

	"github.com/hashicorp/raft"
)

// storeTestSink is an in-memory raft.SnapshotSink.
type storeTestSink struct {
	bytes.Buffer
	canceled, closed bool
}

func (s *storeTestSink) ID() string    { return "test" }
func (s *storeTestSink) Cancel() error { s.canceled = true; return nil }
func (s *storeTestSink) Close() error  { s.closed = true; return nil }

func storeApply(t *testing.T, f *storeFSM, index uint64, cmd storeCommand) any {
	t.Helper()
	data, err := json.Marshal(cmd)
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
}

func TestStoreFSMApply(t *testing.T) {
	changes := &storeChanges{}
	f := newStoreFSM(func(key string, value []byte) {
		changes.record(key, bytes.Clone(value))
		if value != nil {
			value[0] = 'X' // the callback gets a copy
		}
	})
	if r := storeApply(t, f, 1, storeCommand{Op: storeOpPut, Key: "a", Value: []byte("1")}); r != nil {
		t.Fatalf("put a = %v", r)
	}
	if r := storeApply(t, f, 2, storeCommand{Op: storeOpPut, Key: "a", Value: []byte("1")}); r != nil {
		t.Fatalf("same put a = %v", r)
	}
	if v, _ := f.get("a"); string(v) != "1" {
		t.Fatalf("a = %q after OnChange altered its argument", v)
	}
	if r := storeApply(t, f, 3, storeCommand{Op: storeOpDelete, Key: "a"}); r != nil {
		t.Fatalf("delete a = %v", r)
	}
	r := storeApply(t, f, 4, storeCommand{Op: storeOpDelete, Key: "a"})
	if err, ok := r.(error); !ok || !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("delete of absent a = %v, want ErrKeyNotFound", r)
	}
	if _, ok := storeApply(t, f, 5, storeCommand{Op: "rename", Key: "a"}).(error); !ok {
		t.Fatal("an unknown op was not answered with an error")
	}
	if _, ok := f.Apply(&raft.Log{Index: 6, Data: []byte("{")}).(error); !ok {
		t.Fatal("an undecodable entry was not answered with an error")
	}
	want := []storeChange{{"a", []byte("1")}, {"a", nil}}
	if got := changes.snapshot(); !storeChangesEqual(got, want) {
		t.Fatalf("OnChange calls = %q, want %q", got, want)
	}
}

func TestStoreFSMSnapshotRestore(t *testing.T) {
	src := newStoreFSM(nil)
	for i, kv := range [][2]string{{"keep", "same"}, {"edit", "new"}, {"add", "fresh"}} {
		storeApply(t, src, uint64(i+1), storeCommand{Op: storeOpPut, Key: kv[0], Value: []byte(kv[1])})
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	// Writes after Snapshot must not leak into the snapshot being persisted.
	storeApply(t, src, 9, storeCommand{Op: storeOpPut, Key: "late", Value: []byte("x")})
	sink := &storeTestSink{}
	if err := snap.Persist(sink); err != nil || !sink.closed || sink.canceled {
		t.Fatalf("Persist = %v (closed %v, canceled %v)", err, sink.closed, sink.canceled)
	}
	snap.Release()

	changes := &storeChanges{}
	dst := newStoreFSM(changes.record)
	for i, kv := range [][2]string{{"keep", "same"}, {"edit", "old"}, {"gone", "bye"}} {
		storeApply(t, dst, uint64(i+1), storeCommand{Op: storeOpPut, Key: kv[0], Value: []byte(kv[1])})
	}
	changes.calls = nil
	if err := dst.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	wantMap := map[string][]byte{"keep": []byte("same"), "edit": []byte("new"), "add": []byte("fresh")}
	if got := dst.list(); !maps.EqualFunc(got, wantMap, bytes.Equal) {
		t.Fatalf("restored map = %q, want %q", got, wantMap)
	}
	// Sorted by key; the unchanged key is not reported.
	want := []storeChange{{"add", []byte("fresh")}, {"edit", []byte("new")}, {"gone", nil}}
	if got := changes.snapshot(); !storeChangesEqual(got, want) {
		t.Fatalf("OnChange on restore = %q, want %q", got, want)
	}
	if err := dst.Restore(io.NopCloser(bytes.NewBufferString("not json"))); err == nil {
		t.Fatal("Restore accepted a corrupt snapshot")
	}
}

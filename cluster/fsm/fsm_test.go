package fsm

import (
	"bytes"
	"errors"
	"io"
	"maps"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/presencehq/presence/internal/testkit"
)

// testSink is an in-memory raft.SnapshotSink.
type testSink struct {
	bytes.Buffer
	canceled, closed bool
}

func (s *testSink) ID() string    { return "test" }
func (s *testSink) Cancel() error { s.canceled = true; return nil }
func (s *testSink) Close() error  { s.closed = true; return nil }

func apply(t *testing.T, f *FSM, index uint64, cmd Command) any {
	t.Helper()
	data, err := cmd.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return f.Apply(&raft.Log{Index: index, Type: raft.LogCommand, Data: data})
}

func TestFSMApply(t *testing.T) {
	changes := &testkit.Changes{}
	f := New(func(key string, value []byte) {
		changes.Record(key, bytes.Clone(value))
		if value != nil {
			value[0] = 'X' // the callback gets a copy
		}
	})
	if r := apply(t, f, 1, Command{Op: OpPut, Key: "a", Value: []byte("1")}); r != nil {
		t.Fatalf("put a = %v", r)
	}
	if r := apply(t, f, 2, Command{Op: OpPut, Key: "a", Value: []byte("1")}); r != nil {
		t.Fatalf("same put a = %v", r)
	}
	if v, _ := f.Get("a"); string(v) != "1" {
		t.Fatalf("a = %q after OnChange altered its argument", v)
	}
	if r := apply(t, f, 3, Command{Op: OpDelete, Key: "a"}); r != nil {
		t.Fatalf("delete a = %v", r)
	}
	r := apply(t, f, 4, Command{Op: OpDelete, Key: "a"})
	if err, ok := r.(error); !ok || !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("delete of absent a = %v, want ErrKeyNotFound", r)
	}
	if _, ok := apply(t, f, 5, Command{Op: "rename", Key: "a"}).(error); !ok {
		t.Fatal("an unknown op was not answered with an error")
	}
	if _, ok := f.Apply(&raft.Log{Index: 6, Data: []byte("{")}).(error); !ok {
		t.Fatal("an undecodable entry was not answered with an error")
	}
	want := []testkit.Change{{Key: "a", Value: []byte("1")}, {Key: "a", Value: nil}}
	if got := changes.Calls(); !testkit.EqualChanges(got, want) {
		t.Fatalf("OnChange calls = %q, want %q", got, want)
	}
}

func TestFSMSnapshotRestore(t *testing.T) {
	src := New(nil)
	for i, kv := range [][2]string{{"keep", "same"}, {"edit", "new"}, {"add", "fresh"}} {
		apply(t, src, uint64(i+1), Command{Op: OpPut, Key: kv[0], Value: []byte(kv[1])})
	}
	snap, err := src.Snapshot()
	if err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	// Writes after Snapshot must not leak into the snapshot being persisted.
	apply(t, src, 9, Command{Op: OpPut, Key: "late", Value: []byte("x")})
	sink := &testSink{}
	if err := snap.Persist(sink); err != nil || !sink.closed || sink.canceled {
		t.Fatalf("Persist = %v (closed %v, canceled %v)", err, sink.closed, sink.canceled)
	}
	snap.Release()

	changes := &testkit.Changes{}
	dst := New(changes.Record)
	for i, kv := range [][2]string{{"keep", "same"}, {"edit", "old"}, {"gone", "bye"}} {
		apply(t, dst, uint64(i+1), Command{Op: OpPut, Key: kv[0], Value: []byte(kv[1])})
	}
	changes.Reset()
	if err := dst.Restore(io.NopCloser(&sink.Buffer)); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	wantMap := map[string][]byte{"keep": []byte("same"), "edit": []byte("new"), "add": []byte("fresh")}
	if got := dst.List(); !maps.EqualFunc(got, wantMap, bytes.Equal) {
		t.Fatalf("restored map = %q, want %q", got, wantMap)
	}
	// Sorted by key; the unchanged key is not reported.
	want := []testkit.Change{{Key: "add", Value: []byte("fresh")}, {Key: "edit", Value: []byte("new")}, {Key: "gone", Value: nil}}
	if got := changes.Calls(); !testkit.EqualChanges(got, want) {
		t.Fatalf("OnChange on restore = %q, want %q", got, want)
	}
	if err := dst.Restore(io.NopCloser(bytes.NewBufferString("not json"))); err == nil {
		t.Fatal("Restore accepted a corrupt snapshot")
	}
}

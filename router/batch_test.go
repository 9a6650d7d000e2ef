package router

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/presencehq/presence/presence"
)

// internRequests encodes a batch of updates covering what a user and the
// lists can hold: no user, groups, empty fields, a leave without present.
func internRequests() []updateRequest {
	full := &presence.User{ID: "7", Username: "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png", Groups: []string{"staff", "everyone"}}
	return []updateRequest{
		{hdr: header{epoch: 3, hops: 1}, user: full, clientID: "tab-1", present: []string{"/pub/a", "/pub/b"}, leave: []string{"/pub/c"}},
		{hdr: header{epoch: 3, hops: 1}, user: &presence.User{ID: "8"}, clientID: "tab-2", leave: []string{"/pub/a"}},
		{hdr: header{epoch: 4, hops: 2}, user: nil, clientID: "", present: []string{"/pub/a"}},
		{hdr: header{epoch: 3, hops: 1}, user: full, clientID: "tab-1", present: []string{"/pub/a"}},
	}
}

func encodeBatch(reqs []updateRequest) []byte {
	var e encoder
	e.uint(uint64(len(reqs)))
	for i := range reqs {
		reqs[i].encode(&e)
	}
	return e.b
}

// decodeInterned decodes a batch the way handleUpdate does.
func decodeInterned(t *internTable, b []byte) ([]updateRequest, error) {
	d := decoder{b: b}
	reqs := make([]updateRequest, d.count())
	var names []string
	for i := range reqs {
		reqs[i], names = t.updateRequest(&d, names)
	}
	return reqs, d.finish()
}

func TestInternDecodesAsTheDecoder(t *testing.T) {
	var tab internTable
	tab.init()
	b := encodeBatch(internRequests())
	d := decoder{b: b}
	want := make([]updateRequest, d.count())
	for i := range want {
		want[i] = d.updateRequest()
	}
	if err := d.finish(); err != nil {
		t.Fatal(err)
	}
	for round := range 2 { // the second round finds everything in the table
		got, err := decodeInterned(&tab, b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d:\n got %+v\nwant %+v", round, got, want)
		}
	}
	got, _ := decodeInterned(&tab, b)
	again, _ := decodeInterned(&tab, b)
	if got[0].user != again[0].user || got[0].user != got[3].user {
		t.Error("one user decoded twice is two values")
	}
	if got[1].user == got[0].user {
		t.Error("two users share one value")
	}
}

func TestInternKeepsListsApart(t *testing.T) {
	var tab internTable
	tab.init()
	got, err := decodeInterned(&tab, encodeBatch(internRequests()))
	if err != nil {
		t.Fatal(err)
	}
	// The lists share one array: appending to one must not reach another.
	first := got[0].present
	_ = append(first, "/pub/z")
	if got[0].leave[0] != "/pub/c" {
		t.Errorf("append to a present list changed the leave list: %v", got[0].leave)
	}
}

func TestInternRejectsTruncatedBatches(t *testing.T) {
	var tab internTable
	tab.init()
	b := encodeBatch(internRequests())
	for n := range len(b) {
		if _, err := decodeInterned(&tab, b[:n]); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(b), err)
		}
	}
	if _, err := decodeInterned(&tab, append(b, 0)); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestInternTableIsBounded(t *testing.T) {
	var tab internTable
	tab.init()
	for i := range 2 * internCapacity {
		var e encoder
		e.string(fmt.Sprint("client-", i))
		e.user(&presence.User{ID: fmt.Sprint(i)})
		d := decoder{b: e.b}
		if s := tab.string(&d); s != fmt.Sprint("client-", i) {
			t.Fatalf("string %d decoded as %q", i, s)
		}
		if u := tab.user(&d); u.ID != fmt.Sprint(i) {
			t.Fatalf("user %d decoded as %+v", i, u)
		}
	}
	for i := range tab.shards {
		sh := &tab.shards[i]
		if len(sh.users) > internCapacity/internShards || len(sh.strs) > internCapacity/internShards {
			t.Fatalf("shard %d holds %d users and %d strings, bound %d", i, len(sh.users), len(sh.strs), internCapacity/internShards)
		}
	}
}

func TestBatchResultsFillItems(t *testing.T) {
	var e encoder
	e.uint(3)
	e.updateResult(updateResult{vals: []bool{true, false, true, true, false, false, false, false, true}})
	e.updateResult(updateResult{err: fmt.Errorf("deep: %w", presence.ErrMoved)})
	e.updateResult(updateResult{vals: []bool{false}})
	batch := []*updateItem{{}, {}, {}}
	if err := decodeBatchResults(e.b, "n2", batch); err != nil {
		t.Fatal(err)
	}
	if want := []bool{true, false, true, true, false, false, false, false, true}; !reflect.DeepEqual(batch[0].vals, want) || batch[0].err != nil {
		t.Errorf("first: %v %v", batch[0].vals, batch[0].err)
	}
	if !errors.Is(batch[1].err, presence.ErrMoved) || batch[1].vals != nil {
		t.Errorf("second: %v %v", batch[1].vals, batch[1].err)
	}
	if !reflect.DeepEqual(batch[2].vals, []bool{false}) {
		t.Errorf("third: %v", batch[2].vals)
	}
	// The answers share an array: one caller appending must not reach another.
	_ = append(batch[0].vals, false)
	if !reflect.DeepEqual(batch[2].vals, []bool{false}) {
		t.Errorf("append to the first answers changed the third: %v", batch[2].vals)
	}
	if err := decodeBatchResults(e.b, "n2", batch[:2]); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("answers for 3 decoded into a batch of 2: %v", err)
	}
	for n := range len(e.b) {
		if err := decodeBatchResults(e.b[:n], "n2", batch); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

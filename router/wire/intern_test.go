package wire

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"github.com/presencehq/presence/presence"
)

// internRequests encodes a batch of updates covering what a user and the
// lists can hold: no user, groups, empty fields, a leave without present.
func internRequests() []UpdateRequest {
	full := &presence.User{ID: "7", Username: "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png", Groups: []string{"staff", "everyone"}}
	return []UpdateRequest{
		{Header: Header{Epoch: 3, Hops: 1}, User: full, ClientID: "tab-1", Present: []string{"/pub/a", "/pub/b"}, Leave: []string{"/pub/c"}},
		{Header: Header{Epoch: 3, Hops: 1}, User: &presence.User{ID: "8"}, ClientID: "tab-2", Leave: []string{"/pub/a"}},
		{Header: Header{Epoch: 4, Hops: 2}, User: nil, ClientID: "", Present: []string{"/pub/a"}},
		{Header: Header{Epoch: 3, Hops: 1}, User: full, ClientID: "tab-1", Present: []string{"/pub/a"}},
	}
}

func encodeBatch(reqs []UpdateRequest) []byte {
	var e Encoder
	EncodeUpdateBatch(&e, len(reqs), func(i int) *UpdateRequest { return &reqs[i] })
	return e.b
}

func TestInternDecodesAsTheDecoder(t *testing.T) {
	tab := NewIntern()
	b := encodeBatch(internRequests())
	d := decoder{b: b}
	want := make([]UpdateRequest, d.count())
	for i := range want {
		want[i] = d.updateRequest()
	}
	if err := d.finish(); err != nil {
		t.Fatal(err)
	}
	for round := range 2 { // the second round finds everything in the table
		got, err := tab.DecodeUpdateBatch(b)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("round %d:\n got %+v\nwant %+v", round, got, want)
		}
	}
	got, _ := tab.DecodeUpdateBatch(b)
	again, _ := tab.DecodeUpdateBatch(b)
	if got[0].User != again[0].User || got[0].User != got[3].User {
		t.Error("one user decoded twice is two values")
	}
	if got[1].User == got[0].User {
		t.Error("two users share one value")
	}
}

func TestInternKeepsListsApart(t *testing.T) {
	got, err := NewIntern().DecodeUpdateBatch(encodeBatch(internRequests()))
	if err != nil {
		t.Fatal(err)
	}
	// The lists share one array: appending to one must not reach another.
	first := got[0].Present
	_ = append(first, "/pub/z")
	if got[0].Leave[0] != "/pub/c" {
		t.Errorf("append to a present list changed the leave list: %v", got[0].Leave)
	}
}

func TestInternRejectsTruncatedBatches(t *testing.T) {
	tab := NewIntern()
	b := encodeBatch(internRequests())
	for n := range len(b) {
		if _, err := tab.DecodeUpdateBatch(b[:n]); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("truncated to %d of %d bytes: %v", n, len(b), err)
		}
	}
	if _, err := tab.DecodeUpdateBatch(append(b, 0)); !errors.Is(err, presence.ErrInvalid) {
		t.Fatalf("trailing byte: %v", err)
	}
}

func TestInternTableIsBounded(t *testing.T) {
	tab := NewIntern()
	for i := range 2 * internCapacity {
		var e Encoder
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

package wire

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
)

func testMessages() []*presence.Message {
	aud := &presence.Config{AllowedUserIDs: []string{"1"}, AllowedGroupIDs: []string{"staff", "ops"}, Timeout: 30}
	return []*presence.Message{
		{Channel: "/staff/a", ID: 1 << 52, EnteringUsers: []presence.UserInfo{{ID: "1", Username: "sam", Name: "Sam", AvatarTemplate: "/a/{size}.png"}}, Audience: aud, PublishedAtUnixMilli: 1_700_000_000_123},
		{Channel: "/staff/a", ID: 1<<52 + 1, LeavingUserIDs: []string{"1", "2"}, Audience: aud, PublishedAtUnixMilli: 1_700_000_000_456},
		{Channel: "/count/b", ID: 7, CountOnly: true, CountDelta: -3, Audience: &presence.Config{Public: true, CountOnly: true}},
		{Channel: "/count/b", ID: 8, CountOnly: true, Resync: true, Audience: &presence.Config{Public: true, CountOnly: true}},
		{Channel: "/pub/c", ID: 9},
	}
}

func TestCodecRoundTrips(t *testing.T) {
	u := &presence.User{ID: "7", Username: "sam", Name: "Sam", AvatarTemplate: "x", Groups: []string{"staff"}}
	snap := &presence.ChannelSnapshot{
		Channel:     "/staff/a",
		Config:      &presence.Config{AllowedGroupIDs: []string{"staff"}, Timeout: 30},
		LastID:      1<<52 + 1,
		Delivered:   1 << 52,
		Unpublished: 1,
		Clients:     []presence.ClientSnapshot{{User: u.Info(), ClientID: "tab", ExpiresAtUnixNano: 1_700_000_060_000_000_000}},
		Backlog:     testMessages()[:2],

		ExpiryGrace: time.Second,
	}
	interest := []Interested{{Node: Member{Name: "n2", RPCAddr: "127.0.0.1:7947"}, Gen: 12}}
	cases := []struct {
		name   string
		enc    func(*Encoder)
		decode func([]byte) (any, error)
		want   any
	}{
		{"update", (&UpdateRequest{Header: Header{Epoch: 9, Hops: 2}, User: u, ClientID: "tab", Present: []string{"/pub/a", "/pub/b"}, Leave: []string{"/pub/c"}}).Encode,
			func(b []byte) (any, error) { return decodeUpdateRequest(b) },
			UpdateRequest{Header: Header{Epoch: 9, Hops: 2}, User: u, ClientID: "tab", Present: []string{"/pub/a", "/pub/b"}, Leave: []string{"/pub/c"}}},
		{"anonymous get", (&GetRequest{Header: Header{Hops: 1}, Channels: []string{"/pub/a"}}).Encode,
			func(b []byte) (any, error) { return DecodeGetRequest(b) },
			GetRequest{Header: Header{Hops: 1}, Channels: []string{"/pub/a"}}},
		{"bools", func(e *Encoder) { encodeBools(e, []bool{true, false, true, true, false, false, false, false, true}) },
			func(b []byte) (any, error) { return decodeBools(b) },
			[]bool{true, false, true, true, false, false, false, false, true}},
		{"states", (&GetReply{States: []*presence.ChannelState{nil, {Count: 1, LastMessageID: 5, Users: []presence.UserInfo{u.Info()}}, {CountOnly: true, Count: 3, LastMessageID: -1}, {Users: []presence.UserInfo{}}}}).Encode,
			func(b []byte) (any, error) { return DecodeGetReply(b) },
			GetReply{States: []*presence.ChannelState{nil, {Count: 1, LastMessageID: 5, Users: []presence.UserInfo{u.Info()}}, {CountOnly: true, Count: 3, LastMessageID: -1}, {Users: []presence.UserInfo{}}}}},
		{"since", (&SinceRequest{Header: Header{Hops: 1}, User: u, Channel: "/pub/a", After: -1, Node: interest[0].Node, Gen: 3}).Encode,
			func(b []byte) (any, error) { return DecodeSinceRequest(b) },
			SinceRequest{Header: Header{Hops: 1}, User: u, Channel: "/pub/a", After: -1, Node: interest[0].Node, Gen: 3}},
		{"catchup", (&SinceReply{Catchup: presence.Catchup{Resync: true, LastID: 9, Messages: testMessages()}}).Encode,
			func(b []byte) (any, error) { return DecodeSinceReply(b) },
			SinceReply{Catchup: presence.Catchup{Resync: true, LastID: 9, Messages: testMessages()}}},
		{"interest", (&InterestRequest{Node: interest[0].Node, Changes: []InterestChange{{Channel: "/pub/a", On: true, Gen: 4}, {Channel: "/pub/b", Gen: 5}}}).Encode,
			func(b []byte) (any, error) { return DecodeInterestRequest(b) },
			InterestRequest{Node: interest[0].Node, Changes: []InterestChange{{Channel: "/pub/a", On: true, Gen: 4}, {Channel: "/pub/b", Gen: 5}}}},
		{"push", (&PushRequest{From: "n1", Messages: testMessages()}).Encode,
			func(b []byte) (any, error) { return DecodePushRequest(b) },
			PushRequest{From: "n1", Messages: testMessages()}},
		{"extract", (&ExtractRequest{Channel: "/pub/a", Requester: interest[0].Node}).Encode,
			func(b []byte) (any, error) { return DecodeExtractRequest(b) },
			ExtractRequest{Channel: "/pub/a", Requester: interest[0].Node}},
		{"extract snapshot", (&ExtractReply{Outcome: ExtractSnapshot, Snap: snap, Interest: interest}).Encode,
			func(b []byte) (any, error) { return DecodeExtractReply(b) },
			ExtractReply{Outcome: ExtractSnapshot, Snap: snap, Interest: interest}},
		{"extract elsewhere", (&ExtractReply{Outcome: ExtractElsewhere, Elsewhere: interest[0].Node}).Encode,
			func(b []byte) (any, error) { return DecodeExtractReply(b) },
			ExtractReply{Outcome: ExtractElsewhere, Elsewhere: interest[0].Node}},
		{"install", (&InstallRequest{From: interest[0].Node, Snap: snap, Interest: interest}).Encode,
			func(b []byte) (any, error) { return DecodeInstallRequest(b) },
			InstallRequest{From: interest[0].Node, Snap: snap, Interest: interest}},
		{"install reply", (&InstallReply{Boot: 1 << 40}).Encode,
			func(b []byte) (any, error) { return DecodeInstallReply(b) },
			InstallReply{Boot: 1 << 40}},
		{"release", (&ReleaseRequest{Channel: "/pub/a", From: interest[0].Node, Boot: 12}).Encode,
			func(b []byte) (any, error) { return DecodeReleaseRequest(b) },
			ReleaseRequest{Channel: "/pub/a", From: interest[0].Node, Boot: 12}},
		{"inspect", (&InspectRequest{Header: Header{Epoch: 3, Hops: 1, Deadline: 77}, Channels: []string{"/count/a", "/pub/b"}}).Encode,
			func(b []byte) (any, error) { return DecodeInspectRequest(b) },
			InspectRequest{Header: Header{Epoch: 3, Hops: 1, Deadline: 77}, Channels: []string{"/count/a", "/pub/b"}}},
		{"can", (&CanRequest{Header: Header{Hops: 2}, User: u, Channel: "/staff/a"}).Encode,
			func(b []byte) (any, error) { return DecodeCanRequest(b) },
			CanRequest{Header: Header{Hops: 2}, User: u, Channel: "/staff/a"}},
		{"anonymous can", (&CanRequest{Header: Header{Hops: 1}, Channel: "/pub/a"}).Encode,
			func(b []byte) (any, error) { return DecodeCanRequest(b) },
			CanRequest{Header: Header{Hops: 1}, Channel: "/pub/a"}},
		{"access", (&CanReply{Access: presence.Access{Exists: true, CanView: true, CountOnly: true, MaxUsers: 250}}).Encode,
			func(b []byte) (any, error) { return DecodeCanReply(b) },
			CanReply{Access: presence.Access{Exists: true, CanView: true, CountOnly: true, MaxUsers: 250}}},
		{"full access", (&CanReply{Access: presence.Access{Exists: true, CanView: true, CanEnter: true}}).Encode,
			func(b []byte) (any, error) { return DecodeCanReply(b) },
			CanReply{Access: presence.Access{Exists: true, CanView: true, CanEnter: true}}},
		{"whole states", (&GetReply{States: []*presence.ChannelState{{CountOnly: true, Count: 1, LastMessageID: 4, Users: []presence.UserInfo{u.Info()}}, nil}}).Encode,
			func(b []byte) (any, error) { return DecodeGetReply(b) },
			GetReply{States: []*presence.ChannelState{{CountOnly: true, Count: 1, LastMessageID: 4, Users: []presence.UserInfo{u.Info()}}, nil}}},
		{"clear", (&ClearRequest{Header: Header{Epoch: 1, Hops: 1, Deadline: -5}, Channel: "/pub/a"}).Encode,
			func(b []byte) (any, error) { return DecodeClearRequest(b) },
			ClearRequest{Header: Header{Epoch: 1, Hops: 1, Deadline: -5}, Channel: "/pub/a"}},
		{"leaves", (&LeavesRequest{From: interest[0].Node, Channel: "/pub/a", Hops: 2, Leaves: map[string]int64{"k": 5, "m\x00tab": -3}}).Encode,
			func(b []byte) (any, error) { return DecodeLeavesRequest(b) },
			LeavesRequest{From: interest[0].Node, Channel: "/pub/a", Hops: 2, Leaves: map[string]int64{"k": 5, "m\x00tab": -3}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e Encoder
			tc.enc(&e)
			got, err := tc.decode(e.b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tc.want)
			}
			// Every truncation and a trailing byte are refused, never a panic.
			for n := range len(e.b) {
				if _, err := tc.decode(e.b[:n]); !errors.Is(err, presence.ErrInvalid) {
					t.Fatalf("truncated to %d of %d bytes: %v", n, len(e.b), err)
				}
			}
			if _, err := tc.decode(append(e.b, 0)); !errors.Is(err, presence.ErrInvalid) {
				t.Fatalf("trailing byte: %v", err)
			}
		})
	}
}

func decodeUpdateRequest(b []byte) (UpdateRequest, error) {
	d := decoder{b: b}
	q := d.updateRequest()
	return q, d.finish()
}

// decodeBools decodes a list of answers written by encodeBools.
func decodeBools(b []byte) ([]bool, error) {
	d := decoder{b: b}
	n := d.uint()
	if n > uint64(len(d.b))*8 {
		d.fail()
		n = 0
	}
	vals := d.appendBools(make([]bool, 0, n), int(n))
	return vals, d.finish()
}

func TestUpdateResultsCarrySentinels(t *testing.T) {
	res := NewUpdateResults(3)
	res.Add([]bool{true, false}, nil)
	res.Add(nil, fmt.Errorf("deep: %w", presence.ErrMoved))
	res.Add(nil, errors.New("no sentinel"))
	b := res.Bytes()
	got, err := DecodeUpdateResults(b, "n2")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[0].Vals, []bool{true, false}) || got[0].Err != nil {
		t.Errorf("ok result: %+v", got[0])
	}
	if !errors.Is(got[1].Err, presence.ErrMoved) || !strings.Contains(got[1].Err.Error(), "deep") {
		t.Errorf("moved result: %v", got[1].Err)
	}
	var re *RemoteError
	if !errors.As(got[2].Err, &re) || re.Node != "n2" || errors.Unwrap(got[2].Err) != nil {
		t.Errorf("plain error: %#v", got[2].Err)
	}
	for n := range len(b) {
		if _, err := DecodeUpdateResults(b[:n], "n2"); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

func TestCodecSharesAudience(t *testing.T) {
	msgs := testMessages()
	var e Encoder
	e.messages(msgs)
	d := decoder{b: e.b}
	got := d.messages()
	if err := d.finish(); err != nil {
		t.Fatal(err)
	}
	if got[0].Audience != got[1].Audience {
		t.Error("consecutive messages with one audience decode to two configs")
	}
	if got[len(got)-1].Audience != nil {
		t.Error("a message without audience got one")
	}
}

func FuzzDecoders(f *testing.F) {
	var e Encoder
	(&PushRequest{From: "n1", Messages: testMessages()}).Encode(&e)
	f.Add(e.b)
	f.Add([]byte{1, 2, 3})
	e = Encoder{}
	(&CanReply{Access: presence.Access{Exists: true, CanView: true, MaxUsers: 3}}).Encode(&e)
	f.Add(e.b)
	f.Fuzz(func(t *testing.T, b []byte) {
		// None may panic; each either decodes or reports ErrInvalid.
		for _, dec := range []func([]byte) error{
			func(b []byte) error { _, err := decodeUpdateRequest(b); return err },
			func(b []byte) error { _, err := DecodeGetRequest(b); return err },
			func(b []byte) error { _, err := DecodeGetReply(b); return err },
			func(b []byte) error { _, err := DecodeSinceRequest(b); return err },
			func(b []byte) error { _, err := DecodeSinceReply(b); return err },
			func(b []byte) error { _, err := DecodePushRequest(b); return err },
			func(b []byte) error { _, err := DecodeExtractReply(b); return err },
			func(b []byte) error { _, err := DecodeInstallRequest(b); return err },
			func(b []byte) error { _, err := DecodeLeavesRequest(b); return err },
			func(b []byte) error { _, err := decodeBools(b); return err },
			func(b []byte) error { _, err := DecodeUpdateResults(b, "n"); return err },
			func(b []byte) error { _, err := DecodeInterestRequest(b); return err },
			func(b []byte) error { _, err := DecodeExtractRequest(b); return err },
			func(b []byte) error { _, err := DecodePushReply(b); return err },
			func(b []byte) error { _, err := DecodeReplicateRequest(b); return err },
			func(b []byte) error { _, err := DecodeReplicateReply(b); return err },
			func(b []byte) error { _, err := NewIntern().DecodeUpdateBatch(b); return err },
			func(b []byte) error { _, err := DecodeInspectRequest(b); return err },
			func(b []byte) error { _, err := DecodeCanRequest(b); return err },
			func(b []byte) error { _, err := DecodeCanReply(b); return err },
			func(b []byte) error { _, err := DecodeClearRequest(b); return err },
			func(b []byte) error { _, err := DecodeInstallReply(b); return err },
			func(b []byte) error { _, err := DecodeReleaseRequest(b); return err },
		} {
			if err := dec(b); err != nil && !errors.Is(err, presence.ErrInvalid) {
				t.Fatalf("decode error %v is not ErrInvalid", err)
			}
		}
	})
}

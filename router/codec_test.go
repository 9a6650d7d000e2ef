package router

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
		Channel: "/staff/a",
		Config:  &presence.Config{AllowedGroupIDs: []string{"staff"}, Timeout: 30},
		LastID:  1<<52 + 1,
		Clients: []presence.ClientSnapshot{{User: u.Info(), ClientID: "tab", ExpiresAtUnixNano: 1_700_000_060_000_000_000}},
		Backlog: testMessages()[:2],

		ExpiryGrace: time.Second,
	}
	interest := []interested{{node: Member{Name: "n2", RPCAddr: "127.0.0.1:7947"}, gen: 12}}
	cases := []struct {
		name   string
		enc    func(*encoder)
		decode func([]byte) (any, error)
		want   any
	}{
		{"update", (&updateRequest{hdr: header{epoch: 9, hops: 2}, user: u, clientID: "tab", present: []string{"/pub/a", "/pub/b"}, leave: []string{"/pub/c"}}).encode,
			func(b []byte) (any, error) { return decodeUpdateRequest(b) },
			updateRequest{hdr: header{epoch: 9, hops: 2}, user: u, clientID: "tab", present: []string{"/pub/a", "/pub/b"}, leave: []string{"/pub/c"}}},
		{"anonymous get", (&getRequest{hdr: header{hops: 1}, channels: []string{"/pub/a"}}).encode,
			func(b []byte) (any, error) { return decodeGetRequest(b) },
			getRequest{hdr: header{hops: 1}, channels: []string{"/pub/a"}}},
		{"bools", func(e *encoder) { encodeBools(e, []bool{true, false, true, true, false, false, false, false, true}) },
			func(b []byte) (any, error) { return decodeBools(b) },
			[]bool{true, false, true, true, false, false, false, false, true}},
		{"states", func(e *encoder) {
			encodeStates(e, []*presence.ChannelState{nil, {Count: 1, LastMessageID: 5, Users: []presence.UserInfo{u.Info()}}, {CountOnly: true, Count: 3, LastMessageID: -1}, {Users: []presence.UserInfo{}}})
		},
			func(b []byte) (any, error) { return decodeStates(b) },
			[]*presence.ChannelState{nil, {Count: 1, LastMessageID: 5, Users: []presence.UserInfo{u.Info()}}, {CountOnly: true, Count: 3, LastMessageID: -1}, {Users: []presence.UserInfo{}}}},
		{"since", (&sinceRequest{hdr: header{hops: 1}, user: u, channel: "/pub/a", after: -1, node: interest[0].node, gen: 3}).encode,
			func(b []byte) (any, error) { return decodeSinceRequest(b) },
			sinceRequest{hdr: header{hops: 1}, user: u, channel: "/pub/a", after: -1, node: interest[0].node, gen: 3}},
		{"catchup", func(e *encoder) { e.catchup(presence.Catchup{Resync: true, LastID: 9, Messages: testMessages()}) },
			func(b []byte) (any, error) { return decodeCatchup(b) },
			presence.Catchup{Resync: true, LastID: 9, Messages: testMessages()}},
		{"interest", (&interestRequest{node: interest[0].node, changes: []interestChange{{channel: "/pub/a", on: true, gen: 4}, {channel: "/pub/b", gen: 5}}}).encode,
			func(b []byte) (any, error) { return decodeInterestRequest(b) },
			interestRequest{node: interest[0].node, changes: []interestChange{{channel: "/pub/a", on: true, gen: 4}, {channel: "/pub/b", gen: 5}}}},
		{"push", (&pushRequest{from: "n1", messages: testMessages()}).encode,
			func(b []byte) (any, error) { return decodePushRequest(b) },
			pushRequest{from: "n1", messages: testMessages()}},
		{"extract", (&extractRequest{channel: "/pub/a", requester: interest[0].node}).encode,
			func(b []byte) (any, error) { return decodeExtractRequest(b) },
			extractRequest{channel: "/pub/a", requester: interest[0].node}},
		{"extract snapshot", (&extractReply{outcome: extractSnapshot, snap: snap, interest: interest}).encode,
			func(b []byte) (any, error) { return decodeExtractReply(b) },
			extractReply{outcome: extractSnapshot, snap: snap, interest: interest}},
		{"extract elsewhere", (&extractReply{outcome: extractElsewhere, elsewhere: interest[0].node}).encode,
			func(b []byte) (any, error) { return decodeExtractReply(b) },
			extractReply{outcome: extractElsewhere, elsewhere: interest[0].node}},
		{"install", (&installRequest{from: interest[0].node, snap: snap, interest: interest}).encode,
			func(b []byte) (any, error) { return decodeInstallRequest(b) },
			installRequest{from: interest[0].node, snap: snap, interest: interest}},
		{"leaves", (&leavesRequest{from: interest[0].node, channel: "/pub/a", hops: 2, leaves: map[string]int64{"k": 5, clientKey("m", "tab"): -3}}).encode,
			func(b []byte) (any, error) { return decodeLeavesRequest(b) },
			leavesRequest{from: interest[0].node, channel: "/pub/a", hops: 2, leaves: map[string]int64{"k": 5, clientKey("m", "tab"): -3}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var e encoder
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

func decodeUpdateRequest(b []byte) (updateRequest, error) {
	d := decoder{b: b}
	q := d.updateRequest()
	return q, d.finish()
}

func TestUpdateResultsCarrySentinels(t *testing.T) {
	var e encoder
	e.uint(3)
	e.updateResult(updateResult{vals: []bool{true, false}})
	e.updateResult(updateResult{err: fmt.Errorf("deep: %w", presence.ErrMoved)})
	e.updateResult(updateResult{err: errors.New("no sentinel")})
	got, err := decodeUpdateResults(e.b, "n2")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got[0].vals, []bool{true, false}) || got[0].err != nil {
		t.Errorf("ok result: %+v", got[0])
	}
	if !errors.Is(got[1].err, presence.ErrMoved) || !strings.Contains(got[1].err.Error(), "deep") {
		t.Errorf("moved result: %v", got[1].err)
	}
	var re *RemoteError
	if !errors.As(got[2].err, &re) || re.Node != "n2" || errors.Unwrap(got[2].err) != nil {
		t.Errorf("plain error: %#v", got[2].err)
	}
	for n := range len(e.b) {
		if _, err := decodeUpdateResults(e.b[:n], "n2"); !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("truncated to %d: %v", n, err)
		}
	}
}

func TestCodecSharesAudience(t *testing.T) {
	msgs := testMessages()
	var e encoder
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
	var e encoder
	(&pushRequest{from: "n1", messages: testMessages()}).encode(&e)
	f.Add(e.b)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		// None may panic; each either decodes or reports ErrInvalid.
		for _, dec := range []func([]byte) error{
			func(b []byte) error { _, err := decodeUpdateRequest(b); return err },
			func(b []byte) error { _, err := decodeGetRequest(b); return err },
			func(b []byte) error { _, err := decodeStates(b); return err },
			func(b []byte) error { _, err := decodeSinceRequest(b); return err },
			func(b []byte) error { _, err := decodeCatchup(b); return err },
			func(b []byte) error { _, err := decodePushRequest(b); return err },
			func(b []byte) error { _, err := decodeExtractReply(b); return err },
			func(b []byte) error { _, err := decodeInstallRequest(b); return err },
			func(b []byte) error { _, err := decodeLeavesRequest(b); return err },
			func(b []byte) error { _, err := decodeBools(b); return err },
			func(b []byte) error { _, err := decodeUpdateResults(b, "n"); return err },
		} {
			if err := dec(b); err != nil && !errors.Is(err, presence.ErrInvalid) {
				t.Fatalf("decode error %v is not ErrInvalid", err)
			}
		}
	})
}

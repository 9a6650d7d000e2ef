package wire

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
)

func TestLimitCodecRoundTrips(t *testing.T) {
	from := Member{Name: "n2", RPCAddr: "127.0.0.1:7947"}
	cases := []struct {
		name   string
		enc    func(*Encoder)
		decode func([]byte) (any, error)
		want   any
	}{
		{"borrow", (&LimitRequest{Op: LimitBorrow, From: from, Users: []LimitEntry{{User: "7", Tokens: 3, Spent: 2, SpentAgo: time.Second, Waiting: true}}}).Encode,
			func(b []byte) (any, error) { return DecodeLimitRequest(b) },
			LimitRequest{Op: LimitBorrow, From: from, Users: []LimitEntry{{User: "7", Tokens: 3, Spent: 2, SpentAgo: time.Second, Waiting: true}}}},
		{"return", (&LimitRequest{Op: LimitReturn, From: from, Users: []LimitEntry{{User: "7", Tokens: 1}, {User: "8", Spent: 4}}}).Encode,
			func(b []byte) (any, error) { return DecodeLimitRequest(b) },
			LimitRequest{Op: LimitReturn, From: from, Users: []LimitEntry{{User: "7", Tokens: 1}, {User: "8", Spent: 4}}}},
		{"recall", (&LimitRequest{Op: LimitRecall, From: from, Users: []LimitEntry{{User: "9"}}}).Encode,
			func(b []byte) (any, error) { return DecodeLimitRequest(b) },
			LimitRequest{Op: LimitRecall, From: from, Users: []LimitEntry{{User: "9"}}}},
		{"reply", (&LimitReply{Users: []LimitAnswer{{Tokens: 2}, {Wait: 500 * time.Millisecond}, {Tokens: 1, Spent: 3, SpentAgo: 7 * time.Millisecond}}}).Encode,
			func(b []byte) (any, error) { return DecodeLimitReply(b) },
			LimitReply{Users: []LimitAnswer{{Tokens: 2}, {Wait: 500 * time.Millisecond}, {Tokens: 1, Spent: 3, SpentAgo: 7 * time.Millisecond}}}},
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

func TestLimitCodecRefusesNonsense(t *testing.T) {
	for _, op := range []LimitOp{0, LimitRecall + 1, 255} {
		var e Encoder
		(&LimitRequest{Op: op, From: Member{Name: "n1"}}).Encode(&e)
		if _, err := DecodeLimitRequest(e.b); !errors.Is(err, presence.ErrInvalid) {
			t.Errorf("op %d: %v", op, err)
		}
	}
	var e Encoder
	e.byte(byte(LimitBorrow))
	e.member(Member{Name: "n1"})
	e.uint(1)
	e.string("7")
	e.uint(math.MaxInt32 + 1) // more tokens than any bucket holds
	e.uint(0)
	e.uint(0)
	e.bool(false)
	if _, err := DecodeLimitRequest(e.b); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("huge token count: %v", err)
	}
	var r Encoder
	r.uint(1)
	r.uint(0)
	r.uint(0)
	r.uint(0)
	r.uint(math.MaxUint64) // a wait past any duration
	if _, err := DecodeLimitReply(r.b); !errors.Is(err, presence.ErrInvalid) {
		t.Errorf("huge wait: %v", err)
	}
}

func FuzzLimitDecoders(f *testing.F) {
	var e Encoder
	(&LimitRequest{Op: LimitBorrow, From: Member{Name: "n1", RPCAddr: "a"}, Users: []LimitEntry{{User: "7", Tokens: 2, Waiting: true}}}).Encode(&e)
	f.Add(e.b)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		if _, err := DecodeLimitRequest(b); err != nil && !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("request: %v is not ErrInvalid", err)
		}
		if _, err := DecodeLimitReply(b); err != nil && !errors.Is(err, presence.ErrInvalid) {
			t.Fatalf("reply: %v is not ErrInvalid", err)
		}
	})
}

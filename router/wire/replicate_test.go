package wire

import (
	"testing"

	"github.com/presencehq/presence/presence"
)

func TestReplicationBatchRoundTrip(t *testing.T) {
	from := Member{Name: "n1", RPCAddr: "a:1"}
	cfg := &presence.Config{Public: true}
	items := []ReplItem{
		{Kind: presence.ChangeSnapshot, Channel: "/pub/x", Snap: &presence.ChannelSnapshot{Channel: "/pub/x", LastID: 5, Delivered: 4},
			Interest: []Interested{{Node: Member{Name: "n2", RPCAddr: "b:2"}, Gen: 3}}},
		{Kind: presence.ChangeEnter, Channel: "/pub/x", User: presence.UserInfo{ID: "u", Username: "U"}, UserID: "u", ClientID: "t",
			Config: cfg, Expires: 99, At: 9, Msg: &presence.Message{Channel: "/pub/x", ID: 6, EnteringUsers: []presence.UserInfo{{ID: "u"}}}},
		{Kind: presence.ChangeRefresh, Channel: "/pub/x", UserID: "u", ClientID: "t", Expires: 100},
		{Kind: presence.ChangeLeave, Channel: "/pub/x", UserID: "u", ClientID: "t", At: 11},
		{Kind: presence.ChangeStopped, Channel: "/pub/x"},
		{Kind: KindInterest, Channel: "/pub/x", Interest: []Interested{{Node: Member{Name: "n3", RPCAddr: "c:3"}, Gen: 4}}},
		{Kind: presence.ChangeDelivered, Channel: "/pub/x", Delivered: 6},
	}
	var e Encoder
	(&ReplicateRequest{From: from, Boot: 77, Items: items}).Encode(&e)
	q, err := DecodeReplicateRequest(e.b)
	if err != nil {
		t.Fatal(err)
	}
	got := q.Items
	if q.From != from || q.Boot != 77 || len(got) != len(items) {
		t.Fatalf("round trip: from %v, %d items", q.From, len(got))
	}
	if got[0].Snap.LastID != 5 || got[0].Interest[0].Gen != 3 || got[1].User.Username != "U" || got[1].Msg.ID != 6 ||
		got[1].Config == nil || got[2].Expires != 100 || got[3].At != 11 || got[4].Kind != presence.ChangeStopped ||
		got[5].Kind != KindInterest || len(got[5].Interest) != 1 || got[5].Interest[0].Node.Name != "n3" ||
		got[0].Snap.Delivered != 4 || got[6].Kind != presence.ChangeDelivered || got[6].Delivered != 6 {
		t.Fatalf("round trip lost fields: %+v", got)
	}
	// A truncated batch is an error, never a panic.
	for n := range len(e.b) {
		if _, err := DecodeReplicateRequest(e.b[:n]); err == nil {
			t.Fatalf("a batch cut at %d bytes decoded", n)
		}
	}
	// A negative position is no owner's.
	e = Encoder{}
	bad := []ReplItem{{Kind: presence.ChangeDelivered, Channel: "/pub/x", Delivered: -1}}
	(&ReplicateRequest{From: from, Boot: 77, Items: bad}).Encode(&e)
	if _, err := DecodeReplicateRequest(e.b); err == nil {
		t.Fatal("a negative delivery position decoded")
	}
	in := InstallRequest{From: from, Snap: items[0].Snap, Leaves: map[string]int64{"u": 42}}
	e = Encoder{}
	in.Encode(&e)
	back, err := DecodeInstallRequest(e.b)
	if err != nil || back.Leaves["u"] != 42 {
		t.Fatalf("install leaves round trip: %+v, %v", back.Leaves, err)
	}
}

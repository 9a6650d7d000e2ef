package replica

import (
	"slices"
	"testing"

	"github.com/presencehq/presence/presence"
)

func TestDropLeftKeepsClientsHeardAfterTheLeave(t *testing.T) {
	cfg := &presence.Config{Timeout: 10}
	s := &presence.ChannelSnapshot{Channel: "/x", Config: cfg, Clients: []presence.ClientSnapshot{
		{User: presence.UserInfo{ID: "stale"}, ClientID: "t", ExpiresAtUnixNano: 15e9}, // heard at 5 s
		{User: presence.UserInfo{ID: "fresh"}, ClientID: "t", ExpiresAtUnixNano: 25e9}, // heard at 15 s
		{User: presence.UserInfo{ID: "other"}, ClientID: "t", ExpiresAtUnixNano: 15e9},
	}}
	out := DropLeft(s, map[string]int64{"stale": 10e9, "fresh": 10e9})
	var ids []string
	for _, c := range out.Clients {
		ids = append(ids, c.User.ID)
	}
	if !slices.Equal(ids, []string{"fresh", "other"}) {
		t.Fatalf("kept %v, want [fresh other]", ids)
	}
	if len(s.Clients) != 3 {
		t.Fatal("DropLeft modified its input")
	}
}

func TestLeaveLogKeepsTheLatestLeave(t *testing.T) {
	var l LeaveLog
	l.init()
	l.AddClient("/pub/a", "u", "t", 10)
	l.Add("/pub/a", map[string]int64{ClientKey("u", "t"): 5, "v": 20})
	if !l.LeftAfter("/pub/a", "u", "t", 9) || l.LeftAfter("/pub/a", "u", "t", 10) {
		t.Fatal("the later of two leaves of a client does not win")
	}
	if !l.LeftAfter("/pub/a", "v", "other", 19) {
		t.Fatal("a user's leave does not cover their clients")
	}
	if got := l.Get("/pub/a", map[string]int64{"v": 30}); got["v"] != 30 || got[ClientKey("u", "t")] != 10 {
		t.Fatalf("Get merged %v", got)
	}
	l.prune(15)
	if l.LeftAfter("/pub/a", "u", "t", 0) || !l.LeftAfter("/pub/a", "v", "x", 19) {
		t.Fatal("prune did not forget exactly the older leaves")
	}
}

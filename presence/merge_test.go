package presence

import (
	"slices"
	"testing"
	"time"
)

// mergeConfig is the config of the channel the merge tests build.
var mergeConfig = &Config{Public: true}

// history builds a channel state whose backlog holds messages from..to,
// each one user entering at a fixed time, and the given clients (a client
// named after its user, expiring at exp).
func history(from, to int64, exp int64, users ...string) *ChannelSnapshot {
	s := &ChannelSnapshot{Channel: "/pub/m", Config: mergeConfig, LastID: to}
	for id := from; id <= to; id++ {
		s.Backlog = append(s.Backlog, &Message{Channel: "/pub/m", ID: id, Audience: mergeConfig,
			PublishedAtUnixMilli: id * 10, EnteringUsers: []UserInfo{{ID: "e" + string(rune('a'+id%26))}}})
	}
	for _, u := range users {
		s.Clients = append(s.Clients, ClientSnapshot{User: UserInfo{ID: u}, ClientID: u, ExpiresAtUnixNano: exp})
	}
	return s
}

func clientUsers(s *ChannelSnapshot) []string {
	var out []string
	for _, c := range s.Clients {
		out = append(out, c.User.ID)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestMergeKeepsTheHistoryAnOlderCopyIsAPrefixOf(t *testing.T) {
	local := history(100, 110, 500, "a", "b")
	older := history(100, 107, 900, "a", "b") // same messages up to 107, a later expiry
	out, diverged := MergeSnapshots(local, older)
	if diverged || out.LastID != 110 || len(out.Backlog) != len(local.Backlog) {
		t.Fatalf("merge of an older copy: diverged %v, last id %d, backlog %d; want local's ids kept", diverged, out.LastID, len(out.Backlog))
	}
	for _, c := range out.Clients {
		if c.ExpiresAtUnixNano != 900 {
			t.Fatalf("client %+v lost the later expiry", c)
		}
	}
	// A second tab of a user local knows changes no user: still one history.
	older.Clients = append(older.Clients, ClientSnapshot{User: UserInfo{ID: "a"}, ClientID: "tab2", ExpiresAtUnixNano: 900})
	if out, diverged = MergeSnapshots(local, older); diverged || len(out.Clients) != 3 {
		t.Fatalf("a second tab: diverged %v, %d clients; want local's ids and 3 clients", diverged, len(out.Clients))
	}
}

func TestMergeSkipsIDsWhenTheHistoriesDiverged(t *testing.T) {
	local := history(100, 110, 500, "a", "b")
	cases := map[string]*ChannelSnapshot{
		// The copy brings a user local does not have: its subscribers must re-read.
		"a user local lacks": history(100, 107, 500, "a", "b", "c"),
		// Message 108 was published differently on each side.
		"another message at the same id": func() *ChannelSnapshot {
			s := history(100, 108, 500, "a", "b")
			s.Backlog[len(s.Backlog)-1].PublishedAtUnixMilli++
			return s
		}(),
		// Newer than local, without a user local has (b's leave in the
		// newer history is not what removed it: nothing says so).
		"a newer copy without a user local has": history(100, 112, 500, "a"),
		// Newer than local, and another message at local's last id.
		"a newer copy of another history": func() *ChannelSnapshot {
			s := history(100, 112, 500, "a", "b")
			s.Backlog[10].PublishedAtUnixMilli++ // message 110
			return s
		}(),
		// Older than local's backlog: nothing proves the ids are shared.
		"older than the backlog": history(90, 95, 500, "a", "b"),
		// No message at all: nothing proves it.
		"no backlog": {Channel: "/pub/m", Config: mergeConfig, LastID: 105,
			Clients: []ClientSnapshot{{User: UserInfo{ID: "a"}, ClientID: "a", ExpiresAtUnixNano: 500}}},
	}
	for name, in := range cases {
		out, diverged := MergeSnapshots(local, in)
		if !diverged || out.LastID != max(local.LastID, in.LastID)+1 || len(out.Backlog) != 0 {
			t.Errorf("%s: diverged %v, last id %d, backlog %d; want ids past both and an empty backlog",
				name, diverged, out.LastID, len(out.Backlog))
		}
		if got, want := clientUsers(out), slices.Compact(slices.Sorted(slices.Values(slices.Concat(clientUsers(local), clientUsers(in))))); !slices.Equal(got, want) {
			t.Errorf("%s: users %v, want the union %v", name, got, want)
		}
	}
}

// TestMergeFollowsTheNewerCopyLocalIsAPrefixOf: a node whose state is
// stale (it was paused) gets the channel handed back with the history
// that went on without it: that history continues, the clients are
// united, and the messages local's subscribers have not seen go out with
// the install.
func TestMergeFollowsTheNewerCopyLocalIsAPrefixOf(t *testing.T) {
	local := history(100, 110, 900, "a", "b")
	local.Delivered = 108
	local.Clients = append(local.Clients, ClientSnapshot{User: UserInfo{ID: "a"}, ClientID: "tab2", ExpiresAtUnixNano: 900})
	newer := history(100, 114, 500, "a", "b")
	newer.Delivered = 104
	out, diverged := MergeSnapshots(local, newer)
	if diverged || out.LastID != 114 || len(out.Backlog) != len(newer.Backlog) || out.Unpublished != 4 || out.Delivered != 108 {
		t.Fatalf("merge with a newer copy: diverged %v, last id %d, backlog %d, unpublished %d, delivered %d; "+
			"want the newer history, its 4 messages after local's to publish, local's delivery position",
			diverged, out.LastID, len(out.Backlog), out.Unpublished, out.Delivered)
	}
	if len(out.Clients) != 3 {
		t.Fatalf("clients %+v, want both tabs of a and b", out.Clients)
	}
	for _, c := range out.Clients {
		if c.ExpiresAtUnixNano != 900 {
			t.Fatalf("client %+v lost the later expiry", c)
		}
	}
	if newer.LastID != 114 || len(newer.Clients) != 2 || newer.Unpublished != 0 {
		t.Fatal("the newer copy was modified")
	}
}

func TestMergeWithoutLocalStateInstallsTheCopy(t *testing.T) {
	in := history(100, 107, 500, "a")
	for _, local := range []*ChannelSnapshot{nil, {Channel: "/pub/m", LastID: 90}} {
		if out, diverged := MergeSnapshots(local, in); out != in || diverged {
			t.Fatalf("local %+v: got %+v, %v; want the copy as it is", local, out, diverged)
		}
	}
}

// TestRestartSnapshotIssuesNoIDTheOtherHistoryMayHave: a kept state that
// another holder may have continued keeps its clients, starts its ids over
// above any that holder could have issued (its time in microseconds) with a
// resync marker to deliver, drops its own messages, and diverges from the
// other history when that is merged in later.
func TestRestartSnapshotIssuesNoIDTheOtherHistoryMayHave(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	base := now.Add(-time.Minute).UnixMicro() // the channel started a minute ago
	kept := history(base+100, base+110, 500, "a", "z")
	kept.Delivered = base + 105
	out := RestartSnapshot(kept, now)
	if err := out.Validate(); err != nil {
		t.Fatal(err)
	}
	if out.LastID != now.UnixMicro() || out.Delivered != out.LastID-1 || len(out.Backlog) != 1 || !out.Backlog[0].Resync ||
		out.Unpublished != 1 || !slices.Equal(clientUsers(out), []string{"a", "z"}) {
		t.Fatalf("restarted %+v (backlog %+v), want clients a and z, ids from %d on, a resync marker to deliver and publish",
			out, out.Backlog, now.UnixMicro())
	}
	if kept.LastID != base+110 || len(kept.Backlog) != 11 {
		t.Fatal("the kept state was modified")
	}
	// The other holder's history went on from message 108 with others.
	other := history(base+100, base+130, 500, "a", "b")
	if merged, diverged := MergeSnapshots(out, other); !diverged || merged.LastID <= out.LastID {
		t.Fatalf("merging the other history: diverged %v, last id %d; want a skip past %d", diverged, merged.LastID, out.LastID)
	}
	// A clock behind the ids (a state from a node whose clock runs ahead)
	// still gives the next id; without a config, no marker nobody may see.
	kept.Config, kept.Clients = nil, nil
	kept.Unpublished = 3
	if out := RestartSnapshot(kept, time.UnixMicro(base)); out.LastID != base+111 || out.Delivered != out.LastID ||
		len(out.Backlog) != 0 || out.Unpublished != 0 || out.Validate() != nil {
		t.Fatalf("restarted without config: %+v", out)
	}
}

// TestDropsAPresentUser: a merge that goes on with one history must not
// lack a user that history shows present (the leave log dropped the user's
// last client, and no message says so); the other history's users do not
// count, nor do a user's other clients.
func TestDropsAPresentUser(t *testing.T) {
	state := func(last int64, users ...string) *ChannelSnapshot {
		s := &ChannelSnapshot{Channel: "/pub/d", LastID: last}
		for _, u := range users {
			s.Clients = append(s.Clients, ClientSnapshot{User: UserInfo{ID: u}, ClientID: "tab-" + u})
		}
		return s
	}
	older, newer := state(10, "a", "b", "z"), state(14, "a", "b")
	cases := []struct {
		name   string
		merged *ChannelSnapshot
		sides  []*ChannelSnapshot
		want   bool
	}{
		{"the newer history's user b dropped", state(14, "a"), []*ChannelSnapshot{older, newer}, true},
		{"only the older history's user z dropped", state(14, "a", "b"), []*ChannelSnapshot{older, newer}, false},
		{"the older history goes on without z", state(10, "a", "b"), []*ChannelSnapshot{older, newer}, true},
		{"no local state, the copy goes on whole", state(14, "a", "b"), []*ChannelSnapshot{nil, newer}, false},
		{"another client of b stays", func() *ChannelSnapshot {
			s := state(14, "a")
			s.Clients = append(s.Clients, ClientSnapshot{User: UserInfo{ID: "b"}, ClientID: "tab-2"})
			return s
		}(), []*ChannelSnapshot{nil, newer}, false},
	}
	for _, c := range cases {
		if got := DropsAPresentUser(c.merged, c.sides...); got != c.want {
			t.Errorf("%s: DropsAPresentUser = %v, want %v", c.name, got, c.want)
		}
	}
}

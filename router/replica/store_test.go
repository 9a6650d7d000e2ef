package replica

import (
	"testing"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// ringOf is a View in which owner owns every channel and members are the
// live nodes.
type ringOf struct {
	owner   string
	members map[string]bool
}

func (v ringOf) Owner(string) string { return v.owner }
func (v ringOf) OwnerAndReplica(string) (string, string) {
	return v.owner, ""
}
func (v ringOf) Member(name string) (wire.Member, bool) {
	return wire.Member{Name: name}, v.members[name]
}

// newTestStore returns an empty store and the time its tests start at.
func newTestStore() (*Store, int64) {
	s := &Store{}
	s.init()
	return s, time.Unix(1_700_000_000, 0).UnixNano()
}

func handedSnapshot(clients int) *presence.ChannelSnapshot {
	snap := &presence.ChannelSnapshot{Channel: "/pub/x", LastID: 7, Config: &presence.Config{Public: true}}
	for i := range clients {
		snap.Clients = append(snap.Clients, presence.ClientSnapshot{User: presence.UserInfo{ID: string(rune('a' + i))}, ClientID: "t",
			ExpiresAtUnixNano: time.Unix(2_000_000_000, 0).UnixNano()})
	}
	return snap
}

// TestHandedStateLifecycle: the state handed to a node's process is kept
// until that process releases it, answered again to it, left alone by a
// release of another process, replaced by the owner's own snapshot, and
// taken for promotion when the owner dies.
func TestHandedStateLifecycle(t *testing.T) {
	s, now := newTestStore()
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now)
	if s.HandedCount() != 1 {
		t.Fatalf("handed count %d, want 1", s.HandedCount())
	}
	if _, ok := s.Handed("/pub/x", "n2", 6); ok {
		t.Fatal("another process of n2 got the state handed to process 5")
	}
	if e, ok := s.Handed("/pub/x", "n2", 5); !ok || len(e.Snapshot(0).Clients) != 2 {
		t.Fatalf("handed state for process 5: %v, %v", e, ok)
	}
	// Handed again, the state still counts what its sender had not published.
	unpublished := handedSnapshot(2)
	unpublished.Backlog = []*presence.Message{{Channel: "/pub/x", ID: 7, Resync: true}}
	unpublished.Unpublished = 1
	s.KeepHanded("/pub/x", "n3", 8, "n1", unpublished, nil, now, now)
	if e, ok := s.Handed("/pub/x", "n3", 8); !ok || e.Snapshot(0).Unpublished != 1 {
		t.Fatalf("handed state with a message not published: %v, %v", e, ok)
	}
	if !s.Release("/pub/x", "n3", 8, now) {
		t.Fatal("n3's release found nothing")
	}
	if s.Release("/pub/x", "n2", 6, now) {
		t.Fatal("a release by another process dropped the state")
	}
	if !s.Release("/pub/x", "n2", 5, now) || s.HandedCount() != 0 || len(s.Inspect("/pub/x")) != 0 {
		t.Fatalf("release: %d handed, %v kept", s.HandedCount(), s.Inspect("/pub/x"))
	}

	// The owner's snapshot replaces the handed state: it is a replica copy
	// from then on, which no release drops and a later KeepHanded of older
	// state does not overwrite.
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now)
	it := wire.ReplItem{Kind: presence.ChangeSnapshot, Channel: "/pub/x", Snap: handedSnapshot(3), Supersedes: "n1"}
	if !s.apply("n2", 5, &it, now) {
		t.Fatal("snapshot not applied")
	}
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(1), nil, now, now)
	if s.Release("/pub/x", "n2", 5, now) || s.HandedCount() != 0 {
		t.Fatal("the replica copy was taken for handed state")
	}
	if kept := s.Inspect("/pub/x"); len(kept) != 1 || len(kept[0].Snapshot.Clients) != 3 {
		t.Fatalf("kept %+v, want n2's replica copy of 3 clients", kept)
	}

	// A handed state whose holder died is an orphan, promoted like a copy.
	s.dropFrom("/pub/x", "n2")
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now+1, now+1) // a later hand-off: the release above is not its
	alive := ringOf{owner: "n1", members: map[string]bool{"n1": true}}
	if got := s.Orphans(map[string]bool{"n2": true}); len(got) != 1 {
		t.Fatalf("orphans %v, want /pub/x", got)
	}
	if taken := s.Take("/pub/x", alive); len(taken) != 1 || len(taken[0].Snapshot(0).Clients) != 2 {
		t.Fatalf("taken %v, want the handed state", taken)
	}
}

// TestAnOlderCopyOfTheHolderIsKeptWithTheHandedState: this node is the
// replica of the node it hands a channel to, and has that node's copy of
// the channel from before the install. The install merges both states, and
// the holder's stream drops its old copy (ChangeStopped) before it sends
// the merged one: if the holder dies in between, both states must still be
// here, merged. A snapshot that came before the install began, or that
// continues another node's state, is such an older copy; the holder's
// snapshot of the installed state is not.
func TestAnOlderCopyOfTheHolderIsKeptWithTheHandedState(t *testing.T) {
	now := time.Unix(1_700_000_000, 0).UnixNano()
	older := handedSnapshot(3)
	older.Clients = older.Clients[2:] // client "c", only on the holder before the install
	for _, tc := range []struct {
		name       string
		supersedes string
		at         int64
	}{
		{"before the install", "n1", now - 1},
		{"continuing another node", "n3", now + 1},
		{"a fresh start", "", now + 1},
	} {
		s, _ := newTestStore()
		it := wire.ReplItem{Kind: presence.ChangeSnapshot, Channel: "/pub/x", Snap: older, Supersedes: tc.supersedes}
		if !s.apply("n2", 5, &it, tc.at) {
			t.Fatalf("%s: snapshot not applied", tc.name)
		}
		s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now) // clients a and b
		stop := wire.ReplItem{Kind: presence.ChangeStopped, Channel: "/pub/x"}
		s.apply("n2", 5, &stop, now+2)
		if got := s.Orphans(map[string]bool{"n2": true}); len(got) != 1 {
			t.Fatalf("%s: orphans %v after the holder's stop, want /pub/x", tc.name, got)
		}
		taken := s.Take("/pub/x", ringOf{owner: "n1", members: map[string]bool{"n1": true}})
		if len(taken) != 1 || len(taken[0].Snapshot(0).Clients) != 3 {
			t.Fatalf("%s: took %v, want one state with the 3 clients of both sides", tc.name, taken)
		}
	}
}

// TestAStopKeepsTheHandedState: the holder's ChangeStopped drops its own
// copy, not the state handed to it.
func TestAStopKeepsTheHandedState(t *testing.T) {
	s, now := newTestStore()
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now)
	stop := wire.ReplItem{Kind: presence.ChangeStopped, Channel: "/pub/x"}
	s.apply("n2", 5, &stop, now)
	if s.HandedCount() != 1 {
		t.Fatal("a stop of the holder dropped the state handed to it")
	}
	it := wire.ReplItem{Kind: presence.ChangeSnapshot, Channel: "/pub/x", Snap: handedSnapshot(1), Supersedes: "n1"}
	s.apply("n2", 5, &it, now)
	s.apply("n2", 5, &stop, now)
	if len(s.Inspect("/pub/x")) != 0 {
		t.Fatal("a stop did not drop the holder's own copy")
	}
}

// TestHandedStateWithoutReleaseGoesStale: kept state whose release never
// comes (the holder found no replica) is pruned after staleCopyAfter, even
// though its holder owns the channel.
func TestHandedStateWithoutReleaseGoesStale(t *testing.T) {
	s, now := newTestStore()
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now)
	v := ringOf{owner: "n2", members: map[string]bool{"n1": true, "n2": true}}
	notHeld := func(string) bool { return false }
	s.prune(v, now+int64(staleCopyAfter), notHeld)
	if s.HandedCount() != 1 {
		t.Fatal("pruned before staleCopyAfter")
	}
	s.prune(v, now+int64(staleCopyAfter)+1, notHeld)
	if s.HandedCount() != 0 {
		t.Fatal("kept after staleCopyAfter")
	}
}

// TestReleaseBeforeTheStateIsKept: a new holder without a replica releases
// at once, possibly before the node that handed the channel over got its
// install's answer and kept the state: that state is then not kept.
func TestReleaseBeforeTheStateIsKept(t *testing.T) {
	s, now := newTestStore()
	if s.Release("/pub/x", "n2", 5, now) {
		t.Fatal("released state that was not kept")
	}
	s.KeepHanded("/pub/x", "n2", 6, "n1", handedSnapshot(1), nil, now, now) // another process: kept
	s.KeepHanded("/pub/y", "n2", 5, "n1", handedSnapshot(1), nil, now, now) // another channel: kept
	s.KeepHanded("/pub/x", "n3", 5, "n1", handedSnapshot(1), nil, now, now) // another node: kept
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now) // released already
	if n := s.HandedCount(); n != 3 {
		t.Fatalf("%d handed states kept, want 3 (the released one not)", n)
	}
	// An early release is forgotten after a while.
	s.Release("/pub/z", "n2", 5, now)
	s.prune(ringOf{members: map[string]bool{"n2": true, "n3": true}}, now+int64(staleCopyAfter)+1, func(string) bool { return false })
	s.KeepHanded("/pub/z", "n2", 5, "n1", handedSnapshot(1), nil, now+int64(staleCopyAfter)+1, now+int64(staleCopyAfter)+1)
	if _, ok := s.Handed("/pub/z", "n2", 5); !ok {
		t.Fatal("a release older than staleCopyAfter still cancelled a later hand-off")
	}
}

// TestAPushedCopyIsHandingUntilDone: a copy taken to be pushed to the
// channel's owner is reported as handing until its push ends; a push that
// failed keeps it again, unless the same owner's copy came meanwhile.
func TestAPushedCopyIsHandingUntilDone(t *testing.T) {
	s, now := newTestStore()
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now)
	dead := ringOf{owner: "n3", members: map[string]bool{"n1": true, "n3": true}}
	taken := s.TakeToHand("/pub/x", dead)
	if len(taken) != 1 || len(s.Inspect("/pub/x")) != 0 || !s.Handing("/pub/x") {
		t.Fatalf("took %d copies, %d left, handing %v; want the dead owner's one taken and handing",
			len(taken), len(s.Inspect("/pub/x")), s.Handing("/pub/x"))
	}
	s.HandDone("/pub/x", taken[0], true)
	if s.Handing("/pub/x") {
		t.Fatal("still handing after the push ended")
	}
	again := s.TakeToHand("/pub/x", dead)
	if len(again) != 1 || len(again[0].Snapshot(0).Clients) != 2 {
		t.Fatalf("after a failed push: took %v, want the copy with its 2 clients back", again)
	}
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(1), nil, now, now)
	s.HandDone("/pub/x", again[0], true)
	if got := s.Take("/pub/x", dead); len(got) != 1 || len(got[0].Snapshot(0).Clients) != 1 {
		t.Fatalf("a failed push over a copy kept since: took %v, want that newer copy (1 client) kept", got)
	}
	s.KeepHanded("/pub/x", "n2", 5, "n1", handedSnapshot(2), nil, now, now)
	done := s.TakeToHand("/pub/x", dead)
	s.HandDone("/pub/x", done[0], false)
	if s.Handing("/pub/x") || len(s.Inspect("/pub/x")) != 0 {
		t.Fatalf("after a push that succeeded: handing %v, %d kept; want neither", s.Handing("/pub/x"), len(s.Inspect("/pub/x")))
	}
}

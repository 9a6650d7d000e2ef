package presence

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// fakeReplicator records every change; it publishes and answers at once,
// unless hold is set, in which case Done waits for release.
type fakeReplicator struct {
	mu      sync.Mutex
	changes []Change
	snaps   []*ChannelSnapshot // Snapshot() of each ChangeSnapshot
	pub     Publisher
	hold    bool
	held    []chan<- error
}

func (f *fakeReplicator) Replicate(c Change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c.Kind == ChangeSnapshot {
		f.snaps = append(f.snaps, c.Snapshot())
	}
	c.src = nil // not valid after the call
	f.changes = append(f.changes, c)
	if c.Message != nil && f.pub != nil {
		c.Message.MarkPublished() // as the router does when it publishes
		f.pub.Publish(c.Message)
	}
	switch {
	case c.Done == nil:
	case f.hold:
		f.held = append(f.held, c.Done)
	default:
		c.Done <- nil
	}
}

func (f *fakeReplicator) kinds(channel string) []ChangeKind {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []ChangeKind
	for _, c := range f.changes {
		if c.Channel == channel {
			out = append(out, c.Kind)
		}
	}
	return out
}

func (f *fakeReplicator) release(err error) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := len(f.held)
	for _, d := range f.held {
		d <- err
	}
	f.held = nil
	return n
}

func withReplicator(f *fakeReplicator) func(*EngineConfig) {
	return func(c *EngineConfig) { c.Replicator = f }
}

func TestReplicatorGetsEveryChangeInOrder(t *testing.T) {
	rep := &fakeReplicator{}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	rep.pub = r.rec
	alice, bob := &User{ID: "alice"}, &User{ID: "bob"}
	r.present(alice, "tab", "/pub/a")
	r.present(alice, "tab", "/pub/a") // a heartbeat: only the expiry moves
	r.present(bob, "tab", "/pub/a")
	r.leave(alice, "tab", "/pub/a")
	r.clk.Advance(time.Duration(publicCfg.TimeoutSeconds()+2) * time.Second)
	testkit.WaitFor(t, "bob's expiry", func() bool { return len(rep.kinds("/pub/a")) == 5 })
	want := []ChangeKind{ChangeEnter, ChangeRefresh, ChangeEnter, ChangeLeave, ChangeLeave}
	if got := rep.kinds("/pub/a"); !slices.Equal(got, want) {
		t.Fatalf("changes %v, want %v", got, want)
	}
	// Each change that published carries its message, in id order; the
	// engine published nothing itself.
	var ids []int64
	rep.mu.Lock()
	for _, c := range rep.changes {
		if c.Message != nil {
			ids = append(ids, c.Message.ID)
		}
	}
	enter := rep.changes[0]
	rep.mu.Unlock()
	if len(ids) != 4 || !slices.IsSorted(ids) || ids[3] != ids[0]+3 {
		t.Fatalf("message ids %v, want four in a row", ids)
	}
	if enter.User != alice || enter.Config != publicCfg || enter.ExpiresAt <= enter.At {
		t.Fatalf("enter change %+v lacks its user, config or expiry", enter)
	}
	if got := len(r.rec.take("/pub/a")); got != 4 {
		t.Fatalf("%d messages reached the publisher, want 4 (through the replicator)", got)
	}
}

func TestReplicatorGetsSnapshotsOnInstallAndResend(t *testing.T) {
	rep := &fakeReplicator{}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	ctx := context.Background()
	snap := &ChannelSnapshot{Channel: "/pub/s", Config: publicCfg, LastID: 41, Clients: []ClientSnapshot{
		{User: UserInfo{ID: "k"}, ClientID: "tab", ExpiresAtUnixNano: r.clk.Now().Add(time.Minute).UnixNano()},
	}}
	if err := r.e.Install(ctx, snap); err != nil {
		t.Fatal(err)
	}
	if err := r.e.Resend("/pub/s"); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "two snapshots", func() bool { return len(rep.kinds("/pub/s")) == 2 })
	rep.mu.Lock()
	defer rep.mu.Unlock()
	for _, s := range rep.snaps {
		if s.LastID != 41 || len(s.Clients) != 1 {
			t.Fatalf("snapshot %+v, want the installed state", s)
		}
	}
}

func TestInstallMergedPublishesAResyncMarkerWithItsSnapshot(t *testing.T) {
	rep := &fakeReplicator{}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	rep.pub = r.rec
	snap := &ChannelSnapshot{Channel: "/pub/m", Config: publicCfg, LastID: 41, Clients: []ClientSnapshot{
		{User: UserInfo{ID: "k"}, ClientID: "tab", ExpiresAtUnixNano: r.clk.Now().Add(time.Minute).UnixNano()},
	}}
	if err := r.e.InstallMerged(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	rep.mu.Lock()
	changes, snaps := slices.Clone(rep.changes), slices.Clone(rep.snaps)
	rep.mu.Unlock()
	// One snapshot, carrying the marker, which the state already holds: a
	// replica promoted later resyncs subscribers that follow from before it.
	if len(changes) != 1 || changes[0].Kind != ChangeSnapshot {
		t.Fatalf("changes %+v, want one snapshot", changes)
	}
	m := changes[0].Message
	if m == nil || !m.Resync || m.ID != 42 || m.Audience != publicCfg {
		t.Fatalf("the snapshot carries %+v, want a resync marker with id 42", m)
	}
	if s := snaps[0]; s.LastID != 42 || len(s.Backlog) != 1 || s.Backlog[0] != m || len(s.Clients) != 1 {
		t.Fatalf("snapshot %+v, want the installed clients and the marker as its backlog", s)
	}
	if got := r.rec.take("/pub/m"); len(got) != 1 || got[0] != m {
		t.Fatalf("published %v, want the marker", got)
	}
	// Without a merge, an install publishes nothing.
	snap.Channel = "/pub/plain"
	if err := r.e.Install(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	if got := r.rec.take("/pub/plain"); len(got) != 0 {
		t.Fatalf("a plain install published %v", got)
	}
	// Nor does the merge of a channel that never had a client (no config:
	// no subscriber may see it).
	bare := &ChannelSnapshot{Channel: "/pub/bare", LastID: 7}
	if err := r.e.InstallMerged(context.Background(), bare); err != nil {
		t.Fatal(err)
	}
	if got := r.rec.take("/pub/bare"); len(got) != 0 {
		t.Fatalf("the merge of a channel without config published %v", got)
	}
}

// TestInstallPublishesTheSendersUnpublishedWithItsSnapshot: the install of
// a state with messages its sender had not published hands the replicator
// its snapshot carrying the last of them, published once safe; a catch-up
// after that reaches them all.
func TestInstallPublishesTheSendersUnpublishedWithItsSnapshot(t *testing.T) {
	rep := &fakeReplicator{}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	rep.pub = r.rec
	at := r.clk.Now().UnixMilli()
	backlog := []*Message{
		{Channel: "/pub/u", ID: 40, Audience: publicCfg, PublishedAtUnixMilli: at, EnteringUsers: []UserInfo{{ID: "k"}}},
		{Channel: "/pub/u", ID: 41, Audience: publicCfg, PublishedAtUnixMilli: at, LeavingUserIDs: []string{"k"}},
	}
	snap := &ChannelSnapshot{Channel: "/pub/u", Config: publicCfg, LastID: 41, Unpublished: 1, Backlog: backlog}
	if err := r.e.Install(context.Background(), snap); err != nil {
		t.Fatal(err)
	}
	rep.mu.Lock()
	changes := slices.Clone(rep.changes)
	rep.mu.Unlock()
	if len(changes) != 1 || changes[0].Kind != ChangeSnapshot {
		t.Fatalf("changes %+v, want one snapshot", changes)
	}
	m := changes[0].Message
	if m == nil || m.ID != 41 || m == backlog[1] || !slices.Equal(m.LeavingUserIDs, []string{"k"}) {
		t.Fatalf("the snapshot carries %+v, want a copy of message 41", m)
	}
	if got := r.rec.take("/pub/u"); len(got) != 1 || got[0] != m {
		t.Fatalf("published %v, want message 41", got)
	}
	cu, err := r.e.Since(context.Background(), &User{ID: "v"}, "/pub/u", 39)
	if err != nil || cu.Resync || cu.LastID != 41 || len(cu.Messages) != 2 {
		t.Fatalf("catch-up after the install = %+v, %v; want messages 40 and 41", cu, err)
	}
}

func TestReplicatorToldWhenAChannelStops(t *testing.T) {
	rep := &fakeReplicator{}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	r.present(&User{ID: "a"}, "tab", "/pub/gone")
	if err := r.e.Remove(context.Background(), "/pub/gone"); err != nil {
		t.Fatal(err)
	}
	if got := rep.kinds("/pub/gone"); !slices.Equal(got, []ChangeKind{ChangeEnter, ChangeStopped}) {
		t.Fatalf("changes %v, want enter then stopped", got)
	}
}

func TestPresentAckWaitsForTheReplicator(t *testing.T) {
	rep := &fakeReplicator{hold: true}
	r := newEngineRig(t, configFunc(publicOnly), withReplicator(rep))
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		_, err := r.e.PresentAck(ctx, &User{ID: "a"}, "tab", "/pub/ack")
		done <- err
	}()
	testkit.WaitFor(t, "the held change", func() bool { return rep.release(nil) == 1 })
	if err := <-done; err != nil {
		t.Fatalf("PresentAck: %v", err)
	}
	// A refusal reaches the caller.
	go func() { done <- r.e.LeaveAck(ctx, "a", "tab", "/pub/ack") }()
	refused := errors.New("refused")
	testkit.WaitFor(t, "the held leave", func() bool { return rep.release(refused) == 1 })
	if err := <-done; !errors.Is(err, refused) {
		t.Fatalf("LeaveAck: %v, want the replicator's error", err)
	}
	// A leave of a client that is not there changes nothing and returns.
	if err := r.e.LeaveAck(ctx, "nobody", "tab", "/pub/ack"); err != nil {
		t.Fatal(err)
	}
	// The caller's context bounds the wait.
	short, cancel := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancel()
	if _, err := r.e.PresentAck(short, &User{ID: "b"}, "tab", "/pub/ack"); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("PresentAck past its context: %v, want ErrUnavailable", err)
	}
}

func TestCopyAppliesChangesAndPromotesWithGrace(t *testing.T) {
	cfg := publicCfg
	m1 := &Message{Channel: "/pub/c", ID: 11, EnteringUsers: []UserInfo{{ID: "a"}}}
	c := NewCopy(&ChannelSnapshot{Channel: "/pub/c", Config: cfg, LastID: 10})
	c.Apply(&Change{Kind: ChangeEnter, UserID: "a", ClientID: "t", User: &User{ID: "a", Name: "A"}, ExpiresAt: 100, Message: m1})
	c.Apply(&Change{Kind: ChangeRefresh, UserID: "a", ClientID: "t", ExpiresAt: 200})
	c.Apply(&Change{Kind: ChangeRefresh, UserID: "a", ClientID: "t", ExpiresAt: 150}) // older: ignored
	c.Apply(&Change{Kind: ChangeEnter, UserID: "b", ClientID: "t", User: &User{ID: "b"}, ExpiresAt: 100,
		Message: &Message{Channel: "/pub/c", ID: 12, EnteringUsers: []UserInfo{{ID: "b"}}}})
	c.Apply(&Change{Kind: ChangeLeave, UserID: "b", ClientID: "t",
		Message: &Message{Channel: "/pub/c", ID: 13, LeavingUserIDs: []string{"b"}}})
	c.Apply(&Change{Kind: ChangeRefresh, UserID: "ghost", ClientID: "t", ExpiresAt: 300}) // unknown client
	s := c.Snapshot(time.Second)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if s.LastID != 13 || len(s.Backlog) != 3 || s.Backlog[0].ID != 11 {
		t.Fatalf("last id %d, backlog %d messages; want 13 and 11..13", s.LastID, len(s.Backlog))
	}
	if len(s.Clients) != 1 || s.Clients[0].User.Name != "A" || s.Clients[0].ExpiresAtUnixNano != 200 || s.ExpiryGrace != time.Second {
		t.Fatalf("clients %+v, grace %v; want a alone, expiry 200 as sent, and the grace apart", s.Clients, s.ExpiryGrace)
	}
	// A gap in ids (a message the copy never got) restarts the backlog, so
	// it stays contiguous.
	c.Apply(&Change{Kind: ChangeLeave, UserID: "a", ClientID: "t",
		Message: &Message{Channel: "/pub/c", ID: 20, LeavingUserIDs: []string{"a"}}})
	if s := c.Snapshot(0); s.LastID != 20 || len(s.Backlog) != 1 || s.Validate() != nil {
		t.Fatalf("after a gap: last id %d, backlog %d", s.LastID, len(s.Backlog))
	}
	// A message below the last id (late) changes the clients but not the
	// ids: a promoted copy must not issue an id again.
	c.Apply(&Change{Kind: ChangeEnter, UserID: "c", ClientID: "t", User: &User{ID: "c"}, ExpiresAt: 100,
		Message: &Message{Channel: "/pub/c", ID: 19, EnteringUsers: []UserInfo{{ID: "c"}}}})
	if s := c.Snapshot(0); s.LastID != 20 || len(s.Backlog) != 1 || s.Backlog[0].ID != 20 || len(s.Clients) != 1 || s.Validate() != nil {
		t.Fatalf("after a late message: last id %d, backlog %v, %d clients; want 20, [20], c present", s.LastID, s.Backlog, len(s.Clients))
	}
}

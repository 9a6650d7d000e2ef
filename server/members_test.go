package server

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/cluster/transport"
	"github.com/presencehq/presence/presence"
)

func member(name, state string) membership.Member {
	return membership.Member{Name: name, State: state, Meta: membership.Meta{RPC: name + ":1", HTTP: name + ":3"}}
}

func names(ms []membership.Member) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Name)
	}
	return out
}

func TestMemberTableTracksStatesAndDownTime(t *testing.T) {
	tab := newMemberTable("a")
	t0 := time.Unix(1000, 0)
	tab.apply(membership.Event{Kind: membership.EventJoin, Member: member("a", membership.StateAlive)}, t0)
	if tab.othersSeen() {
		t.Fatal("only self known, othersSeen true")
	}
	tab.apply(membership.Event{Kind: membership.EventJoin, Member: member("c", membership.StateAlive)}, t0)
	tab.apply(membership.Event{Kind: membership.EventJoin, Member: member("b", membership.StateAlive)}, t0)
	if got := names(tab.alive()); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("alive %v", got)
	}
	tab.apply(membership.Event{Kind: membership.EventUpdate, Member: member("b", membership.StateLeaving)}, t0)
	tab.apply(membership.Event{Kind: membership.EventFailed, Member: member("c", membership.StateDead)}, t0.Add(time.Second))
	if got := names(tab.alive()); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("alive after leaving and failure %v", got)
	}
	if !tab.othersSeen() {
		t.Fatal("a leaving member is still seen")
	}
	rec, ok := tab.lookup("c")
	if !ok || !rec.gone() || !rec.down.Equal(t0.Add(time.Second)) {
		t.Fatalf("dead record %+v %v", rec, ok)
	}
	if got := len(tab.all()); got != 3 {
		t.Fatalf("all has %d records, want 3", got)
	}
	tab.prune(t0.Add(10*time.Second), 5*time.Second)
	if _, ok := tab.lookup("c"); ok {
		t.Fatal("dead member not pruned")
	}
	if _, ok := tab.lookup("b"); !ok {
		t.Fatal("leaving member pruned")
	}
}

func TestMemberTableOthersDraining(t *testing.T) {
	tab := newMemberTable("a")
	t0 := time.Unix(1000, 0)
	draining := func(name string) membership.Member {
		m := member(name, membership.StateAlive)
		m.Draining = true
		return m
	}
	tab.apply(membership.Event{Kind: membership.EventJoin, Member: draining("a")}, t0)
	if tab.othersDraining() {
		t.Fatal("alone: othersDraining true")
	}
	tab.apply(membership.Event{Kind: membership.EventJoin, Member: member("b", membership.StateAlive)}, t0)
	tab.apply(membership.Event{Kind: membership.EventUpdate, Member: draining("c")}, t0)
	if tab.othersDraining() {
		t.Fatal("b does not drain, othersDraining true")
	}
	tab.apply(membership.Event{Kind: membership.EventUpdate, Member: draining("b")}, t0)
	if !tab.othersDraining() {
		t.Fatal("b and c drain, othersDraining false")
	}
	// A member that left takes nothing over either way.
	tab.apply(membership.Event{Kind: membership.EventLeave, Member: member("b", membership.StateLeft)}, t0)
	if !tab.othersDraining() {
		t.Fatal("c drains and b left, othersDraining false")
	}
	if got := (clusterInfo{s: &Server{members: tab}}).Members(); got[0].State != "draining" || got[1].State != membership.StateLeft {
		t.Fatalf("/admin/cluster members %+v, want a draining, b left", got)
	}
}

func TestMemberTableDetectsARestartThroughTheIncarnation(t *testing.T) {
	tab := newMemberTable("a")
	t0 := time.Unix(1000, 0)
	run := func(name string, inc uint64, kind membership.EventKind, state string) bool {
		m := member(name, state)
		m.Meta.Incarnation = inc
		return tab.apply(membership.Event{Kind: kind, Member: m}, t0)
	}
	if run("b", 1, membership.EventJoin, membership.StateAlive) {
		t.Error("first sight reported as a restart")
	}
	if run("b", 1, membership.EventUpdate, membership.StateAlive) {
		t.Error("same incarnation reported as a restart")
	}
	if !run("b", 2, membership.EventUpdate, membership.StateAlive) {
		t.Error("new incarnation of a live member not reported")
	}
	if !run("b", 0, membership.EventUpdate, membership.StateAlive) {
		t.Error("a new process (incarnation 0 while loading) not reported")
	}
	if run("b", 2, membership.EventUpdate, membership.StateAlive) {
		t.Error("the new process announcing its incarnation reported as another restart")
	}
	run("b", 2, membership.EventFailed, membership.StateDead)
	if run("b", 3, membership.EventJoin, membership.StateAlive) {
		t.Error("return after death reported as a restart: the router saw it leave already")
	}
	run("a", 1, membership.EventJoin, membership.StateAlive)
	if run("a", 2, membership.EventUpdate, membership.StateAlive) {
		t.Error("own restart reported")
	}
}

func TestMemberTableRebuildMarksMissingDead(t *testing.T) {
	tab := newMemberTable("a")
	t0 := time.Unix(1000, 0)
	for _, n := range []string{"a", "b", "c"} {
		tab.apply(membership.Event{Kind: membership.EventJoin, Member: member(n, membership.StateAlive)}, t0)
	}
	tab.rebuild([]membership.Member{member("a", membership.StateAlive), member("d", membership.StateAlive)}, t0.Add(time.Second))
	if got := names(tab.alive()); !slices.Equal(got, []string{"a", "d"}) {
		t.Fatalf("alive after rebuild %v", got)
	}
	for _, n := range []string{"b", "c"} {
		rec, _ := tab.lookup(n)
		if rec.State != membership.StateDead || !rec.down.Equal(t0.Add(time.Second)) {
			t.Errorf("%s after rebuild: %+v", n, rec)
		}
	}
}

func TestStoreErrorsMapToStatuses(t *testing.T) {
	cases := []struct {
		err  error
		want error
	}{
		{fmt.Errorf("x: %w", raftstore.ErrKeyNotFound), presence.ErrNotFound},
		{fmt.Errorf("%w: %w", raftstore.ErrNotLeader, raftstore.ErrNoLeader), presence.ErrUnavailable},
		{raftstore.ErrClosed, presence.ErrUnavailable},
		{fmt.Errorf("dial: %w", transport.ErrPeerUnavailable), presence.ErrUnavailable},
	}
	for _, tc := range cases {
		if got := storeError(tc.err); !errors.Is(got, tc.want) {
			t.Errorf("storeError(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if storeError(nil) != nil {
		t.Error("storeError(nil) is not nil")
	}
	other := errors.New("boom")
	if got := storeError(other); got != other {
		t.Errorf("unknown error changed: %v", got)
	}
}

func TestOnlyLeadershipAndReachabilityErrorsAreRetried(t *testing.T) {
	retried := []error{
		fmt.Errorf("%w: leader is b", raftstore.ErrNotLeader),
		raftstore.ErrClosed,
		fmt.Errorf("call: %w", transport.ErrPeerUnavailable),
		fmt.Errorf("%w: b", errLeaderUnreachable),
	}
	for _, err := range retried {
		if !retryableWrite(err) {
			t.Errorf("%v not retried", err)
		}
	}
	for _, err := range []error{nil, raftstore.ErrKeyNotFound, presence.ErrInvalid, errors.New("boom")} {
		if retryableWrite(err) {
			t.Errorf("%v retried", err)
		}
	}
}

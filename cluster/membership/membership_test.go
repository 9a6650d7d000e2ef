package membership

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/presencehq/presence/internal/testkit"
)

// testTimeout bounds the waits for gossip to go out: a deadline for
// failure, never a duration a test depends on.
const testTimeout = 15 * time.Second

// eventLog drains a member's events in the background so tests can
// look for an event without racing the channel.
type eventLog struct {
	mu     sync.Mutex
	events []Event
	done   chan struct{}
}

func collectEvents(m *Membership) *eventLog {
	l := &eventLog{done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for ev := range m.Events() {
			l.mu.Lock()
			l.events = append(l.events, ev)
			l.mu.Unlock()
		}
	}()
	return l
}

func (l *eventLog) has(kind EventKind, name, state string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.events, func(ev Event) bool {
		return ev.Kind == kind && ev.Member.Name == name && ev.Member.State == state
	})
}

func startMember(t *testing.T, name string, key []byte) *Membership {
	t.Helper()
	m, err := Start(Config{
		Name:     name,
		BindAddr: "127.0.0.1:0",
		Meta:     Meta{RPC: name + ":rpc", HTTP: name + ":http", Incarnation: 7},
		Key:      key,
		Fast:     true,
		Logger:   testkit.Logger(t),
	})
	if err != nil {
		t.Fatalf("Start(%s): %v", name, err)
	}
	t.Cleanup(func() { m.Shutdown() })
	return m
}

func namesOf(m *Membership) []string {
	var names []string
	for _, mem := range m.Members() {
		names = append(names, mem.Name)
	}
	return names
}

// startCluster starts n members, joined through the first.
func startCluster(t *testing.T, n int, key []byte) ([]*Membership, []*eventLog) {
	t.Helper()
	ms := make([]*Membership, n)
	logs := make([]*eventLog, n)
	for i := range ms {
		ms[i] = startMember(t, fmt.Sprintf("node-%d", i), key)
		logs[i] = collectEvents(ms[i])
	}
	for _, m := range ms[1:] {
		if _, err := m.Join([]string{ms[0].Addr()}); err != nil {
			t.Fatalf("%s join: %v", m.LocalName(), err)
		}
	}
	want := make([]string, n)
	for i := range want {
		want[i] = fmt.Sprintf("node-%d", i)
	}
	for _, m := range ms {
		testkit.WaitFor(t, m.LocalName()+" to see every member", func() bool {
			return slices.Equal(namesOf(m), want)
		})
	}
	return ms, logs
}

func TestMembershipJoinWithMetadata(t *testing.T) {
	ms, logs := startCluster(t, 3, bytes.Repeat([]byte{9}, 32))
	for _, m := range ms {
		for _, mem := range m.Members() {
			want := Meta{RPC: mem.Name + ":rpc", HTTP: mem.Name + ":http", Incarnation: 7}
			if mem.Meta != want || mem.State != StateAlive || mem.Addr == "" {
				t.Fatalf("%s sees %+v", m.LocalName(), mem)
			}
		}
	}
	for i, l := range logs {
		for j := range ms {
			name := ms[j].LocalName()
			testkit.WaitFor(t, fmt.Sprintf("node-%d join event for %s", i, name), func() bool {
				return l.has(EventJoin, name, StateAlive)
			})
		}
	}
}

func TestMembershipFailureDetected(t *testing.T) {
	ms, logs := startCluster(t, 3, nil)
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		testkit.WaitFor(t, fmt.Sprintf("node-%d to drop node-2", i), func() bool {
			return slices.Equal(namesOf(ms[i]), []string{"node-0", "node-1"})
		})
		testkit.WaitFor(t, fmt.Sprintf("node-%d failed event", i), func() bool {
			return logs[i].has(EventFailed, "node-2", StateDead)
		})
	}
	if logs[0].has(EventLeave, "node-2", StateLeft) {
		t.Fatal("a crash was reported as a graceful leave")
	}
	<-logs[2].done // Shutdown closes the Events channel
}

func TestMembershipGracefulLeave(t *testing.T) {
	ms, logs := startCluster(t, 3, nil)
	if err := ms[1].Leave(testTimeout); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		testkit.WaitFor(t, fmt.Sprintf("node-%d leave event", i), func() bool {
			return logs[i].has(EventLeave, "node-1", StateLeft)
		})
		if slices.Contains(namesOf(ms[i]), "node-1") {
			t.Fatalf("node-%d still lists node-1 after its leave event", i)
		}
		if !logs[i].has(EventUpdate, "node-1", StateLeaving) {
			t.Fatalf("node-%d saw no leaving announcement before the leave", i)
		}
	}
	if err := ms[1].Leave(time.Second); err != nil {
		t.Fatalf("second Leave: %v", err)
	}
	if err := ms[1].UpdateMeta(Meta{}, time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("UpdateMeta after Leave: %v", err)
	}
	if err := ms[1].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := ms[1].Join([]string{ms[0].Addr()}); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Join after Shutdown: %v", err)
	}
	if err := ms[1].Leave(time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("Leave after Shutdown: %v", err)
	}
	if logs[0].has(EventFailed, "node-1", StateDead) {
		t.Fatal("a graceful leave was reported as a failure")
	}
}

func TestMembershipUpdateMeta(t *testing.T) {
	ms, logs := startCluster(t, 2, nil)
	meta := Meta{RPC: "10.0.0.1:7947", HTTP: "10.0.0.1:8080", Incarnation: 8}
	if err := ms[1].UpdateMeta(meta, testTimeout); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "node-0 to see the new metadata", func() bool {
		logs[0].mu.Lock()
		defer logs[0].mu.Unlock()
		return slices.ContainsFunc(logs[0].events, func(ev Event) bool {
			return ev.Kind == EventUpdate && ev.Member.Name == "node-1" && ev.Member.Meta == meta
		})
	})
	if got := ms[0].Members()[1].Meta; got != meta {
		t.Fatalf("Members() meta = %+v, want %+v", got, meta)
	}
	if err := ms[1].UpdateMeta(Meta{HTTP: string(make([]byte, 600))}, time.Second); !errors.Is(err, ErrMetaTooLarge) {
		t.Fatalf("oversized meta: %v", err)
	}
}

// TestMembershipAnnounceDraining: the others see a draining member as
// alive and draining; a metadata update keeps the flag; the leave that
// follows reports the member as left, not draining.
func TestMembershipAnnounceDraining(t *testing.T) {
	ms, logs := startCluster(t, 2, nil)
	if err := ms[1].AnnounceDraining(testTimeout); err != nil {
		t.Fatal(err)
	}
	draining := func() bool {
		for _, m := range ms[0].Members() {
			if m.Name == "node-1" {
				return m.Draining && m.State == StateAlive
			}
		}
		return false
	}
	testkit.WaitFor(t, "node-0 to see node-1 draining", draining)
	if err := ms[1].AnnounceDraining(time.Second); err != nil {
		t.Fatalf("second AnnounceDraining: %v", err)
	}
	meta := Meta{HTTP: "10.0.0.1:8080", Incarnation: 9}
	if err := ms[1].UpdateMeta(meta, testTimeout); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "node-0 to see the new metadata", func() bool {
		for _, m := range ms[0].Members() {
			if m.Name == "node-1" && m.Meta == meta {
				return true
			}
		}
		return false
	})
	if !draining() {
		t.Fatal("a metadata update cleared the draining flag")
	}
	if err := ms[1].Leave(testTimeout); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "node-0's leave event", func() bool { return logs[0].has(EventLeave, "node-1", StateLeft) })
	logs[0].mu.Lock()
	defer logs[0].mu.Unlock()
	for _, ev := range logs[0].events {
		if ev.Member.Name == "node-1" && ev.Member.Draining && ev.Member.State != StateAlive {
			t.Fatalf("a member that is not alive reported as draining: %+v", ev)
		}
	}
	if err := ms[1].AnnounceDraining(time.Second); !errors.Is(err, ErrShutdown) {
		t.Fatalf("AnnounceDraining after Leave: %v", err)
	}
}

// TestMembershipFailedListsCrashedMembersOnly: a crashed member is listed
// by Failed until it is alive again; a member that left is never listed.
func TestMembershipFailedListsCrashedMembersOnly(t *testing.T) {
	ms, logs := startCluster(t, 3, nil)
	if err := ms[1].Leave(testTimeout); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "node-0 to see node-1 leave", func() bool { return logs[0].has(EventLeave, "node-1", StateLeft) })
	if err := ms[1].Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := ms[2].Shutdown(); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "node-0 to see node-2 fail", func() bool { return logs[0].has(EventFailed, "node-2", StateDead) })
	failed := ms[0].Failed()
	if len(failed) != 1 || failed[0].Name != "node-2" || failed[0].Addr != ms[2].Addr() || failed[0].State != StateDead {
		t.Fatalf("Failed() = %+v, want node-2 dead at %s", failed, ms[2].Addr())
	}
	// Back under the same name (a restart on a new port): no longer failed.
	back := startMember(t, "node-2", nil)
	if _, err := back.Join([]string{ms[0].Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "node-0 to forget node-2's failure", func() bool {
		return len(ms[0].Failed()) == 0 && slices.Equal(namesOf(ms[0]), []string{"node-0", "node-2"})
	})
}

func TestPruneFailed(t *testing.T) {
	t0 := time.Unix(1000, 0)
	failed := map[string]failedMember{
		"old":    {Member: Member{Name: "old"}, since: t0},
		"recent": {Member: Member{Name: "recent"}, since: t0.Add(5 * time.Second)},
	}
	pruneFailed(failed, t0.Add(10*time.Second), 5*time.Second)
	if _, ok := failed["old"]; ok || len(failed) != 1 {
		t.Fatalf("after pruning: %v", failed)
	}
}

// TestMembershipAdvertisePort: the others are told the advertised port,
// not the bound one (a proxy or port mapping in front of the node).
func TestMembershipAdvertisePort(t *testing.T) {
	var ports testkit.Ports
	bind, err := ports.Take(true)
	if err != nil {
		t.Fatal(err)
	}
	advertise := bind + 1 // never bound: only what the others are told
	m, err := Start(Config{Name: "a", BindAddr: "127.0.0.1:" + strconv.Itoa(bind),
		AdvertisePort: advertise, Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	if want := "127.0.0.1:" + strconv.Itoa(advertise); m.Addr() != want {
		t.Fatalf("Addr() = %s, want %s", m.Addr(), want)
	}
}

func TestMembershipKeyMismatch(t *testing.T) {
	a := startMember(t, "a", bytes.Repeat([]byte{1}, 16))
	b := startMember(t, "b", bytes.Repeat([]byte{2}, 16))
	c := startMember(t, "c", nil)
	if n, err := b.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("join with another key: n=%d err=%v", n, err)
	}
	if n, err := c.Join([]string{a.Addr()}); err == nil || n != 0 {
		t.Fatalf("join without a key: n=%d err=%v", n, err)
	}
	for _, m := range []*Membership{a, b, c} {
		if names := namesOf(m); len(names) != 1 {
			t.Fatalf("%s sees %v after refused joins", m.LocalName(), names)
		}
	}
}

// TestMembershipKeyRotation: a member that accepts a new gossip key next to
// its primary joins one that made the new key primary and accepts the old
// one, and both see each other; a member with the new key alone cannot
// join one with the old key alone.
func TestMembershipKeyRotation(t *testing.T) {
	oldKey, newKey := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	start := func(name string, key []byte, accepted ...[]byte) *Membership {
		m, err := Start(Config{Name: name, BindAddr: "127.0.0.1:0", Key: key, AcceptKeys: accepted, Fast: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Shutdown() })
		return m
	}
	a := start("a", oldKey, newKey)
	b := start("b", newKey, oldKey)
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "both members on both sides", func() bool { return len(a.Members()) == 2 && len(b.Members()) == 2 })
	c := start("c", newKey)
	d := start("d", oldKey)
	if n, err := c.Join([]string{d.Addr()}); err == nil || n != 0 {
		t.Fatalf("keys that do not overlap: joined %d, err %v", n, err)
	}
	if _, err := Start(Config{Name: "e", BindAddr: "127.0.0.1:0", AcceptKeys: [][]byte{oldKey}}); err == nil {
		t.Fatal("accepted keys without a key were accepted")
	}
}

// TestMembershipEventsNeverBlock fills the events channel with nobody
// reading: memberlist must keep working, and the consumer, once it reads,
// is told to resync.
func TestMembershipEventsNeverBlock(t *testing.T) {
	m, err := Start(Config{Name: "slow", BindAddr: "127.0.0.1:0", Fast: true, EventBuffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Shutdown() })
	// The buffer already holds this node's own join; these joins overflow it.
	others := make([]*Membership, 3)
	for i := range others {
		others[i] = startMember(t, fmt.Sprintf("other-%d", i), nil)
		if _, err := others[i].Join([]string{m.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	testkit.WaitFor(t, "all members despite a full event channel", func() bool { return len(m.Members()) == 4 })
	if ev := <-m.Events(); ev.Kind != EventJoin || ev.Member.Name != "slow" {
		t.Fatalf("first event = %+v, want slow's own join", ev)
	}
	// Gossip may slip a late event in before the resync; the resync must come.
	timeout := time.After(testTimeout)
	for {
		select {
		case ev := <-m.Events():
			if ev.Kind == EventResync {
				return
			}
		case <-timeout:
			t.Fatal("no resync after dropped events")
		}
	}
}

func TestMetaEncoding(t *testing.T) {
	cases := []Meta{
		{},
		{RPC: "127.0.0.1:7947", HTTP: "127.0.0.1:8080", Incarnation: 1<<64 - 1},
		{HTTP: "[::1]:8080"},
	}
	for _, want := range cases {
		for _, flags := range []byte{0, flagLeaving, flagDraining, flagDraining | flagLeaving} {
			b, err := want.encode(flags)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) > memberlist.MetaMaxSize {
				t.Fatalf("%d bytes", len(b))
			}
			got, gotFlags, err := decodeMeta(b)
			if err != nil || got != want || gotFlags != flags {
				t.Fatalf("round trip of %+v, %v = %+v, %v, %v", want, flags, got, gotFlags, err)
			}
		}
		b, _ := want.encode(0)
		for i := range len(b) - 1 {
			if _, _, err := decodeMeta(b[:i]); err == nil {
				t.Fatalf("truncated %+v at %d decoded", want, i)
			}
		}
	}
	if _, _, err := decodeMeta([]byte{9, 0, 0, 0, 0, 0}); err == nil {
		t.Fatal("unknown version decoded")
	}
}

func TestMembershipConfigValidate(t *testing.T) {
	bad := []Config{
		{BindAddr: "127.0.0.1:0"},
		{Name: "a", BindAddr: "127.0.0.1"},
		{Name: "a", BindAddr: "127.0.0.1:99999"},
		{Name: "a", BindAddr: "127.0.0.1:0", Key: []byte("short")},
		{Name: "a", BindAddr: "127.0.0.1:0", Meta: Meta{RPC: string(make([]byte, 600))}},
		{Name: "a", BindAddr: "127.0.0.1:7946", AdvertisePort: -1},
		{Name: "a", BindAddr: "127.0.0.1:7946", AdvertisePort: 65536},
		{Name: "a", BindAddr: "127.0.0.1:0", AdvertisePort: 7946},
		{Name: "a", BindAddr: "127.0.0.1:0", RememberFailed: -time.Second},
	}
	for i, cfg := range bad {
		if err := cfg.Validate(); err == nil {
			t.Errorf("config %d accepted: %+v", i, cfg)
		}
	}
	if err := (Config{Name: "a", BindAddr: ":7946"}).Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
}

func TestLogWriter(t *testing.T) {
	logger, buf := testkit.CapturedLogger()
	w := logWriter{log: logger}
	fmt.Fprintf(w, "[WARN] memberlist: Refuting a suspect message\n")
	fmt.Fprintf(w, "[ERR] memberlist: failed to receive\n[DEBUG] memberlist: Stream connection\n")
	for _, want := range []string{`level=WARN msg="Refuting a suspect message"`, `level=ERROR msg="failed to receive"`, `level=DEBUG msg="Stream connection"`} {
		if !strings.Contains(buf.String(), want) {
			t.Fatalf("log lacks %q: %s", want, buf)
		}
	}
}

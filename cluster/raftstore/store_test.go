package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/internal/testkit"
)

// testTimeout bounds every wait in these tests; it is a deadline for
// failure, never a duration the tests depend on.
const testTimeout = 15 * time.Second

// recv receives one value from ch within the deadline.
func recv(t *testing.T, ch <-chan bool) (value, ok bool) {
	t.Helper()
	select {
	case v, ok := <-ch:
		return v, ok
	case <-time.After(testTimeout):
		t.Fatal("timed out waiting for a leadership change")
		return false, false
	}
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// tcpStreams runs Raft over plain TCP, as the tests of this package need
// nothing of the node's transport.
type tcpStreams struct{ net.Listener }

func (tcpStreams) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// listenTCP listens on addr ("127.0.0.1:0" when empty).
func listenTCP(t *testing.T, addr string) tcpStreams {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return tcpStreams{ln}
}

// openForTest opens a store with fast timings, over TCP on cfg.Addr (a
// free loopback port when empty) and in a fresh data dir unless cfg names
// one, and closes it at cleanup.
func openForTest(t *testing.T, cfg Config) *Store {
	t.Helper()
	if cfg.Streams == nil {
		streams := listenTCP(t, cfg.Addr)
		cfg.Streams, cfg.Addr = streams, streams.Addr().String()
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.Fast = true
	cfg.Logger = testkit.Logger(t).With("node", cfg.NodeID)
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s): %v", cfg.NodeID, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close(%s): %v", cfg.NodeID, err)
		}
	})
	return s
}

func mustGet(t *testing.T, s *Store, key string) string {
	t.Helper()
	v, ok := s.Get(key)
	if !ok {
		t.Fatalf("Get(%q): missing", key)
	}
	return string(v)
}

func holds(s *Store, key, want string) bool {
	v, ok := s.Get(key)
	return ok && string(v) == want
}

func TestStoreSingleServer(t *testing.T) {
	changes := &testkit.Changes{}
	s := openForTest(t, Config{NodeID: "n1", Bootstrap: true, OnChange: changes.Record})
	ctx := testContext(t)
	if err := s.WaitForLeader(ctx); err != nil {
		t.Fatalf("WaitForLeader: %v", err)
	}
	if v, ok := recv(t, s.LeadershipChanges()); !v || !ok {
		t.Fatalf("first leadership change = %v (open %v), want true", v, ok)
	}
	if !s.IsLeader() {
		t.Fatal("single bootstrapped server is not leader")
	}
	if id, addr := s.Leader(); id != "n1" || addr != s.Addr() {
		t.Fatalf("Leader() = %q %q, want n1 %q", id, addr, s.Addr())
	}
	servers, err := s.Servers()
	if err != nil {
		t.Fatalf("Servers: %v", err)
	}
	if want := []Server{{ID: "n1", Addr: s.Addr(), Voter: true}}; !slices.Equal(servers, want) {
		t.Fatalf("Servers() = %v, want %v", servers, want)
	}

	// The repeated b changes nothing, so OnChange does not hear of it.
	for _, kv := range [][2]string{{"a", `{"v":1}`}, {"b", `{"v":2}`}, {"a", `{"v":3}`}, {"b", `{"v":2}`}} {
		if err := s.Put(ctx, kv[0], []byte(kv[1])); err != nil {
			t.Fatalf("Put(%s): %v", kv[0], err)
		}
		// Put returns after the local apply, so the read needs no wait.
		if got := mustGet(t, s, kv[0]); got != kv[1] {
			t.Fatalf("Get(%s) = %s, want %s", kv[0], got, kv[1])
		}
	}
	list := s.List()
	want := map[string][]byte{"a": []byte(`{"v":3}`), "b": []byte(`{"v":2}`)}
	if !maps.EqualFunc(list, want, bytes.Equal) {
		t.Fatalf("List() = %q, want %q", list, want)
	}
	list["a"][0] = 'X' // List hands out copies
	if got := mustGet(t, s, "a"); got != `{"v":3}` {
		t.Fatalf("changing List's result changed the store: %s", got)
	}

	if err := s.Delete(ctx, "a"); err != nil {
		t.Fatalf("Delete(a): %v", err)
	}
	if _, ok := s.Get("a"); ok {
		t.Fatal("a still present after Delete")
	}
	if err := s.Delete(ctx, "a"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("second Delete(a) = %v, want ErrKeyNotFound", err)
	}
	if err := s.Put(ctx, "", []byte("x")); err == nil {
		t.Fatal("Put with an empty key succeeded")
	}
	if err := s.Put(ctx, "c", nil); err == nil {
		t.Fatal("Put with an empty value succeeded")
	}

	wantCalls := []testkit.Change{
		{Key: "a", Value: []byte(`{"v":1}`)}, {Key: "b", Value: []byte(`{"v":2}`)},
		{Key: "a", Value: []byte(`{"v":3}`)}, {Key: "a", Value: nil},
	}
	if got := changes.Calls(); !testkit.EqualChanges(got, wantCalls) {
		t.Fatalf("OnChange calls = %q, want %q", got, wantCalls)
	}
}

func TestStoreRestartReplaysLog(t *testing.T) {
	dir := t.TempDir()
	first := openForTest(t, Config{NodeID: "n1", DataDir: dir, Bootstrap: true})
	ctx := testContext(t)
	testkit.WaitFor(t, "first start to lead", first.IsLeader)
	for _, k := range []string{"a", "b", "c"} {
		if err := first.Put(ctx, k, []byte("doc-"+k)); err != nil {
			t.Fatalf("Put(%s): %v", k, err)
		}
	}
	if err := first.Delete(ctx, "b"); err != nil {
		t.Fatalf("Delete(b): %v", err)
	}
	addr := first.Addr()
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	drainUntilClosed(t, first.LeadershipChanges())

	changes := &testkit.Changes{}
	second := openForTest(t, Config{
		NodeID: "n1", DataDir: dir, Addr: addr, Bootstrap: true, OnChange: changes.Record,
	})
	if has, err := second.HasExistingState(); err != nil || !has {
		t.Fatalf("HasExistingState() = %v, %v; want true", has, err)
	}
	err := second.BootstrapCluster([]Server{{ID: "n1", Addr: addr, Voter: true}})
	if !errors.Is(err, ErrAlreadyBootstrapped) {
		t.Fatalf("BootstrapCluster on existing state = %v, want ErrAlreadyBootstrapped", err)
	}
	// The replay applies the log in order, asynchronously: a write after
	// the restart returns once every entry before it is applied too.
	testkit.WaitFor(t, "restarted server to lead", second.IsLeader)
	if err := second.Put(ctx, "d", []byte("doc-d")); err != nil {
		t.Fatalf("Put after restart: %v", err)
	}
	if !holds(second, "a", "doc-a") || !holds(second, "c", "doc-c") || !holds(second, "d", "doc-d") {
		t.Fatalf("after the restart the store holds %q", second.List())
	}
	if _, ok := second.Get("b"); ok {
		t.Fatal("deleted key b came back after restart")
	}
	latest := changes.Latest()
	if string(latest["a"]) != "doc-a" || string(latest["c"]) != "doc-c" || latest["b"] != nil {
		t.Fatalf("OnChange after restart reported %q", latest)
	}
}

// drainUntilClosed reads ch until Close has closed it.
func drainUntilClosed(t *testing.T, ch <-chan bool) {
	t.Helper()
	for {
		if _, ok := recv(t, ch); !ok {
			return
		}
	}
}

func TestStoreSnapshotRestore(t *testing.T) {
	dir := t.TempDir()
	first := openForTest(t, Config{NodeID: "n1", DataDir: dir, Bootstrap: true})
	ctx := testContext(t)
	testkit.WaitFor(t, "leadership", first.IsLeader)
	for i := range 10 {
		if err := first.Put(ctx, fmt.Sprintf("k%d", i), fmt.Appendf(nil, "v%d", i)); err != nil {
			t.Fatalf("Put(k%d): %v", i, err)
		}
	}
	if err := first.raft.Snapshot().Error(); err != nil {
		t.Fatalf("Snapshot: %v", err)
	}
	// Entries after the snapshot are replayed from the log on restart.
	if err := first.Put(ctx, "k10", []byte("v10")); err != nil {
		t.Fatalf("Put(k10): %v", err)
	}
	if err := first.Delete(ctx, "k0"); err != nil {
		t.Fatalf("Delete(k0): %v", err)
	}
	metas, err := first.snaps.List()
	if err != nil || len(metas) != 1 {
		t.Fatalf("snapshots on disk = %d, %v; want 1", len(metas), err)
	}
	addr := first.Addr()
	if err := first.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	changes := &testkit.Changes{}
	second := openForTest(t, Config{
		NodeID: "n1", DataDir: dir, Addr: addr, Bootstrap: true, OnChange: changes.Record,
	})
	// NewRaft restores the snapshot before Open returns.
	restored := changes.Calls()
	for i := range 10 {
		if i >= len(restored) || restored[i].Key != fmt.Sprintf("k%d", i) {
			t.Fatalf("OnChange during snapshot restore = %q, want k0..k9 first", restored)
		}
	}
	want := make(map[string][]byte)
	for i := 1; i <= 10; i++ {
		want[fmt.Sprintf("k%d", i)] = fmt.Appendf(nil, "v%d", i)
	}
	testkit.WaitFor(t, "snapshot restore and log replay", func() bool {
		return maps.EqualFunc(second.List(), want, bytes.Equal)
	})
	latest := changes.Latest()
	if v, ok := latest["k0"]; !ok || v != nil {
		t.Fatalf("OnChange did not report the replayed deletion of k0: %q", latest)
	}
}

func TestStoreThreeServers(t *testing.T) {
	ctx := testContext(t)
	s1 := openForTest(t, Config{NodeID: "n1", Bootstrap: true})
	s2 := openForTest(t, Config{NodeID: "n2"})
	s3 := openForTest(t, Config{NodeID: "n3"})
	all := []*Store{s1, s2, s3}
	testkit.WaitFor(t, "n1 to lead", s1.IsLeader)
	if v, _ := recv(t, s1.LeadershipChanges()); !v {
		t.Fatal("n1 was not told it leads")
	}
	for _, s := range []*Store{s2, s3, s2} { // adding n2 twice is harmless
		onLeader(t, all, "AddVoter "+s.cfg.NodeID, func(l *Store) error {
			return l.AddVoter(ctx, s.cfg.NodeID, s.Addr())
		})
	}
	servers, err := s1.Servers()
	if err != nil || len(servers) != 3 {
		t.Fatalf("Servers() = %v, %v; want 3", servers, err)
	}

	onLeader(t, all, "Put a", func(l *Store) error { return l.Put(ctx, "a", []byte("1")) })
	testkit.WaitFor(t, "a everywhere", func() bool { return allHold(all, "a", "1") })
	follower := waitForFollower(t, all)
	if err := follower.Put(ctx, "x", []byte("1")); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("Put on follower = %v, want ErrNotLeader", err)
	}
	if err := follower.AddVoter(ctx, "n9", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("AddVoter on follower = %v, want ErrNotLeader", err)
	}

	// Hand leadership away from n1; Raft may time a transfer out under load,
	// so try until n1 no longer leads.
	testkit.WaitFor(t, "n1 to hand over leadership", func() bool {
		if err := s1.TransferLeadership(); err != nil {
			t.Logf("TransferLeadership: %v", err)
		}
		return !s1.IsLeader()
	})
	if v, _ := recv(t, s1.LeadershipChanges()); v {
		t.Fatal("n1 was not told it lost leadership")
	}
	leader := onLeader(t, all, "Put b", func(l *Store) error { return l.Put(ctx, "b", []byte("2")) })
	testkit.WaitFor(t, "b everywhere", func() bool { return allHold(all, "b", "2") })

	// Stop the leader: the two others elect one of themselves.
	if err := leader.Close(); err != nil {
		t.Fatalf("Close leader: %v", err)
	}
	rest := slices.DeleteFunc(slices.Clone(all), func(s *Store) bool { return s == leader })
	onLeader(t, rest, "Put c", func(l *Store) error { return l.Put(ctx, "c", []byte("3")) })
	testkit.WaitFor(t, "c on the survivors", func() bool { return allHold(rest, "c", "3") })
	stopped := leader.cfg.NodeID
	next := onLeader(t, rest, "RemoveServer "+stopped, func(l *Store) error {
		return l.RemoveServer(ctx, stopped)
	})
	servers, err = next.Servers()
	if err != nil || len(servers) != 2 || slices.ContainsFunc(servers, func(s Server) bool { return s.ID == stopped }) {
		t.Fatalf("Servers() after removing %s = %v, %v", stopped, servers, err)
	}
	follower = waitForFollower(t, rest)
	if err := follower.RemoveServer(ctx, next.cfg.NodeID); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("RemoveServer on follower = %v, want ErrNotLeader", err)
	}
}

func allHold(stores []*Store, key, want string) bool {
	for _, s := range stores {
		if !holds(s, key, want) {
			return false
		}
	}
	return true
}

// onLeader runs op on the current leader among stores, again on
// ErrNotLeader (an election under a loaded test machine), as a caller
// forwarding writes would. It returns the leader on which op succeeded.
func onLeader(t *testing.T, stores []*Store, what string, op func(*Store) error) *Store {
	t.Helper()
	var leader *Store
	testkit.WaitFor(t, what+" on the leader", func() bool {
		leader = waitForLeaderAmong(t, stores...)
		err := op(leader)
		if err != nil && !errors.Is(err, ErrNotLeader) {
			t.Fatalf("%s: %v", what, err)
		}
		return err == nil
	})
	return leader
}

// waitForFollower returns a store that follows a known leader.
func waitForFollower(t *testing.T, stores []*Store) *Store {
	t.Helper()
	var follower *Store
	testkit.WaitFor(t, "a follower that knows the leader", func() bool {
		for _, s := range stores {
			if id, _ := s.Leader(); !s.IsLeader() && id != "" {
				follower = s
				return true
			}
		}
		return false
	})
	return follower
}

// waitForLeaderAmong waits until exactly one of stores leads.
func waitForLeaderAmong(t *testing.T, stores ...*Store) *Store {
	t.Helper()
	var leader *Store
	testkit.WaitFor(t, "a new leader", func() bool {
		leader = nil
		for _, s := range stores {
			if s.IsLeader() {
				if leader != nil {
					return false
				}
				leader = s
			}
		}
		return leader != nil
	})
	return leader
}

func TestStorePutHonoursContext(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	var releaseOnce sync.Once
	unblock := func() { releaseOnce.Do(func() { close(release) }) }
	onChange := func(key string, _ []byte) {
		if key == "slow" {
			close(entered)
			<-release // holds the FSM, so the Put cannot complete
		}
	}
	s := openForTest(t, Config{NodeID: "n1", Bootstrap: true, OnChange: onChange})
	t.Cleanup(unblock) // registered after Close's cleanup, so it runs first
	testkit.WaitFor(t, "leadership", s.IsLeader)

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Put(canceled, "early", []byte("1")); !errors.Is(err, context.Canceled) {
		t.Fatalf("Put with a canceled context = %v, want context.Canceled", err)
	}
	if err := s.Put(testContext(t), "later", []byte("1")); err != nil {
		t.Fatalf("Put(later): %v", err)
	}
	if _, ok := s.Get("early"); ok {
		t.Fatal("a Put refused for its canceled context was written")
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	result := make(chan error, 1)
	go func() { result <- s.Put(ctx, "slow", []byte("1")) }()
	select {
	case <-entered:
	case <-time.After(testTimeout):
		t.Fatal("the slow Put never reached the FSM")
	}
	cancel()
	select {
	case err := <-result:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Put canceled in flight = %v, want context.Canceled", err)
		}
	case <-time.After(testTimeout):
		t.Fatal("Put did not return after its context was canceled")
	}
	unblock()
	// The committed entry still applies: cancellation only stops the wait.
	testkit.WaitFor(t, "the abandoned write to apply", func() bool { return holds(s, "slow", "1") })
}

func TestStoreWaitForLeaderTimesOut(t *testing.T) {
	s := openForTest(t, Config{NodeID: "lonely"}) // never bootstrapped
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitForLeader(ctx); !errors.Is(err, ErrNoLeader) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitForLeader without a cluster = %v, want ErrNoLeader and DeadlineExceeded", err)
	}
	err := s.Put(testContext(t), "a", []byte("1"))
	if !errors.Is(err, ErrNotLeader) || !errors.Is(err, ErrNoLeader) {
		t.Fatalf("Put without a leader = %v, want ErrNotLeader and ErrNoLeader", err)
	}
	if err := s.TransferLeadership(); err != nil {
		t.Fatalf("TransferLeadership on a follower = %v, want nil", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Put(testContext(t), "a", []byte("1")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v, want ErrClosed", err)
	}
	if err := s.WaitForLeader(testContext(t)); !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitForLeader after Close = %v, want ErrClosed", err)
	}
}

func TestStoreConfigValidate(t *testing.T) {
	valid := Config{NodeID: "n1", Addr: "127.0.0.1:8300", DataDir: "/tmp/x", Streams: tcpStreams{}}
	if err := valid.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*Config){
		"no node id":  func(c *Config) { c.NodeID = "" },
		"no data dir": func(c *Config) { c.DataDir = "" },
		"no address":  func(c *Config) { c.Addr = "" },
		"bad address": func(c *Config) { c.Addr = "localhost" },
		"no streams":  func(c *Config) { c.Streams = nil },
	} {
		c := valid
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, c)
		}
		if _, err := Open(c); err == nil {
			t.Errorf("%s: Open accepted %+v", name, c)
		}
	}
}

func TestStoreLeadershipBacklog(t *testing.T) {
	s := &Store{
		notifyCh: make(chan bool, 1),
		leaderCh: make(chan bool),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go s.forwardLeadership()
	const pushed = 100
	for i := range pushed {
		s.notifyCh <- i%2 == 0
	}
	testkit.WaitFor(t, "the forwarder to take every value", func() bool { return len(s.notifyCh) == 0 })
	// Nobody read, so the oldest pairs were dropped down to the bound: the
	// reader sees the last 64 transitions, still alternating from true.
	for i := range leadershipBacklog {
		v, ok := recv(t, s.leaderCh)
		if !ok || v != (i%2 == 0) {
			t.Fatalf("value %d = %v (open %v), want %v", i, v, ok, i%2 == 0)
		}
	}
	close(s.stop)
	if _, ok := recv(t, s.leaderCh); ok {
		t.Fatal("more values than the backlog bound, or the channel stayed open")
	}
	<-s.done
}

func TestStoreBarrierOnLeaderOnly(t *testing.T) {
	s := openForTest(t, Config{NodeID: "n1", Bootstrap: true})
	if err := s.WaitForLeader(testContext(t)); err != nil {
		t.Fatalf("WaitForLeader: %v", err)
	}
	if err := s.Put(context.Background(), "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if err := s.Barrier(5 * time.Second); err != nil {
		t.Fatalf("barrier on the leader: %v", err)
	}
	if v, ok := s.Get("k"); !ok || string(v) != "v" {
		t.Fatalf("after the barrier the write is applied: %q %v", v, ok)
	}
}

// addressBook is a ServerAddress provider the test edits, as membership's
// view of the members' current addresses.
type addressBook struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (b *addressBook) set(id, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.addrs[id] = addr
}

func (b *addressBook) lookup(id string) (string, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	addr, ok := b.addrs[id]
	return addr, ok
}

// TestStoreServersKnownByID: the configuration records addresses nobody
// listens on (as one written by a release with a separate Raft port),
// and the servers still elect, replicate and vote, dialling the addresses
// ServerAddress gives; a server restarted at another address is reached
// there as soon as the provider knows it.
func TestStoreServersKnownByID(t *testing.T) {
	ctx := testContext(t)
	book := &addressBook{addrs: map[string]string{}}
	ids := []string{"n1", "n2", "n3"}
	var recorded []Server
	for i, id := range ids {
		recorded = append(recorded, Server{ID: id, Addr: fmt.Sprintf("127.0.0.1:%d", i+1), Voter: true})
	}
	dirs := map[string]string{}
	open := func(id string) *Store {
		if dirs[id] == "" {
			dirs[id] = t.TempDir()
		}
		s := openForTest(t, Config{NodeID: id, DataDir: dirs[id], ServerAddress: book.lookup})
		book.set(id, s.Addr())
		return s
	}
	stores := map[string]*Store{}
	for _, id := range ids {
		stores[id] = open(id)
	}
	for _, id := range ids {
		if err := stores[id].BootstrapCluster(recorded); err != nil {
			t.Fatal(err)
		}
	}
	all := func() []*Store { return []*Store{stores["n1"], stores["n2"], stores["n3"]} }
	onLeader(t, all(), "Put a", func(l *Store) error { return l.Put(ctx, "a", []byte("1")) })
	testkit.WaitFor(t, "a everywhere", func() bool { return allHold(all(), "a", "1") })

	// n3 comes back at another port, which only the provider knows.
	moved := stores["n3"]
	before := moved.Addr()
	if err := moved.Close(); err != nil {
		t.Fatal(err)
	}
	stores["n3"] = open("n3")
	if stores["n3"].Addr() == before {
		t.Fatal("n3 came back at the same address")
	}
	onLeader(t, all(), "Put b", func(l *Store) error { return l.Put(ctx, "b", []byte("2")) })
	testkit.WaitFor(t, "b on the moved server", func() bool { return allHold(all(), "b", "2") })

	// The moved server votes: with the leader gone, the two others elect.
	leader := waitForLeaderAmong(t, all()...)
	if err := leader.Close(); err != nil {
		t.Fatal(err)
	}
	rest := slices.DeleteFunc(all(), func(s *Store) bool { return s == leader })
	onLeader(t, rest, "Put c", func(l *Store) error { return l.Put(ctx, "c", []byte("3")) })
	testkit.WaitFor(t, "c on the survivors", func() bool { return allHold(rest, "c", "3") })
}

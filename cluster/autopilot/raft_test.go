package autopilot

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/internal/testkit"
)

// raftCluster is real Raft servers (raftstore on loopback), each with its
// autopilot, over one member view the test edits, and one fake clock for
// every grace and stabilization period.
type raftCluster struct {
	t       *testing.T
	clock   *clock.Fake
	members *fakeCluster

	mu      sync.Mutex
	stores  map[string]*raftstore.Store
	pilots  map[string]*Autopilot
	stopped map[string]bool
}

// tcpStreams carries Raft over plain TCP: these tests need nothing of the
// node's transport.
type tcpStreams struct{ net.Listener }

func (tcpStreams) DialContext(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// realCluster is the Cluster of one node: the shared member view, and
// questions answered by the other stores themselves.
type realCluster struct{ c *raftCluster }

func (rc realCluster) Members() []Member { return rc.c.members.Members() }
func (rc realCluster) Joined() bool      { return true }

func (rc realCluster) HasRaftState(_ context.Context, name string) (bool, error) {
	s, err := rc.c.running(name)
	if err != nil {
		return false, err
	}
	return s.HasExistingState()
}

func (rc realCluster) Progress(_ context.Context, name string) (raftstore.Progress, error) {
	s, err := rc.c.running(name)
	if err != nil {
		return raftstore.Progress{}, err
	}
	return s.Progress(), nil
}

func newRaftCluster(t *testing.T) *raftCluster {
	return &raftCluster{t: t, clock: clock.NewFake(t0), members: newFakeCluster(),
		stores: map[string]*raftstore.Store{}, pilots: map[string]*Autopilot{}, stopped: map[string]bool{}}
}

// start opens a server and its autopilot and makes it an alive member.
func (c *raftCluster) start(name string, cfg Config) {
	c.t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		c.t.Fatal(err)
	}
	s, err := raftstore.Open(raftstore.Config{NodeID: name, Streams: tcpStreams{ln}, Addr: ln.Addr().String(),
		DataDir: c.t.TempDir(), Fast: true, Logger: testkit.Logger(c.t).With("node", name)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { _ = s.Close() })
	cfg.Self, cfg.Clock, cfg.Logger = name, c.clock, testkit.Logger(c.t).With("node", name)
	a, err := New(cfg, s, realCluster{c})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.stores[name], c.pilots[name] = s, a
	c.mu.Unlock()
	c.members.mu.Lock()
	c.members.members[name] = Member{Name: name, RaftAddr: s.Addr(), Status: StatusAlive}
	c.members.mu.Unlock()
}

func (c *raftCluster) running(name string) (*raftstore.Store, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.stores[name]
	if !ok || c.stopped[name] {
		return nil, fmt.Errorf("%s is not running", name)
	}
	return s, nil
}

// stepAll runs a round on every running server, as their Run loops would.
func (c *raftCluster) stepAll() {
	c.mu.Lock()
	var pilots []*Autopilot
	for name, a := range c.pilots {
		if !c.stopped[name] {
			pilots = append(pilots, a)
		}
	}
	c.mu.Unlock()
	for _, a := range pilots {
		a.Step(context.Background())
	}
}

// leader waits until one running server leads, and returns its name.
func (c *raftCluster) leader() string {
	c.t.Helper()
	var name string
	testkit.WaitFor(c.t, "a raft leader", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for n, s := range c.stores {
			if !c.stopped[n] && s.IsLeader() {
				name = n
				return true
			}
		}
		return false
	})
	return name
}

// config is the leader's configuration, described as by describe.
func (c *raftCluster) config() string {
	c.t.Helper()
	s, err := c.running(c.leader())
	if err != nil {
		return err.Error()
	}
	servers, err := s.Servers()
	if err != nil {
		return err.Error()
	}
	return describe(servers)
}

// settle steps every server until the leader's configuration reads want,
// with the non-voters caught up in between: the fake clock moves on by
// a stabilization period whenever they all are.
func (c *raftCluster) settle(want string, cfg Config) {
	c.t.Helper()
	testkit.WaitFor(c.t, "configuration "+want, func() bool {
		c.stepAll()
		if c.config() == want {
			return true
		}
		if c.nonvotersCaughtUp() {
			c.clock.Advance(cfg.Stabilization)
		}
		return false
	})
}

// nonvotersCaughtUp reports whether every running non-voter's log has the
// leader's last index, in its term.
func (c *raftCluster) nonvotersCaughtUp() bool {
	l, err := c.running(c.leader())
	if err != nil {
		return false
	}
	servers, err := l.Servers()
	if err != nil {
		return false
	}
	lp := l.Progress()
	for _, srv := range servers {
		s, err := c.running(srv.ID)
		if srv.Voter || err != nil {
			continue
		}
		if p := s.Progress(); p.Term != lp.Term || p.LastIndex < lp.LastIndex {
			return false
		}
	}
	return true
}

// leaveGracefully is a node's shutdown: no more additions, leadership
// handed over, the departure announced, then waiting for the removal
// while the leader goes on with its rounds, and Raft closed.
func (c *raftCluster) leaveGracefully(names ...string) {
	c.t.Helper()
	var wg sync.WaitGroup
	for _, name := range names {
		a := c.pilots[name]
		a.SetLeaving()
		if err := a.HandOver(context.Background()); err != nil {
			c.t.Fatalf("%s: hand over: %v", name, err)
		}
		c.members.set(name, StatusLeft, c.clock.Now())
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), testkit.DefaultWait)
			defer cancel()
			if err := a.WaitRemoved(ctx); err != nil {
				c.t.Errorf("%s: %v", name, err)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	for {
		select {
		case <-done:
			for _, name := range names {
				c.stop(name)
			}
			return
		case <-time.After(10 * time.Millisecond):
			c.clock.Advance(removalPoll)
			c.stepAll()
		}
	}
}

func (c *raftCluster) stop(name string) {
	c.mu.Lock()
	s := c.stores[name]
	c.stopped[name] = true
	c.mu.Unlock()
	if err := s.Close(); err != nil {
		c.t.Errorf("close %s: %v", name, err)
	}
}

// TestRealRaftScaleOutAndIn: three servers bootstrap; four more join as
// non-voters and the cluster settles on five voters and two non-voters;
// three leave together (two of them voters) and the rest keep a leader and
// settle on three voters and a non-voter; a crashed one is reaped after the
// grace period, which leaves exactly the live servers, all voting.
func TestRealRaftScaleOutAndIn(t *testing.T) {
	cfg := Config{BootstrapExpect: 3, Stabilization: 10 * time.Second, ReapAfter: 30 * time.Second}
	c := newRaftCluster(t)
	for _, n := range []string{"n1", "n2", "n3"} {
		c.start(n, cfg)
	}
	c.stepAll() // every one bootstraps the same configuration
	c.settle("n1 n2 n3", cfg)
	if err := c.stores[c.leader()].Put(context.Background(), "doc", []byte("1")); err != nil {
		t.Fatal(err)
	}

	for _, n := range []string{"n4", "n5", "n6", "n7"} {
		c.start(n, cfg)
	}
	c.settle("n1 n2 n3 n4 n5 | n6 n7", cfg)
	testkit.WaitFor(t, "the document on every server", func() bool {
		for _, s := range c.stores {
			if v, ok := s.Get("doc"); !ok || string(v) != "1" {
				return false
			}
		}
		return true
	})

	// The voters n4 and n5 and the non-voter n6 leave at once.
	c.leaveGracefully("n4", "n5", "n6")
	c.settle("n1 n2 n3 | n7", cfg)

	c.stop("n7")
	c.members.set("n7", StatusFailed, c.clock.Now())
	c.stepAll()
	if got := c.config(); got != "n1 n2 n3 | n7" {
		t.Fatalf("n7 reaped before the grace period: %q", got)
	}
	c.clock.Advance(cfg.ReapAfter)
	c.settle("n1 n2 n3", cfg)
	if err := c.stores[c.leader()].Put(context.Background(), "doc", []byte("2")); err != nil {
		t.Fatalf("write after scaling in: %v", err)
	}
}

// TestRealRaftLeaderLeavesAsOnlyVoter: a one-voter cluster with
// non-voters (two servers) whose leader leaves gracefully promotes its
// successor first, so the remaining server leads.
func TestRealRaftLeaderLeavesAsOnlyVoter(t *testing.T) {
	cfg := Config{Stabilization: time.Second}
	c := newRaftCluster(t)
	c.start("n1", cfg)
	c.members.joined = true
	c.stepAll() // bootstrap-expect 1
	c.settle("n1", cfg)
	c.start("n2", cfg)
	c.settle("n1 | n2", cfg)
	testkit.WaitFor(t, "n2 caught up", c.nonvotersCaughtUp)
	c.leaveGracefully("n1")
	if l := c.leader(); l != "n2" {
		t.Fatalf("leader %s after n1 left", l)
	}
	c.settle("n2", cfg)
	if err := c.stores["n2"].Put(context.Background(), "doc", []byte("1")); err != nil {
		t.Fatalf("write on the successor: %v", err)
	}
}

package autopilot

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/presencehq/presence/clock"
	"github.com/presencehq/presence/cluster/raftstore"
	"github.com/presencehq/presence/internal/testkit"
)

// t0 is the fake clock's start.
var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// fakeRaft is a Raft configuration without Raft: the changes autopilot
// makes are applied to a server list and recorded as operations.
type fakeRaft struct {
	mu       sync.Mutex
	leader   bool
	state    bool
	servers  []raftstore.Server
	progress raftstore.Progress
	ops      []string
	fail     map[string]error // by operation ("remove n2"), returned instead of applying
	leaderCh chan bool
}

func newFakeRaft(leader bool, servers ...raftstore.Server) *fakeRaft {
	return &fakeRaft{leader: leader, state: len(servers) > 0, servers: servers,
		progress: raftstore.Progress{Term: 3, LastIndex: 1000}, fail: map[string]error{}, leaderCh: make(chan bool)}
}

func (f *fakeRaft) IsLeader() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

func (f *fakeRaft) LeadershipChanges() <-chan bool { return f.leaderCh }

func (f *fakeRaft) HasExistingState() (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state, nil
}

func (f *fakeRaft) BootstrapCluster(servers []raftstore.Server) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.state {
		return raftstore.ErrAlreadyBootstrapped
	}
	f.state, f.servers = true, slices.Clone(servers)
	f.ops = append(f.ops, "bootstrap "+describe(servers))
	return nil
}

func (f *fakeRaft) Servers() ([]raftstore.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.servers), nil
}

func (f *fakeRaft) Progress() raftstore.Progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.progress
}

// change applies op to the server with id via apply, or fails as told.
func (f *fakeRaft) change(op, id string, apply func(i int)) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.leader {
		return raftstore.ErrNotLeader
	}
	if err := f.fail[op+" "+id]; err != nil {
		return err
	}
	f.ops = append(f.ops, op+" "+id)
	apply(slices.IndexFunc(f.servers, func(s raftstore.Server) bool { return s.ID == id }))
	return nil
}

// addressTaken is Raft's rule that two servers never share an address.
func (f *fakeRaft) addressTaken(id, addr string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if slices.ContainsFunc(f.servers, func(s raftstore.Server) bool { return s.Addr == addr && s.ID != id }) {
		return fmt.Errorf("found duplicate address in configuration: %s", addr)
	}
	return nil
}

func (f *fakeRaft) AddVoter(_ context.Context, id, addr string) error {
	if err := f.addressTaken(id, addr); err != nil {
		return err
	}
	return f.change("voter", id, func(i int) {
		if i < 0 {
			f.servers = append(f.servers, raftstore.Server{ID: id, Addr: addr, Voter: true})
			return
		}
		f.servers[i].Addr, f.servers[i].Voter = addr, true
	})
}

func (f *fakeRaft) AddNonvoter(_ context.Context, id, addr string) error {
	if err := f.addressTaken(id, addr); err != nil {
		return err
	}
	return f.change("nonvoter", id, func(i int) {
		if i < 0 {
			f.servers = append(f.servers, raftstore.Server{ID: id, Addr: addr})
			return
		}
		f.servers[i].Addr = addr // Raft keeps a voter's vote
	})
}

func (f *fakeRaft) DemoteVoter(_ context.Context, id string) error {
	return f.change("demote", id, func(i int) {
		if i >= 0 {
			f.servers[i].Voter = false
		}
	})
}

func (f *fakeRaft) RemoveServer(_ context.Context, id string) error {
	return f.change("remove", id, func(i int) {
		if i >= 0 {
			f.servers = slices.Delete(f.servers, i, i+1)
		}
	})
}

func (f *fakeRaft) TransferLeadership() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, "transfer")
	return nil
}

// takeOps returns the operations since the last call.
func (f *fakeRaft) takeOps() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	ops := f.ops
	f.ops = nil
	return ops
}

// config describes the configuration as "n1 n2 n3 | n4" (voters | non-voters).
func (f *fakeRaft) config() string {
	servers, _ := f.Servers()
	return describe(servers)
}

func describe(servers []raftstore.Server) string {
	var voters, others []string
	for _, s := range servers {
		if s.Voter {
			voters = append(voters, s.ID)
		} else {
			others = append(others, s.ID)
		}
	}
	slices.Sort(voters)
	slices.Sort(others)
	out := strings.Join(voters, " ")
	if len(others) > 0 {
		out += " | " + strings.Join(others, " ")
	}
	return out
}

// fakeCluster is a member view the test edits, with the answers other
// nodes give.
type fakeCluster struct {
	mu       sync.Mutex
	members  map[string]Member
	joined   bool
	state    map[string]bool
	progress map[string]raftstore.Progress
	// forgetAnswers makes every question to another node fail.
	forgetAnswers bool
}

func newFakeCluster(names ...string) *fakeCluster {
	c := &fakeCluster{members: map[string]Member{}, joined: true, state: map[string]bool{},
		progress: map[string]raftstore.Progress{}}
	for _, n := range names {
		c.set(n, StatusAlive, time.Time{})
	}
	return c
}

// set records name's status; alive members advertise addr(name).
func (c *fakeCluster) set(name string, st Status, since time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members[name] = Member{Name: name, RaftAddr: addr(name), Status: st, Since: since}
}

func (c *fakeCluster) move(name, raftAddr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.members[name]
	m.RaftAddr = raftAddr
	c.members[name] = m
}

func (c *fakeCluster) forget(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.members, name)
}

func (c *fakeCluster) setProgress(name string, p raftstore.Progress) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.progress[name] = p
}

func (c *fakeCluster) Members() []Member {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]Member, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m)
	}
	return out
}

func (c *fakeCluster) Joined() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.joined
}

func (c *fakeCluster) HasRaftState(_ context.Context, name string) (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.members[name]; !ok || c.forgetAnswers {
		return false, errors.New("unknown member")
	}
	return c.state[name], nil
}

func (c *fakeCluster) Progress(_ context.Context, name string) (raftstore.Progress, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.progress[name]
	if !ok || c.forgetAnswers {
		return raftstore.Progress{}, fmt.Errorf("%s does not answer", name)
	}
	return p, nil
}

func addr(name string) string { return name + ":8300" }

func voter(id string) raftstore.Server    { return raftstore.Server{ID: id, Addr: addr(id), Voter: true} }
func nonvoter(id string) raftstore.Server { return raftstore.Server{ID: id, Addr: addr(id)} }

// caughtUp is the progress of a non-voter in step with the fake leader.
var caughtUp = raftstore.Progress{Term: 3, LastIndex: 998, LastContact: 100 * time.Millisecond}

// harness is an autopilot on n1 over the fakes, with a fake clock.
type harness struct {
	t       *testing.T
	a       *Autopilot
	raft    *fakeRaft
	cluster *fakeCluster
	clock   *clock.Fake
}

func newHarness(t *testing.T, cfg Config, r *fakeRaft, c *fakeCluster) *harness {
	t.Helper()
	h := &harness{t: t, raft: r, cluster: c, clock: clock.NewFake(t0)}
	cfg.Self = "n1"
	cfg.Clock = h.clock
	cfg.Logger = testkit.Logger(t)
	a, err := New(cfg, r, c)
	if err != nil {
		t.Fatal(err)
	}
	h.a = a
	return h
}

// step runs one round and wants exactly the operations want.
func (h *harness) step(want ...string) {
	h.t.Helper()
	h.a.Step(context.Background())
	if got := h.raft.takeOps(); !slices.Equal(got, want) {
		h.t.Fatalf("at +%v: operations %q, want %q (configuration now %q)",
			h.clock.Now().Sub(t0), got, want, h.raft.config())
	}
}

// wantConfig wants the configuration described as by describe.
func (h *harness) wantConfig(want string) {
	h.t.Helper()
	if got := h.raft.config(); got != want {
		h.t.Fatalf("configuration %q, want %q", got, want)
	}
}

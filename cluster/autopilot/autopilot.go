package autopilot

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/cluster/raftstore"
)

// Status is what autopilot needs to know of a member's state.
type Status int

// Statuses of a Member.
const (
	// StatusAlive: the member serves and may vote.
	StatusAlive Status = iota + 1
	// StatusLeaving: the member announced its shutdown. It is not added or
	// promoted, and a voter that leaves is replaced while it still answers.
	StatusLeaving
	// StatusLeft: the member left gracefully; its server is removed at once.
	StatusLeft
	// StatusFailed: failure detection declared the member dead; its server
	// is removed once it has been dead for ReapAfter.
	StatusFailed
)

// String names the status.
func (s Status) String() string {
	switch s {
	case StatusAlive:
		return "alive"
	case StatusLeaving:
		return "leaving"
	case StatusLeft:
		return "left"
	case StatusFailed:
		return "failed"
	}
	return "unknown"
}

// Member is one node as the cluster view reports it.
type Member struct {
	// Name is the node name, which is its Raft server ID.
	Name string
	// RaftAddr is the Raft address to record for the node; empty when the
	// node cannot be a server (its metadata gives no address to reach it).
	RaftAddr string
	Status   Status
	// Since is when the member left or failed; zero while it is alive or
	// leaving, or when unknown.
	Since time.Time
}

// Raft is the Raft store autopilot manages; *raftstore.Store implements it.
type Raft interface {
	IsLeader() bool
	// LeadershipChanges delivers gains (true) and losses (false) of
	// leadership; autopilot is its single reader.
	LeadershipChanges() <-chan bool
	HasExistingState() (bool, error)
	BootstrapCluster(servers []raftstore.Server) error
	Servers() ([]raftstore.Server, error)
	Progress() raftstore.Progress
	AddVoter(ctx context.Context, id, addr string) error
	AddNonvoter(ctx context.Context, id, addr string) error
	DemoteVoter(ctx context.Context, id string) error
	RemoveServer(ctx context.Context, id string) error
	TransferLeadership() error
}

// Cluster is the node's view of the cluster and the questions autopilot
// asks other nodes.
type Cluster interface {
	// Members returns every member the node knows of, itself included, and
	// those that left or failed while it still remembers them.
	Members() []Member
	// Joined reports whether the node has met the members it was told to
	// join (always true without any): bootstrap waits for that.
	Joined() bool
	// HasRaftState asks member name whether it holds Raft state.
	HasRaftState(ctx context.Context, name string) (bool, error)
	// Progress asks member name how far its Raft log goes.
	Progress(ctx context.Context, name string) (raftstore.Progress, error)
}

// Autopilot runs bootstrap-expect and, on the leader, the reconciliation
// rounds of the package documentation. Run drives it; Kick asks for a
// round at once; SetLeaving, HandOver and WaitRemoved serve a graceful
// shutdown.
type Autopilot struct {
	cfg     Config
	raft    Raft
	cluster Cluster
	log     *slog.Logger

	kick    chan struct{}
	leaving atomic.Bool

	// State of the current leadership term: since when each server has
	// been missing from the member view, and since when each non-voter has
	// been healthy.
	mu            sync.Mutex // serialises rounds (Step may be called beside Run)
	bootstrapDone bool
	missing       map[string]time.Time
	healthySince  map[string]time.Time
}

// New checks cfg and returns an Autopilot; it starts nothing.
func New(cfg Config, r Raft, c Cluster) (*Autopilot, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Autopilot{
		cfg:     cfg,
		raft:    r,
		cluster: c,
		log:     cfg.Logger.With("component", "autopilot"),
		kick:    make(chan struct{}, 1),

		missing:      make(map[string]time.Time),
		healthySince: make(map[string]time.Time),
	}, nil
}

// Kick asks for a round as soon as possible, without blocking; kicks
// coalesce. Call it on every membership change.
func (a *Autopilot) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// Run runs rounds until ctx ends: on Kick, on a leadership change and every
// Interval (grace and stabilization periods end as time passes).
func (a *Autopilot) Run(ctx context.Context) {
	tick := a.cfg.Clock.NewTicker(a.cfg.Interval)
	defer tick.Stop()
	leadership := a.raft.LeadershipChanges()
	for {
		select {
		case <-ctx.Done():
			return
		case gained, ok := <-leadership:
			if !ok {
				leadership = nil // the store closed; a nil channel never fires
				continue
			}
			a.log.Info("raft leadership changed", "leader", gained)
			a.newTerm()
		case <-a.kick:
		case <-tick.C():
		}
		a.Step(ctx)
	}
}

// Step runs one round: bootstrap while it is pending, then, on the leader,
// reconciliation. Run calls it; tests call it directly.
func (a *Autopilot) Step(ctx context.Context) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.bootstrapDone {
		a.bootstrapDone = !a.bootstrap(ctx)
	}
	if !a.raft.IsLeader() {
		a.resetTerm()
		return
	}
	a.reconcile(ctx)
}

// newTerm forgets what the previous leadership term measured: a new
// leader starts every grace and stabilization period afresh.
func (a *Autopilot) newTerm() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.resetTerm()
}

func (a *Autopilot) resetTerm() {
	clear(a.missing)
	clear(a.healthySince)
}

// SetLeaving marks this node as shutting down: it adds and promotes no
// server any more, and it removes no departed server while every other
// member is shutting down too (a whole cluster stopping keeps its
// configuration, so that it forms again as it was).
func (a *Autopilot) SetLeaving() { a.leaving.Store(true) }

// opContext bounds one configuration change or question.
func (a *Autopilot) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, a.cfg.OpTimeout)
}

package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/presencehq/presence/cluster/fsm"
)

// Errors returned by Store. They are wrapped; test with errors.Is.
var (
	// ErrNotLeader: a write or membership change reached a server that is not
	// the Raft leader. The message names the leader when one is known.
	ErrNotLeader = errors.New("raftstore: not the raft leader")
	// ErrNoLeader: no Raft leader is known. Writes refused for this reason
	// match both ErrNotLeader and ErrNoLeader.
	ErrNoLeader = errors.New("raftstore: no raft leader")
	// ErrKeyNotFound: Delete of a key the replicated map does not hold. It
	// is the FSM's own sentinel, so either name matches.
	ErrKeyNotFound = fsm.ErrKeyNotFound
	// ErrAlreadyBootstrapped: BootstrapCluster on a server that already has
	// Raft state (a log, a term or a snapshot).
	ErrAlreadyBootstrapped = errors.New("raftstore: raft state already exists")
	// ErrClosed: the operation needs Raft, which Close has shut down.
	ErrClosed = errors.New("raftstore: closed")
)

// Tunables that suit a small, rarely written configuration map.
const (
	// snapshotRetain keeps one spare snapshot in case the newest is damaged.
	snapshotRetain = 2
	// snapshotThreshold and trailingLogs keep the log short: a
	// snapshot of the whole map is tiny, so sending one to a lagging follower
	// costs less than keeping thousands of entries.
	snapshotThreshold = 256
	trailingLogs      = 128
	snapshotInterval  = 30 * time.Second
	// maxPool is the number of idle connections kept per peer.
	maxPool = 3
	// transportTimeout bounds one transport I/O, including snapshot sends.
	transportTimeout = 10 * time.Second
	// boltOpenTimeout turns a data dir locked by another process into an
	// error instead of a hang.
	boltOpenTimeout = 2 * time.Second
	// boltFile is the log and stable store inside DataDir; the snapshot
	// store adds DataDir/snapshots.
	boltFile = "raft.db"
)

// Config configures Open.
type Config struct {
	// NodeID is the Raft server ID; use the node name. Required.
	NodeID string
	// Streams carries Raft's connections (the node's transport.Streams, so
	// that Raft is authenticated and encrypted like every node-to-node
	// call). Required; Close closes it.
	Streams Streams
	// Addr is the address other servers dial to reach Streams' listener:
	// it is recorded in the Raft configuration and in Raft's messages. A
	// host name is kept as a name. Required, and not 0.0.0.0.
	Addr string
	// ServerAddress, if not nil, gives the address to dial for a server ID
	// at the time of each dial, false when it knows none; the address
	// recorded in the configuration is then used. With it, servers are
	// known by ID alone: one that comes back at another address is reached
	// there at once, and a configuration recorded by an older release,
	// with other ports, still works.
	ServerAddress func(id string) (addr string, ok bool)
	// DataDir holds raft.db (log and stable store) and snapshots/. It is
	// created if missing. Required.
	DataDir string
	// Bootstrap makes a server without existing Raft state bootstrap a
	// cluster of itself alone. False leaves bootstrapping to BootstrapCluster
	// or to an existing leader's AddVoter.
	Bootstrap bool
	// Logger receives Raft's messages. Nil discards them.
	Logger *slog.Logger
	// Fast selects timeouts of a few hundred milliseconds for in-process
	// tests. False keeps Raft's defaults (one second heartbeat and election).
	Fast bool
	// OnChange, if not nil, is called for every key whose value changes, with
	// the new value or nil for a deletion, synchronously inside the FSM's
	// Apply and Restore, so a node's derived state is current before Put
	// returns. Calls come from one goroutine in log order. It must be quick
	// and must not write to the Store; reading it is allowed.
	OnChange func(key string, value []byte)
}

// Validate reports the first missing or malformed field.
func (c Config) Validate() error {
	switch {
	case c.NodeID == "":
		return errors.New("raftstore: config: NodeID is required")
	case c.DataDir == "":
		return errors.New("raftstore: config: DataDir is required")
	case c.Streams == nil:
		return errors.New("raftstore: config: Streams is required")
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("raftstore: config: Addr: %w", err)
	}
	return nil
}

// Server is one member of the Raft configuration.
type Server struct {
	// ID is the Raft server ID (the node name).
	ID string
	// Addr is the address recorded for the server; with
	// Config.ServerAddress the address dialled may differ.
	Addr string
	// Voter is false for a non-voting member.
	Voter bool
}

// Store is a Raft-replicated map from key (a prefix name) to an opaque
// document. Writes go through the leader; reads are local and may lag the
// leader by the replication delay.
type Store struct {
	cfg    Config
	logger *slog.Logger
	fsm    *fsm.FSM
	raft   *raft.Raft
	bolt   *raftboltdb.BoltStore
	snaps  *raft.FileSnapshotStore
	trans  *raft.NetworkTransport

	notifyCh chan bool     // raft's NotifyCh
	leaderCh chan bool     // what LeadershipChanges hands out
	stop     chan struct{} // closed by Close to end the forwarder and the watcher
	done     chan struct{} // closed when the forwarder has ended

	watcherDone chan struct{} // closed when watchLaggingFollowers has ended

	closeOnce sync.Once
	closeErr  error
}

// Open opens or creates the Raft state in cfg.DataDir, starts Raft and,
// with cfg.Bootstrap on a server without state, bootstraps a one-server
// cluster. Close releases everything it opened.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		cfg:      cfg,
		logger:   logger,
		fsm:      fsm.New(cfg.OnChange),
		notifyCh: make(chan bool, 1),
		leaderCh: make(chan bool),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),

		watcherDone: make(chan struct{}),
	}
	if err := s.open(); err != nil {
		return nil, err
	}
	go s.forwardLeadership()
	go s.watchLaggingFollowers()
	if cfg.Bootstrap {
		if err := s.bootstrapSelf(); err != nil {
			return nil, errors.Join(err, s.Close())
		}
	}
	return s, nil
}

// open creates the stores, the transport and Raft, undoing the earlier steps
// when a later one fails.
func (s *Store) open() (err error) {
	if err := os.MkdirAll(s.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("raftstore: create data dir: %w", err)
	}
	hlog := newHclog(s.logger, "raft")
	s.bolt, err = raftboltdb.New(raftboltdb.Options{
		Path:        filepath.Join(s.cfg.DataDir, boltFile),
		BoltOptions: &bbolt.Options{Timeout: boltOpenTimeout},
	})
	if err != nil {
		return fmt.Errorf("raftstore: open raft bolt store: %w", err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.bolt.Close())
		}
	}()
	s.snaps, err = raft.NewFileSnapshotStoreWithLogger(s.cfg.DataDir, snapshotRetain, hlog.Named("snapshots"))
	if err != nil {
		return fmt.Errorf("raftstore: open raft snapshot store: %w", err)
	}
	if s.trans, err = s.newTransport(hlog); err != nil {
		return err
	}
	s.raft, err = raft.NewRaft(s.raftConfig(hlog), s.fsm, s.bolt, s.bolt, s.snaps, s.trans)
	if err != nil {
		err = errors.Join(err, s.trans.Close())
		return fmt.Errorf("raftstore: start raft: %w", err)
	}
	return nil
}

func (s *Store) newTransport(hlog hclog.Logger) (*raft.NetworkTransport, error) {
	stream, err := newStreamLayer(s.cfg.Streams, s.cfg.Addr)
	if err != nil {
		_ = s.cfg.Streams.Close()
		return nil, fmt.Errorf("raftstore: raft transport: %w", err)
	}
	cfg := &raft.NetworkTransportConfig{
		Stream: stream, MaxPool: maxPool, Timeout: transportTimeout, Logger: hlog.Named("transport"),
	}
	if s.cfg.ServerAddress != nil {
		cfg.ServerAddressProvider = addressProvider(s.cfg.ServerAddress)
	}
	return raft.NewNetworkTransportWithConfig(cfg), nil
}

func (s *Store) raftConfig(hlog hclog.Logger) *raft.Config {
	c := raft.DefaultConfig()
	c.LocalID = raft.ServerID(s.cfg.NodeID)
	c.Logger = hlog
	c.NotifyCh = s.notifyCh
	// A removed server stays up as a follower without a vote, so a node that
	// was reaped while partitioned can be added back without a restart.
	c.ShutdownOnRemove = false
	c.SnapshotThreshold = snapshotThreshold
	c.SnapshotInterval = snapshotInterval
	c.TrailingLogs = trailingLogs
	c.NoLegacyTelemetry = true
	if s.cfg.Fast {
		// Tight enough for quick elections in tests, loose enough not to flap
		// on a loaded machine running the race detector.
		c.HeartbeatTimeout = 200 * time.Millisecond
		c.ElectionTimeout = 200 * time.Millisecond
		c.LeaderLeaseTimeout = 100 * time.Millisecond
		c.CommitTimeout = 10 * time.Millisecond
	}
	return c
}

// bootstrapSelf bootstraps a cluster of this server alone unless Raft state
// already exists, as on every restart after the first start.
func (s *Store) bootstrapSelf() error {
	has, err := s.HasExistingState()
	if err != nil || has {
		return err
	}
	return s.BootstrapCluster([]Server{{ID: s.cfg.NodeID, Addr: s.Addr(), Voter: true}})
}

// Addr returns this server's address as the others dial it (Config.Addr).
func (s *Store) Addr() string { return string(s.trans.LocalAddr()) }

// HasExistingState reports whether DataDir holds Raft state from an earlier
// start or from a bootstrap, in which case bootstrapping is refused.
func (s *Store) HasExistingState() (bool, error) {
	has, err := raft.HasExistingState(s.bolt, s.bolt, s.snaps)
	if err != nil {
		return false, fmt.Errorf("raftstore: check raft state: %w", err)
	}
	return has, nil
}

// BootstrapCluster seeds the initial Raft configuration. It must be given
// the same servers on every server that calls it, and it fails with
// ErrAlreadyBootstrapped when Raft state already exists.
func (s *Store) BootstrapCluster(servers []Server) error {
	var conf raft.Configuration
	for _, srv := range servers {
		suffrage := raft.Voter
		if !srv.Voter {
			suffrage = raft.Nonvoter
		}
		conf.Servers = append(conf.Servers, raft.Server{
			ID: raft.ServerID(srv.ID), Address: raft.ServerAddress(srv.Addr), Suffrage: suffrage,
		})
	}
	err := s.raft.BootstrapCluster(conf).Error()
	switch {
	case errors.Is(err, raft.ErrCantBootstrap):
		return fmt.Errorf("%w: %w", ErrAlreadyBootstrapped, err)
	case err != nil:
		return fmt.Errorf("raftstore: bootstrap raft: %w", s.mapRaftErr(err))
	}
	s.logger.Info("raft cluster bootstrapped", "servers", len(servers))
	return nil
}

// Get returns a copy of the local value of key. It may lag the leader.
func (s *Store) Get(key string) ([]byte, bool) { return s.fsm.Get(key) }

// List returns a copy of the whole local map. It may lag the leader.
func (s *Store) List() map[string][]byte { return s.fsm.List() }

// Servers returns the latest Raft configuration known to this server.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("raftstore: raft configuration: %w", s.mapRaftErr(err))
	}
	var out []Server
	for _, srv := range f.Configuration().Servers {
		out = append(out, Server{
			ID: string(srv.ID), Addr: string(srv.Address), Voter: srv.Suffrage == raft.Voter,
		})
	}
	return out, nil
}

// Close shuts Raft down (without leaving the cluster or handing over
// leadership: see TransferLeadership), closes the transport and the bolt
// file, and closes the LeadershipChanges channel. Local reads keep
// answering from memory. Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		shutdown := s.raft.Shutdown()
		// Raft closes its transport only once its goroutines ended, and a
		// leader's heartbeat may be dialling a peer that vanished: closing
		// the transport first aborts such dials (see streamLayer).
		_ = s.trans.Close()
		err := shutdown.Error()
		close(s.stop)
		<-s.done
		<-s.watcherDone
		s.closeErr = errors.Join(err, s.bolt.Close())
	})
	return s.closeErr
}

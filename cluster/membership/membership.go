package membership

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// Member states as reported in Member.State. memberlist v0.7.0 does not
// expose its per-node state (suspect included) to delegates, so a member is
// "alive" until it announces a departure or is removed.
const (
	StateAlive   = "alive"
	StateLeaving = "leaving" // announced a graceful departure, still gossiping
	StateDead    = "dead"    // declared failed by the others
	StateLeft    = "left"    // left gracefully
)

// DefaultEventBuffer is the Events channel capacity when
// Config.EventBuffer is zero.
const DefaultEventBuffer = 256

// resolveTimeout bounds resolving a bind or advertise host name.
const resolveTimeout = 5 * time.Second

// DefaultRememberFailed is how long Failed lists a member after its
// failure when Config.RememberFailed is zero.
const DefaultRememberFailed = 10 * time.Minute

// ErrShutdown is returned by operations on a Membership that was
// shut down or, for UpdateMeta, has left.
var ErrShutdown = errors.New("membership: shut down")

// Config configures Start.
type Config struct {
	// Name is this node's unique name in the cluster. Required.
	Name string
	// BindAddr is the gossip host:port, bound for both TCP and UDP; port 0
	// picks a free port (see Membership.Addr). Host names are resolved.
	BindAddr string
	// AdvertiseAddr is the host other members use to reach this one, needed
	// when binding 0.0.0.0. Empty: the bind host.
	AdvertiseAddr string
	// AdvertisePort is the port other members use to reach this one, when
	// a port mapping or proxy stands in front of it. It needs a fixed bind
	// port and, binding every interface, AdvertiseAddr. Zero: the bound port.
	AdvertisePort int
	// Meta is gossiped to every member; its encoding must fit in
	// memberlist.MetaMaxSize (512) bytes.
	Meta Meta
	// Key, when set (16, 24 or 32 bytes), encrypts and authenticates gossip;
	// members with another key, or none, cannot join. Nil: plain gossip.
	Key []byte
	// AcceptKeys are further keys gossip from others may be encrypted with,
	// while the key is rotated (memberlist's keyring: Key encrypts, every
	// key decrypts). Needs Key.
	AcceptKeys [][]byte
	// Fast selects tight timings for tests: a stopped member is declared
	// dead in about one to two seconds. False: LAN timings.
	Fast bool
	// Logger receives memberlist's log lines; nil discards them.
	Logger *slog.Logger
	// EventBuffer is the Events channel capacity; zero means
	// DefaultEventBuffer.
	EventBuffer int
	// RememberFailed is how long Failed lists a member after failure
	// detection declared it dead; zero means DefaultRememberFailed.
	RememberFailed time.Duration
}

// Validate reports a configuration Start cannot use.
func (c Config) Validate() error {
	switch {
	case c.Name == "":
		return errors.New("membership: name is empty")
	case len(c.Key) != 0 && len(c.Key) != 16 && len(c.Key) != 24 && len(c.Key) != 32:
		return fmt.Errorf("membership: gossip key is %d bytes, want 16, 24 or 32", len(c.Key))
	case len(c.AcceptKeys) > 0 && len(c.Key) == 0:
		return errors.New("membership: accepted gossip keys without a key")
	case c.EventBuffer < 0:
		return errors.New("membership: negative event buffer")
	case c.AdvertisePort < 0 || c.AdvertisePort > 65535:
		return fmt.Errorf("membership: gossip advertise port %d out of range", c.AdvertisePort)
	case c.RememberFailed < 0:
		return errors.New("membership: negative failed member memory")
	}
	for _, k := range c.AcceptKeys {
		if len(k) != 16 && len(k) != 24 && len(k) != 32 {
			return fmt.Errorf("membership: accepted gossip key is %d bytes, want 16, 24 or 32", len(k))
		}
	}
	_, port, err := splitHostPort(c.BindAddr)
	if err != nil {
		return err
	}
	if c.AdvertisePort != 0 && port == 0 {
		// memberlist advertises the port it picked for port 0.
		return errors.New("membership: gossip advertise port needs a fixed bind port")
	}
	_, err = c.Meta.encode(0)
	return err
}

// Membership tracks the live members of the cluster over memberlist gossip
// and reports changes on Events.
type Membership struct {
	name string
	addr string // this node's advertised gossip address
	ml   *memberlist.Memberlist
	log  *slog.Logger

	// view mirrors memberlist's live nodes. It is filled by the event
	// callbacks, which memberlist runs under its node lock: the only place
	// a *memberlist.Node can be read without racing the in-place updates
	// memberlist makes to the nodes Members() hands out
	// (hashicorp/memberlist#306).
	viewMu sync.Mutex
	view   map[string]Member
	// failed holds the members declared dead after being seen alive, with
	// the time of their failure, for rejoining them after a partition
	// (memberlist itself stops probing the dead). Guarded by viewMu.
	failed     map[string]failedMember
	keepFailed time.Duration

	metaMu  sync.Mutex
	meta    Meta
	flags   byte   // flag*: set by AnnounceDraining and Leave
	encoded []byte // meta and flags as served to memberlist

	// Event hand-off: memberlist callbacks never block. When the channel is
	// full, lagging is set and kick wakes the resync goroutine, which
	// delivers an EventResync once the consumer makes room.
	eventsMu sync.Mutex // guards sends against closing events
	events   chan Event
	closed   bool
	lagging  atomic.Bool
	kick     chan struct{}
	done     chan struct{}
	wg       sync.WaitGroup

	lifeMu   sync.Mutex // serialises Leave, UpdateMeta and Shutdown
	shutdown atomic.Bool
}

// Start creates the local member and starts gossiping. It joins
// nobody; call Join with the addresses of existing members.
func Start(cfg Config) (*Membership, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.EventBuffer == 0 {
		cfg.EventBuffer = DefaultEventBuffer
	}
	if cfg.RememberFailed == 0 {
		cfg.RememberFailed = DefaultRememberFailed
	}
	encoded, _ := cfg.Meta.encode(0) // checked by Validate
	m := &Membership{
		name:    cfg.Name,
		log:     cfg.Logger.With("component", "membership"),
		meta:    cfg.Meta,
		encoded: encoded,
		view:    make(map[string]Member),
		events:  make(chan Event, cfg.EventBuffer),
		kick:    make(chan struct{}, 1),
		done:    make(chan struct{}),

		failed:     make(map[string]failedMember),
		keepFailed: cfg.RememberFailed,
	}
	mlc, err := m.memberlistConfig(cfg)
	if err != nil {
		return nil, err
	}
	m.wg.Add(1)
	go m.resyncLoop()
	ml, err := memberlist.Create(mlc)
	if err != nil {
		m.stopEvents()
		return nil, fmt.Errorf("membership: start memberlist: %w", err)
	}
	m.ml = ml
	// Create announced this node synchronously, so the view holds it.
	m.viewMu.Lock()
	m.addr = m.view[m.name].Addr
	m.viewMu.Unlock()
	return m, nil
}

// memberlistConfig translates cfg into memberlist's configuration.
func (m *Membership) memberlistConfig(cfg Config) (*memberlist.Config, error) {
	c := lanConfig()
	if cfg.Fast {
		c = fastConfig()
	}
	host, port, _ := splitHostPort(cfg.BindAddr)
	bindIP, err := resolveIP(host, "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("membership: gossip bind address: %w", err)
	}
	c.Name = cfg.Name
	c.BindAddr, c.BindPort = bindIP, port
	c.AdvertisePort = port
	if cfg.AdvertiseAddr != "" {
		if c.AdvertiseAddr, err = resolveIP(cfg.AdvertiseAddr, ""); err != nil {
			return nil, fmt.Errorf("membership: gossip advertise address: %w", err)
		}
	}
	if cfg.AdvertisePort != 0 {
		// memberlist applies the port only along with an address.
		if c.AdvertiseAddr == "" && net.ParseIP(bindIP).IsUnspecified() {
			return nil, errors.New("membership: gossip advertise port without an advertise address")
		}
		c.AdvertiseAddr = cmp.Or(c.AdvertiseAddr, bindIP)
		c.AdvertisePort = cfg.AdvertisePort
	}
	if len(cfg.Key) > 0 {
		keys := [][]byte{slices.Clone(cfg.Key)}
		for _, k := range cfg.AcceptKeys {
			keys = append(keys, slices.Clone(k))
		}
		ring, err := memberlist.NewKeyring(keys, keys[0])
		if err != nil {
			return nil, fmt.Errorf("membership: gossip keys: %w", err)
		}
		c.Keyring = ring
	}
	c.Delegate = metaDelegate{m}
	c.Events = eventDelegate{m}
	c.Logger = log.New(logWriter{log: m.log}, "", 0)
	c.LogOutput = nil
	return c, nil
}

// lanConfig is memberlist.DefaultLANConfig (gossip every 200 ms to 3
// nodes) with:
//   - ProbeInterval 500 ms (timeout 250 ms) and SuspicionMult 3 instead of
//     1 s, 500 ms and 4: a suspect dies after 1.5 s when another member
//     confirms the suspicion (4.5 s when none can) in clusters of up to 10
//     nodes, so a crashed owner's channels are served again about 3 s after
//     the crash rather than 6 s (fail-over target: 5 s). A node stalled
//     longer than that (a saturated host) is declared dead and fenced on
//     its return, at the cost of a hand-off.
//   - SuspicionMaxTimeoutMult 3 instead of 6: in a small cluster few members
//     can confirm a suspicion, and the unconfirmed timeout is the one that
//     applies.
//   - PushPullInterval and GossipToTheDeadTime 15 s instead of 30 s: full
//     state syncs are cheap for a few nodes. They only reach members still
//     thought alive: once both sides of a partition declared the other dead,
//     only a Join (see Failed) merges them again.
//   - DeadNodeReclaimTime 10 s: a node restarted under the same name on a
//     new address (a rescheduled container) may rejoin once it has been
//     dead that long, instead of being refused as a name conflict.
func lanConfig() *memberlist.Config {
	c := memberlist.DefaultLANConfig()
	c.ProbeInterval = 500 * time.Millisecond
	c.ProbeTimeout = 250 * time.Millisecond
	c.SuspicionMult = 3
	c.SuspicionMaxTimeoutMult = 3
	c.PushPullInterval = 15 * time.Second
	c.GossipToTheDeadTime = 15 * time.Second
	c.DeadNodeReclaimTime = 10 * time.Second
	return c
}

// fastConfig suits in-process tests on loopback: probes every 200 ms,
// suspicion of 400-800 ms, so a stopped member is dead within about 1-2 s.
func fastConfig() *memberlist.Config {
	c := memberlist.DefaultLocalConfig()
	c.ProbeInterval = 200 * time.Millisecond
	c.ProbeTimeout = 100 * time.Millisecond
	c.SuspicionMult = 2
	c.SuspicionMaxTimeoutMult = 2
	c.GossipInterval = 20 * time.Millisecond
	c.PushPullInterval = 2 * time.Second
	c.GossipToTheDeadTime = 2 * time.Second
	c.DeadNodeReclaimTime = time.Second
	c.TCPTimeout = 2 * time.Second
	return c
}

// LocalName returns this node's name.
func (m *Membership) LocalName() string { return m.name }

// Addr returns this node's gossip address (host:port) as advertised to the
// others; other nodes Join with it.
func (m *Membership) Addr() string { return m.addr }

// Join contacts the given gossip addresses and syncs state with them. It
// returns how many it reached; an error only if it reached none.
func (m *Membership) Join(addrs []string) (int, error) {
	if m.shutdown.Load() {
		return 0, ErrShutdown
	}
	n, err := m.ml.Join(addrs)
	if err != nil {
		return n, fmt.Errorf("membership: join %s: %w", strings.Join(addrs, ","), err)
	}
	return n, nil
}

// Members returns the live members (alive or leaving), sorted by name.
func (m *Membership) Members() []Member {
	m.viewMu.Lock()
	out := make([]Member, 0, len(m.view))
	for _, mem := range m.view {
		out = append(out, mem)
	}
	m.viewMu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Failed returns, sorted by name, the members that failure detection
// declared dead after this node saw them alive, within RememberFailed of
// their failure and not alive since. Members that left gracefully are not
// listed (but see EventLeave: a rare leave is reported as a failure).
func (m *Membership) Failed() []Member {
	now := time.Now()
	m.viewMu.Lock()
	pruneFailed(m.failed, now, m.keepFailed)
	out := make([]Member, 0, len(m.failed))
	for _, f := range m.failed {
		out = append(out, f.Member)
	}
	m.viewMu.Unlock()
	slices.SortFunc(out, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Events returns the channel of membership changes. It is closed by
// Shutdown. See Event and EventResync for the delivery contract.
func (m *Membership) Events() <-chan Event { return m.events }

// UpdateMeta replaces this node's metadata and gossips it, waiting up to
// timeout for the broadcast; others see an EventUpdate.
func (m *Membership) UpdateMeta(meta Meta, timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	// After Leave, an update would gossip this node back to life.
	if m.shutdown.Load() || m.isLeaving() {
		return ErrShutdown
	}
	if err := m.setMeta(meta, m.currentFlags()); err != nil {
		return err
	}
	if err := m.ml.UpdateNode(gossipWait(timeout)); err != nil {
		return fmt.Errorf("membership: gossip metadata update: %w", err)
	}
	return nil
}

// AnnounceDraining tells the others, within timeout, that this node started
// shutting down and is handing its channels over: they see an EventUpdate
// with Draining set. It stays a member, alive and owning what it holds,
// until Leave. Nodes that all drain at once know there is nobody to hand
// channels to. Calling it again does nothing.
func (m *Membership) AnnounceDraining(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shutdown.Load() || m.isLeaving() {
		return ErrShutdown
	}
	flags := m.currentFlags()
	if flags&flagDraining != 0 {
		return nil
	}
	m.metaMu.Lock()
	meta := m.meta
	m.metaMu.Unlock()
	if err := m.setMeta(meta, flags|flagDraining); err != nil {
		return err
	}
	if err := m.ml.UpdateNode(gossipWait(timeout)); err != nil {
		return fmt.Errorf("membership: announce draining: %w", err)
	}
	return nil
}

// Leave announces a graceful departure and waits up to timeout in all for
// the broadcasts to go out; the others then report this node as "left".
// The node keeps answering gossip until Shutdown. Calling it again does
// nothing.
//
// memberlist reports a leave and a failure through the same callback and
// does not tell them apart, so the intent travels first as a metadata flag
// (others see an EventUpdate with State "leaving"), then memberlist's own
// leave message follows.
func (m *Membership) Leave(timeout time.Duration) error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shutdown.Load() {
		return ErrShutdown
	}
	if m.isLeaving() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	var errs []error
	m.metaMu.Lock()
	meta := m.meta
	m.metaMu.Unlock()
	if err := m.setMeta(meta, m.currentFlags()|flagLeaving); err != nil {
		errs = append(errs, err)
	} else if err := m.ml.UpdateNode(gossipWait(time.Until(deadline))); err != nil {
		errs = append(errs, fmt.Errorf("membership: announce leave: %w", err))
	}
	// Leave anyway: a late announcement only makes others report "dead".
	if err := m.ml.Leave(gossipWait(time.Until(deadline))); err != nil {
		errs = append(errs, fmt.Errorf("membership: leave: %w", err))
	}
	return errors.Join(errs...)
}

// gossipWait turns a timeout into one memberlist honours: it waits forever
// on zero or less.
func gossipWait(d time.Duration) time.Duration { return max(d, time.Millisecond) }

func (m *Membership) setMeta(meta Meta, flags byte) error {
	b, err := meta.encode(flags)
	if err != nil {
		return err
	}
	m.metaMu.Lock()
	m.meta, m.flags, m.encoded = meta, flags, b
	m.metaMu.Unlock()
	return nil
}

func (m *Membership) currentFlags() byte {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	return m.flags
}

func (m *Membership) isLeaving() bool { return m.currentFlags()&flagLeaving != 0 }

// Shutdown stops gossiping without announcing a departure (call Leave
// first for that), stops event delivery and closes Events. Calling it
// again returns nil.
func (m *Membership) Shutdown() error {
	m.lifeMu.Lock()
	defer m.lifeMu.Unlock()
	if m.shutdown.Swap(true) {
		return nil
	}
	err := m.ml.Shutdown()
	m.stopEvents()
	if err != nil {
		return fmt.Errorf("membership: memberlist shutdown: %w", err)
	}
	return nil
}

// splitHostPort parses a gossip bind address.
func splitHostPort(addr string) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("membership: gossip bind address %q: %w", addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("membership: gossip bind address %q: bad port", addr)
	}
	return host, port, nil
}

// resolveIP returns host as an IP string, resolving a name (memberlist
// takes IPs only; container setups advertise service names). An empty host
// yields def.
func resolveIP(host, def string) (string, error) {
	if host == "" {
		return def, nil
	}
	if ip := net.ParseIP(host); ip != nil {
		return ip.String(), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resolveTimeout)
	defer cancel()
	ips, err := net.DefaultResolver.LookupIP(ctx, "ip", host)
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", host, err)
	}
	// Prefer IPv4: memberlist peers commonly join with IPv4 addresses.
	for _, ip := range ips {
		if ip.To4() != nil {
			return ip.String(), nil
		}
	}
	return ips[0].String(), nil
}

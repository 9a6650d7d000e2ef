// Package load drives a presence service, a trivial baseline handler or a
// Redis store with the same browser-like workload and measures it.
package load

import (
	"errors"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
)

// Kind is what an operation does to its channels.
type Kind uint8

// The kinds of operation, in the order of Mix.
const (
	Heartbeat Kind = iota // a present client re-marks itself present
	Enter                 // an absent client marks itself present
	Leave                 // a present client leaves
	numKinds
)

// String names the kind as reports do.
func (k Kind) String() string {
	return [...]string{"heartbeat", "enter", "leave"}[k]
}

// Limits of the population shape.
const (
	// MaxClientsPerUser bounds K: a user's clients are bits of a uint64.
	MaxClientsPerUser = 64
	// MaxChannelsPerCall is the contract's limit of channels in one update.
	MaxChannelsPerCall = 50
)

// ErrBadPopulation is wrapped by NewPopulation for an invalid shape.
var ErrBadPopulation = errors.New("load: invalid population")

// Mix is the share of heartbeats, enters and leaves among operations.
type Mix [numKinds]float64

// ParseMix reads "h,e,l" (three non-negative numbers, normalised to sum 1).
func ParseMix(s string) (Mix, error) {
	parts := strings.Split(s, ",")
	var m Mix
	if len(parts) != len(m) {
		return m, fmt.Errorf("mix %q: want three numbers heartbeat,enter,leave", s)
	}
	var sum float64
	for i, p := range parts {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || v < 0 {
			return m, fmt.Errorf("mix %q: %q is not a non-negative number", s, p)
		}
		m[i], sum = v, sum+v
	}
	if sum == 0 {
		return m, fmt.Errorf("mix %q: all zero", s)
	}
	for i := range m {
		m[i] /= sum
	}
	return m, nil
}

// PopulationConfig is the shape of the simulated browsers.
type PopulationConfig struct {
	// RunID makes user and client ids unique to this run, so state left by
	// an earlier run on the server does not mix with this one.
	RunID string
	// Users signed in; each has ClientsPerUser clients (browser tabs).
	Users, ClientsPerUser int
	// Channels in the pool, named Prefix+index.
	Channels int
	Prefix   string
	// ChannelsPerUser is how many channels each user's clients follow:
	// user u follows channels (u*ChannelsPerUser + j) mod Channels.
	ChannelsPerUser int
	// ChannelsPerCall is how many channels one heartbeat carries (at most
	// ChannelsPerUser). Enters and leaves carry one.
	ChannelsPerCall int
	// Mix of operation kinds.
	Mix Mix
}

// Validate reports an unusable shape.
func (c PopulationConfig) Validate() error {
	switch {
	case c.Users < 1, c.ClientsPerUser < 1, c.Channels < 1, c.ChannelsPerUser < 1, c.ChannelsPerCall < 1:
		return fmt.Errorf("%w: users, clients, channels and channels per user/call must be positive", ErrBadPopulation)
	case c.ClientsPerUser > MaxClientsPerUser:
		return fmt.Errorf("%w: at most %d clients per user", ErrBadPopulation, MaxClientsPerUser)
	case c.ChannelsPerUser > c.Channels:
		return fmt.Errorf("%w: channels per user (%d) exceeds channels (%d)", ErrBadPopulation, c.ChannelsPerUser, c.Channels)
	case c.ChannelsPerUser > MaxChannelsPerCall, c.ChannelsPerCall > c.ChannelsPerUser:
		return fmt.Errorf("%w: need channels per call <= channels per user <= %d", ErrBadPopulation, MaxChannelsPerCall)
	case c.Users > 1<<30 || c.Channels > 1<<30:
		return fmt.Errorf("%w: too many users or channels", ErrBadPopulation)
	}
	return nil
}

// pair is one user's membership of one channel: which of the user's clients
// the tool believes present, and a busy flag held by the one operation in
// flight on it, so the tool's belief never races the server's order.
type pair struct {
	busy    atomic.Bool
	present atomic.Uint64
}

// Population holds the simulated clients and what the tool believes the
// server knows about them. It is safe for concurrent use.
type Population struct {
	cfg   PopulationConfig
	pairs []pair // index user*ChannelsPerUser + j
	// left queues memberships in the order they were left, so enters take
	// the oldest first: a leave is followed, later, by an enter.
	left     chan slot
	warmNext atomic.Int64
	coolNext atomic.Int64
}

// NewPopulation returns a population with every client absent.
func NewPopulation(cfg PopulationConfig) (*Population, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := cfg.Users * cfg.ChannelsPerUser
	return &Population{cfg: cfg, pairs: make([]pair, n), left: make(chan slot, min(n*cfg.ClientsPerUser, maxLeftQueue))}, nil
}

// slot is one client's membership of one channel.
type slot struct {
	pair   int32
	client int8
}

// maxLeftQueue bounds the queue of left memberships; beyond it enters find
// absent memberships by probing.
const maxLeftQueue = 1 << 16

// Config returns the shape.
func (p *Population) Config() PopulationConfig { return p.cfg }

// UserID is the token subject of user u.
func (p *Population) UserID(u int) string { return p.cfg.RunID + "-u" + strconv.Itoa(u) }

// ClientID is the client_id of client k of user u.
func (p *Population) ClientID(u, k int) string {
	return p.cfg.RunID + "-u" + strconv.Itoa(u) + "-c" + strconv.Itoa(k)
}

// ChannelName is the name of channel c.
func (p *Population) ChannelName(c int) string { return p.cfg.Prefix + strconv.Itoa(c) }

// ParseUser returns the index of a user id minted by UserID.
func (p *Population) ParseUser(id string) (int, bool) {
	rest, ok := strings.CutPrefix(id, p.cfg.RunID+"-u")
	if !ok {
		return 0, false
	}
	u, err := strconv.Atoi(rest)
	return u, err == nil && u >= 0 && u < p.cfg.Users
}

// ParseChannel returns the index of a channel named by ChannelName.
func (p *Population) ParseChannel(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, p.cfg.Prefix)
	if !ok {
		return 0, false
	}
	c, err := strconv.Atoi(rest)
	return c, err == nil && c >= 0 && c < p.cfg.Channels
}

// channelOf is the channel of user u's j-th membership.
func (p *Population) channelOf(u, j int) int {
	return (u*p.cfg.ChannelsPerUser + j) % p.cfg.Channels
}

// Slots is the number of (client, channel) memberships.
func (p *Population) Slots() int { return len(p.pairs) * p.cfg.ClientsPerUser }

// PresentSlots counts the memberships the tool believes present.
func (p *Population) PresentSlots() int {
	n := 0
	for i := range p.pairs {
		n += bits.OnesCount64(p.pairs[i].present.Load())
	}
	return n
}

// MarkAllPresent sets every client present without telling any server
// (the baseline handler keeps no state).
func (p *Population) MarkAllPresent() {
	all := uint64(1)<<p.cfg.ClientsPerUser - 1
	if p.cfg.ClientsPerUser == MaxClientsPerUser {
		all = ^uint64(0)
	}
	for i := range p.pairs {
		p.pairs[i].present.Store(all)
	}
}

// Op is one update call: a client and the memberships it touches, each
// locked until Finish.
type Op struct {
	Kind         Kind
	User, Client int
	// Pairs are the locked membership indices; Channels their channels.
	Pairs    []int
	Channels []int
	// Entering marks memberships whose user had no present client, so the
	// call should make the user enter (and a subscriber see a message).
	Entering []bool
	// Applied is set by the target: the server accepted that channel.
	Applied []bool
	// Stamp identifies the call's enter for delivery tracking (0: none).
	Stamp uint64
}

func (op *Op) reset(kind Kind, u, k int) {
	op.Kind, op.User, op.Client, op.Stamp = kind, u, k, 0
	op.Pairs, op.Channels = op.Pairs[:0], op.Channels[:0]
	op.Entering, op.Applied = op.Entering[:0], op.Applied[:0]
}

func (op *Op) add(pi, ch int, entering bool) {
	op.Pairs = append(op.Pairs, pi)
	op.Channels = append(op.Channels, ch)
	op.Entering = append(op.Entering, entering)
	op.Applied = append(op.Applied, false)
}

// AnyEntering reports whether the call should make its user enter somewhere.
func (op *Op) AnyEntering() bool {
	for _, e := range op.Entering {
		if e {
			return true
		}
	}
	return false
}

// pickTries bounds the random probes for a client able to do a kind.
const pickTries = 16

// Next fills op with a random operation drawn from the mix. It returns
// false when every probe found its memberships busy or unsuitable.
func (p *Population) Next(rng *rand.Rand, op *Op) bool {
	want := p.drawKind(rng)
	for _, k := range fallback(want) {
		if p.tryKind(rng, k, op) {
			return true
		}
	}
	return false
}

// fallback is the order of kinds tried when the drawn one has no candidate
// (an enter when every client is present). A failed enter or leave becomes
// a heartbeat, never the opposite change, which would skew the balance of
// present and absent clients.
func fallback(k Kind) [numKinds]Kind {
	switch k {
	case Enter:
		return [numKinds]Kind{Enter, Heartbeat, Leave}
	case Leave:
		return [numKinds]Kind{Leave, Heartbeat, Enter}
	}
	return [numKinds]Kind{Heartbeat, Enter, Leave}
}

func (p *Population) drawKind(rng *rand.Rand) Kind {
	x := rng.Float64()
	for k := range numKinds - 1 {
		if x < p.cfg.Mix[k] {
			return k
		}
		x -= p.cfg.Mix[k]
	}
	return numKinds - 1
}

func (p *Population) tryKind(rng *rand.Rand, kind Kind, op *Op) bool {
	if kind == Enter && p.enterLeft(op) {
		return true
	}
	limit := 1
	if kind == Heartbeat {
		limit = p.cfg.ChannelsPerCall
	}
	m := p.cfg.ChannelsPerUser
	for range pickTries {
		u, k := rng.IntN(p.cfg.Users), rng.IntN(p.cfg.ClientsPerUser)
		op.reset(kind, u, k)
		bit := uint64(1) << k
		start := rng.IntN(m)
		for i := 0; i < m && len(op.Pairs) < limit; i++ {
			j := (start + i) % m
			pi := u*m + j
			pr := &p.pairs[pi]
			if (pr.present.Load()&bit != 0) == (kind == Enter) || !pr.busy.CompareAndSwap(false, true) {
				continue
			}
			// Re-read under the lock: another operation may have finished.
			cur := pr.present.Load()
			if (cur&bit != 0) == (kind == Enter) {
				pr.busy.Store(false)
				continue
			}
			op.add(pi, p.channelOf(u, j), kind == Enter && cur == 0)
		}
		if len(op.Pairs) > 0 {
			return true
		}
	}
	return false
}

// enterLeft re-enters the oldest membership that was left, when it is
// still absent and free.
func (p *Population) enterLeft(op *Op) bool {
	for range pickTries {
		var sl slot
		select {
		case sl = <-p.left:
		default:
			return false
		}
		pi, k := int(sl.pair), int(sl.client)
		pr := &p.pairs[pi]
		if !pr.busy.CompareAndSwap(false, true) {
			continue
		}
		cur := pr.present.Load()
		if cur&(1<<k) != 0 {
			pr.busy.Store(false)
			continue
		}
		u, j := pi/p.cfg.ChannelsPerUser, pi%p.cfg.ChannelsPerUser
		op.reset(Enter, u, k)
		op.add(pi, p.channelOf(u, j), cur == 0)
		return true
	}
	return false
}

// NextWarmup fills op with the next client's enter into all its channels
// (one call per client, as a page load does). It returns false once every
// client has had its call.
func (p *Population) NextWarmup(op *Op) bool {
	i := int(p.warmNext.Add(1) - 1)
	if i >= p.cfg.Users*p.cfg.ClientsPerUser {
		return false
	}
	// Consecutive calls go to different users, so a user's clients are
	// spread over the warmup rather than all in the same instant.
	u, k := i%p.cfg.Users, i/p.cfg.Users
	op.reset(Enter, u, k)
	for j := range p.cfg.ChannelsPerUser {
		pi := u*p.cfg.ChannelsPerUser + j
		p.lock(pi)
		op.add(pi, p.channelOf(u, j), p.pairs[pi].present.Load() == 0)
	}
	return true
}

// NextCleanup fills op with the next client's leave of every channel it is
// present in; it returns false once every client was visited. Clients with
// nothing to leave are skipped.
func (p *Population) NextCleanup(op *Op) bool {
	for {
		i := int(p.coolNext.Add(1) - 1)
		if i >= p.cfg.Users*p.cfg.ClientsPerUser {
			return false
		}
		u, k := i%p.cfg.Users, i/p.cfg.Users
		op.reset(Leave, u, k)
		for j := range p.cfg.ChannelsPerUser {
			pi := u*p.cfg.ChannelsPerUser + j
			p.lock(pi)
			if p.pairs[pi].present.Load()&(1<<k) == 0 {
				p.pairs[pi].busy.Store(false)
				continue
			}
			op.add(pi, p.channelOf(u, j), false)
		}
		if len(op.Pairs) > 0 {
			return true
		}
	}
}

// lock spins until membership pi is free; used by warmup and cleanup, where
// waiting is rare and short.
func (p *Population) lock(pi int) {
	for !p.pairs[pi].busy.CompareAndSwap(false, true) {
		runtime.Gosched()
	}
}

// Finish records the outcome of op (its Applied flags) and releases its
// memberships.
func (p *Population) Finish(op *Op) {
	bit := uint64(1) << op.Client
	for i, pi := range op.Pairs {
		pr := &p.pairs[pi]
		if op.Applied[i] {
			switch op.Kind {
			case Enter:
				pr.present.Store(pr.present.Load() | bit)
			case Leave:
				pr.present.Store(pr.present.Load() &^ bit)
				p.queueLeft(pi, op.Client)
			}
		}
		pr.busy.Store(false)
	}
}

// queueLeft remembers a left membership for a later enter; when the queue
// is full the membership is found by probing instead.
func (p *Population) queueLeft(pi, client int) {
	select {
	case p.left <- slot{pair: int32(pi), client: int8(client)}:
	default:
	}
}

package presence

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/presencehq/presence/actor"
	"github.com/presencehq/presence/clock"
)

// Engine defaults.
const (
	// DefaultMailboxSize bounds each channel actor's mailbox.
	DefaultMailboxSize = 1024
	// DefaultIdleAfter is how long a channel without clients stays in memory
	// (with its backlog) after its last message.
	DefaultIdleAfter = 10 * time.Minute
)

// ConfigSource decides the config of a channel: (nil, nil) means the channel
// does not exist. *Resolver implements it.
type ConfigSource interface {
	Resolve(ctx context.Context, channel string) (*Config, error)
}

// Publisher receives every message a channel owned here publishes, in id
// order per channel, on the channel's actor goroutine: it must not block for
// long. *Hub implements it; a cluster wraps it to push to remote subscribers.
type Publisher interface {
	Publish(m *Message)
}

// Deliveries follows the channels' message sequences for a delivery that
// outlives their holder (webhooks): the position acknowledged so far is
// channel state (ChannelSnapshot.Delivered, moved by Engine.Acknowledge),
// which hand-offs, replicas and merges carry.
type Deliveries interface {
	// Installed is called on the channel's goroutine when a state was
	// installed here (a hand-off, a promoted copy, a merge), before the
	// channel publishes anything after it: the messages of s after
	// s.Delivered may not have been delivered. It must not block, and s
	// must not be modified.
	Installed(s *ChannelSnapshot)
	// Pending reports whether channel has events not acknowledged yet: the
	// channel is not passivated meanwhile, so that its position stays on
	// its replica.
	Pending(channel string) bool
}

// EngineConfig configures an Engine.
type EngineConfig struct {
	// Clock drives expiry, message times and passivation; nil means clock.Real.
	Clock clock.Clock
	// Logger receives actor panics and failed subscriptions; nil discards.
	Logger *slog.Logger
	// Configs resolves channel configs. Required.
	Configs ConfigSource
	// Metrics receives the presence metrics; nil means unregistered metrics.
	Metrics *Metrics
	// Hub fans messages out to this node's subscribers and serves Subscribe;
	// nil means the engine makes (and closes) its own.
	Hub *Hub
	// Publisher receives published messages; nil means the Hub.
	Publisher Publisher
	// Replicator, when set, receives every change of every channel and
	// publishes their messages instead of Publisher (see Replicator).
	Replicator Replicator
	// Deliveries, when set, hears of every installed state and keeps
	// channels with undelivered events from passivating.
	Deliveries Deliveries
	// MailboxSize bounds each channel's mailbox; past it calls fail with
	// ErrOverloaded. 0 means DefaultMailboxSize.
	MailboxSize int
	// IdleAfter is how long a channel without clients stays in memory after
	// its last message. 0 means DefaultIdleAfter; it may not be shorter than
	// the backlog's minimum age (BacklogMinAgeSeconds).
	IdleAfter time.Duration
	// SubscriberBuffer is the per-subscription event buffer of the Hub the
	// engine makes; 0 means DefaultSubscriberBuffer.
	SubscriberBuffer int
}

// Validate reports the first invalid field.
func (c EngineConfig) Validate() error {
	switch {
	case c.Configs == nil:
		return fmt.Errorf("%w: engine needs a ConfigSource", ErrInvalid)
	case c.MailboxSize < 0:
		return fmt.Errorf("%w: engine mailbox size %d is negative", ErrInvalid, c.MailboxSize)
	case c.IdleAfter < 0 || c.IdleAfter > 0 && c.IdleAfter < BacklogMinAgeSeconds*time.Second:
		return fmt.Errorf("%w: engine idle time %v is shorter than the backlog age %ds",
			ErrInvalid, c.IdleAfter, BacklogMinAgeSeconds)
	case c.SubscriberBuffer < 0:
		return fmt.Errorf("%w: subscriber buffer %d is negative", ErrInvalid, c.SubscriberBuffer)
	}
	return nil
}

// Engine runs the channels owned by this node, one actor per active channel,
// and serves presence.Service for a node that owns every channel. Configs are
// resolved on the caller's goroutine, so a heartbeat is a single Tell, and
// each channel's mailbox is FIFO, so a caller reads its own writes.
//
// The per-channel owner operations (Present, Leave, State, Since, Export,
// Install, Remove) are exported for a cluster layer that forwards requests to
// the owner and hands channels over.
type Engine struct {
	clk        clock.Clock
	log        *slog.Logger
	configs    ConfigSource
	metrics    *Metrics
	hub        *Hub
	ownHub     bool // made by the engine, so closed by it
	publisher  Publisher
	replicator Replicator // nil: messages go straight to publisher
	deliveries Deliveries // nil: none
	wheel      *wheel[*client]
	actors     *actor.System[string, op]
	// idFloor is the highest message id issued or installed on this node.
	// New channel incarnations start above it, so their ids never repeat one
	// a client may have seen, even when the clock has not moved.
	idFloor atomic.Int64
}

var _ Service = (*Engine)(nil)

// NewEngine starts an engine: its timer wheel ticks until Close.
func NewEngine(cfg EngineConfig) (*Engine, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Metrics == nil {
		cfg.Metrics = NewMetrics(nil)
	}
	if cfg.IdleAfter == 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.MailboxSize == 0 {
		cfg.MailboxSize = DefaultMailboxSize
	}
	e := &Engine{clk: cfg.Clock, log: cfg.Logger, configs: cfg.Configs, metrics: cfg.Metrics, hub: cfg.Hub,
		publisher: cfg.Publisher, replicator: cfg.Replicator, deliveries: cfg.Deliveries}
	if e.hub == nil {
		hub, err := NewHub(HubConfig{Metrics: cfg.Metrics, Logger: cfg.Logger, BufferSize: cfg.SubscriberBuffer})
		if err != nil {
			return nil, err
		}
		e.hub, e.ownHub = hub, true
	}
	if e.publisher == nil {
		e.publisher = e.hub
	}
	e.wheel = newWheel(cfg.Clock, e.deliverExpiry, cfg.Metrics.observeLag)
	e.actors = actor.NewSystem(actor.Options{
		MailboxSize: cfg.MailboxSize,
		IdleAfter:   cfg.IdleAfter,
		Clock:       cfg.Clock,
		Logger:      cfg.Logger,
	}, e.newChannelActor)
	e.wheel.start()
	return e, nil
}

// Close ends every subscription of a Hub the engine made, stops the timer
// wheel and every channel actor. Channel state is lost (hand it off with
// Export first).
func (e *Engine) Close(ctx context.Context) error {
	if e.ownHub {
		e.hub.Close()
	}
	e.wheel.stopWheel()
	if err := e.actors.Shutdown(ctx); err != nil {
		return fmt.Errorf("presence: engine close: %w", err)
	}
	return nil
}

// Hub returns the engine's local fan-out, which also accepts messages
// published by remote owners.
func (e *Engine) Hub() *Hub { return e.hub }

// Channels returns the channels with a running actor on this node, sorted.
func (e *Engine) Channels() []string {
	keys := e.actors.Keys()
	slices.Sort(keys)
	return keys
}

// Get returns each channel's state as u may see it; nil where the channel
// does not exist, its name is invalid, or u may not view it.
func (e *Engine) Get(ctx context.Context, u *User, channels []string) (map[string]*ChannelState, error) {
	out := make(map[string]*ChannelState, len(channels))
	for _, name := range channels {
		if _, done := out[name]; done {
			continue
		}
		if len(out) == MaxChannelsPerCall {
			return nil, fmt.Errorf("%w: more than %d channels", ErrInvalid, MaxChannelsPerCall)
		}
		st, err := e.State(ctx, u, name)
		if err != nil {
			return nil, err
		}
		out[name] = st
	}
	return out, nil
}

// Update marks clientID of u present in each present channel (true where
// applied; false where the channel does not exist or u may not enter), then
// makes it leave each leave channel, never revealing whether those exist.
func (e *Engine) Update(ctx context.Context, u *User, clientID string, present, leave []string) (map[string]bool, error) {
	if u.Anonymous() {
		return nil, fmt.Errorf("%w: anonymous users cannot be present", ErrForbidden)
	}
	if err := checkClientID(clientID); err != nil {
		return nil, err
	}
	if len(present) > MaxChannelsPerCall || len(leave) > MaxLeaveChannels {
		return nil, fmt.Errorf("%w: more than %d present or %d leave channels", ErrInvalid, MaxChannelsPerCall, MaxLeaveChannels)
	}
	out := make(map[string]bool, len(present))
	for _, name := range present {
		ok, err := e.Present(ctx, u, clientID, name)
		if err != nil {
			return nil, err
		}
		out[name] = ok
	}
	for _, name := range leave {
		if err := e.Leave(ctx, u.ID, clientID, name); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Subscribe streams the events of the channels of from.
func (e *Engine) Subscribe(ctx context.Context, u *User, from map[string]int64) (Subscription, error) {
	return e.hub.Subscribe(ctx, u, from, e)
}

func checkClientID(id string) error {
	if id == "" || len(id) > MaxClientIDBytes {
		return fmt.Errorf("%w: client id must be 1 to %d bytes", ErrInvalid, MaxClientIDBytes)
	}
	return nil
}

// Present marks clientID of u present in channel. It reports false when the
// channel does not exist (or its name is invalid), u may not enter it, or
// the channel holds its MaxUsers users and u is not one of them. It does
// not wait for the channel unless the channel has a cap (only the channel
// knows who is present): the call is queued, and later calls for the same
// channel are processed after it. A heartbeat of a present client into an
// idle channel is applied at once on the caller's goroutine instead, which
// is what makes heartbeats cheap.
func (e *Engine) Present(ctx context.Context, u *User, clientID, channel string) (bool, error) {
	return e.present(ctx, u, clientID, channel, nil, true, 0)
}

// errChannelFull answers the Done of a present refused by the channel's
// cap; the engine turns it into false.
var errChannelFull = errors.New("presence: channel full")

// admitted turns the answer to a present's Done into Present's answer.
func admitted(err error) (bool, error) {
	if errors.Is(err, errChannelFull) {
		return false, nil
	}
	return true, err
}

// PresentAck is Present that also waits until the Replicator answers the
// change's Done: once it returns true without error, the change is as safe
// as the Replicator makes it. Without a Replicator it is Present.
//
// It trusts its caller (the router, which checks every name once where a
// request enters the node) with the channel's name: an invalid one is not
// checked again, and finds no config, so it is answered false anyway.
func (e *Engine) PresentAck(ctx context.Context, u *User, clientID, channel string) (bool, error) {
	return e.PresentAckAt(ctx, u, clientID, channel, 0)
}

// PresentAckAt is PresentAck for a present sent at sent (unix ns; 0 or a
// time after now means now): the client's expiry counts from when the
// present was sent, not from when it was applied, so a present that
// waited on its way (forwarded, held behind a hand-off) cannot outlive a
// leave sent after it when two copies of the channel are merged (last
// writer wins by time). A heartbeat sent before the one that set the
// client's expiry moves nothing.
func (e *Engine) PresentAckAt(ctx context.Context, u *User, clientID, channel string, sent int64) (bool, error) {
	if e.replicator == nil {
		return e.present(ctx, u, clientID, channel, nil, false, sent)
	}
	done := make(chan error, 1)
	ok, err := e.present(ctx, u, clientID, channel, done, false, sent)
	if !ok || err != nil {
		return ok, err
	}
	return admitted(waitDone(ctx, channel, done))
}

// present marks the client present; checkName checks the channel's name
// first (the config source needs a name's prefix too, so an invalid name
// finds no config either way). sent is PresentAckAt's.
func (e *Engine) present(ctx context.Context, u *User, clientID, channel string, done chan<- error, checkName bool, sent int64) (bool, error) {
	if err := checkClientID(clientID); err != nil {
		return false, err
	}
	if checkName && !ValidChannelName(channel) {
		return false, nil
	}
	cfg, err := e.configs.Resolve(ctx, channel)
	if err != nil {
		return false, fmt.Errorf("presence: config of %s: %w", channel, err)
	}
	if cfg == nil || !cfg.CanEnter(u) {
		return false, nil
	}
	at := e.clk.Now().UnixNano()
	if sent > 0 && sent < at {
		at = sent
	}
	o := op{kind: opPresent, user: u, clientID: clientID, cfg: cfg, at: at, done: done}
	var answer chan error
	if cfg.MaxUsers > 0 && done == nil {
		// Only the channel knows whether it is full: wait for its answer.
		answer = make(chan error, 1)
		o.done = answer
	}
	if err := e.actors.TellInline(channel, o); err != nil {
		return false, actorError(channel, err)
	}
	if answer != nil {
		return admitted(waitDone(ctx, channel, answer))
	}
	return true, nil
}

// waitDone waits for a change's answer from the Replicator. A heartbeat's
// is usually there already: taking it first spares the request's context
// the allocation of its Done channel.
func waitDone(ctx context.Context, channel string, done <-chan error) error {
	select {
	case err := <-done:
		return err
	default:
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %s: change not acknowledged: %w", ErrUnavailable, channel, ctx.Err())
	}
}

// Leave makes client clientID of user userID leave channel at once. It says
// nothing about whether the channel exists or the client was present.
func (e *Engine) Leave(_ context.Context, userID, clientID, channel string) error {
	if !ValidChannelName(channel) {
		return nil
	}
	_, err := e.tellLeave(userID, clientID, channel, nil)
	return err
}

// LeaveAck is Leave that also waits until the Replicator answers the
// change's Done. Like PresentAck it trusts its caller with the channel's
// name: a channel of an invalid name has no actor, so nothing happens.
func (e *Engine) LeaveAck(ctx context.Context, userID, clientID, channel string) error {
	if e.replicator == nil {
		_, err := e.tellLeave(userID, clientID, channel, nil)
		return err
	}
	done := make(chan error, 1)
	sent, err := e.tellLeave(userID, clientID, channel, done)
	if !sent || err != nil {
		return err
	}
	return waitDone(ctx, channel, done)
}

// tellLeave queues a leave; sent is false when there was nothing to do.
func (e *Engine) tellLeave(userID, clientID, channel string, done chan<- error) (sent bool, err error) {
	// A channel without an actor has no client: nothing to do.
	err = e.actors.TellExisting(channel, op{kind: opLeave, userID: userID, clientID: clientID, at: e.clk.Now().UnixNano(), done: done})
	if errors.Is(err, actor.ErrNoActor) {
		return false, nil
	}
	if err != nil {
		return false, actorError(channel, err)
	}
	return true, nil
}

// State returns the state of channel as u may see it, or nil when it does
// not exist, its name is invalid, or u may not view it.
func (e *Engine) State(ctx context.Context, u *User, channel string) (*ChannelState, error) {
	cfg, err := e.viewable(ctx, u, channel)
	if cfg == nil || err != nil {
		return nil, err
	}
	return e.askState(ctx, channel, cfg, false)
}

// FullState returns the whole state of channel, users included even when it
// is count-only (the server side's read), or nil when it does not exist or
// its name is invalid.
func (e *Engine) FullState(ctx context.Context, channel string) (*ChannelState, error) {
	cfg, err := e.config(ctx, channel)
	if cfg == nil || err != nil {
		return nil, err
	}
	return e.askState(ctx, channel, cfg, true)
}

func (e *Engine) askState(ctx context.Context, channel string, cfg *Config, full bool) (*ChannelState, error) {
	st, err := actor.Ask(ctx, e.actors, channel, func(r chan<- *ChannelState) op {
		return op{kind: opState, cfg: cfg, full: full, reply: r}
	})
	if err != nil {
		return nil, actorError(channel, err)
	}
	return st, nil
}

// Inspect returns the whole state of each channel (FullState), for at most
// MaxInspectChannels distinct channels.
func (e *Engine) Inspect(ctx context.Context, channels []string) (map[string]*ChannelState, error) {
	out := make(map[string]*ChannelState, len(channels))
	for _, name := range channels {
		if _, done := out[name]; done {
			continue
		}
		if len(out) == MaxInspectChannels {
			return nil, fmt.Errorf("%w: more than %d channels", ErrInvalid, MaxInspectChannels)
		}
		st, err := e.FullState(ctx, name)
		if err != nil {
			return nil, err
		}
		out[name] = st
	}
	return out, nil
}

// Can answers what u may do in channel by the config this node resolves
// for it: the one its updates of the channel are checked against.
func (e *Engine) Can(ctx context.Context, u *User, channel string) (Access, error) {
	cfg, err := e.config(ctx, channel)
	if err != nil {
		return Access{}, err
	}
	return AccessOf(cfg, u), nil
}

// Clear makes every client of channel leave at once, publishing one
// message when anyone was present.
func (e *Engine) Clear(ctx context.Context, channel string) error {
	_, err := e.ClearAck(ctx, channel)
	return err
}

// ClearAck is Clear that also waits until the Replicator answers the
// change, and returns the users that left (sorted). Like LeaveAck it
// trusts its caller with the channel's name; an invalid one is nothing to
// clear.
func (e *Engine) ClearAck(ctx context.Context, channel string) ([]string, error) {
	if !ValidChannelName(channel) {
		return nil, nil
	}
	// The freshest config, when there is one, is the audience of the
	// message; a channel whose config is gone is still cleared.
	cfg, err := e.config(ctx, channel)
	if err != nil {
		return nil, err
	}
	done := make(chan error, 1)
	users, err := actor.Ask(ctx, e.actors, channel, func(r chan<- []string) op {
		return op{kind: opClear, cfg: cfg, at: e.clk.Now().UnixNano(), done: done, reply: r}
	})
	if err != nil {
		return nil, actorError(channel, err)
	}
	if len(users) == 0 {
		return nil, nil
	}
	return users, waitDone(ctx, channel, done)
}

// Since returns the catch-up of channel after id after (negative: the last
// id only) for u; Unavailable when the channel does not exist or u may not
// view it. It implements CatchupSource. It goes as far as the last message
// published (Message.MarkPublished), never into messages still on their
// way to the replica.
func (e *Engine) Since(ctx context.Context, u *User, channel string, after int64) (Catchup, error) {
	cfg, err := e.viewable(ctx, u, channel)
	if err != nil {
		return Catchup{}, err
	}
	if cfg == nil {
		return Catchup{Unavailable: true}, nil
	}
	cu, err := actor.Ask(ctx, e.actors, channel, func(r chan<- Catchup) op {
		return op{kind: opSince, cfg: cfg, after: after, reply: r}
	})
	if err != nil {
		return Catchup{}, actorError(channel, err)
	}
	return cu, nil
}

// viewable returns channel's config when it exists and u may view it.
func (e *Engine) viewable(ctx context.Context, u *User, channel string) (*Config, error) {
	cfg, err := e.config(ctx, channel)
	if cfg == nil || err != nil || !cfg.CanView(u) {
		return nil, err
	}
	return cfg, nil
}

// config returns channel's config, nil when it does not exist or its name
// is invalid.
func (e *Engine) config(ctx context.Context, channel string) (*Config, error) {
	if !ValidChannelName(channel) {
		return nil, nil
	}
	cfg, err := e.configs.Resolve(ctx, channel)
	if err != nil {
		return nil, fmt.Errorf("presence: config of %s: %w", channel, err)
	}
	return cfg, nil
}

// Export returns the whole state of channel for a hand-off, or nil when no
// actor runs it here. The channel keeps running; Remove it once the new
// owner has Installed the snapshot.
func (e *Engine) Export(ctx context.Context, channel string) (*ChannelSnapshot, error) {
	reply := make(chan *ChannelSnapshot, 1)
	err := e.actors.TellExisting(channel, op{kind: opExport, reply: (chan<- *ChannelSnapshot)(reply)})
	if errors.Is(err, actor.ErrNoActor) {
		return nil, nil
	}
	if err != nil {
		return nil, actorError(channel, err)
	}
	select {
	case s := <-reply:
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("presence: export %s: %w", channel, ctx.Err())
	}
}

// Install replaces the state of s.Channel by s, publishing nothing: the
// channel continues from s.LastID with s's clients and their expiries.
// Clients whose expiry (plus s.ExpiryGrace) passed already leave at once,
// with their message, before the channel serves anything else.
func (e *Engine) Install(ctx context.Context, s *ChannelSnapshot) error {
	return e.install(ctx, s, false)
}

// InstallMerged installs s, a state merged from two histories that no
// subscriber could follow message by message, and publishes a resync
// marker after it (Message.Resync): subscribers re-read the channel now
// rather than at its next change.
func (e *Engine) InstallMerged(ctx context.Context, s *ChannelSnapshot) error {
	return e.install(ctx, s, true)
}

func (e *Engine) install(ctx context.Context, s *ChannelSnapshot, resync bool) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if !ValidChannelName(s.Channel) {
		return fmt.Errorf("%w: snapshot of invalid channel %q", ErrInvalid, s.Channel)
	}
	_, err := actor.Ask(ctx, e.actors, s.Channel, func(r chan<- struct{}) op {
		return op{kind: opInstall, snap: s, resync: resync, reply: r}
	})
	if err != nil {
		return actorError(s.Channel, err)
	}
	return nil
}

// Acknowledge moves channel's delivery position (ChannelSnapshot.Delivered)
// to id: its webhook acknowledged every event up to it. The position never
// moves back nor past the channel's last id, and the Replicator hears of
// the move (ChangeDelivered). It does not wait, and does nothing for a
// channel without an actor here (handed over: its new holder delivers from
// the position it was given).
func (e *Engine) Acknowledge(channel string, id int64) error {
	err := e.actors.TellExisting(channel, op{kind: opDelivered, after: id, at: e.clk.Now().UnixNano()})
	if err != nil && !errors.Is(err, actor.ErrNoActor) {
		return actorError(channel, err)
	}
	return nil
}

// Resend makes channel's actor hand the Replicator a ChangeSnapshot of its
// state (to fill a new replica). It does nothing for a channel without an
// actor here.
func (e *Engine) Resend(channel string) error {
	err := e.actors.TellExisting(channel, op{kind: opResend, at: e.clk.Now().UnixNano()})
	if err != nil && !errors.Is(err, actor.ErrNoActor) {
		return actorError(channel, err)
	}
	return nil
}

// Remove stops channel's actor here and forgets its state without publishing
// anything (after a hand-off). A later call for the channel starts a fresh
// incarnation whose ids are above every id this node issued.
func (e *Engine) Remove(ctx context.Context, channel string) error {
	err := e.actors.StopAndWait(ctx, channel)
	if err != nil && !errors.Is(err, actor.ErrNoActor) {
		return actorError(channel, err)
	}
	return nil
}

// actorError maps actor runtime errors to presence sentinels.
func actorError(channel string, err error) error {
	switch {
	case errors.Is(err, actor.ErrOverloaded):
		return fmt.Errorf("%w: channel %s: %w", ErrOverloaded, channel, err)
	case errors.Is(err, actor.ErrStopped):
		return fmt.Errorf("%w: channel %s: %w", ErrUnavailable, channel, err)
	}
	return fmt.Errorf("presence: channel %s: %w", channel, err)
}

// deliverExpiry hands a batch of due timers to their channel's actor. A
// full mailbox makes the wheel retry next tick; a channel without an actor
// has no clients left, so its batch is dropped.
func (e *Engine) deliverExpiry(g *timerGroup[*client], due *timer[*client], now time.Time) bool {
	err := e.actors.TellExisting(g.name, op{kind: opExpire, group: g, due: due, at: now.UnixNano()})
	return !errors.Is(err, actor.ErrOverloaded)
}

// newBase returns the first message id of a new channel incarnation: the
// time in microseconds, or above every id issued here if that is higher.
func (e *Engine) newBase() int64 {
	for {
		floor := e.idFloor.Load()
		base := max(e.clk.Now().UnixMicro(), floor+1)
		if e.idFloor.CompareAndSwap(floor, base) {
			return base
		}
	}
}

// raiseFloor records that id was issued.
func (e *Engine) raiseFloor(id int64) {
	for {
		floor := e.idFloor.Load()
		if id <= floor || e.idFloor.CompareAndSwap(floor, id) {
			return
		}
	}
}

// opKind says what a channel actor is asked to do.
type opKind uint8

const (
	opPresent opKind = iota + 1
	opLeave
	opExpire
	opState
	opSince
	opExport
	opInstall
	opResend
	opClear
	opDelivered
)

// op is a channel actor's message. It is a plain struct, not an interface,
// so that a heartbeat's Tell copies it into the mailbox without allocating.
type op struct {
	kind     opKind
	resync   bool    // opInstall: publish a resync marker after the state
	full     bool    // opState: list the users of a count-only channel too
	user     *User   // opPresent
	userID   string  // opLeave
	clientID string  // opPresent, opLeave
	cfg      *Config // opPresent, opState, opSince, opClear (nil: keep the channel's)
	after    int64   // opSince; opDelivered: the position
	// at is when the request arrived (opPresent, opLeave, opClear) or the wheel's
	// time (opExpire), in unix nanoseconds: queueing never shifts expiries.
	at    int64
	due   *timer[*client]
	group *timerGroup[*client]
	snap  *ChannelSnapshot // opInstall
	reply any              // the Ask's reply channel
	done  chan<- error     // opPresent, opLeave, opClear: answered by the Replicator (or errChannelFull)
}

// channelActor is the behaviour owning one channel's state, held in the
// same allocation (one pointer less to chase per heartbeat).
type channelActor struct {
	e  *Engine
	ch channel
}

func (e *Engine) newChannelActor(name string) actor.Behavior[op] {
	a := &channelActor{e: e}
	a.ch.init(name, e.newBase(), e.wheel, e.metrics)
	a.ch.track = e.replicator != nil
	return a
}

// Started counts the channel as active.
func (a *channelActor) Started() { a.e.metrics.channels.Add(1) }

// Stopped releases the channel's timers and gauges: after passivation,
// shutdown, Remove or a panic, whose state is lost.
func (a *channelActor) Stopped() {
	a.ch.clear()
	a.e.metrics.channels.Add(-1)
	if r := a.e.replicator; r != nil {
		r.Replicate(Change{Kind: ChangeStopped, Channel: a.ch.name, At: a.e.clk.Now().UnixNano()})
	}
}

// CanPassivate lets an idle channel go only when nobody is present in it
// and its events were delivered.
func (a *channelActor) CanPassivate() bool {
	return a.ch.empty() && (a.e.deliveries == nil || !a.e.deliveries.Pending(a.ch.name))
}

// ReceiveInline applies, on the sender's goroutine, the ops that only move
// an expiry: a heartbeat of a present client. Everything that may publish is
// declined and goes through the mailbox, so publishing stays on the
// channel's own goroutine.
func (a *channelActor) ReceiveInline(o op) bool {
	if o.kind != opPresent || !a.ch.heartbeat(o.user, o.clientID, o.cfg, o.at) {
		return false
	}
	a.dispatch(nil, o.done)
	return true
}

// Receive applies one op to the channel.
func (a *channelActor) Receive(o op) {
	ch := &a.ch
	if o.cfg != nil {
		ch.cfg = o.cfg // the freshest config decides the audience of messages
	}
	switch o.kind {
	case opPresent:
		m, ok := ch.present(o.user, o.clientID, o.cfg, o.at)
		if !ok {
			if o.done != nil { // a capped present always waits for its answer
				o.done <- errChannelFull
			}
			return
		}
		a.dispatch(m, o.done)
	case opLeave:
		a.dispatch(ch.leave(o.userID, o.clientID, o.at), o.done)
	case opClear:
		m, users := ch.leaveAll(o.at)
		if m != nil {
			a.dispatch(m, o.done)
		}
		o.reply.(chan<- []string) <- users
	case opExpire:
		m, _ := ch.expire(o.group, o.due, o.at)
		a.dispatch(m, nil)
	case opResend:
		a.snapshotChange(o.at, nil)
	case opState:
		o.reply.(chan<- *ChannelState) <- ch.state(o.cfg, o.full)
	case opSince:
		o.reply.(chan<- Catchup) <- ch.since(o.after)
	case opExport:
		o.reply.(chan<- *ChannelSnapshot) <- ch.snapshot()
	case opDelivered:
		if ch.acknowledge(o.after, o.at) {
			a.dispatch(nil, nil)
		}
	case opInstall:
		// What the previous holder had not published goes out once the
		// replica has the state, as the merge's resync marker does.
		pending := ch.install(o.snap)
		a.e.raiseFloor(o.snap.LastID)
		if d := a.e.deliveries; d != nil {
			d.Installed(o.snap)
		}
		now := a.e.clk.Now().UnixNano()
		if o.resync && ch.cfg != nil { // without a config no subscriber may see the channel
			pending = ch.publishResync(now)
			a.e.raiseFloor(pending.ID)
		}
		a.snapshotChange(now, pending)
		a.dispatch(ch.expireInstalled(now), nil)
		o.reply.(chan<- struct{}) <- struct{}{}
	}
}

// dispatch hands the changes of one operation, and m, its message if any,
// to the Replicator (m and done ride on the last change), or publishes m
// when there is no Replicator or nothing changed.
func (a *channelActor) dispatch(m *Message, done chan<- error) {
	if m != nil {
		a.e.raiseFloor(m.ID)
	}
	r, changes := a.e.replicator, a.ch.changes
	if r == nil || len(changes) == 0 {
		a.publishNow(m)
		if done != nil {
			done <- nil
		}
		return
	}
	last := len(changes) - 1
	changes[last].Message, changes[last].Done = m, done
	for i := range changes {
		changes[i].src = &a.ch
		r.Replicate(changes[i])
		changes[i] = Change{}
	}
	a.ch.changes = changes[:0]
}

// snapshotChange hands the Replicator the channel's whole state, with m, a
// message already in it to publish once the state is safe (or at once
// without a Replicator).
func (a *channelActor) snapshotChange(at int64, m *Message) {
	r := a.e.replicator
	if r == nil {
		a.publishNow(m)
		return
	}
	r.Replicate(Change{Kind: ChangeSnapshot, Channel: a.ch.name, At: at, Message: m, src: &a.ch})
}

// publishNow publishes m, if any, without waiting for anything: nothing
// replicates the change, or it changed no state to replicate.
func (a *channelActor) publishNow(m *Message) {
	if m != nil {
		m.MarkPublished()
		a.e.publisher.Publish(m)
	}
}

package presence

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
)

// Hub defaults.
const (
	// DefaultSubscriberBuffer is how many events a subscription buffers before
	// a subscriber that does not read them is closed.
	DefaultSubscriberBuffer = 256
	// DefaultMaxPending is how many live messages of one channel a
	// subscription holds while its catch-up is fetched.
	DefaultMaxPending = 1024
)

// CatchupSource provides a channel's catch-up for a subscriber: the owner
// checks the config (Unavailable when the channel does not exist or u may not
// view it) and answers from the channel's backlog. The Engine is one; in a
// cluster the source forwards to the channel's owner.
type CatchupSource interface {
	Since(ctx context.Context, u *User, channel string, after int64) (Catchup, error)
}

// HubConfig configures a Hub.
type HubConfig struct {
	// Metrics receives the subscriber gauge; nil means unregistered metrics.
	Metrics *Metrics
	// Logger logs subscriptions ended by errors; nil discards.
	Logger *slog.Logger
	// BufferSize is the per-subscription event buffer; 0 means
	// DefaultSubscriberBuffer.
	BufferSize int
	// MaxPending bounds the live messages of a channel held during its
	// catch-up; 0 means DefaultMaxPending.
	MaxPending int
	// OnChannel, if set, is told when a channel gains its first local
	// subscriber (true) and loses its last (false), so a cluster can ask the
	// channel's owner to push messages here. It is called with the hub's lock
	// held and must not block or call back into the Hub.
	OnChannel func(channel string, subscribed bool)
}

// Validate reports a configuration error.
func (c HubConfig) Validate() error {
	if c.BufferSize < 0 || c.MaxPending < 0 {
		return fmt.Errorf("%w: hub buffer sizes must not be negative", ErrInvalid)
	}
	return nil
}

// Hub fans the messages of channels out to the subscriptions of this node.
// Messages come from local channel actors or, in a cluster, from a remote
// owner; both call Publish. Publishing never blocks and encodes nothing: every
// subscriber receives the same *Message.
type Hub struct {
	cfg     HubConfig
	metrics *Metrics
	log     *slog.Logger

	mu       sync.RWMutex
	channels map[string]*hubChannel
	subs     map[*subscription]struct{}
	closed   bool
}

// hubChannel lists the subscriptions of one channel.
type hubChannel struct {
	mu      sync.RWMutex
	members []*subChannel // each knows its index, under mu
}

// NewHub returns an empty hub.
func NewHub(cfg HubConfig) (*Hub, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.BufferSize == 0 {
		cfg.BufferSize = DefaultSubscriberBuffer
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = DefaultMaxPending
	}
	h := &Hub{
		cfg:      cfg,
		metrics:  cfg.Metrics,
		log:      cfg.Logger,
		channels: make(map[string]*hubChannel),
		subs:     make(map[*subscription]struct{}),
	}
	if h.metrics == nil {
		h.metrics = NewMetrics(nil)
	}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	return h, nil
}

// Publish delivers m to the local subscribers of its channel whom
// m.Audience allows (nobody when it is nil). Messages of one channel must be
// published in id order; m must not be modified afterwards, since every
// subscriber shares it.
func (h *Hub) Publish(m *Message) {
	h.mu.RLock()
	hc := h.channels[m.Channel]
	h.mu.RUnlock()
	if hc == nil {
		return
	}
	hc.mu.RLock()
	for _, sc := range hc.members {
		sc.sub.deliver(sc, m)
	}
	hc.mu.RUnlock()
}

// Channels returns the channels with at least one local subscriber.
func (h *Hub) Channels() []string {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return slices.Sorted(maps.Keys(h.channels))
}

// Subscribe starts a subscription of u to the channels of from (name -> last
// id seen, negative for new messages only). It registers for live messages
// of every channel first, then fetches each channel's catch-up from src and
// merges the two, so nothing published in between is lost or repeated.
func (h *Hub) Subscribe(ctx context.Context, u *User, from map[string]int64, src CatchupSource) (Subscription, error) {
	if len(from) == 0 || len(from) > MaxSubscribeChannels {
		return nil, fmt.Errorf("%w: subscribe to 1 to %d channels, not %d", ErrInvalid, MaxSubscribeChannels, len(from))
	}
	s := newSubscription(ctx, h, u, from, src)
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		s.cancel()
		return nil, fmt.Errorf("%w: hub closed", ErrUnavailable)
	}
	h.subs[s] = struct{}{}
	for i := range s.chans {
		if sc := &s.chans[i]; sc.mode != chanOff {
			h.registerLocked(sc)
		}
	}
	h.mu.Unlock()
	h.metrics.subscribers.Add(1)
	s.start(ctx)
	return s, nil
}

func (h *Hub) registerLocked(sc *subChannel) {
	hc := h.channels[sc.name]
	if hc == nil {
		hc = &hubChannel{}
		h.channels[sc.name] = hc
		if h.cfg.OnChannel != nil {
			h.cfg.OnChannel(sc.name, true)
		}
	}
	hc.mu.Lock()
	sc.hc, sc.idx = hc, int32(len(hc.members))
	hc.members = append(hc.members, sc)
	hc.mu.Unlock()
}

// unregister removes every channel registration of s.
func (h *Hub) unregister(s *subscription) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs, s)
	for i := range s.chans {
		sc := &s.chans[i]
		hc := sc.hc
		if hc == nil {
			continue
		}
		hc.mu.Lock()
		last := int32(len(hc.members) - 1)
		moved := hc.members[last]
		hc.members[sc.idx], moved.idx = moved, sc.idx
		hc.members[last] = nil
		hc.members = hc.members[:last]
		empty := last == 0
		hc.mu.Unlock()
		sc.hc = nil
		if empty {
			delete(h.channels, sc.name)
			if h.cfg.OnChannel != nil {
				h.cfg.OnChannel(sc.name, false)
			}
		}
	}
}

// Close ends every subscription and refuses new ones.
func (h *Hub) Close() {
	h.mu.Lock()
	h.closed = true
	subs := slices.Collect(maps.Keys(h.subs))
	h.mu.Unlock()
	for _, s := range subs {
		s.Close()
	}
}

var _ QueuedSubscription = (*subscription)(nil)

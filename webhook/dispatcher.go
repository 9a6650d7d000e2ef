package webhook

import (
	"context"
	"log/slog"
	"sync"

	"github.com/presencehq/presence/presence"
)

// Dispatcher delivers the events of the channels this node holds to their
// webhooks. The router hands it messages (Publish) and hand-offs
// (HandedOver); the engine tells it of installed states (Installed) and
// asks it before passivating a channel (Pending). Its methods never
// block on the network: one goroutine schedules the batches and each
// request runs on its own.
type Dispatcher struct {
	cfg Config
	log *slog.Logger
	m   *metrics

	ctx    context.Context // ends with Close: requests in flight end too
	cancel context.CancelFunc
	wg     sync.WaitGroup
	wake   chan struct{} // buffered 1

	mu         sync.Mutex
	closed     bool
	running    bool // the scheduling goroutine started
	chans      map[string]*chanQ
	dests      map[string]*dest
	lastGauges int64 // unix ns
}

var _ presence.Deliveries = (*Dispatcher)(nil)

// New returns a dispatcher; its goroutine starts with the first event.
func New(cfg Config) (*Dispatcher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg.applyDefaults()
	d := &Dispatcher{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "webhook"),
		m:     newMetrics(cfg.Registry),
		wake:  make(chan struct{}, 1),
		chans: make(map[string]*chanQ),
		dests: make(map[string]*dest),
	}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	return d, nil
}

// Close stops delivering: requests in flight are abandoned and queued
// events dropped (a node leaving gracefully has handed its channels over,
// and their new holders deliver from the positions they were given).
func (d *Dispatcher) Close() {
	d.mu.Lock()
	d.closed = true
	d.mu.Unlock()
	d.cancel()
	d.wg.Wait()
}

// Publish takes a message of a channel held here, published (with
// replication, safe on the replica), in id order per channel. It queues
// the message's event when the channel's webhook selects it. A message at
// or below one handed before is not new (a state installed here queued
// it already); a gap in ids while the channel has events queued (its
// state was lost and restarted here) queues a resync first.
func (d *Dispatcher) Publish(m *presence.Message) {
	w := d.cfg.Webhooks(m.Channel)
	if w == nil {
		return
	}
	now := d.cfg.Clock.Now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	c := d.chans[m.Channel]
	if c != nil {
		if c.handedOver {
			// Back here without an install (a fresh start): continue.
			c.handedOver = false
			c.high = max(c.high, m.ID-1)
		}
		if m.ID <= c.high {
			return
		}
		if m.ID > c.high+1 {
			d.enqueue(c, summary(m.ID-1, ReasonLost, now), now)
		}
		c.high = m.ID
	}
	ev, ok := messageEvent(m, m.Occupied, m.Vacated, w.Events)
	if !ok {
		return
	}
	if c == nil {
		c = d.chanFor(m.Channel)
		c.high = m.ID
	}
	d.enqueue(c, ev, now)
	d.kickIfFull(c.dest)
}

// Installed implements presence.Deliveries: a state of s.Channel was
// installed here, and its messages after its delivery position (and after
// what this node handed already) are queued, a resync first when its
// backlog does not reach back to the position.
func (d *Dispatcher) Installed(s *presence.ChannelSnapshot) {
	w := d.cfg.Webhooks(s.Channel)
	if w == nil {
		return
	}
	now := d.cfg.Clock.Now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	c := d.chans[s.Channel]
	after := s.Delivered
	if c != nil {
		c.handedOver = false
		after = max(after, c.high)
	}
	events := snapshotEvents(s, after, w.Events, now)
	if c == nil && len(events) == 0 {
		return
	}
	if c == nil {
		c = d.chanFor(s.Channel)
	}
	for _, ev := range events {
		d.enqueue(c, ev, now)
	}
	c.high = max(c.high, s.LastID)
	if len(events) > 0 {
		d.log.Debug("delivering an installed channel's events", "channel", s.Channel, "position", s.Delivered,
			"last_id", s.LastID, "events", len(events))
	}
	d.kickIfFull(c.dest)
}

// HandedOver drops what channel had queued here: the node it was handed
// to delivers from the position it was given. A batch in flight finishes
// (its acknowledgement is harmless), and keeps the channel's next events
// behind it should the channel come back meanwhile.
func (d *Dispatcher) HandedOver(channel string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.chans[channel]
	if c == nil {
		return
	}
	d.dropPending(c)
	if c.batch == nil {
		d.forget(c)
		return
	}
	c.handedOver = true
	c.high = c.batch.lastOf(c)
}

// Pending implements presence.Deliveries: channel has events queued or
// in flight here.
func (d *Dispatcher) Pending(channel string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := d.chans[channel]
	return c != nil && !c.handedOver && (len(c.pending) > 0 || c.batch != nil)
}

// chanFor returns a new queue for channel, with its destination.
func (d *Dispatcher) chanFor(channel string) *chanQ {
	prefix, _ := presence.ChannelPrefix(channel) // a published channel's name is valid
	dst := d.dests[prefix]
	if dst == nil {
		dst = &dest{prefix: prefix, sample: channel, chans: make(map[string]*chanQ), m: d.m.forDest(prefix)}
		d.dests[prefix] = dst
	}
	c := &chanQ{name: channel, dest: dst}
	d.chans[channel] = c
	dst.chans[channel] = c
	if !d.running {
		d.running = true
		d.wg.Add(1)
		go d.run()
	}
	return c
}

// kickIfFull wakes the scheduler when dst has a full batch ready;
// otherwise its next tick will do.
func (d *Dispatcher) kickIfFull(dst *dest) {
	if dst.readyEvents >= d.cfg.MaxBatch {
		d.kick()
	}
}

func (d *Dispatcher) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// run schedules batches every Tick, and at once when kicked, until Close
// or until no destination is left (chanFor starts it again).
func (d *Dispatcher) run() {
	defer d.wg.Done()
	t := d.cfg.Clock.NewTicker(d.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-d.ctx.Done():
			return
		case <-d.wake:
		case <-t.C():
		}
		requests, idle := d.schedule()
		for _, r := range requests {
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				d.send(r)
			}()
		}
		if idle {
			return
		}
	}
}

// schedule returns the requests to start now: due retries, then full or
// overdue batches, per destination within its limits. Destinations whose
// webhook was removed are dropped; idle reports that none is left, and
// that the scheduling goroutine ends (it is marked as not running).
func (d *Dispatcher) schedule() (out []request, idle bool) {
	now := d.cfg.Clock.Now().UnixNano()
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, dst := range d.dests {
		w := d.cfg.Webhooks(dst.sample)
		if w == nil {
			d.dropDest(dst)
			continue
		}
		out = d.due(dst, w, now, out)
	}
	if now-d.lastGauges >= int64(gaugeInterval) {
		d.lastGauges = now
		for _, dst := range d.dests {
			dst.updateGauges(now)
		}
	}
	if len(d.dests) == 0 && len(out) == 0 {
		d.running = false
		return nil, true
	}
	return out, false
}

// dropDest forgets a destination whose webhook was removed, with what it
// queued; batches in flight finish on their own.
func (d *Dispatcher) dropDest(dst *dest) {
	for name, c := range dst.chans {
		if d.chans[name] == c {
			delete(d.chans, name)
		}
	}
	delete(d.dests, dst.prefix)
	d.m.dropDest(dst.prefix)
	d.log.Info("webhook removed: its queued events are dropped", "prefix", dst.prefix, "queued", dst.queued)
}

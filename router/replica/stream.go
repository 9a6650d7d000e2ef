package replica

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// streams holds this node's stream to each replica node.
type streams struct {
	mu sync.RWMutex // read-locked by every change's lookup
	by map[string]*stream
}

func (ss *streams) init() { ss.by = make(map[string]*stream) }

// get returns the stream to to, starting it if needed.
func (ss *streams) get(p *Replicator, to wire.Member) *stream {
	ss.mu.RLock()
	s := ss.by[to.Name]
	ss.mu.RUnlock()
	if s != nil && s.to == to {
		return s
	}
	ss.mu.Lock()
	defer ss.mu.Unlock()
	s = ss.by[to.Name]
	if s != nil && s.to == to {
		return s
	}
	if s != nil {
		s.close(p) // the node came back at another address
	}
	s = newStream(p.cfg.Ctx, to)
	if !p.cfg.Go(func() { s.run(p) }) {
		s.close(p)
		s.drain(p) // no goroutine to do it
	}
	ss.by[to.Name] = s
	return s
}

// list returns the streams.
func (ss *streams) list() []*stream {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	return slices.Collect(maps.Values(ss.by))
}

// stopped drops channel from every stream: its actor is gone here. With
// tell, replicas drop their copies too.
func (ss *streams) stopped(channel string, tell bool) {
	for _, s := range ss.list() {
		s.forget(channel, true, tell)
	}
}

// keepOnly closes the streams to nodes that are not members of v any more.
func (ss *streams) keepOnly(p *Replicator, v View) {
	ss.mu.Lock()
	var gone []*stream
	for name, s := range ss.by {
		if m, ok := v.Member(name); !ok || m != s.to {
			gone = append(gone, s)
			delete(ss.by, name)
		}
	}
	ss.mu.Unlock()
	for _, s := range gone {
		s.close(p)
	}
}

// retarget stops replicating to each node the channels whose replica v
// makes another node (which Run fills). The old replica keeps
// its copy until the new one has acknowledged a snapshot (retired).
func (ss *streams) retarget(p *Replicator, v View) {
	for _, s := range ss.list() {
		for _, ch := range s.syncedChannels() {
			if to, ok := p.replicaOf(v, ch); !ok || to.Name != s.to.Name {
				s.retire(ch)
			}
		}
	}
}

// retired tells the replicas that still keep a copy of channel, other than
// the one called except, which has just acknowledged a snapshot of it, to
// drop theirs.
func (ss *streams) retired(channel, except string) {
	for _, s := range ss.list() {
		if s.to.Name == except {
			continue
		}
		s.mu.Lock()
		if s.retiring[channel] && !s.closed {
			delete(s.retiring, channel)
			s.items = append(s.items, item{ReplItem: wire.ReplItem{Kind: presence.ChangeStopped, Channel: channel}})
			s.kick()
		}
		s.mu.Unlock()
	}
}

// retire stops replicating channel here; the replica keeps its copy until
// the channel's new replica has one (streams.retired).
func (s *stream) retire(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced[channel] {
		delete(s.synced, channel)
		s.retiring[channel] = true
	}
	s.dropCoalescedLocked(channel)
}

// syncedChannels lists the channels the stream has sent a snapshot of.
func (s *stream) syncedChannels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.synced))
}

// synced reports whether the stream to name has sent channel's snapshot.
func (ss *streams) synced(name, channel string) bool {
	ss.mu.RLock()
	s := ss.by[name]
	ss.mu.RUnlock()
	if s == nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.synced[channel]
}

// clientRef identifies a client of a channel whose expiry moved.
type clientRef struct{ userID, clientID string }

// idle reports whether nothing waits to be sent or answered (coalesced
// refreshes aside: a replica promoting its copy adds their grace).
func (s *stream) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || len(s.items) == 0 && s.inflight == 0
}

// flush waits until every stream is idle, or ctx ends: a node leaving
// gracefully lets its replicas learn that it handed its channels over
// (their copies retired) before the others see it go.
func (ss *streams) flush(ctx context.Context) error {
	for {
		if !slices.ContainsFunc(ss.list(), func(s *stream) bool { return !s.idle() }) {
			return nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// stream is the ordered replication stream of this node's channels to
// one replica, sent by one goroutine. Items wait in order; refreshes (a
// heartbeat that only moves an expiry) are coalesced and sent every
// ReplicationInterval, the rest at once.
type stream struct {
	to   wire.Member
	wake chan struct{} // buffered 1
	// ctx ends with the router or when close stops the stream: its call in
	// flight and its retry wait end with it.
	ctx    context.Context
	cancel context.CancelFunc

	mu     sync.Mutex
	closed bool
	// drained: the stream's goroutine settled everything it held after
	// the stream closed; an item added later is settled by its caller.
	drained   bool
	inflight  int // items sent and not answered yet
	failures  int // calls failed in a row
	deferrals int // answers in a row that deferred items
	items     []item
	retiring  map[string]bool                // channels moved to another replica, whose copy here waits for its snapshot
	refresh   map[string]map[clientRef]int64 // channel → client → newest expiry
	delivered map[string]int64               // channel → newest delivery position
	pending   int                            // entries in refresh and delivered
	synced    map[string]bool                // channels whose snapshot was sent
}

func newStream(parent context.Context, to wire.Member) *stream {
	s := &stream{to: to, wake: make(chan struct{}, 1),
		refresh: make(map[string]map[clientRef]int64), delivered: make(map[string]int64),
		synced: make(map[string]bool), retiring: make(map[string]bool)}
	s.ctx, s.cancel = context.WithCancel(parent)
	return s
}

// add queues a change. The first change of a channel the replica has no
// copy of is sent as a snapshot of the state after it.
func (s *stream) add(p *Replicator, c *presence.Change) {
	s.mu.Lock()
	if s.closed {
		if !s.drained {
			// Behind what the stream still holds: drain settles it after
			// them, so that messages are published in order.
			s.items = append(s.items, item{ReplItem: wire.ReplItem{Kind: c.Kind, Channel: c.Channel, Msg: c.Message}, done: c.Done})
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		p.settle(c.Message, c.Done, nil)
		return
	}
	key := clientRef{c.UserID, c.ClientID}
	if c.Kind == presence.ChangeRefresh && s.synced[c.Channel] {
		s.addRefresh(c.Channel, key, c.ExpiresAt)
		s.mu.Unlock()
		p.settle(nil, c.Done, nil)
		return
	}
	if c.Kind == presence.ChangeDelivered && s.synced[c.Channel] {
		// Like a refresh: a later position includes this one, and a copy
		// a little behind only makes a promoted copy deliver again what
		// was delivered already (at least once).
		if _, ok := s.delivered[c.Channel]; !ok {
			s.pending++
		}
		s.delivered[c.Channel] = max(s.delivered[c.Channel], c.Delivered)
		s.mu.Unlock()
		p.settle(nil, c.Done, nil)
		return
	}
	it := item{ReplItem: wire.ReplItem{Kind: c.Kind, Channel: c.Channel, UserID: c.UserID, ClientID: c.ClientID,
		Expires: c.ExpiresAt, At: c.At, Config: c.Config, Msg: c.Message}, done: c.Done, queued: p.cfg.Clock.Now().UnixNano()}
	if c.User != nil {
		it.User = c.User.Info()
	}
	if m := s.refresh[c.Channel]; m != nil && c.Kind == presence.ChangeLeave {
		if _, ok := m[key]; ok {
			delete(m, key)
			s.pending--
		}
	}
	if c.Kind == presence.ChangeSnapshot || !s.synced[c.Channel] {
		delete(s.retiring, c.Channel)
		it.Kind, it.Snap, it.Interest = presence.ChangeSnapshot, c.Snapshot(), p.cfg.Interest(c.Channel)
		if from, ok := p.supersedes.LoadAndDelete(c.Channel); ok {
			it.Supersedes, it.keeper = from.(handedFrom).origin, from.(handedFrom).keeper
		}
		s.synced[c.Channel] = true
	}
	s.items = append(s.items, it)
	s.mu.Unlock()
	s.kick()
}

// addInterest queues the interested nodes of channel when the replica has
// its copy already; otherwise the snapshot that starts the copy carries
// them.
func (s *stream) addInterest(p *Replicator, channel string) {
	s.mu.Lock()
	if s.closed || !s.synced[channel] {
		s.mu.Unlock()
		return
	}
	// Taken under the stream's lock, so that queued lists keep the order
	// of the changes they follow.
	s.items = append(s.items, item{ReplItem: wire.ReplItem{Kind: wire.KindInterest, Channel: channel, Interest: p.cfg.Interest(channel)},
		queued: p.cfg.Clock.Now().UnixNano()})
	s.mu.Unlock()
	s.kick()
}

func (s *stream) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// forget stops replicating channel and, with tell, tells the replica to
// drop its copy after what is queued (without, the copy is retiring: it
// goes once the channel is safe elsewhere, see streams.retired). With drop (the channel's actor
// stopped here), the items still queued for it are settled without their
// messages instead: the node that has the channel now continues from a
// snapshot holding them.
func (s *stream) forget(channel string, drop, tell bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if drop {
		s.dropLocked(channel)
	}
	s.dropCoalescedLocked(channel)
	if s.synced[channel] {
		delete(s.synced, channel)
		if tell {
			s.items = append(s.items, item{ReplItem: wire.ReplItem{Kind: presence.ChangeStopped, Channel: channel}})
			s.kick()
		} else {
			s.retiring[channel] = true
		}
	}
}

// dropLocked removes channel's queued items, answering their callers.
func (s *stream) dropLocked(channel string) {
	kept := s.items[:0]
	for _, it := range s.items {
		if it.Channel != channel {
			kept = append(kept, it)
		} else if it.done != nil {
			it.done <- nil
		}
	}
	clear(s.items[len(kept):])
	s.items = kept
}

// dropCoalescedLocked forgets channel's coalesced refreshes and delivery
// position; the lock must be held.
func (s *stream) dropCoalescedLocked(channel string) {
	s.pending -= len(s.refresh[channel])
	delete(s.refresh, channel)
	if _, ok := s.delivered[channel]; ok {
		s.pending--
		delete(s.delivered, channel)
	}
}

// close ends the stream: its node left. Its goroutine settles what it
// holds with success, the batch in flight first and then the items
// queued, in the order they came (drain): the node's channels are filled
// again on their new replicas from snapshots taken after these changes,
// and their messages must reach the hub and the webhooks in id order (a
// webhook queue takes a message below one it has as not new). Settling
// the queued items here, while the batch in flight still waited for its
// call to fail, published a channel's later message before its earlier
// one, and the earlier one was never delivered to the webhook (found by
// the process pause test).
func (s *stream) close(p *Replicator) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.synced = nil
	s.mu.Unlock()
	s.cancel()
}

// drain settles, with success and in order, the items a closed stream
// still holds; run calls it once its last batch is settled.
func (s *stream) drain(p *Replicator) {
	s.mu.Lock()
	items := s.items
	s.items, s.drained = nil, true
	s.mu.Unlock()
	for i := range items {
		p.settle(items[i].Msg, items[i].done, nil)
	}
}

// run sends the stream until it is closed.
func (s *stream) run(p *Replicator) {
	defer s.drain(p)
	t := p.cfg.Clock.NewTicker(p.cfg.Interval)
	defer t.Stop()
	for {
		select {
		case <-s.wake:
		case <-t.C():
		case <-s.ctx.Done():
			return
		}
		for s.sendOnce(p) {
		}
	}
}

// take removes the next batch: waiting items first, then, when they fit,
// the coalesced refreshes and delivery positions.
func (s *stream) take() []item {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.items), batchMax)
	batch := slices.Clone(s.items[:n])
	clear(s.items[:n])
	s.items = s.items[n:]
	if len(s.items) > 0 {
		return batch
	}
	for ch, m := range s.refresh {
		if len(batch)+len(m) > batchMax && len(batch) > 0 {
			break // the rest goes in the next batch
		}
		for k, exp := range m {
			batch = append(batch, item{ReplItem: wire.ReplItem{Kind: presence.ChangeRefresh, Channel: ch, UserID: k.userID, ClientID: k.clientID, Expires: exp}})
		}
		s.pending -= len(m)
		delete(s.refresh, ch)
	}
	for ch, pos := range s.delivered {
		if len(batch) >= batchMax {
			break
		}
		batch = append(batch, item{ReplItem: wire.ReplItem{Kind: presence.ChangeDelivered, Channel: ch, Delivered: pos}})
		s.pending--
		delete(s.delivered, ch)
	}
	return batch
}

// addRefresh records a client's newer expiry; the lock must be held.
func (s *stream) addRefresh(channel string, key clientRef, expires int64) {
	m := s.refresh[channel]
	if m == nil {
		m = make(map[clientRef]int64)
		s.refresh[channel] = m
	}
	if old, ok := m[key]; !ok {
		s.pending++
		m[key] = expires
	} else {
		m[key] = max(old, expires)
	}
}

// requeue puts items back at the head of the stream, in order.
func (s *stream) requeue(items []item) {
	if len(items) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(items, s.items...)
}

// sendOnce sends one batch and settles it; it reports whether to go on
// right away (more waits and the replica answered).
func (s *stream) sendOnce(p *Replicator) bool {
	batch := s.take()
	if len(batch) == 0 {
		return false
	}
	s.mu.Lock()
	s.inflight = len(batch)
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.inflight = 0
		s.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(s.ctx, p.cfg.CallTimeout)
	defer cancel()
	resp, err := p.cfg.Call(ctx, s.to, wire.MethodReplicate, func(e *wire.Encoder) {
		wire.EncodeReplicateBatch(e, p.cfg.Self, p.cfg.Boot, len(batch), func(i int) *wire.ReplItem { return &batch[i].ReplItem })
	})
	var reply wire.ReplicateReply
	if err == nil {
		reply, err = wire.DecodeReplicateReply(resp)
	}
	if err != nil {
		return s.failed(p, batch, err)
	}
	return s.acknowledged(p, batch, reply)
}

// failed keeps a batch the replica did not answer for another try, after
// RetryBackoff, unless the stream was closed meanwhile (then close settled
// what was queued, and the batch is settled the same way).
func (s *stream) failed(p *Replicator, batch []item, err error) bool {
	s.mu.Lock()
	closed := s.closed
	s.failures++
	failures := s.failures
	s.mu.Unlock()
	if failures == 1 || failures%100 == 0 {
		p.log.Info("replication batch failed; retrying", "replica", s.to.Name, "items", len(batch), "failures", failures, "err", err)
	}
	if closed {
		for i := range batch {
			p.settle(batch[i].Msg, batch[i].done, nil)
		}
		return false
	}
	s.requeue(batch)
	return sleep(s.ctx, retryDelay(p.cfg.RetryBackoff, failures)) == nil
}

// maxRetryDelay bounds the wait between two tries of a stream's batch.
const maxRetryDelay = time.Second

// retryDelay doubles base with every failure in a row, up to maxRetryDelay.
func retryDelay(base time.Duration, failures int) time.Duration {
	return min(base<<min(failures-1, 10), maxRetryDelay)
}

// acknowledged settles an answered batch: applied items publish their
// messages, deferred ones wait for another try, refused channels are
// handed over to the node that holds them, missing ones are sent again
// whole.
func (s *stream) acknowledged(p *Replicator, batch []item, reply wire.ReplicateReply) bool {
	s.mu.Lock()
	s.failures = 0
	if len(reply.Deferred) > 0 {
		s.deferrals++
	} else {
		s.deferrals = 0
	}
	deferrals := s.deferrals
	s.mu.Unlock()
	refused, deferred := setOf(reply.Refused), setOf(reply.Deferred)
	var again []item
	now := p.cfg.Clock.Now().UnixNano()
	oldest := now
	for i := range batch {
		it := &batch[i]
		switch {
		case refused[it.Channel]:
			p.settle(nil, it.done, fmt.Errorf("%w: %s is held by %s", presence.ErrMoved, it.Channel, s.to.Name))
		case deferred[it.Channel]:
			again = append(again, *it)
		default:
			if it.queued != 0 {
				oldest = min(oldest, it.queued)
			}
			if it.Kind == presence.ChangeSnapshot {
				p.streams.retired(it.Channel, s.to.Name)
				p.release(it.Channel, it.keeper, s.to.Name)
			}
			p.settle(it.Msg, it.done, nil)
		}
	}
	p.cfg.Lag.Set(float64(now-oldest) / 1e9)
	s.unsync(append(reply.Refused, reply.Missing...))
	for _, ch := range reply.Refused {
		if p.log.Enabled(context.Background(), slog.LevelDebug) { // refusedIDs walks the batch
			p.log.Debug("replica refused a channel's changes: their messages are dropped", "channel", ch, "replica", s.to.Name,
				"ids", refusedIDs(batch, ch))
		}
		p.cfg.Fence(ch, s.to)
	}
	for _, ch := range reply.Missing {
		if err := p.cfg.Engine.Resend(ch); err != nil {
			p.log.Debug("resending a channel to its replica failed", "channel", ch, "err", err)
		}
	}
	if len(again) > 0 {
		s.requeue(again)
		return sleep(s.ctx, retryDelay(p.cfg.RetryBackoff, deferrals)) == nil
	}
	s.mu.Lock()
	more := len(s.items) > 0 || s.pending > 0
	s.mu.Unlock()
	return more
}

// unsync marks channels as having no copy on the replica.
func (s *stream) unsync(channels []string) {
	if len(channels) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range channels {
		delete(s.synced, ch)
	}
}

func setOf(list []string) map[string]bool {
	m := make(map[string]bool, len(list))
	for _, s := range list {
		m[s] = true
	}
	return m
}

// refusedIDs lists the ids of channel's messages in batch (for the log).
func refusedIDs(batch []item, channel string) []int64 {
	var ids []int64
	for i := range batch {
		if batch[i].Channel == channel && batch[i].Msg != nil {
			ids = append(ids, batch[i].Msg.ID)
		}
	}
	return ids
}

package router

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// replBatchMax is the most items sent in one replicate call.
const replBatchMax = 512

// replicate routes one change of a channel this node runs into the stream
// of the channel's replica, and its message is published once the replica
// has it; without replication or a replica it is settled at once.
func (r *Router) replicate(c presence.Change) {
	if !r.cfg.Replication {
		r.settle(c.Message, c.Done, nil)
		return
	}
	switch c.Kind {
	case presence.ChangeStopped:
		// A channel handed over keeps its copy until the new holder's
		// replica has one: the hand-off may still fail with this node.
		r.streams.stopped(c.Channel, !r.routes.MovingOut(c.Channel))
		return
	case presence.ChangeLeave:
		r.leaves.addClient(c.Channel, c.UserID, c.ClientID, c.At)
	}
	to, ok := r.replicaOf(r.view.Load(), c.Channel)
	if !ok {
		r.settle(c.Message, c.Done, nil)
		return
	}
	r.streams.get(r, to).add(r, &c)
}

// replicaOf returns where this node replicates channel: to the ring's
// replica when it owns the channel, and to the owner when it only holds it
// until a hand-off (so that a crash then loses nothing either).
func (r *Router) replicaOf(v *view, channel string) (Member, bool) {
	owner, replica := v.ring.OwnerAndReplica(channel)
	if owner != r.self.Name {
		replica = owner
	}
	if replica == "" || replica == r.self.Name {
		return Member{}, false
	}
	return v.Member(replica)
}

// settle ends an item: with err nil its message is published and its
// caller answered; with an error the message is dropped (the channel has a
// newer owner, which publishes) and the caller gets the error.
func (r *Router) settle(m *presence.Message, done chan<- error, err error) {
	if err == nil && m != nil {
		r.publish(m)
	}
	if done != nil {
		done <- err
	}
}

// replStreams holds one stream per replica node.
type replStreams struct {
	mu sync.RWMutex // read-locked by every change's lookup
	by map[string]*replStream
}

func (ss *replStreams) init() { ss.by = make(map[string]*replStream) }

// get returns the stream to to, starting it if needed.
func (ss *replStreams) get(r *Router, to Member) *replStream {
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
		s.close(r) // the node came back at another address
	}
	s = newReplStream(r.ctx, to)
	if !r.spawn(func() { s.run(r) }) {
		s.close(r)
	}
	ss.by[to.Name] = s
	return s
}

// list returns the streams.
func (ss *replStreams) list() []*replStream {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
	return slices.Collect(maps.Values(ss.by))
}

// stopped drops channel from every stream: its actor is gone here. With
// tell, replicas drop their copies too.
func (ss *replStreams) stopped(channel string, tell bool) {
	for _, s := range ss.list() {
		s.forget(channel, true, tell)
	}
}

// keepOnly closes the streams to nodes that are not members of v any more.
func (ss *replStreams) keepOnly(r *Router, v *view) {
	ss.mu.Lock()
	var gone []*replStream
	for name, s := range ss.by {
		if m, ok := v.Member(name); !ok || m != s.to {
			gone = append(gone, s)
			delete(ss.by, name)
		}
	}
	ss.mu.Unlock()
	for _, s := range gone {
		s.close(r)
	}
}

// retarget stops replicating to each node the channels whose replica v
// makes another node (which resyncReplicas fills). The old replica keeps
// its copy until the new one has acknowledged a snapshot (retired).
func (ss *replStreams) retarget(r *Router, v *view) {
	for _, s := range ss.list() {
		for _, ch := range s.syncedChannels() {
			if to, ok := r.replicaOf(v, ch); !ok || to.Name != s.to.Name {
				s.retire(ch)
			}
		}
	}
}

// retired tells the replicas that still keep a copy of channel, other than
// the one called except, which has just acknowledged a snapshot of it, to
// drop theirs.
func (ss *replStreams) retired(channel, except string) {
	for _, s := range ss.list() {
		if s.to.Name == except {
			continue
		}
		s.mu.Lock()
		if s.retiring[channel] && !s.closed {
			delete(s.retiring, channel)
			s.items = append(s.items, replItem{ReplItem: wire.ReplItem{Kind: presence.ChangeStopped, Channel: channel}})
			s.kick()
		}
		s.mu.Unlock()
	}
}

// retire stops replicating channel here; the replica keeps its copy until
// the channel's new replica has one (replStreams.retired).
func (s *replStream) retire(channel string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.synced[channel] {
		delete(s.synced, channel)
		s.retiring[channel] = true
	}
	s.pending -= len(s.refresh[channel])
	delete(s.refresh, channel)
}

// syncedChannels lists the channels the stream has sent a snapshot of.
func (s *replStream) syncedChannels() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Collect(maps.Keys(s.synced))
}

// synced reports whether the stream to name has sent channel's snapshot.
func (ss *replStreams) synced(name, channel string) bool {
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
func (s *replStream) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed || len(s.items) == 0 && s.inflight == 0
}

// flush waits until every stream is idle, or ctx ends: a node leaving
// gracefully lets its replicas learn that it handed its channels over
// (their copies retired) before the others see it go.
func (ss *replStreams) flush(ctx context.Context) error {
	for {
		if !slices.ContainsFunc(ss.list(), func(s *replStream) bool { return !s.idle() }) {
			return nil
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// replStream is the ordered replication stream of this node's channels to
// one replica, sent by one goroutine. Items wait in order; refreshes (a
// heartbeat that only moves an expiry) are coalesced and sent every
// ReplicationInterval, the rest at once.
type replStream struct {
	to   Member
	wake chan struct{} // buffered 1
	// ctx ends with the router or when close stops the stream: its call in
	// flight and its retry wait end with it.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closed    bool
	inflight  int // items sent and not answered yet
	failures  int // calls failed in a row
	deferrals int // answers in a row that deferred items
	items     []replItem
	retiring  map[string]bool                // channels moved to another replica, whose copy here waits for its snapshot
	refresh   map[string]map[clientRef]int64 // channel → client → newest expiry
	pending   int                            // entries in refresh
	synced    map[string]bool                // channels whose snapshot was sent
}

func newReplStream(parent context.Context, to Member) *replStream {
	s := &replStream{to: to, wake: make(chan struct{}, 1),
		refresh: make(map[string]map[clientRef]int64), synced: make(map[string]bool), retiring: make(map[string]bool)}
	s.ctx, s.cancel = context.WithCancel(parent)
	return s
}

// add queues a change. The first change of a channel the replica has no
// copy of is sent as a snapshot of the state after it.
func (s *replStream) add(r *Router, c *presence.Change) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.settle(c.Message, c.Done, nil)
		return
	}
	key := clientRef{c.UserID, c.ClientID}
	if c.Kind == presence.ChangeRefresh && s.synced[c.Channel] {
		s.addRefresh(c.Channel, key, c.ExpiresAt)
		s.mu.Unlock()
		r.settle(nil, c.Done, nil)
		return
	}
	it := replItem{ReplItem: wire.ReplItem{Kind: c.Kind, Channel: c.Channel, UserID: c.UserID, ClientID: c.ClientID,
		Expires: c.ExpiresAt, At: c.At, Config: c.Config, Msg: c.Message}, done: c.Done, queued: r.cfg.Clock.Now().UnixNano()}
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
		it.Kind, it.Snap, it.Interest = presence.ChangeSnapshot, c.Snapshot(), r.interestOf(c.Channel)
		if origin, ok := r.supersedes.LoadAndDelete(c.Channel); ok {
			it.Supersedes = origin.(string)
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
func (s *replStream) addInterest(r *Router, channel string) {
	s.mu.Lock()
	if s.closed || !s.synced[channel] {
		s.mu.Unlock()
		return
	}
	// Taken under the stream's lock, so that queued lists keep the order
	// of the changes they follow.
	s.items = append(s.items, replItem{ReplItem: wire.ReplItem{Kind: wire.KindInterest, Channel: channel, Interest: r.interestOf(channel)},
		queued: r.cfg.Clock.Now().UnixNano()})
	s.mu.Unlock()
	s.kick()
}

// replicateInterest tells the replica of a channel held here that the
// nodes interested in it changed: a copy promoted after the owner died
// pushes the channel's messages to them (without it, only to those of the
// copy's last snapshot, until the others re-registered).
func (r *Router) replicateInterest(channel string) {
	if !r.cfg.Replication || !r.routes.Holds(channel) {
		return
	}
	if to, ok := r.replicaOf(r.view.Load(), channel); ok {
		r.streams.get(r, to).addInterest(r, channel)
	}
}

func (s *replStream) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// forget stops replicating channel and, with tell, tells the replica to
// drop its copy after what is queued (without, the copy is retiring: it
// goes once the channel is safe elsewhere, see replStreams.retired). With drop (the channel's actor
// stopped here), the items still queued for it are settled without their
// messages instead: the node that has the channel now continues from a
// snapshot holding them.
func (s *replStream) forget(channel string, drop, tell bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	if drop {
		s.dropLocked(channel)
	}
	s.pending -= len(s.refresh[channel])
	delete(s.refresh, channel)
	if s.synced[channel] {
		delete(s.synced, channel)
		if tell {
			s.items = append(s.items, replItem{ReplItem: wire.ReplItem{Kind: presence.ChangeStopped, Channel: channel}})
			s.kick()
		} else {
			s.retiring[channel] = true
		}
	}
}

// dropLocked removes channel's queued items, answering their callers.
func (s *replStream) dropLocked(channel string) {
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

// close ends the stream: its node left. What it still holds is settled
// with success: the node's channels are filled again on their new replicas
// from snapshots taken after these changes.
func (s *replStream) close(r *Router) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	items := s.items
	s.items, s.synced = nil, nil
	s.mu.Unlock()
	s.cancel()
	for i := range items {
		r.settle(items[i].Msg, items[i].done, nil)
	}
}

// run sends the stream until it is closed.
func (s *replStream) run(r *Router) {
	t := r.cfg.Clock.NewTicker(r.cfg.ReplicationInterval)
	defer t.Stop()
	for {
		select {
		case <-s.wake:
		case <-t.C():
		case <-s.ctx.Done():
			return
		}
		for s.sendOnce(r) {
		}
	}
}

// take removes the next batch: waiting items first, then, when they fit,
// the coalesced refreshes.
func (s *replStream) take() []replItem {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.items), replBatchMax)
	batch := slices.Clone(s.items[:n])
	clear(s.items[:n])
	s.items = s.items[n:]
	if len(s.items) > 0 {
		return batch
	}
	for ch, m := range s.refresh {
		if len(batch)+len(m) > replBatchMax && len(batch) > 0 {
			break // the rest goes in the next batch
		}
		for k, exp := range m {
			batch = append(batch, replItem{ReplItem: wire.ReplItem{Kind: presence.ChangeRefresh, Channel: ch, UserID: k.userID, ClientID: k.clientID, Expires: exp}})
		}
		s.pending -= len(m)
		delete(s.refresh, ch)
	}
	return batch
}

// addRefresh records a client's newer expiry; the lock must be held.
func (s *replStream) addRefresh(channel string, key clientRef, expires int64) {
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
func (s *replStream) requeue(items []replItem) {
	if len(items) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(items, s.items...)
}

// sendOnce sends one batch and settles it; it reports whether to go on
// right away (more waits and the replica answered).
func (s *replStream) sendOnce(r *Router) bool {
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
	ctx, cancel := context.WithTimeout(s.ctx, r.cfg.ForwardTimeout)
	defer cancel()
	resp, err := r.calls.Call(ctx, s.to, wire.MethodReplicate, func(e *wire.Encoder) {
		wire.EncodeReplicateBatch(e, r.self, r.boot, len(batch), func(i int) *wire.ReplItem { return &batch[i].ReplItem })
	})
	var reply wire.ReplicateReply
	if err == nil {
		reply, err = wire.DecodeReplicateReply(resp)
	}
	if err != nil {
		return s.failed(r, batch, err)
	}
	return s.acknowledged(r, batch, reply)
}

// failed keeps a batch the replica did not answer for another try, after
// RetryBackoff, unless the stream was closed meanwhile (then close settled
// what was queued, and the batch is settled the same way).
func (s *replStream) failed(r *Router, batch []replItem, err error) bool {
	s.mu.Lock()
	closed := s.closed
	s.failures++
	failures := s.failures
	s.mu.Unlock()
	if failures == 1 || failures%100 == 0 {
		r.log.Info("replication batch failed; retrying", "replica", s.to.Name, "items", len(batch), "failures", failures, "err", err)
	}
	if closed {
		for i := range batch {
			r.settle(batch[i].Msg, batch[i].done, nil)
		}
		return false
	}
	s.requeue(batch)
	return sleep(s.ctx, retryDelay(r.cfg.RetryBackoff, failures)) == nil
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
func (s *replStream) acknowledged(r *Router, batch []replItem, reply wire.ReplicateReply) bool {
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
	var again []replItem
	now := r.cfg.Clock.Now().UnixNano()
	oldest := now
	for i := range batch {
		it := &batch[i]
		switch {
		case refused[it.Channel]:
			r.settle(nil, it.done, fmt.Errorf("%w: %s is held by %s", presence.ErrMoved, it.Channel, s.to.Name))
		case deferred[it.Channel]:
			again = append(again, *it)
		default:
			if it.queued != 0 {
				oldest = min(oldest, it.queued)
			}
			if it.Kind == presence.ChangeSnapshot {
				r.streams.retired(it.Channel, s.to.Name)
			}
			r.settle(it.Msg, it.done, nil)
		}
	}
	r.m.replicationLag.Set(float64(now-oldest) / 1e9)
	s.unsync(append(reply.Refused, reply.Missing...))
	for _, ch := range reply.Refused {
		r.fence(ch, s.to)
	}
	for _, ch := range reply.Missing {
		if err := r.engine.Resend(ch); err != nil {
			r.log.Debug("resending a channel to its replica failed", "channel", ch, "err", err)
		}
	}
	if len(again) > 0 {
		s.requeue(again)
		return sleep(s.ctx, retryDelay(r.cfg.RetryBackoff, deferrals)) == nil
	}
	s.mu.Lock()
	more := len(s.items) > 0 || s.pending > 0
	s.mu.Unlock()
	return more
}

// unsync marks channels as having no copy on the replica.
func (s *replStream) unsync(channels []string) {
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

// interestOf is what a replica needs to push channel's messages after a
// promotion: the interested nodes, this one included when it has local
// subscribers.
func (r *Router) interestOf(channel string) []wire.Interested {
	interest := r.interest.export(channel)
	if gen := r.feed.genOf(channel); gen != 0 {
		interest = append(interest, wire.Interested{Node: r.self, Gen: gen})
	}
	return interest
}

// fence reacts to a replica refusing channel because it holds it: another
// node took the channel over while this one was cut off or paused. The
// state held here is handed to that node, which merges it (last writer
// wins), and this node forwards to it from then on.
func (r *Router) fence(channel string, holder Member) {
	r.log.Warn("replica holds a channel owned here: handing it over", "channel", channel, "holder", holder.Name)
	r.spawn(func() {
		if err := r.pushTo(channel, holder); err != nil {
			r.log.Info("handing a fenced channel over failed", "channel", channel, "holder", holder.Name, "err", err)
			r.settling.request()
		}
	})
}

// replicaLoop fills replicas: after a membership change (kick) and every
// ResyncInterval, each channel this node owns whose replica has no copy is
// sent whole.
func (r *Router) replicaLoop() {
	t := r.cfg.Clock.NewTicker(resyncEvery * r.cfg.ReplicationInterval)
	defer t.Stop()
	for {
		select {
		case <-r.replKick:
		case <-t.C():
		case <-r.ctx.Done():
			return
		}
		v := r.view.Load()
		r.streams.keepOnly(r, v)
		r.streams.retarget(r, v)
		r.replicas.prune(v, r.cfg.Clock.Now().UnixNano(), r.routes.Holds)
		r.leaves.prune(r.cfg.Clock.Now().Add(-leaveMemory).UnixNano())
		r.resyncReplicas(v)
	}
}

// resyncEvery is how many ReplicationIntervals pass between two checks that
// every owned channel has a copy.
const resyncEvery = 5

// resyncReplicas asks every channel held here without a copy on its
// replica for a snapshot.
func (r *Router) resyncReplicas(v *view) {
	for _, ch := range r.engine.Channels() {
		if r.ctx.Err() != nil {
			return
		}
		to, ok := r.replicaOf(v, ch)
		if !ok || r.streams.synced(to.Name, ch) {
			continue
		}
		if err := r.engine.Resend(ch); err != nil {
			r.log.Debug("sending a channel to its replica failed", "channel", ch, "err", err)
		}
	}
}

// kickReplicas asks replicaLoop for a round.
func (r *Router) kickReplicas() {
	select {
	case r.replKick <- struct{}{}:
	default:
	}
}

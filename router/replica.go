package router

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
)

// MethodReplicate carries an owner's channel snapshots to their replica.
const MethodReplicate uint16 = 8

// replicateChunk is the most snapshots sent in one replicate call.
const replicateChunk = 128

// leaveMemory is how long a leave is remembered for merging copies: longer
// than any pause that ends with two copies of one channel.
const leaveMemory = 10 * time.Minute

// replicaEntry is the latest copy of a channel received from its owner.
type replicaEntry struct {
	owner    string
	pass     uint64 // the owner's replication pass that sent it
	snap     *presence.ChannelSnapshot
	interest []interested
}

// replicaStore holds the copies this node keeps for other owners. It is
// passive: no actor runs them, nothing expires until a promotion.
type replicaStore struct {
	mu     sync.Mutex
	by     map[string]*replicaEntry
	passes map[string]uint64 // owner → latest pass seen
}

func (s *replicaStore) init() {
	s.by = make(map[string]*replicaEntry)
	s.passes = make(map[string]uint64)
}

// put records an owner's copy of a channel.
func (s *replicaStore) put(owner string, pass uint64, items []replicaItem) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pass+1 < s.passes[owner] {
		s.passes[owner] = pass // the owner restarted its count
	}
	s.passes[owner] = max(s.passes[owner], pass)
	for _, it := range items {
		s.by[it.snap.Channel] = &replicaEntry{owner: owner, pass: pass, snap: it.snap, interest: it.interest}
	}
}

// fresh reports whether e was sent by its owner's last or current pass: an
// older copy is of a channel the owner no longer held.
func (s *replicaStore) fresh(e *replicaEntry) bool { return e.pass+1 >= s.passes[e.owner] }

// take removes and returns the copy of channel when its owner is no longer
// a member of v and the copy is fresh.
func (s *replicaStore) take(channel string, v *view) (*replicaEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.by[channel]
	if e == nil {
		return nil, false
	}
	if _, alive := v.member(e.owner); alive {
		return nil, false
	}
	delete(s.by, channel)
	return e, s.fresh(e)
}

// orphans lists the channels whose copies belong to the departed owners.
func (s *replicaStore) orphans(gone map[string]bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for ch, e := range s.by {
		if gone[e.owner] {
			out = append(out, ch)
		}
	}
	return out
}

// prune forgets the stale copies of live owners. Copies of departed owners
// stay for promoteOrphans, which takes each of them.
func (s *replicaStore) prune(v *view) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, e := range s.by {
		if _, alive := v.member(e.owner); alive && !s.fresh(e) {
			delete(s.by, ch)
		}
	}
}

// leaveLog remembers when users left the channels held here, so that a
// stale copy merged later cannot bring them back (last writer wins).
type leaveLog struct {
	mu sync.Mutex
	by map[string]map[string]int64 // channel → user → leave time (unix ns)
}

func (l *leaveLog) init() { l.by = make(map[string]map[string]int64) }

// record notes the leaves of a published message.
func (l *leaveLog) record(m *presence.Message) {
	if len(m.LeavingUserIDs) == 0 {
		return
	}
	at := m.PublishedAtUnixMilli * int64(time.Millisecond)
	l.mu.Lock()
	defer l.mu.Unlock()
	users := l.by[m.Channel]
	if users == nil {
		users = make(map[string]int64)
		l.by[m.Channel] = users
	}
	for _, id := range m.LeavingUserIDs {
		users[id] = max(users[id], at)
	}
}

// get returns a copy of channel's leaves merged with extra.
func (l *leaveLog) get(channel string, extra map[string]int64) map[string]int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]int64, len(l.by[channel])+len(extra))
	for id, at := range l.by[channel] {
		out[id] = at
	}
	for id, at := range extra {
		out[id] = max(out[id], at)
	}
	return out
}

// add merges leaves received with a channel.
func (l *leaveLog) add(channel string, leaves map[string]int64) {
	if len(leaves) == 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	users := l.by[channel]
	if users == nil {
		users = make(map[string]int64)
		l.by[channel] = users
	}
	for id, at := range leaves {
		users[id] = max(users[id], at)
	}
}

// prune forgets leaves older than before.
func (l *leaveLog) prune(before int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for ch, users := range l.by {
		for id, at := range users {
			if at < before {
				delete(users, id)
			}
		}
		if len(users) == 0 {
			delete(l.by, ch)
		}
	}
}

// clientKey is the leave log key of one client's own leave; a key without
// NUL is a user's leave (the user's last client left).
func clientKey(userID, clientID string) string { return userID + "\x00" + clientID }

// dropLeft removes the clients whose user left after the client's last
// heartbeat (its expiry minus the channel timeout).
func dropLeft(s *presence.ChannelSnapshot, leaves map[string]int64) *presence.ChannelSnapshot {
	if len(leaves) == 0 || len(s.Clients) == 0 || s.Config == nil {
		return s
	}
	timeout := int64(s.Config.TimeoutSeconds()) * int64(time.Second)
	kept := make([]presence.ClientSnapshot, 0, len(s.Clients))
	for _, c := range s.Clients {
		heard := c.ExpiresAtUnixNano - timeout
		if at, ok := leaves[c.User.ID]; ok && at > heard {
			continue
		}
		if at, ok := leaves[clientKey(c.User.ID, c.ClientID)]; ok && at > heard {
			continue
		}
		kept = append(kept, c)
	}
	if len(kept) == len(s.Clients) {
		return s
	}
	out := *s
	out.Clients = kept
	return &out
}

// replicaItem is one channel's copy on the wire.
type replicaItem struct {
	snap     *presence.ChannelSnapshot
	interest []interested
}

// replicateRequest is one batch of an owner's replication pass.
type replicateRequest struct {
	from  Member
	pass  uint64
	items []replicaItem
}

func (q *replicateRequest) encode(e *encoder) {
	e.member(q.from)
	e.uint(q.pass)
	e.uint(uint64(len(q.items)))
	for _, it := range q.items {
		e.snapshot(it.snap)
		e.interested(it.interest)
	}
}

func decodeReplicateRequest(b []byte) (replicateRequest, error) {
	d := decoder{b: b}
	q := replicateRequest{from: d.member(), pass: d.uint()}
	n := d.count()
	for range n {
		q.items = append(q.items, replicaItem{snap: d.snapshot(), interest: d.interested()})
	}
	return q, d.finish()
}

// encodeLeaves appends a leave map (an optional tail of an install).
func (e *encoder) leaves(m map[string]int64) {
	e.uint(uint64(len(m)))
	for id, at := range m {
		e.string(id)
		e.int(at)
	}
}

func (d *decoder) leaves() map[string]int64 {
	n := d.count()
	if n == 0 {
		return nil
	}
	m := make(map[string]int64, n)
	for range n {
		id := d.string()
		m[id] = d.int()
	}
	return m
}

// handleReplicate stores an owner's copies. Copies this node does not
// accept (acceptsCopy) are refused (fencing: a node back from a pause
// learns it lost them); the reply lists them.
func (r *Router) handleReplicate(body []byte) ([]byte, error) {
	q, err := decodeReplicateRequest(body)
	if err != nil {
		return nil, err
	}
	v := r.view.Load()
	var ok []replicaItem
	var refused []string
	for _, it := range q.items {
		if it.snap == nil || !presence.ValidChannelName(it.snap.Channel) {
			return nil, fmt.Errorf("%w: replica of an invalid channel", presence.ErrInvalid)
		}
		if !r.acceptsCopy(v, it.snap.Channel, q.from.Name) {
			refused = append(refused, it.snap.Channel)
			continue
		}
		ok = append(ok, it)
	}
	r.replicas.put(q.from.Name, q.pass, ok)
	r.m.replicaRefused.Add(float64(len(refused)))
	var e encoder
	e.strings(refused)
	return e.b, nil
}

// acceptsCopy reports whether this node takes from's copy of channel: from
// owns it by this node's ring, or this node does not hold the channel (a
// joiner's copy may arrive before this node saw it join). A node holding
// the channel refuses another node's copy: that node is stale.
func (r *Router) acceptsCopy(v *view, channel, from string) bool {
	if v.ring.Owner(channel) == from {
		return true
	}
	sh := r.routes.shard(channel)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[channel]
	return e == nil || !e.held && e.moving == nil && e.pull == nil
}

// replicateLoop sends every owned channel to its replica each
// ReplicationInterval, and prunes the replica store and leave log.
func (r *Router) replicateLoop() {
	t := r.cfg.Clock.NewTicker(r.cfg.ReplicationInterval)
	defer t.Stop()
	last := r.cfg.Clock.Now()
	for {
		select {
		case <-t.C():
		case <-r.ctx.Done():
			return
		}
		pass := r.replPass.Add(1)
		start := r.cfg.Clock.Now()
		if r.replicatePass(pass) {
			r.m.replicationLag.Set(r.cfg.Clock.Now().Sub(last).Seconds())
			last = start
		}
		r.replicas.prune(r.view.Load())
		r.leaves.prune(start.Add(-leaveMemory).UnixNano())
	}
}

// replicatePass exports the channels this node owns and holds and sends
// them to their replicas; it reports whether every replica acknowledged.
func (r *Router) replicatePass(pass uint64) bool {
	v := r.view.Load()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	batches := make(map[string][]replicaItem)
	for _, ch := range r.engine.Channels() {
		if replica, it, ok := r.replicaItemOf(ctx, ch, v); ok {
			batches[replica] = append(batches[replica], it)
		}
	}
	ok := true
	for name, items := range batches {
		to, known := v.member(name)
		if !known || !r.sendReplicas(ctx, to, pass, items) {
			ok = false
		}
	}
	return ok
}

// replicaItemOf exports channel for its replica when this node owns it in v.
func (r *Router) replicaItemOf(ctx context.Context, channel string, v *view) (string, replicaItem, bool) {
	owner, replica := v.ring.OwnerAndReplica(channel)
	if owner != r.self.Name || replica == "" || replica == r.self.Name {
		return "", replicaItem{}, false
	}
	snap, err := r.engine.Export(ctx, channel)
	if err != nil || snap == nil {
		return "", replicaItem{}, false
	}
	interest := r.interest.export(channel)
	if gen := r.feed.genOf(channel); gen != 0 {
		interest = append(interest, interested{node: r.self, gen: gen})
	}
	return replica, replicaItem{snap: snap, interest: interest}, true
}

// replicateNow sends channel to its replica at once: after an install
// here, so the changes that follow have a copy to apply to.
func (r *Router) replicateNow(channel string) {
	v := r.view.Load()
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	replica, it, ok := r.replicaItemOf(ctx, channel, v)
	if !ok {
		return
	}
	if to, known := v.member(replica); known {
		r.sendReplicas(ctx, to, r.replPass.Load(), []replicaItem{it})
	}
}

// sendReplicas sends items to one replica in chunks.
func (r *Router) sendReplicas(ctx context.Context, to Member, pass uint64, items []replicaItem) bool {
	for len(items) > 0 {
		n := min(len(items), replicateChunk)
		q := replicateRequest{from: r.self, pass: pass, items: items[:n]}
		items = items[n:]
		resp, err := r.call(ctx, to, MethodReplicate, q.encode)
		if err != nil {
			r.log.Debug("replication failed", "replica", to.Name, "err", err)
			return false
		}
		d := decoder{b: resp}
		refused := d.strings()
		if d.finish() == nil && len(refused) > 0 {
			r.log.Info("replica refused channels: not their owner in its ring", "replica", to.Name, "channels", len(refused))
			r.requestRebalance()
		}
	}
	return true
}

// promoteOrphans is run after a membership change: every copy whose owner
// left is promoted here when this node now owns the channel (through the
// ordinary pull, which installs the copy), or forgotten.
func (r *Router) promoteOrphans(gone map[string]bool) {
	v := r.view.Load()
	for _, ch := range r.replicas.orphans(gone) {
		if r.ctx.Err() != nil {
			return
		}
		if owner := v.ring.Owner(ch); owner != r.self.Name {
			r.handOrphan(ch, v, owner)
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
		t, err := r.acquire(ctx, ch)
		if err == nil && t.local {
			r.release(ch)
		}
		cancel()
	}
}

// handOrphan gives the copy of a channel whose owner left to the channel's
// new owner, which merges it with whatever it started meanwhile (it may
// have found nobody to pull the channel from).
func (r *Router) handOrphan(channel string, v *view, owner string) {
	e, ok := r.replicas.take(channel, v)
	to, known := v.member(owner)
	if !ok || !known {
		return
	}
	q := installRequest{from: r.self, snap: skipUnreplicated(e.snap, r.cfg.Clock.Now()), interest: e.interest}
	q.leaves = r.leaves.get(channel, nil)
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	if _, err := r.call(ctx, to, MethodInstall, q.encode); err != nil {
		r.log.Info("handing a replica copy to the new owner failed", "channel", channel, "owner", owner, "err", err)
		return
	}
	r.m.promotions.Inc()
}

// promoteReplica installs the copy of channel kept here if its owner left;
// it reports whether it did.
func (r *Router) promoteReplica(ctx context.Context, channel string, v *view) (bool, error) {
	if !r.cfg.Replication {
		return false, nil
	}
	e, ok := r.replicas.take(channel, v)
	if !ok {
		return false, nil
	}
	if err := r.installLocal(ctx, skipUnreplicated(e.snap, r.cfg.Clock.Now()), e.interest, nil); err != nil {
		return false, err
	}
	r.m.promotions.Inc()
	r.log.Info("promoted replica", "channel", channel, "former_owner", e.owner, "clients", len(e.snap.Clients))
	return true, nil
}

// skipUnreplicated moves a promoted copy's last id past every id its dead
// owner can have published since the copy was sent (ids start from the
// clock in microseconds and grow by one per message, so the time now is
// above them), with an empty backlog: subscribers see a gap and resync
// instead of receiving a repeated id.
func skipUnreplicated(s *presence.ChannelSnapshot, now time.Time) *presence.ChannelSnapshot {
	out := *s
	out.LastID = max(s.LastID, now.UnixMicro()) + 1
	out.Backlog = nil
	return &out
}

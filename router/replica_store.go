package router

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// leaveMemory is how long a leave is remembered for merging copies: longer
// than any pause that ends with two copies of one channel.
const leaveMemory = 10 * time.Minute

// staleCopyAfter is how long a copy whose live owner no longer owns the
// channel (in this node's view) is kept without news from that owner: long
// enough for membership views to agree again.
const staleCopyAfter = 30 * time.Second

// replicaEntry is this node's copy of a channel owned by another node.
type replicaEntry struct {
	owner    string
	copy     *presence.Copy
	interest []wire.Interested
	heard    int64  // when the owner last sent something for it (unix ns)
	boot     uint64 // the owner's process that sent it
}

// replicaStore holds the copies this node keeps for other owners, one per
// channel and owner: after a crash and a quick restart, two nodes may both
// have held a channel for a moment, and the copy of the one that then dies
// must not be overwritten by the other's. It is passive: no actor runs the
// copies, nothing expires until a promotion.
type replicaStore struct {
	mu sync.Mutex
	by map[string]map[string]*replicaEntry // channel → owner → copy
}

func (s *replicaStore) init() { s.by = make(map[string]map[string]*replicaEntry) }

// apply applies one item of owner's stream and reports false when it is a
// change to a copy this node does not have from owner (the owner must send
// a snapshot first).
func (s *replicaStore) apply(owner string, boot uint64, it *wire.ReplItem, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	copies := s.by[it.Channel]
	switch it.Kind {
	case presence.ChangeSnapshot:
		if copies == nil {
			copies = make(map[string]*replicaEntry, 1)
			s.by[it.Channel] = copies
		}
		copies[owner] = &replicaEntry{owner: owner, copy: presence.NewCopy(it.Snap), interest: it.Interest, heard: now, boot: boot}
		if it.Supersedes != "" && it.Supersedes != owner {
			delete(copies, it.Supersedes) // owner continues that node's state
		}
		return true
	case presence.ChangeStopped:
		s.deleteLocked(it.Channel, owner)
		return true
	}
	e := copies[owner]
	if e == nil || e.boot != boot {
		return false // none, or the previous process's: a snapshot first
	}
	if it.Kind == wire.KindInterest {
		e.interest = it.Interest
		e.heard = now
		return true
	}
	e.copy.Apply(change(it))
	e.heard = now
	return true
}

// deleteLocked forgets owner's copy of channel; the lock must be held.
func (s *replicaStore) deleteLocked(channel, owner string) {
	if copies := s.by[channel]; copies != nil {
		delete(copies, owner)
		if len(copies) == 0 {
			delete(s.by, channel)
		}
	}
}

// take removes and returns the copies of channel whose owners are no longer
// members of v.
func (s *replicaStore) take(channel string, v *view) []*replicaEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*replicaEntry
	for owner, e := range s.by[channel] {
		if _, alive := v.Member(owner); !alive {
			out = append(out, e)
			s.deleteLocked(channel, owner)
		}
	}
	return out
}

// takeFrom removes and returns the copy of channel that owner's previous
// process sent: owner restarted (as boot) before anyone noticed, and asks
// for its channel back.
func (s *replicaStore) takeFrom(channel, owner string, boot uint64) (*replicaEntry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.by[channel][owner]
	if e == nil || e.boot == boot {
		return nil, false
	}
	s.deleteLocked(channel, owner)
	return e, true
}

// dropFrom forgets owner's copy of channel.
func (s *replicaStore) dropFrom(channel, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(channel, owner)
}

// orphans lists the channels with copies of the departed owners.
func (s *replicaStore) orphans(gone map[string]bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for ch, copies := range s.by {
		for owner := range copies {
			if gone[owner] {
				out = append(out, ch)
				break
			}
		}
	}
	return out
}

// prune forgets the copies this node does not need: of live owners, those
// of channels it holds itself, and those that v does not give to their
// owner and that the owner sent nothing for in staleCopyAfter (a hand-off
// leaves the old holder's copy behind until then, in case the new holder
// dies first; membership views differ for a while after every change,
// hence the wait). Copies of departed owners stay for promoteOrphans.
func (s *replicaStore) prune(v *view, now int64, holds func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ch, copies := range s.by {
		held := holds(ch)
		for owner, e := range copies {
			if _, alive := v.Member(owner); !alive {
				continue
			}
			stale := v.ring.Owner(ch) != owner && now-e.heard > int64(staleCopyAfter)
			if stale || held {
				s.deleteLocked(ch, owner)
			}
		}
	}
}

// leaveLog remembers when users left the channels held here, so that a
// stale copy merged later cannot bring them back (last writer wins).
type leaveLog struct {
	mu sync.RWMutex                // read on every forwarded present (leftAfter)
	by map[string]map[string]int64 // channel → user → leave time (unix ns)
}

func (l *leaveLog) init() { l.by = make(map[string]map[string]int64) }

// get returns a copy of channel's leaves merged with extra.
func (l *leaveLog) get(channel string, extra map[string]int64) map[string]int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
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
	for id, at := range leaves {
		l.noteLocked(channel, id, at)
	}
}

// addClient notes that one client of userID left channel at at.
func (l *leaveLog) addClient(channel, userID, clientID string, at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.noteLocked(channel, clientKey(userID, clientID), at)
}

// noteLocked records the leave of key (a user, or clientKey) at at, the
// later one winning; the lock must be held.
func (l *leaveLog) noteLocked(channel, key string, at int64) {
	users := l.by[channel]
	if users == nil {
		users = make(map[string]int64)
		l.by[channel] = users
	}
	users[key] = max(users[key], at)
}

// leftAfter reports whether the client (or its user) left channel after t.
func (l *leaveLog) leftAfter(channel, userID, clientID string, t int64) bool {
	l.mu.RLock()
	defer l.mu.RUnlock()
	users := l.by[channel]
	if len(users) == 0 {
		return false
	}
	return users[clientKey(userID, clientID)] > t || users[userID] > t
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

// clientKey is the leave log key of one client's leave (expiry included);
// a key without NUL is a user's leave, as older hand-offs sent them.
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

// handleReplicate applies a batch of an owner's stream to the copies kept
// here. Per channel, the items are refused when this node holds the
// channel itself (fencing: the sender is an owner the others replaced, and
// must hand over what it has), deferred when the sender does not own the
// channel in this node's view, and otherwise applied in order.
func (r *Router) handleReplicate(body []byte) ([]byte, error) {
	q, err := wire.DecodeReplicateRequest(body)
	if err != nil {
		return nil, err
	}
	from, boot, items := q.From, q.Boot, q.Items
	v := r.view.Load()
	now := r.cfg.Clock.Now().UnixNano()
	verdicts := make(map[string]copyVerdict)
	var reply wire.ReplicateReply
	for i := range items {
		it := &items[i]
		if it.Kind == presence.ChangeStopped {
			// Dropping the sender's own copy is always safe, held or not.
			r.replicas.apply(from.Name, boot, it, now)
			continue
		}
		vd, seen := verdicts[it.Channel]
		if !seen {
			vd = r.copyVerdict(v, it.Channel, from.Name)
			verdicts[it.Channel] = vd
			switch vd {
			case copyRefused:
				reply.Refused = append(reply.Refused, it.Channel)
			case copyDeferred:
				reply.Deferred = append(reply.Deferred, it.Channel)
			}
		}
		if vd != copyAccepted {
			if !seen {
				r.log.Debug("replica copy not taken", "channel", it.Channel, "from", from.Name, "verdict", vd)
			}
			continue
		}
		if it.Kind == presence.ChangeSnapshot || it.Kind == presence.ChangeStopped {
			r.log.Debug("replica copy", "channel", it.Channel, "from", from.Name, "kind", it.Kind)
		}
		if !r.replicas.apply(from.Name, boot, it, now) && !slices.Contains(reply.Missing, it.Channel) {
			reply.Missing = append(reply.Missing, it.Channel)
		}
		if it.Kind == presence.ChangeLeave {
			r.leaves.addClient(it.Channel, it.UserID, it.ClientID, it.At)
		}
	}
	r.m.replicaRefused.Add(float64(len(reply.Refused)))
	return wire.Marshal(reply.Encode), nil
}

// copyVerdict is what a replica does with an owner's items for a channel.
type copyVerdict uint8

const (
	copyAccepted copyVerdict = iota
	copyRefused
	copyDeferred
)

// copyVerdict decides for channel's items from from. Only one node serves
// a channel, so a node holding it does not take another's copy: when its
// ring gives the channel to from, it hands the channel over (from retries
// afterwards); otherwise from is stale (an owner replaced while paused or
// cut off) and is refused.
func (r *Router) copyVerdict(v *view, channel, from string) copyVerdict {
	_, member := v.Member(from)
	switch {
	case r.routes.Holds(channel) && member && v.ring.Owner(channel) == from:
		r.settling.request()
		return copyDeferred
	case r.routes.Holds(channel):
		return copyRefused
	case !member:
		// A node this one has not seen join (or saw die: a new process
		// under the same name) waits until it has: its copy must not be
		// promoted as the dead one's.
		return copyDeferred
	}
	return copyAccepted
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
			r.routes.release(ch)
		}
		if err == nil {
			// Already held (started fresh when the dead holder did not
			// answer): the copy is merged in.
			if _, err := r.promoteReplica(ctx, ch, v); err != nil {
				r.log.Info("merging a replica copy failed", "channel", ch, "err", err)
			}
		}
		cancel()
	}
}

// handOrphan gives the copy of a channel whose owner left to the channel's
// new owner, which merges it with whatever it started meanwhile (it may
// have found nobody to pull the channel from).
func (r *Router) handOrphan(channel string, v *view, owner string) {
	to, known := v.Member(owner)
	if !known {
		return
	}
	for _, e := range r.replicas.take(channel, v) {
		r.handCopy(channel, e, to)
	}
}

// handCopy sends one copy to the channel's new owner as an install.
func (r *Router) handCopy(channel string, e *replicaEntry, to Member) {
	owner := to.Name
	q := wire.InstallRequest{From: r.self, Snap: e.copy.Snapshot(r.cfg.ReplicationInterval), Interest: e.interest, Origin: e.owner}
	q.Leaves = r.leaves.get(channel, nil)
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.HandoffTimeout)
	defer cancel()
	if _, err := r.calls.Call(ctx, to, wire.MethodInstall, q.Encode); err != nil {
		r.log.Info("handing a replica copy to the new owner failed", "channel", channel, "owner", owner, "err", err)
		return
	}
	r.log.Info("handed a replica copy to the new owner", "channel", channel, "owner", owner, "former_owner", e.owner, "clients", len(q.Snap.Clients))
	r.m.promotions.Inc()
}

// promoteReplica installs the copy of channel kept here if its owner left;
// it reports whether it did. Every message the owner published reached the
// copy first, so the channel continues with the next id and its backlog.
func (r *Router) promoteReplica(ctx context.Context, channel string, v *view) (bool, error) {
	if !r.cfg.Replication {
		return false, nil
	}
	copies := r.replicas.take(channel, v)
	for _, e := range copies {
		// A second copy (two holders died) merges into the first.
		snap := e.copy.Snapshot(r.cfg.ReplicationInterval)
		if err := r.installLocal(ctx, snap, e.interest, nil, e.owner); err != nil {
			return false, err
		}
		r.m.promotions.Inc()
		r.log.Info("promoted replica", "channel", channel, "former_owner", e.owner, "clients", len(snap.Clients), "last_id", snap.LastID)
	}
	return len(copies) > 0, nil
}

package replica

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/presencehq/presence/presence"
	"github.com/presencehq/presence/router/wire"
)

// staleCopyAfter is how long a copy whose live owner no longer owns the
// channel (in this node's view) is kept without news from that owner: long
// enough for membership views to agree again.
const staleCopyAfter = 30 * time.Second

// Entry is this node's copy of a channel owned by another node.
type Entry struct {
	// Owner is the node that sent the copy; Interest, the nodes its
	// channel's messages are pushed to once the copy is promoted.
	Owner    string
	Interest []wire.Interested
	copy     *presence.Copy
	heard    int64  // when the owner last sent something for it (unix ns)
	boot     uint64 // the owner's process that sent it
	// handed marks the state this node handed to Owner and keeps until
	// Owner's replica has the channel (Store.KeepHanded): Owner did not
	// send it, and nothing but a release or Owner's own snapshot replaces it.
	handed bool
	// continues is the node whose state the owner's snapshot said it
	// continued (wire.ReplItem.Supersedes: an install there), and snapAt
	// when that snapshot came: KeepHanded tells by them the owner's copy of
	// the installed state from an older one.
	continues string
	snapAt    int64
	// unpublished is the handed state's count of messages its sender had
	// not published (presence.ChannelSnapshot.Unpublished), which the
	// process it is handed to again publishes; a copy's messages were all
	// on this replica before the owner published them.
	unpublished int
}

// Snapshot returns the copy as a state to install, its expiries moved
// later by grace (the refreshes the owner may not have sent yet).
func (e *Entry) Snapshot(grace time.Duration) *presence.ChannelSnapshot {
	s := e.copy.Snapshot(grace)
	s.Unpublished = e.unpublished
	return s
}

// Handed reports whether the entry is state this node handed to Owner
// (Store.KeepHanded) rather than Owner's copy: Owner may have gone on with
// it (presence.RestartSnapshot).
func (e *Entry) Handed() bool { return e.handed }

// Store holds the copies this node keeps for other owners, one per
// channel and owner: after a crash and a quick restart, two nodes may both
// have held a channel for a moment, and the copy of the one that then dies
// must not be overwritten by the other's. It is passive: no actor runs the
// copies, nothing expires until a promotion.
type Store struct {
	mu sync.Mutex
	by map[string]map[string]*Entry // channel → owner → copy
	// early: releases that came before their handed state was kept (the
	// new holder answered the install and released at once, as a holder
	// without a replica does), by when they came: KeepHanded then keeps
	// nothing.
	early map[handedKey]int64
	// handing counts, per channel, the copies taken by TakeToHand whose
	// push to the channel's new owner is not answered yet (HandDone).
	handing map[string]int
}

// handedKey names the state of a channel handed to a process of a node.
type handedKey struct {
	channel, owner string
	boot           uint64
}

func (s *Store) init() {
	s.by = make(map[string]map[string]*Entry)
	s.early = make(map[handedKey]int64)
	s.handing = make(map[string]int)
}

// Kept describes one copy kept here, as Inspect returns it.
type Kept struct {
	Owner    string
	Snapshot *presence.ChannelSnapshot // without grace
	Interest []wire.Interested
}

// Inspect returns the copies of channel kept here, one per owner, for
// diagnostics and tests.
func (s *Store) Inspect(channel string) []Kept {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Kept
	for _, e := range s.by[channel] {
		out = append(out, Kept{Owner: e.Owner, Snapshot: e.copy.Snapshot(0), Interest: e.Interest})
	}
	return out
}

// apply applies one item of owner's stream and reports false when it is a
// change to a copy this node does not have from owner (the owner must send
// a snapshot first).
func (s *Store) apply(owner string, boot uint64, it *wire.ReplItem, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	copies := s.by[it.Channel]
	switch it.Kind {
	case presence.ChangeSnapshot:
		if copies == nil {
			copies = make(map[string]*Entry, 1)
			s.by[it.Channel] = copies
		}
		copies[owner] = &Entry{Owner: owner, copy: presence.NewCopy(it.Snap), Interest: it.Interest, heard: now, boot: boot,
			continues: it.Supersedes, snapAt: now}
		if it.Supersedes != "" && it.Supersedes != owner {
			delete(copies, it.Supersedes) // owner continues that node's state
		}
		return true
	case presence.ChangeStopped:
		// The owner replaced or stopped its state. State handed to it is
		// not its copy: only a release or its next snapshot replaces it.
		if e := copies[owner]; e == nil || !e.handed {
			s.deleteLocked(it.Channel, owner)
		}
		return true
	}
	e := copies[owner]
	if e == nil || e.boot != boot {
		return false // none, or the previous process's: a snapshot first
	}
	if it.Kind == wire.KindInterest {
		e.Interest = it.Interest
		e.heard = now
		return true
	}
	e.copy.Apply(change(it))
	e.heard = now
	return true
}

// deleteLocked forgets owner's copy of channel; the lock must be held.
func (s *Store) deleteLocked(channel, owner string) {
	if copies := s.by[channel]; copies != nil {
		delete(copies, owner)
		if len(copies) == 0 {
			delete(s.by, channel)
		}
	}
}

// Take removes and returns the copies of channel whose owners are not
// members of v: the copies to promote.
func (s *Store) Take(channel string, v View) []*Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.takeLocked(channel, v)
}

// TakeToHand is Take for copies this node pushes to the channel's new
// owner: from now until HandDone of each, the copy is neither here nor
// installed there, and Handing reports the channel, so that an extract
// from that owner waits rather than be told there is nothing (the owner
// would start the channel fresh, and merge the push into it as a second
// history when it lands).
func (s *Store) TakeToHand(channel string, v View) []*Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := s.takeLocked(channel, v)
	if len(out) > 0 {
		s.handing[channel] += len(out)
	}
	return out
}

// HandDone ends the push of e, a copy of channel taken by TakeToHand. A
// push that failed keeps e again, for the owner's pull or the next
// promotion, unless a copy from the same owner came meanwhile.
func (s *Store) HandDone(channel string, e *Entry, failed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handing[channel]--; s.handing[channel] <= 0 {
		delete(s.handing, channel)
	}
	if !failed {
		return
	}
	copies := s.by[channel]
	if copies == nil {
		copies = make(map[string]*Entry, 1)
		s.by[channel] = copies
	}
	if copies[e.Owner] == nil {
		copies[e.Owner] = e
	}
}

// Handing reports whether a copy of channel taken by TakeToHand is on its
// way to the channel's owner.
func (s *Store) Handing(channel string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.handing[channel] > 0
}

// takeLocked removes and returns the copies of channel whose owners are
// not members of v; the lock must be held.
func (s *Store) takeLocked(channel string, v View) []*Entry {
	var out []*Entry
	for owner, e := range s.by[channel] {
		if _, alive := v.Member(owner); !alive {
			out = append(out, e)
			s.deleteLocked(channel, owner)
		}
	}
	return out
}

// HasCopyFrom reports whether a copy of channel from a live owner (a
// member of v) other than except is kept here.
func (s *Store) HasCopyFrom(channel string, v View, except string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for owner := range s.by[channel] {
		if _, alive := v.Member(owner); alive && owner != except {
			return true
		}
	}
	return false
}

// TakeFrom removes and returns the copy of channel that owner's previous
// process sent: owner restarted (as boot) before anyone noticed, and asks
// for its channel back.
func (s *Store) TakeFrom(channel, owner string, boot uint64) (*Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.by[channel][owner]
	if e == nil || e.boot == boot {
		return nil, false
	}
	s.deleteLocked(channel, owner)
	return e, true
}

// KeepHanded keeps the state of channel this node has just handed to
// owner's process boot, until owner releases it (Release) once its replica
// acknowledged the channel, or owner's own snapshot replaces it here (this
// node is its replica). If owner dies before either, the copy is promoted
// like a replica copy: a hand-off is complete only when the channel is
// safe on two nodes.
//
// origin is the node whose state snap continues (the install's origin) and
// since is when the hand-off's install began: a release that came after it
// (Release found nothing to release) is this hand-off's, and nothing is
// kept; a snapshot of owner's that came after it and continues origin is
// owner's copy of the installed state, newer than snap, and stays. An
// older copy of owner's (its state before the install, which the install
// merged with snap and owner's stream is about to drop) is merged with
// snap as owner merged them, so that neither is lost if owner dies before
// its next snapshot arrives.
func (s *Store) KeepHanded(channel, owner string, boot uint64, origin string, snap *presence.ChannelSnapshot, interest []wire.Interested, now, since int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at, ok := s.early[handedKey{channel, owner, boot}]; ok && at >= since {
		delete(s.early, handedKey{channel, owner, boot})
		return // released already
	}
	copies := s.by[channel]
	if copies == nil {
		copies = make(map[string]*Entry, 1)
		s.by[channel] = copies
	}
	if e := copies[owner]; e != nil && !e.handed && e.boot == boot {
		if e.continues == origin && e.snapAt >= since {
			return // owner's copy of the installed state is here already
		}
		snap, _ = presence.MergeSnapshots(e.copy.Snapshot(0), snap)
	}
	copies[owner] = &Entry{Owner: owner, copy: presence.NewCopy(snap), Interest: interest, heard: now, boot: boot, handed: true,
		unpublished: snap.Unpublished}
}

// Release forgets the copy of channel kept for owner's process boot since
// the hand-off, and reports whether there was one. A replica copy owner
// sent (a snapshot replaced the handed state) stays. A release that finds
// nothing is remembered until staleCopyAfter, in case the state it
// releases is about to be kept.
func (s *Store) Release(channel, owner string, boot uint64, now int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.handedLocked(channel, owner, boot) == nil {
		s.early[handedKey{channel, owner, boot}] = now
		return false
	}
	s.deleteLocked(channel, owner)
	return true
}

// Handed returns the state of channel handed to owner's process boot and
// kept here, for a pull that asks for it again (the requester did not get
// the first answer).
func (s *Store) Handed(channel, owner string, boot uint64) (*Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.handedLocked(channel, owner, boot)
	return e, e != nil
}

// handedLocked returns the state of channel handed to owner's process boot,
// or nil; the lock must be held.
func (s *Store) handedLocked(channel, owner string, boot uint64) *Entry {
	if e := s.by[channel][owner]; e != nil && e.handed && e.boot == boot {
		return e
	}
	return nil
}

// HandedCount returns how many handed states wait for a release that can
// come: not those handed to a node that predates releases (boot 0, its
// install answered nothing), which go with the prune.
func (s *Store) HandedCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, copies := range s.by {
		for _, e := range copies {
			if e.handed && e.boot != 0 {
				n++
			}
		}
	}
	return n
}

// dropFrom forgets owner's copy of channel.
func (s *Store) dropFrom(channel, owner string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.deleteLocked(channel, owner)
}

// Orphans lists the channels with copies of the departed owners.
func (s *Store) Orphans(gone map[string]bool) []string {
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
// hence the wait). A handed state whose release did not come in
// staleCopyAfter goes too (the new holder found no replica, or the release
// was lost): it would only grow staler. Copies of departed owners stay
// until they are promoted.
func (s *Store) prune(v View, now int64, holds func(string) bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, at := range s.early {
		if now-at > int64(staleCopyAfter) {
			delete(s.early, k)
		}
	}
	for ch, copies := range s.by {
		held := holds(ch)
		for owner, e := range copies {
			if _, alive := v.Member(owner); !alive {
				continue
			}
			stale := (e.handed || v.Owner(ch) != owner) && now-e.heard > int64(staleCopyAfter)
			if stale || held {
				s.deleteLocked(ch, owner)
			}
		}
	}
}

// HandleReplicate serves MethodReplicate: it applies a batch of an owner's
// stream to the copies kept here. Per channel, the items are refused when
// this node holds the channel itself (fencing: the sender is an owner the
// others replaced, and must hand over what it has), deferred when the
// sender does not own the channel in this node's view, and otherwise
// applied in order.
func (p *Replicator) HandleReplicate(_ context.Context, body []byte) ([]byte, error) {
	q, err := wire.DecodeReplicateRequest(body)
	if err != nil {
		return nil, err
	}
	from, boot, items := q.From, q.Boot, q.Items
	v := p.cfg.View()
	now := p.cfg.Clock.Now().UnixNano()
	verdicts := make(map[string]copyVerdict)
	var reply wire.ReplicateReply
	for i := range items {
		it := &items[i]
		if it.Kind == presence.ChangeStopped {
			// Dropping the sender's own copy is always safe, held or not.
			p.store.apply(from.Name, boot, it, now)
			continue
		}
		vd, seen := verdicts[it.Channel]
		if !seen {
			vd = p.copyVerdict(v, it.Channel, from.Name)
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
				p.log.Debug("replica copy not taken", "channel", it.Channel, "from", from.Name, "verdict", vd)
			}
			continue
		}
		p.logTaken(it, from.Name)
		if !p.store.apply(from.Name, boot, it, now) && !slices.Contains(reply.Missing, it.Channel) {
			reply.Missing = append(reply.Missing, it.Channel)
		}
		if it.Kind == presence.ChangeLeave {
			p.leaves.AddClient(it.Channel, it.UserID, it.ClientID, it.At)
		}
	}
	p.cfg.Refused.Add(float64(len(reply.Refused)))
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
func (p *Replicator) copyVerdict(v View, channel, from string) copyVerdict {
	_, member := v.Member(from)
	switch {
	case p.cfg.Routes.Holds(channel) && member && v.Owner(channel) == from:
		p.cfg.Rebalance()
		return copyDeferred
	case p.cfg.Routes.Holds(channel):
		return copyRefused
	case !member:
		// A node this one has not seen join (or saw die: a new process
		// under the same name) waits until it has: its copy must not be
		// promoted as the dead one's.
		return copyDeferred
	}
	return copyAccepted
}

// logTaken logs, at debug level, a snapshot or a message a copy takes.
// Its arguments are built only when debug is on: it runs for every enter
// and leave a replica receives.
func (p *Replicator) logTaken(it *wire.ReplItem, from string) {
	if !p.log.Enabled(context.Background(), slog.LevelDebug) {
		return
	}
	switch {
	case it.Kind == presence.ChangeSnapshot:
		p.log.Debug("replica copy", "channel", it.Channel, "from", from, "kind", it.Kind,
			"last_id", it.Snap.LastID, "supersedes", it.Supersedes)
	case it.Msg != nil:
		p.log.Debug("replica copy change", "channel", it.Channel, "from", from, "kind", it.Kind, "id", it.Msg.ID)
	}
}

package router

import (
	"context"
	"slices"
	"time"

	"github.com/presencehq/presence/presence"
)

// MethodReplicaDelta carries the presents and leaves an owner applied to
// its replica before the caller's update is answered.
const MethodReplicaDelta uint16 = 9

// replicaDelta is one client's change in a channel.
type replicaDelta struct {
	channel  string
	leave    bool
	user     presence.UserInfo // only ID is used for a leave
	clientID string
	at       int64 // unix ns when the owner applied it
}

func encodeDeltas(e *encoder, from Member, ds []replicaDelta) {
	e.member(from)
	e.uint(uint64(len(ds)))
	for _, d := range ds {
		e.string(d.channel)
		e.bool(d.leave)
		e.userInfo(d.user)
		e.string(d.clientID)
		e.int(d.at)
	}
}

func decodeDeltas(b []byte) (Member, []replicaDelta, error) {
	d := decoder{b: b}
	from := d.member()
	n := d.count()
	ds := make([]replicaDelta, 0, n)
	for range n {
		ds = append(ds, replicaDelta{channel: d.string(), leave: d.bool(), user: d.userInfo(), clientID: d.string(), at: d.int()})
	}
	return from, ds, d.finish()
}

// replicateDeltas sends the local share of an update to the replicas of
// the channels this node owns, and waits for them: an acknowledged present
// survives the owner's crash. A replica that does not answer is skipped
// (the next pass fills it); the update itself never fails for it.
func (r *Router) replicateDeltas(ctx context.Context, ds []replicaDelta) {
	if len(ds) == 0 {
		return
	}
	v := r.view.Load()
	by := make(map[string][]replicaDelta)
	for _, d := range ds {
		owner, replica := v.ring.OwnerAndReplica(d.channel)
		if owner == r.self.Name && replica != "" && replica != r.self.Name {
			by[replica] = append(by[replica], d)
		}
	}
	for name, list := range by {
		to, ok := v.member(name)
		if !ok {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, r.cfg.ForwardTimeout)
		_, err := r.call(cctx, to, MethodReplicaDelta, func(e *encoder) { encodeDeltas(e, r.self, list) })
		cancel()
		if err != nil {
			r.log.Debug("replica delta failed", "replica", name, "err", err)
		}
	}
}

// handleReplicaDelta applies an owner's changes to the copies kept here.
func (r *Router) handleReplicaDelta(body []byte) ([]byte, error) {
	from, ds, err := decodeDeltas(body)
	if err != nil {
		return nil, err
	}
	v := r.view.Load()
	for _, d := range ds {
		if !r.acceptsCopy(v, d.channel, from.Name) {
			continue // fencing: a stale owner
		}
		if d.leave {
			r.replicas.applyLeave(from.Name, d)
			r.leaves.add(d.channel, map[string]int64{clientKey(d.user.ID, d.clientID): d.at})
		}
		if !d.leave {
			r.replicas.applyPresent(from.Name, d)
		}
	}
	return nil, nil
}

// entryOf returns channel's copy if it is from owner; the lock must be held.
func (s *replicaStore) entryOf(owner, channel string) *replicaEntry {
	e := s.by[channel]
	if e == nil || e.owner != owner {
		return nil
	}
	return e
}

// applyPresent adds or refreshes a client in owner's copy. Without a copy
// (the channel is newer than the last pass) there is no config to give the
// client an expiry, and the next pass brings it.
func (s *replicaStore) applyPresent(owner string, d replicaDelta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryOf(owner, d.channel)
	if e == nil || e.snap.Config == nil {
		return
	}
	exp := d.at + int64(e.snap.Config.TimeoutSeconds())*int64(time.Second)
	snap := *e.snap
	snap.Clients = slices.Clone(snap.Clients)
	i := slices.IndexFunc(snap.Clients, func(c presence.ClientSnapshot) bool {
		return c.User.ID == d.user.ID && c.ClientID == d.clientID
	})
	if i < 0 {
		snap.Clients = append(snap.Clients, presence.ClientSnapshot{User: d.user, ClientID: d.clientID, ExpiresAtUnixNano: exp})
	} else {
		snap.Clients[i].ExpiresAtUnixNano = max(snap.Clients[i].ExpiresAtUnixNano, exp)
	}
	e.snap = &snap
}

// applyLeave removes a client from owner's copy.
func (s *replicaStore) applyLeave(owner string, d replicaDelta) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.entryOf(owner, d.channel)
	if e == nil {
		return
	}
	snap := *e.snap
	snap.Clients = slices.DeleteFunc(slices.Clone(snap.Clients), func(c presence.ClientSnapshot) bool {
		return c.User.ID == d.user.ID && c.ClientID == d.clientID
	})
	e.snap = &snap
}

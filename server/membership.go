package server

import (
	"slices"
	"strings"
	"time"

	"github.com/presencehq/presence/cluster/membership"
	"github.com/presencehq/presence/router"
)

// startGossip starts memberlist with this node's advertised addresses in
// its metadata, the member loop and the cluster loop (join, then heal
// partitions). It does nothing once shutdown has begun.
//
// The metadata's Incarnation stays 0 until the node serves (announceServing):
// the others route channels only to members with an incarnation, so a node
// that has not loaded the prefix documents yet is never given channels, and
// a restarted process is told apart from its predecessor at once.
func (s *Server) startGossip() error {
	s.mlMu.Lock()
	defer s.mlMu.Unlock()
	if s.ctx.Err() != nil {
		return nil
	}
	key, accepted, _ := s.cfg.ClusterKeys() // checked by Validate
	s.meta = membership.Meta{
		RPC:  s.rpcAddr,
		HTTP: s.cfg.advertised(s.listener.Addr().String()),
	}
	ml, err := membership.Start(membership.Config{
		Name:          s.cfg.Name,
		BindAddr:      s.cfg.GossipAddr,
		AdvertiseAddr: s.cfg.Advertise,
		Meta:          s.meta,
		Key:           key,
		AcceptKeys:    accepted,
		Fast:          s.cfg.FastGossip,
		Logger:        s.log,

		RememberFailed: rememberFailed(s.cfg.ReapAfter),
	})
	if err != nil {
		return err
	}
	s.ml = ml
	s.started.Store(true)
	s.wg.Add(2)
	go s.memberLoop(ml)
	go s.clusterLoop(ml)
	s.log.Info("gossiping", "gossip", ml.Addr(), "join", s.cfg.Join)
	return nil
}

// announceServing gossips this run's incarnation (its start time), which
// makes the others route channels to this node.
func (s *Server) announceServing() {
	ml := s.membership()
	if ml == nil {
		return
	}
	meta := s.meta
	meta.Incarnation = uint64(s.startedAt.UnixNano())
	if err := ml.UpdateMeta(meta, s.timings.leave); err != nil {
		s.log.Warn("serving not announced", "err", err)
		return
	}
	s.log.Info("serving channels", "incarnation", meta.Incarnation)
}

// membership returns memberlist, nil before gossip started.
func (s *Server) membership() *membership.Membership {
	s.mlMu.Lock()
	defer s.mlMu.Unlock()
	return s.ml
}

// GossipAddr is the gossip address other nodes join (useful with port 0).
func (s *Server) GossipAddr() string {
	if ml := s.membership(); ml != nil {
		return ml.Addr()
	}
	return s.cfg.GossipAddr
}

// clusterLoop joins the --join addresses, if any, then heals partitions
// for as long as the node runs (membership.Discovery): every joinMax (the
// longest pause between join attempts) it rejoins the seeds and recently
// failed members that gossip does not see alive. Seeds that are DNS names
// are looked up each time, and every address they resolve to is joined.
func (s *Server) clusterLoop(ml *membership.Membership) {
	defer s.wg.Done()
	d := membership.NewDiscovery(ml, membership.DiscoveryConfig{
		Seeds:          s.cfg.Join,
		Resolver:       s.cfg.Resolver,
		JoinMinBackoff: s.timings.joinMin,
		JoinMaxBackoff: s.timings.joinMax,
		Logger:         s.log,
	})
	if !d.Join(s.ctx) {
		return
	}
	if len(s.cfg.Join) > 0 {
		s.joined.Store(true)
	}
	d.Heal(s.ctx, s.draining.Load)
}

// rememberFailed is how long a failed member's address is retried: at
// least as long as the member table shows it (twice ReapAfter), so a
// partition that outlasted Raft's reaping still heals.
func rememberFailed(reapAfter time.Duration) time.Duration {
	return max(membership.DefaultRememberFailed, 2*reapAfter)
}

// memberLoop is the one consumer of membership events: it keeps the member
// table, tells the router who may own channels and wakes the Raft worker.
// Nothing here runs inside memberlist's callbacks.
func (s *Server) memberLoop(ml *membership.Membership) {
	defer s.wg.Done()
	events := ml.Events()
	prune := time.NewTicker(s.timings.tick)
	defer prune.Stop()
	var last routerMembers
	restarted := map[string]bool{} // in the current burst of events
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				return
			}
			s.observe(ml, ev, restarted)
			// A node joining a cluster learns every member at once: apply
			// the burst before moving channels.
			if !s.drainEvents(ml, restarted) {
				return
			}
		case <-prune.C:
			s.members.prune(time.Now(), 2*s.cfg.ReapAfter)
			continue
		case <-s.ctx.Done():
			return
		}
		if len(restarted) > 0 {
			// The router must see a replaced process leave and come back:
			// its channels, and the subscriptions registered with it, died
			// with the old one.
			last = s.pushMembers(last, restarted)
			clear(restarted)
		}
		last = s.pushMembers(last, nil)
		s.pilot.Kick()
	}
}

// drainEvents applies the events already queued; false once the channel
// is closed.
func (s *Server) drainEvents(ml *membership.Membership, restarted map[string]bool) bool {
	for {
		select {
		case ev, ok := <-ml.Events():
			if !ok {
				return false
			}
			s.observe(ml, ev, restarted)
		default:
			return true
		}
	}
}

// observe applies one event to the member table, noting restarted members.
func (s *Server) observe(ml *membership.Membership, ev membership.Event, restarted map[string]bool) {
	now := time.Now()
	if ev.Kind == membership.EventResync {
		s.members.rebuild(ml.Members(), now)
		return
	}
	s.log.Debug("member event", "kind", ev.Kind.String(), "member", ev.Member.Name, "state", ev.Member.State)
	if s.members.apply(ev, now) {
		s.log.Info("member restarted", "member", ev.Member.Name, "incarnation", ev.Member.Meta.Incarnation)
		restarted[ev.Member.Name] = true
	}
	if ev.Member.Name != s.cfg.Name && ev.Kind == membership.EventJoin {
		s.joined.Store(true)
	}
	if (ev.Kind == membership.EventFailed || restarted[ev.Member.Name]) && ev.Member.Meta.RPC != "" {
		// Fail calls in flight to a dead process now rather than at their timeout.
		s.transport.Disconnect(ev.Member.Meta.RPC)
	}
}

// routerMembers is what pushMembers last gave the router.
type routerMembers struct {
	members  []router.Member
	draining []string // names of members that announced their shutdown
}

func (a routerMembers) equal(b routerMembers) bool {
	return slices.Equal(a.members, b.members) && slices.Equal(a.draining, b.draining)
}

// pushMembers hands the router the members that may own channels, but
// those in without, when they changed: alive, and serving (an incarnation
// announced), with those that announced their shutdown. This node stays in
// its own ring until it starts leaving.
func (s *Server) pushMembers(last routerMembers, without map[string]bool) routerMembers {
	var set []router.Member
	var draining []string
	selfSeen := false
	for _, m := range s.members.alive() {
		switch {
		case m.Name == s.cfg.Name:
			selfSeen = true
		case m.Meta.RPC == "" || without[m.Name]:
			continue // unreadable metadata leaves no address for channel calls
		case m.Meta.Incarnation == 0:
			continue // still loading the channels' configuration
		}
		set = append(set, router.Member{Name: m.Name, RPCAddr: m.Meta.RPC})
		if m.Draining { // this node's own drain is the router's Drain; it ignores the name
			draining = append(draining, m.Name)
		}
	}
	if !selfSeen && !s.draining.Load() {
		set = append(set, s.self)
		slices.SortFunc(set, func(a, b router.Member) int { return strings.Compare(a.Name, b.Name) })
	}
	slices.Sort(draining)
	next := routerMembers{members: set, draining: draining}
	if next.equal(last) {
		return last
	}
	s.log.Info("channel owners changed", "members", len(set), "draining", len(draining))
	s.router.SetMembers(set, draining...)
	return next
}

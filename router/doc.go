// Package router makes the nodes of a cluster one presence.Service: any node
// answers any request by forwarding it to the node that serves the channel,
// subscribers anywhere receive the messages of channels owned elsewhere, and
// channels are handed over with their whole state when membership changes.
//
// # Layout
//
// The router routes requests and hands channels over; its other parts are
// packages of their own, each given what it needs of the router (the view,
// the routing table, a wire.Call, the engine, callbacks) in its Config,
// never the Router, and each documenting its part of the protocol:
//
//   - wire: the node-to-node protocol as bytes: the methods (1 to 99 of the
//     node transport), their requests and replies, and the sentinel errors
//     that cross the wire (transport.Config.Errors =
//     wire.TransportErrors()).
//   - replica: replication streams to replicas, the copies kept for other
//     owners, and the leave log that decides merges.
//   - fanout: the node's hub of subscriptions, other nodes' interest in the
//     channels held here, the pushes to them and the feed into the hub.
//   - ratelimit: the cluster-wide rate limit of updates (Limiter): each
//     user's bucket on the ring owner of "user:"+id, tokens lent to the
//     other nodes.
//
// handlers.go registers every node-to-node method with what serves it.
// Merging two states of a channel is presence.MergeSnapshots.
//
// # Routing
//
// Every node keeps a view: a ring (package ring) over the alive members, the
// same ring without itself, and the members' transport addresses. For a
// channel X a node applies, in order:
//
//  1. X is being handed over (moving): wait until the hand-off ends.
//  2. A tombstone says X was handed to node T: forward to T.
//  3. The node holds X's state (it fetched, received or started it): serve
//     X with the local presence.Engine, whatever the ring says. A node holds
//     a channel until it hands it over, so it never recreates a channel it
//     gave away, and a channel pushed ahead of a membership change is served
//     at once by its new holder.
//  4. The ring makes this node X's owner: first pull X (below), then 3.
//  5. Otherwise forward to the ring owner.
//
// A request reads in one direction. Where it enters a node (a Service
// method, or the handler of a forwarded call) it is checked once, its
// channel names included: a present of an invalid name is answered false,
// a leave of one dropped, a get of one answered nil. Then each channel's
// route is resolved once by the rules above, and the channel is served by
// the engine or its share forwarded.
//
// A forwarded call carries the sender's ring epoch and a hop count; the
// receiver routes it again by the same rules. Past MaxHops it answers
// presence.ErrMoved. Epochs are per-node counters, so they are logged, not
// compared.
//
// # The hold
//
// An ownership change is a pause, not an error. Only the node a request
// entered retries; a node it was forwarded to answers any failure that
// routing again may cure (moved, busy, an unreachable next node, its own
// time running out) as ErrMoved at once. The entry node holds the request
// after such a failure (hold.go): the failed share is routed again when
// the view changes (each view's next channel is closed by the view that
// replaces it: a dead owner leaves the ring when memberlist declares it
// dead, about 3 s after a kill) and after a backoff meanwhile (RetryBackoff
// doubling to MaxRetryBackoff: another node's view lagging, a hand-off in
// progress), until it is served or HoldTimeout (10 s) after the first
// failure; then presence.ErrUnavailable (503). A forwarded call ends at
// ForwardTimeout, so a paused node does not take the whole hold, and the
// updates queued for a node that leaves the view are answered at once and
// routed again. At most MaxHeld requests are held (presence_held_requests);
// beyond, and on a node that cannot serve (Config.Serving false, not
// joined, draining), a failure is the answer at once. Applying a present
// or a leave twice changes nothing, so a request routed again after an
// attempt whose fate is unknown (a timeout) is safe; present-before-leave
// holds per channel, since a channel's leave always goes with its present.
//
// Get and Update group their channels by destination: the local share goes
// to the engine, each remote node gets one call with its share, in parallel.
// In an Update the leave of a channel follows its present to the same node,
// so present-before-leave holds per channel. The caller's presence.User
// travels with the call and the serving node checks permissions.
//
// Forwarded updates (heartbeats, the hot path) to one node are batched
// without waiting: an update leaves at once when no batch is in flight to
// that node, else it joins the next batch, sent when the one in flight
// returns (ForwardBatch at most). The receiver serves a batch in order and
// answers each update separately (answers, or an error carrying its
// sentinel). A batch in flight longer than ForwardStall no longer holds the
// next one back, so an update stuck on a slow config callback delays only
// its own batch.
//
// # Hand-off
//
// Push. After every ring change a rebalance pass looks at each channel the
// node holds (actors and held entries) whose ring owner is another node, and
// for each: marks it moving (new calls wait), waits for the local calls in
// progress, exports it (the mailbox is FIFO, so every accepted call is in the
// snapshot), freezes the old actor (an expiry it still fires is dropped; the
// new owner fires it from the snapshot), flushes the push queues of the
// nodes subscribed to it, calls install on the owner with the snapshot and
// those nodes, and only when that succeeded removes the actor and leaves a
// tombstone. A failed push keeps the channel here and is retried
// RebalanceRetry later (Config.Clock). A pass stops early when the view
// changes; the next pass uses the new view.
//
// Pull. A node that owns X by the ring but does not hold it asks the owner
// X would have without this node (ring without self: for a joiner, the old
// owner) to extract X, once, with concurrent calls waiting on the same
// fetch. The holder marks X moving, exports and removes it and sets a
// tombstone to the requester (the request carries the requester's address,
// since the holder may not have seen it join), then answers: the snapshot
// (installed before any call is served), "none", "already delivered to you"
// (a push won the race; an extract waits for a push in progress), or "handed
// to Z" (the requester asks Z next, up to MaxHops). A node that is fetching
// X itself answers ErrBusy and the requester retries. A node that does not
// hold X but keeps a replica copy of it hands over the copy of an owner it
// sees dead, and answers ErrBusy while it sees that owner alive (the
// requester saw the death first) or while it is pushing that copy to the
// requester already (the install lands before the retry). A holder that is a member but does not
// answer, or stays busy, leaves X unheld: the calls are held and tried
// again (holderAway). When the previous holder cannot be reached otherwise
// the channel starts fresh: the engine's time-based
// ids are above every id the old incarnation issued, so subscribers resync.
//
// Safe on two nodes (handed.go). Push and pull alike, the node that hands
// X over keeps the state it sent as a copy of the new holder's in its
// replica store until the new holder's replica acknowledged X's snapshot:
// the new holder then releases it (wire.MethodRelease), or its snapshot
// replaces it where the old holder is the new replica. A new holder that
// dies first leaves the copy an orphan, promoted like a replica copy but
// as a restart (presence.RestartSnapshot): ids above any the new holder
// may have published meanwhile, no backlog, a resync marker, superseding
// nobody's copy (the new holder's replica, which has what it published,
// merges its own in); a drain ends only once everything handed over was
// released.
//
// Install merges (presence.MergeSnapshots). If the receiver already holds
// state for X (it started X fresh while the holder was unreachable),
// clients are united, the later expiry winning, and the last id moves past
// both histories with an empty backlog: no id repeats, and a resync marker
// published with the install makes every subscriber re-read the channel at
// once. An older copy of the receiver's own history (its last message found
// unchanged in the receiver's backlog, no user the receiver lacks) only
// adds its clients: the receiver's ids go on and nobody resyncs.
//
// Messages in flight at a hand-off. A message is published once the
// holder's replica has it, and a hand-off drops what is still in flight
// there (the old actor is frozen). The snapshot counts those messages
// (presence.ChannelSnapshot.Unpublished) and the receiver publishes the
// last of them once its own replica has the install; a subscriber that
// has not seen the ones before it catches up on the gap. Without that, a
// merge's resync marker in flight when the channel was handed on reached
// no subscriber until the channel's next message (partition test).
//
// A push of a channel with no state here still carries the leaves answered
// here (sendLeaves, wire.MethodLeaves): a node that served the channel
// without its state (cut off from its holder) acknowledged them, and the
// holder drops the clients they concern, last writer wins. The receiver
// keeps them and routes them on like a call (tombstone, ring owner, at most
// MaxHops), since the sender's view may have been partial; a receiver that
// owns the channel by its ring without holding it keeps them for the
// holder's hand-off, and hands them on itself if its ring gives the channel
// to another node first (route.owesLeaves).
//
// Tombstones are dropped when their target, once seen as a member, leaves,
// when the ring owner is the target anyway, when the target is unreachable
// and not a member, or 10 s after a sweep found the target not owning the
// channel (a chain of joiners would otherwise outlast every move). Held channels whose actor passivated are forgotten after
// two sweeps (SweepInterval); touching one again pulls, which finds nothing.
//
// Graceful leave. Drain builds the ring without this node, which every later
// SetMembers keeps excluding, pushes every held channel to its owner there,
// and returns when nothing is left; the node keeps forwarding (tombstones)
// until Close. Installs sent to a draining node are refused with ErrMoved.
// The other nodes learn of the drain through SetMembers (its draining
// names): they leave the node out of their rings but keep it as a member,
// so a new owner pulls what it still holds from it. When every member
// drains (the whole cluster stopping), the rings are empty: each node
// serves what it holds and answers ErrUnavailable for the rest at once.
//
// # Cross-node subscriptions
//
// Package fanout carries messages to the nodes whose users subscribe. The
// router routes its catch-ups like any call (the holder registers the
// subscribing node's interest as it serves one), publishes the messages of
// the channels held here through it, and hands the interest over with the
// channels.
//
// # Promotion and fencing (Config.Replication; on in presence-node)
//
// Package replica streams every change of a channel held here to its
// replica and keeps the copies of other owners' channels; the router does
// the hand-offs that replication starts.
//
// Promotion. When membership drops an owner, each node with copies from it
// acts on them: for a channel it now owns it installs the copy (the pull
// finds it first; if the channel was already started here, the copy is
// merged in); a channel another node now owns gets the copy as an install,
// merged with whatever that node started meanwhile. Expiries move later by
// ReplicationInterval, the refreshes the dead owner may not have sent yet.
// A restarted owner that asks for its channel before anyone noticed its
// death gets its previous process's copy back (extract, boot differs). A
// holder does not hand a channel to a node it does not see as a member yet
// (wire.ExtractHeld): that node forwards to it until the holder pushes it.
//
// Fencing. A node whose replica refuses a change because it holds the
// channel hands its state to that holder, which merges it. Merges drop
// clients whose user or client left after their last heartbeat (the leave
// log, sent with every hand-off) and expired ones. A forwarded update
// carries its sender's deadline and is dropped when read after it: a
// paused node must not apply, on resuming, an update its sender has since
// retried elsewhere; its waits on the way (a pull, a hand-off) end at that
// deadline too. A forwarded present whose client left the channel here
// after the present was sent (its sender gave up while it waited behind a
// stalled batch, and the client moved on) is answered false and not
// applied: last writer wins, as in merges.
//
// # Webhooks (Config.Webhooks)
//
// Every message published for a channel held here also goes to the
// webhooks' dispatcher, and a successful hand-off tells it that the
// channel's deliveries continue on the new holder, from the position the
// state carries (presence.ChannelSnapshot.Delivered).
//
// # Metrics
//
// presence_forwarded_total{method}, presence_forward_errors_total,
// presence_handoffs_total{direction="in"|"out"}, presence_ring_epoch,
// presence_replica_promotions_total, presence_held_requests and
// presence_held_requests_total{outcome}; the router also registers its parts'
// presence_push_dropped_total, presence_replica_refused_total,
// presence_replication_lag_seconds and the presence_ratelimit_* metrics.
package router

// Package replica keeps a copy of every channel on a second node and the
// leave log that decides merges: both ends of replication on one node (a
// Replicator), with the router, the routing view and the engine reached
// through small interfaces and function values in its Config. Promoting a
// copy and handing a fenced channel over are hand-offs, so the router does
// them with what this package keeps (see package router).
//
// # Streams
//
// The Engine hands every change of a channel's state (a client entered,
// refreshed or left, a snapshot after an install) to the Replicator, on the
// channel's goroutine and in the channel's order (presence.Replicator). The
// change is queued on the stream to the channel's replica: the ring's
// second node for a channel this node owns, or the ring owner for a channel
// it only holds until a hand-off. One goroutine per replica sends the
// stream in order (MethodReplicate, one batch in flight). The first item of
// a channel on a stream is a whole snapshot (clients, expiries, last id,
// backlog, interested nodes); then come the changes, each with the message
// it published, and the interested nodes again whenever they change, so a
// promoted copy pushes at once to every node that subscribed before the
// owner died. Refreshes (a heartbeat that only moves an expiry) are
// coalesced per client, and webhook delivery positions
// (presence.ChangeDelivered) per channel, and sent with the next batch or
// every Interval; enters and leaves are sent at once. When a channel's replica changes, the
// old replica keeps its copy until the new one acknowledged a snapshot.
//
// # Publish after replicate
//
// A message is published (local hub, push queues) only once the replica
// acknowledged the change that made it, and an update's enters and leaves
// are answered only then (Engine.PresentAck, LeaveAck). So every id a
// subscriber saw, and every acknowledged enter or leave, is on the replica:
// a promoted copy continues with the next id and its backlog, and
// subscribers notice nothing but a pause. Publishing follows each
// channel's id order, including when a stream closes because its replica
// left: its goroutine settles the batch in flight before what was queued
// behind it (a webhook queue takes a message below one it has as not new).
// A channel's changes that the new view sends to another replica's stream
// are ordered after the closed stream's only by the time that stream's
// first snapshot needs to be acknowledged, a round trip; the closed
// stream's in-flight call fails as soon as the transport drops the dead
// node.
//
// # Copies
//
// Copies are passive (presence.Copy: nothing expires), kept per channel and
// sending owner, stamped with the owner's process (boot). Per channel, a
// batch is accepted, deferred (the sender is not a member in this node's
// view yet: it is asked to retry) or refused (this node holds the channel
// itself: the sender is stale). A change for a copy the replica lacks is
// answered "missing" and the owner resends a snapshot. A copy is dropped
// when its owner says so (passivation; a replica move, once the new replica
// acknowledged its snapshot), when a snapshot from the channel's new holder
// says it continues that owner's state, when this node holds the channel,
// or 30 s after its live owner stopped owning the channel in this node's
// view. A hand-off keeps the old copy until then: if the new holder dies
// before its own replica has a copy, the old one is still there. Copies of
// owners that left the membership wait for the router to promote them.
//
// # Fencing
//
// A node that was paused or cut off while others took its channels over
// keeps publishing nothing: its messages wait for its replica, which now
// holds the channel and refuses. The stream then settles the waiting
// callers with presence.ErrMoved, drops their messages and calls
// Config.Fence, with which the router hands the state to that holder, which
// merges it.
//
// # The leave log
//
// Every node remembers, for ten minutes, when users and clients left the
// channels it holds (LeaveLog): the leaves it served, those in the streams
// it receives as a replica and those handed over with a channel. Merges
// drop the clients whose user or client left after their last heartbeat
// (DropLeft: last writer wins), so a stale copy never brings back someone
// who left.
//
// # Lost state
//
// When the owner and its replica die together (or the replica dies before
// acknowledging a new channel's snapshot), the channel restarts empty on
// its next owner with ids from the clock (microseconds), above any id
// seen, and subscribers resync; clients re-enter with their next heartbeat.
//
// Metrics (registered by the router): presence_replica_refused_total and
// presence_replication_lag_seconds (age of the oldest change in the last
// acknowledged batch).
package replica

// Package webhook delivers the presence events of the channels a node
// holds to the webhooks of their prefix documents: batched per
// destination, signed with HMAC-SHA256, in message_id order per channel,
// at least once, retried with capped exponential backoff while the
// destination fails, with bounded queues.
//
// # Events
//
// Every message a channel publishes is one event, identified by (channel,
// message_id): entering_users, leaving_user_ids or count_delta, with
// "occupied" or "vacated" set on the event of the message that brought the
// channel its first user or took its last one (no second event: one event
// per message keeps (channel, message_id) a dedupe key). A resync event
// says that the receiver cannot follow the channel event by event from
// there and must read its state (a merge of two histories, events that
// could not be recovered after a failover, events summarised because the
// destination was down too long or too far behind). The webhook's events
// list selects messages by their payload and by occupancy; resync events
// are always delivered.
//
// # Where events come from
//
// A Dispatcher runs on every node and delivers for the channels this node
// holds: the router hands it every message once it is published (with
// replication, once the replica has it: a message delivered is never lost
// with its owner), and the engine tells it of every state installed here
// (presence.Deliveries.Installed): a hand-off, a promoted copy, a merge.
// The state carries the channel's delivery position
// (presence.ChannelSnapshot.Delivered: every message up to it was
// acknowledged), so the new holder delivers its backlog after the
// position, and a resync first when the backlog no longer reaches back to
// it. The position moves with every acknowledged batch
// (presence.Engine.Acknowledge) and travels to the channel's replica with
// the other changes; a promoted replica therefore re-sends only what its
// copy does not know to be acknowledged (about the last second's worth).
// After a hand-off the old holder drops what it had not sent.
//
// # Delivery
//
// Per destination (a prefix's webhook; its URL, secret and events are
// read from the document at each use), events of channels that have no
// batch in flight are ready; a batch takes up to MaxBatch ready events and
// is sent when it is full or its oldest event has waited MaxWait, up to
// MaxInFlight requests at once. A channel's events stay in one batch until
// it is acknowledged: its later events wait, other channels' go. A request
// that fails (anything but 2xx, no redirect followed) is retried as the
// same batch, with the same X-Presence-Delivery id, after a backoff that
// doubles from RetryBase to RetryMax, with jitter. While a destination
// fails, one request at a time probes it, and when it answers again every
// waiting batch goes at once. A batch that failed for GiveUpAfter (one
// hour by default) is summarised: each of its channels gets a resync event
// instead, which is retried like any event, so nothing is dropped
// silently.
//
// # Backpressure
//
// A channel queues at most MaxChannelQueue events and a destination
// MaxDestinationQueue beyond the events of its batches: past either, a
// channel's queued events are replaced by one resync event (the queue of
// a destination that is down therefore stays bounded, at worst about one
// event per channel), and the channel keeps its position, so nothing is
// acknowledged that was not delivered.
package webhook

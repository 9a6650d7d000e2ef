// Package fanout carries the messages of channels to the nodes whose users
// subscribe to them, so a subscriber on any node follows a channel held on
// another. It owns the node's presence.Hub and reaches the rest of the
// router through the function values of its Config: node calls, the
// routing view, catch-ups routed to a channel's holder and the tombstones
// of channels handed away.
//
// # Interest
//
// The hub's subscriptions take their catch-up from the channel's holder
// (Config.Catchup, which the router routes as MethodSince), together with
// this node's name and a registration generation, and the holder records
// the node's interest before it answers, so every later message is pushed.
// When the hub loses the last subscriber of a channel the node tells the
// owner (MethodInterest, interest off, same generation); generations order
// the changes of one node and channel, so a late off never undoes a newer
// on. Interest moves with the channel on hand-off (HandOver, the node's own
// subscribers included, and Add), interest changes reaching a node that
// handed the channel away follow the tombstone, and a push answer lists
// the channels the receiver no longer follows. Interest of nodes that leave
// the membership is dropped (ForgetNodes). With replication the channel's
// replica learns every change (Config.Changed), so a promoted copy pushes
// to the same nodes.
//
// # Pushes
//
// Each message of a channel held here goes to the local hub and, in order,
// to the push queue of every interested node (Publish). One goroutine per
// node sends its queue in batches (MethodPush, PushBatch messages, one call
// in flight, so order holds); a full queue or a failed call drops messages
// (presence_push_dropped_total) and the subscribers see a gap and resync.
// A hand-off first waits for the messages queued so far (FlushTimeout), so
// the new holder's messages cannot overtake the old holder's.
//
// # The feed
//
// Every message enters the hub through the feed, which tracks the last id
// given to the hub per channel: duplicates are dropped, and a gap makes the
// node fetch the missing messages from the holder (a catch-up after the
// last id, as a user the message audience admits; the hub still checks each
// message against each subscriber) before releasing what arrived
// meanwhile. A catch-up that cannot reach the holder is tried again after
// 250 ms, then twice as long after each failure, up to 2 s, while the node
// has subscribers. After every ring change the node does the same for each
// subscribed channel whose owner changed (OwnersChanged), which also
// registers its interest with the new holder.
package fanout

// Package wire is the router's node-to-node protocol as bytes: the methods
// (Method constants, each defined once), the request and reply of each,
// the values they share and the table of sentinel errors that cross the
// wire. It is pure: it encodes and decodes, and knows nothing of routing,
// replication or the transport that carries the bytes.
//
// # Encoding
//
// Requests and replies are hand-written binary: unsigned varints for
// lengths and counters, zig-zag varints for ids and times, length-prefixed
// strings, one bit per answer of an update, a message's audience sent once
// for a run of messages sharing it. A forwarded heartbeat is about a
// hundred bytes. A node is its name then its transport address; requests
// that name their sender start with it (a push with the sender's name
// alone), which test proxies rely on to tell who sent a connection's calls.
// Decoders never panic: every failure, a truncated frame or trailing bytes
// included, is ErrMalformed, which wraps presence.ErrInvalid.
//
// # Methods
//
//	1 MethodUpdate     forwarded updates, batched → a result per update
//	2 MethodGet        a Get share of one owner → the channels' states
//	3 MethodSince      a catch-up, registering interest → the catch-up
//	4 MethodInterest   a node's interest changes → nothing
//	5 MethodPush       messages for subscribers → channels not followed
//	6 MethodExtract    pull a channel → its state, or where it went
//	7 MethodInstall    push a channel's state → nothing
//	8 MethodReplicate  replication batch → refused, deferred, missing
//	9 MethodLeaves     leaves answered without the state → nothing
//	10 MethodLimit     borrow, give back or recall rate-limit tokens → grants
//
//	20 MethodInspect   the server side's read of an owner's share → whole states
//	21 MethodCan       what a user may do in a channel → its access
//	22 MethodClear     every client of a channel leaves → nothing
//
// Methods 1 to MaxMethod belong to the router; the server's own methods
// are above. Which node sends each and what the receiver does is told by
// the packages that use them: router (routing and hand-off), replica
// (replication), fanout (cross-node subscriptions) and ratelimit (the
// cluster-wide rate limit).
//
// # Errors
//
// Sentinel errors cross the wire by position in TransportErrors, which
// every node registers in the same order (transport.Config.Errors),
// so callers use errors.Is on remote errors. The updates of a batch fail
// one by one: each failed update's answer carries its sentinel's code, and
// decodes to a *RemoteError that unwraps to it.
package wire

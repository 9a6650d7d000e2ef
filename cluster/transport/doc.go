// Package transport is the node-to-node RPC of a presence cluster: a few
// long-lived TCP connections per peer carrying calls multiplexed by id and
// answered out of order, one writer goroutine per connection that coalesces
// pipelined frames into one flush, and a handshake in which both ends prove
// knowledge of the cluster key (HMAC-SHA256 over both nonces) before any call
// is served. Sentinel errors cross the wire by their position in a table
// every node registers in the same order (Config.Errors), so callers test
// remote errors with errors.Is.
//
// It knows nothing of what the calls mean: the router forwards presence
// calls and replication over it, and the server adds its own methods (Raft
// state for bootstrap-expect, forwarded admin writes, the leader's digest).
package transport

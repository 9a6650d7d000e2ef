// Package transport is the node-to-node RPC of a presence cluster: a few
// long-lived TCP connections per peer carrying calls multiplexed by id and
// answered out of order, one writer goroutine per connection that coalesces
// pipelined frames into one flush, and, next to the calls and on the same
// port, raw byte streams for a consumer with a protocol of its own (Raft,
// see Streams).
//
// Every connection is secured before anything is served (secure.go):
// optional mutual TLS 1.3, then a handshake in which both ends prove
// knowledge of the cluster key (HMAC-SHA256 over both nonces), then, with
// a key and without TLS, records encrypted and authenticated per direction
// under keys derived from the handshake (package seal). Sentinel errors
// cross the wire by their position in a table every node registers in the
// same order (Config.Errors), so callers test remote errors with errors.Is.
//
// It knows nothing of what the calls mean: the router forwards presence
// calls and replication over it, and the server adds its own methods (Raft
// state for bootstrap-expect, forwarded admin writes, the leader's digest)
// and runs Raft over its streams.
package transport

// Package raftstore is the Raft store of prefix documents, the only state
// a presence cluster replicates through consensus: hashicorp/raft with
// raft-boltdb/v2 for the log and stable store, file snapshots, and the
// replicated map of package fsm. Writes go through the leader (forwarding
// them from a follower is the caller's business); reads are local and may
// lag the leader by the replication delay.
//
// Around Raft it adds what a small cluster needs to recover quickly:
// leadership changes delivered without ever blocking Raft, a leadership
// transfer when a follower returns from an outage with writes to catch up
// on (Raft's backed-off retries would keep them from it for seconds), and a
// stream layer over the caller's Streams (the node's authenticated
// transport) whose Close aborts the dials in progress, so a node's
// shutdown is not held by a dial to a peer that vanished. Servers are
// known by ID: Config.ServerAddress resolves an ID to its current address
// at each dial. Raft's hclog messages join the node's slog stream.
package raftstore

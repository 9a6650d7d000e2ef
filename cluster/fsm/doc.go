// Package fsm is the replicated state of the Raft store (package
// raftstore): a map from key (a prefix name) to an opaque document, the
// commands of the Raft log that change it, applied in log order, and its
// snapshots. Every change is reported to a callback, so a node's derived
// state (the presence resolver) is current once an entry is applied.
//
// It is apart from raftstore, as hashicorp/consul keeps agent/consul/fsm
// apart from its server, so that what Raft replicates, and the log format,
// can be read and tested without running Raft.
package fsm

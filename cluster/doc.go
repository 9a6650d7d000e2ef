// Package cluster joins presence nodes into one service: memberlist
// membership (who is alive, and each node's addresses), the Raft store of
// prefix documents (the only replicated configuration), and the
// node-to-node transport used for forwarding and replication.
//
// The Raft store (Store) keeps a small map from prefix name to an opaque
// document; the presence package parses the documents. Writes go through the
// Raft leader; every server reads its local copy.
package cluster

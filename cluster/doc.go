// Package cluster joins presence nodes into one service: memberlist
// membership (who is alive, and each node's addresses) and the Raft store
// of prefix documents (the only replicated configuration). The node-to-node
// transport is package cluster/transport.
//
// The Raft store (Store) keeps a small map from prefix name to an opaque
// document; the presence package parses the documents. Writes go through the
// Raft leader; every server reads its local copy.
package cluster

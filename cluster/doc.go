// Package cluster holds the Raft store of prefix documents (the only
// replicated configuration). Membership and the node-to-node transport are
// packages cluster/membership and cluster/transport.
//
// The Raft store (Store) keeps a small map from prefix name to an opaque
// document; the presence package parses the documents. Writes go through the
// Raft leader; every server reads its local copy.
package cluster

// Package security holds the attack tests of a cluster's node-to-node
// security (no code of its own): real nodes started in the test process
// (internal/testcluster), attacked the way someone on their network
// would: hashicorp/raft's own transport speaking Raft to the rpc port,
// node-to-node calls without the cluster key, a memberlist without the
// key joining gossip, a node holding a certificate of another CA, and a
// proxy recording the bytes between two nodes. It also rotates the keys
// of a running cluster without downtime: the user token secrets and the
// cluster key by rolling restarts, the CA and the node certificates by
// reloading the TLS files (SIGHUP).
package security

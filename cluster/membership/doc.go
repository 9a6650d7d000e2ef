// Package membership tells a presence node who else is in the cluster: it
// adapts hashicorp/memberlist (gossip, failure detection in a few seconds)
// and gossips each node's metadata (its RPC and HTTP addresses and an
// incarnation), with a node's intent to leave or drain carried in that
// metadata, since memberlist reports a leave and a failure alike.
//
// memberlist calls its delegates with its node lock held, so membership
// only copies each change into a buffered channel (Events); when the
// consumer lags, the dropped changes become one resync event telling it to
// re-read Members. It remembers the members that failed, so a node can
// rejoin them after a partition, which memberlist alone never does.
//
// Discovery finds the members to join: the seeds (--join) are looked up
// at every attempt, and every address a DNS name resolves to is joined, so
// one name can stand for all the nodes (a Kubernetes headless Service, a
// compose service scaled up). It keeps trying until another member
// answers, then heals: it rejoins the seeds gossip does not see and the
// members that failed.
package membership

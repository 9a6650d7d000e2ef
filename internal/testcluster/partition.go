package testcluster

import "time"

// Partition cuts the network of a cluster started WithPartitions: a node
// listed in one side no longer exchanges gossip, Raft or RPC traffic with
// the nodes listed in the other sides, in either direction; connections
// crossing the cut are closed. A node listed nowhere still reaches every
// node. A new call replaces the previous partition.
//
// One limit: a node-to-node RPC connection does not say who dialled it.
// The proxy learns its sender from its first request that names one (the
// router's replication, push, install, extract, interest and catch-up
// calls do); requests before that (forwarded presence updates and reads,
// the server's own calls) pass the cut unless their destination is cut
// off from every other node. Memberlist push/pulls are told apart by the
// nodes they list, so while a node is cut off every push/pull listing it
// is dropped, including those between nodes of one side (gossip itself,
// probes and TCP pings between them pass).
func (c *Cluster) Partition(sides ...[]int) {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("testcluster: Partition needs WithPartitions")
	}
	c.net.setSides(sides)
}

// Heal ends the partition: every node reaches every other again.
func (c *Cluster) Heal() {
	c.t.Helper()
	if c.net == nil {
		c.t.Fatal("testcluster: Heal needs WithPartitions")
	}
	c.net.setSides(nil)
}

// CutStats reports what the cuts dropped so far (zero without
// WithPartitions).
func (c *Cluster) CutStats() CutStats {
	if c.net == nil {
		return CutStats{}
	}
	return CutStats{Datagrams: c.net.datagrams.Load(), Streams: c.net.streams.Load()}
}

// RefusedRaftAppends returns the times at which a cut refused a Raft
// append carrying log entries to node i (the leader's replication, not its
// heartbeats): the leader's retries, whose backoff a test can watch.
func (c *Cluster) RefusedRaftAppends(i int) []time.Time {
	if c.net == nil {
		return nil
	}
	return c.net.refusedAppends(i)
}

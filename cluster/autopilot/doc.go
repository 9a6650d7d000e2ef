// Package autopilot keeps a presence cluster's Raft configuration in line
// with its membership, as Consul's autopilot does, so that nodes come and go
// (a scaled deployment, a rolling restart, a crash) without an operator
// touching Raft and without the voters ever losing their quorum:
//
//   - bootstrap-expect: the first servers form the cluster once the
//     expected number of them see each other and none holds Raft state;
//   - a new server joins as a non-voter (it gets the log, it does not
//     count for the quorum) and is promoted once it has caught up with the
//     leader and stayed healthy for a stabilization period;
//   - the voters are kept at an odd number, at most MaxVoters; the other
//     servers stay non-voters, ready to be promoted when a voter goes;
//   - a server whose node left gracefully is removed at once, one declared
//     dead or no longer known after a grace period (ReapAfter), never more
//     than a minority of the voters in one round;
//   - a server keeps the address it was added with: Raft dials servers by
//     name at their current address in gossip, so a node back at another
//     address (a rescheduled pod) needs no configuration change; a new
//     server given the old address of one that moved is recorded by its
//     name instead, since Raft refuses two servers at one address.
//
// Only the leader changes the configuration. The package knows Raft through
// a narrow interface (the raftstore.Store) and the cluster through another
// (the node's member view and the two questions it asks other nodes), so
// its rules are tested with a fake clock against fakes and real Raft.
package autopilot

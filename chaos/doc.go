// Package chaos is a toolkit for black-box fault tests of a presence
// cluster: a Workload of simulated browser clients that heartbeat, enter
// and leave channels through random node URLs while keeping a Model of who
// must, may and must not be present; a Checker that compares every
// channel's users with that model; a StreamChecker that follows Server-Sent
// Event streams on every node and verifies the id invariants of the
// contract; and a Summary that adds it all up.
//
// The package only speaks HTTP to node URLs, so the same tools drive
// processes on loopback (sub-package proc starts them) and containers.
// Both fault suites reach their cluster through the Cluster interface
// (sub-packages proc and container satisfy it) and share the scenario
// helpers over it: Configure, PutPrefix, WaitPrefix, WaitOwning, and Checks
// for the comparisons that add up to a Summary.
//
// # The model
//
// Presence is soft state: what a client did is known only through the
// answers it got. For each client and channel the model keeps the window
// in which the client is certainly present (from an acknowledged present
// until an earlier of its expiry or the next leave it sends) and the window
// in which it may be present (until the last present it attempted could
// have expired, or until an acknowledged leave that followed every present
// it attempted). A request that failed, or that succeeded only after an
// attempt that may have reached a node (a timeout, a 5xx), may still take
// effect up to WorkloadConfig.StaleApply later: a node paused with the
// request in its socket applies it when it resumes.
//
// A user must be present in a channel when one of its clients must; it
// must be absent when every one of its clients must. The Checker reports a
// user that must be present but is missing as lost, and a user that must
// be absent but is listed as a ghost.
//
// Channels with a cap (max_users, WorkloadConfig.MaxUsers) are judged
// twice. Each answer to a present is held against what the channel
// certainly held while a node served it: a user already present must be
// admitted, a new user must be refused when the cap's number of others
// certainly were present and admitted when fewer possibly were
// (Model.CapJudgements). And every read must list at most the cap's number
// of users (CheckResult.OverCap): only the merge of two histories (a healed
// partition, a fenced paused owner) may exceed a cap, never one crash.
package chaos
